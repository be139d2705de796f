"""The shell every command shares: config location, Hydra entry points, one-line user errors,
the console, and process state changed only for the length of a command."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

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


def _head_epochs(total: int, fraction: float) -> int:
    """Epochs in the first `fraction` of `total` (at least 1, leaving at least 1)."""
    return min(max(1, round(total * fraction)), total - 1)


def _bench_run_name(sampler: str | None, queries: int | None, n_trials: int) -> str:
    """`loop-q100`, `random-q100` (with queries) or `refined-n1000`: an ofa-search-bench run folder's name."""
    if queries:
        return f"{sampler or 'loop'}-q{queries}"
    return f"{sampler or 'refined'}-n{n_trials}"


def register_resolvers() -> None:
    """The OmegaConf resolvers conf/ uses (the delayed-shrinking schedule splits its epochs by a
    fraction; ofa-search-bench names its run folder). Idempotent; called before any config is composed."""
    if not OmegaConf.has_resolver("ofa_head_epochs"):
        OmegaConf.register_new_resolver("ofa_head_epochs", _head_epochs)
    if not OmegaConf.has_resolver("ofa_tail_epochs"):
        OmegaConf.register_new_resolver("ofa_tail_epochs", lambda t, f: t - _head_epochs(t, f))
    if not OmegaConf.has_resolver("ofa_bench_run"):
        OmegaConf.register_new_resolver("ofa_bench_run", _bench_run_name)


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A primary config of conf/ composed with `overrides` (outside a running Hydra app: tests, the pipeline)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


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
                report_user_error(exc)

        def main() -> None:
            register_resolvers()  # before Hydra composes the config
            entry()

        return functools.wraps(task)(main)

    return decorate
