"""Experiment loggers: CSV (default), W&B (offline unless the user is logged in), or none."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

KINDS = ("csv", "wandb", "none")


def wandb_logged_in() -> bool:
    """True when W&B credentials are present (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def make_logger(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> Logger | bool:
    kind = cfg.get("kind", "csv")
    if kind == "none":
        return False
    if kind == "csv":
        # Flushed every 10 steps: a killed run keeps most of its log (the resumed run appends).
        logger = CSVLogger(save_dir=str(run_dir), name="csv", version="", flush_logs_every_n_steps=10)
    elif kind == "wandb":
        mode = cfg.get("mode", "auto")
        if mode not in ("auto", "online", "offline"):
            raise ValueError(f"logger.mode = {mode!r} is not allowed; allowed: auto, online, offline")
        offline = mode == "offline" or (mode == "auto" and not wandb_logged_in())
        logger = WandbLogger(
            project=cfg.get("project", "ofa-hwnas"),
            entity=cfg.get("entity"),
            name=cfg.get("name"),
            save_dir=str(run_dir),
            offline=offline,
            tags=list(cfg.get("tags") or []),
        )
    else:
        raise ValueError(f"logger.kind = {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    logger.log_hyperparams(config)
    return logger
