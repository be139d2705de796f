"""Where the project's data folders are: the configs (`conf/`) and the device profiles (`hw_profiles/`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
HW_PROFILES_DIR = REPO_ROOT / "hw_profiles"


def known_supernets() -> list[str]:
    """The names of the supernet configs the project ships (`conf/supernet/<name>.yaml`)."""
    return sorted(p.stem for p in (CONF_DIR / "supernet").glob("*.yaml"))


def supernet_config(name: str) -> Path:
    """`conf/supernet/<name>.yaml` for a known name only: a device profile is a data file users
    share, so its `supernet:` may name one of our configs but never a path (it would be instantiated)."""
    known = known_supernets()
    if name not in known:
        raise ValueError(f"supernet = {name!r} is not a supernet config; known: {', '.join(known)}")
    return CONF_DIR / "supernet" / f"{name}.yaml"
