"""A command line checked before Hydra composes it, so that a mistake costs one line and no run folder.

Hydra reports an unknown config-group option or an unknown key in a dozen lines (exit 1), and
takes `n_trials=abc` as the string 'abc' that fails much later, without naming the key. Here
every override is checked against the command's own config first: group options against the
files of `conf/<group>/`, keys against the composed config (with close matches), values
against the type of the default they replace (an integer stays an integer, a list a list), and
seeds (`seed`, `*_seed`) against what numpy takes (>= 0).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from app.config import compose
from ofa.errors import UserError
from ofa.paths import CONF_DIR

# Hydra's own flags take values (`--cfg job`, `-cn name`): such a command line is left to Hydra.
PLAIN_FLAGS = ("-m", "--multirun")


def check_command_line(config_name: str, args: Sequence[str]) -> None:
    """Raise `UserError` (one line) for the first override of `args` that cannot work with
    `conf/<config_name>.yaml`: an unknown group option or key, or a value of the wrong type."""
    if any(a.startswith("-") and a not in PLAIN_FLAGS for a in args):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if a not in PLAIN_FLAGS])
    except HydraException as e:
        raise UserError(f"cannot read the command line: {_first_line(e)}") from None
    overrides = [o for o in overrides if not o.is_hydra_override()]
    groups = [o for o in overrides if _is_group(o.key_or_group)]
    for o in groups:
        _check_group_option(config_name, o)
    cfg = _compose_groups(config_name, [_first_choice(o) for o in groups if _first_choice(o)])
    for o in overrides:
        if o in groups or o.is_add() or o.is_force_add() or o.is_delete():  # `+key=`, `~key`: Hydra checks
            continue
        _check_value(config_name, cfg, o)
    if not any(o.is_sweep_override() for o in overrides):
        _check_run_folder(config_name, [a for a in args if a not in PLAIN_FLAGS])


def _check_run_folder(config_name: str, args: list[str]) -> None:
    """The run folder Hydra would create (e.g. `ofa-fit out=`) must not be an existing file."""
    try:
        folder = OmegaConf.select(compose(config_name, args, return_hydra_config=True), "hydra.run.dir")
    except Exception:  # anything Hydra itself reports better, or a folder only the run can name
        return
    if folder and Path(str(folder)).exists() and not Path(str(folder)).is_dir():
        raise UserError(f"the run folder {folder} is an existing file; name a folder (out=, run_dir=, hydra.run.dir=)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _is_group(key: str) -> bool:
    return (CONF_DIR / key.replace(".", "/")).is_dir()


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group.replace(".", "/")).glob("*.yaml"))


def _check_group_option(config_name: str, o: Any) -> None:
    if o.is_delete():
        return
    known = group_options(o.key_or_group)
    if o.is_sweep_override() and not o.is_choice_sweep():
        return  # glob(...) picks among the known ones
    values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
    for value in values:
        if value is not None and str(value) not in known:
            raise UserError(
                f"{o.key_or_group} = {value!r} is not a {o.key_or_group} config (conf/{o.key_or_group}/); "
                f"known: {', '.join(known)}"
            )


def _first_choice(o: Any) -> str | None:
    """The override as one choice (a sweep's first option) for composing: keys are checked against it."""
    if not o.is_sweep_override():
        return o.input_line
    if not o.is_choice_sweep():
        return None  # glob(...): the default option
    return f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"


def _compose_groups(config_name: str, group_overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name, group_overrides)
    except Exception as e:  # Hydra's composition errors are many types; each is a config mistake here
        raise UserError(f"ofa-{config_name.replace('_', '-')}: {_first_line(e)}") from None


def _check_value(config_name: str, cfg: DictConfig, o: Any) -> None:
    key = o.key_or_group
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():  # noqa: SIM118 (`in` skips ??? values)
        raise UserError(_unknown_key(config_name, cfg, key))
    if OmegaConf.is_missing(parent, leaf):
        return
    try:
        default = parent[leaf]
    except Exception:  # an interpolation only the running command can resolve
        return
    if o.is_sweep_override() and not o.is_choice_sweep():
        return  # range(...), interval(...), glob(...): numbers or known names by construction
    values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    for value in values:
        wanted = _type_mismatch(default, value) or _seed_problem(leaf, value)
        if wanted:
            raise UserError(
                f"{key} = {value!r} is not allowed: {key} is {wanted} (default {_show(default)}) in {config_name}.yaml"
            )


def _type_mismatch(default: Any, value: Any) -> str | None:
    """What `value` should be to replace `default`, or None when it fits (None always fits)."""
    if value is None or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if isinstance(default, DictConfig):
        return None if isinstance(value, dict) else "a mapping, e.g. {a: 1}"
    return None  # text takes anything; lists are checked by the commands (several take "a,b" or one value too)


def _seed_problem(leaf: str, value: Any) -> str | None:
    """Seeds feed numpy's generators, which refuse negative ones deep inside a run."""
    if (leaf == "seed" or leaf.endswith("_seed")) and isinstance(value, int) and value < 0:
        return "an integer >= 0"
    return None


def _show(default: Any) -> str:
    if isinstance(default, ListConfig | DictConfig):
        return str(OmegaConf.to_container(default, resolve=False)).replace(" ", "")
    return str(default)


def _unknown_key(config_name: str, cfg: DictConfig, key: str) -> str:
    keys = _all_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; add it with +{key}=… if it is meant to be new"
    return f"{key}: no such key in {config_name}.yaml{hint}"


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    out = []
    for k in node:
        path = f"{prefix}{k}"
        out.append(path)
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            out.extend(_all_keys(child, f"{path}."))
    return out
