"""Where the project's data folders are: the configs (`conf/`) and the device profiles (`hw_profiles/`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
HW_PROFILES_DIR = REPO_ROOT / "hw_profiles"
