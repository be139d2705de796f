"""The one exception type that means "the user's input or files are wrong"."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, low: int, allowed: str | None = None, none_ok: bool = False) -> None:
    """A ValueError naming `name`, the value and what is allowed unless `value` is an integer
    >= `low` (or None where `none_ok`); `allowed` replaces the generic wording."""
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        allowed = allowed or ("null or " if none_ok else "") + f"an integer >= {low}"
        raise ValueError(f"{name} = {value!r} is not allowed; allowed: {allowed}")


class UserError(Exception):
    """A problem with the user's input or files: the app layer reports it as one line, exit status 2."""
