"""The shell every command shares: config location, Hydra entry points, one-line user errors,
the console, and process state changed only for the length of a command."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from app.config import compose, register_resolvers
from app.validate import check_command_line
from ofa.errors import UserError
from ofa.paths import CONF_DIR, HW_PROFILES_DIR, REPO_ROOT
from ofa.threads import torch_threads

__all__ = [
    "CONF_DIR",
    "HW_PROFILES_DIR",
    "REPO_ROOT",
    "USER_ERRORS",
    "UserError",
    "compose",
    "hydra_command",
    "make_console",
    "quiet_libraries",
    "quiet_optuna",
    "register_resolvers",
    "root_cause",
    "torch_threads",
]

# Exceptions that mean "bad input", reported without a traceback.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, InstantiationException, OmegaConfBaseException)

# Warnings of the libraries we drive that say nothing a user can act on.
QUIET_WARNINGS = (
    "Using ModelCheckpoint with manual optimization",  # checkpoints follow the optimiser step on purpose
    ".*isinstance.treespec, LeafSpec.*",
)


def make_console() -> Console:
    """Rich console; 120 columns when output is not a terminal (logs, CI) so tables stay whole."""
    return Console(width=None if sys.stdout.isatty() else 120)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause (Hydra wraps errors raised while instantiating configs)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# Lightning's INFO lines that advertise a product instead of reporting the run.
QUIET_LOG_PREFIXES = ("💡 Tip",)
LIGHTNING_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUIET_LOG_PREFIXES)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """The library warnings in QUIET_WARNINGS and Lightning's adverts off for the block."""
    log, adverts = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER), _DropAdverts()
    log.addFilter(adverts)
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        log.removeFilter(adverts)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off for the block, its verbosity restored afterwards."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def report_user_error(exc: BaseException) -> None:
    """Print `error: <Type>: <first line>` on stderr and exit 2."""
    cause = root_cause(exc)
    first_line = (str(cause).strip().splitlines() or [""])[0]  # OmegaConf appends key details
    print(f"error: {type(cause).__name__}: {first_line}", file=sys.stderr)
    sys.exit(2)


def drop_unused_run_folder() -> None:
    """Remove the run folder Hydra made for a command that stopped on bad input before writing
    anything of its own (only Hydra's `.hydra/` and log inside), so mistakes leave no clutter."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    if folder.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
        cwd = Path.cwd().resolve()
        for parent in folder.resolve().parents:  # e.g. runs/search/<device>/ made for it, now empty
            if parent == cwd or cwd not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break


def hydra_command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """Turn `task(cfg)` into a console-script entry point using `conf/<config_name>.yaml`."""
    if not CONF_DIR.is_dir():
        raise RuntimeError(f"Hydra configs not found at {CONF_DIR}; install the project editable (pip install -e .)")

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], None]:
        @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
        @functools.wraps(task)
        def entry(cfg: DictConfig) -> None:
            try:
                with quiet_libraries():
                    task(cfg)
            except USER_ERRORS as exc:
                drop_unused_run_folder()
                report_user_error(exc)

        def main() -> None:
            register_resolvers()  # before Hydra composes the config
            try:  # before Hydra composes (and creates a run folder): one line per mistake
                check_command_line(config_name, sys.argv[1:])
            except USER_ERRORS as exc:
                report_user_error(exc)
            entry()

        return functools.wraps(task)(main)

    return decorate
