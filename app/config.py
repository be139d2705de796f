"""Composing the project's configs outside a running Hydra app, with the resolvers conf/ uses."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from ofa.paths import CONF_DIR


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


def compose(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """A primary config of conf/ composed with `overrides` (outside a running Hydra app: tests, the pipeline)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
