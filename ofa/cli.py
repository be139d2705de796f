"""Shared shell for the Hydra commands: config location and one-line user errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def _head_epochs(total: int, fraction: float) -> int:
    """Epochs in the first `fraction` of `total` (at least 1, leaving at least 1)."""
    return min(max(1, round(total * fraction)), total - 1)


# Resolvers used by conf/ (e.g. the delayed-shrinking schedule splits its epochs by a fraction).
OmegaConf.register_new_resolver("ofa_head_epochs", _head_epochs, replace=True)
OmegaConf.register_new_resolver("ofa_tail_epochs", lambda t, f: t - _head_epochs(t, f), replace=True)


class UserError(Exception):
    """A problem with the user's input or files: reported as one line, exit status 2."""


# Exceptions that mean "bad input", reported without a traceback.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, InstantiationException, OmegaConfBaseException)


def make_console() -> Console:
    """Rich console; 120 columns when output is not a terminal (logs, CI) so tables stay whole."""
    return Console(width=None if sys.stdout.isatty() else 120)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause (Hydra wraps errors raised while instantiating configs)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def hydra_command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """Turn `task(cfg)` into a console-script entry point using `conf/<config_name>.yaml`."""
    if not CONF_DIR.is_dir():
        raise RuntimeError(f"Hydra configs not found at {CONF_DIR}; install the project editable (pip install -e .)")

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], None]:
        @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
        @functools.wraps(task)
        def entry(cfg: DictConfig) -> None:
            try:
                task(cfg)
            except USER_ERRORS as exc:
                cause = root_cause(exc)
                first_line = (str(cause).strip().splitlines() or [""])[0]  # OmegaConf appends key details
                print(f"error: {type(cause).__name__}: {first_line}", file=sys.stderr)
                sys.exit(2)

        return entry

    return decorate
