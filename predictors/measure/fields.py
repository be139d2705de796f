"""Typed access to one mapping of a YAML file (a device profile), errors naming the dotted field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ofa.errors import check_int


class Section:
    """Typed access to one mapping of the profile, with errors naming the dotted field."""

    def __init__(self, data: Any, prefix: str, fail: Callable[[str], Exception]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise fail(f"{prefix.rstrip('.')} must be a mapping, got {data!r}")
        self.data, self.prefix, self.fail = data, prefix, fail

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def check_keys(self, *allowed: str) -> None:
        unknown = sorted(str(k) for k in self.data if k not in allowed)
        if unknown:
            where = f" in {self.prefix.rstrip('.')}" if self.prefix else ""
            raise self.fail(f"unknown field(s) {', '.join(unknown)}{where}; allowed: {', '.join(allowed)}")

    def section(self, key: str) -> Section:
        return Section(self.data.get(key), f"{self.prefix}{key}.", self.fail)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{self.name(key)} = {value!r}: a non-empty text is required")
        return value.strip()

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None = None, required: bool = False) -> str:
        if key not in self.data and not required:
            return default
        value = self.data.get(key)
        if value not in allowed:
            raise self.fail(f"{self.name(key)} = {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value

    def integer(self, key: str, default: int | None, minimum: int, nullable: bool = False) -> int | None:
        value = self.data.get(key, default)
        try:
            check_int(self.name(key), value, minimum, none_ok=nullable)
        except ValueError as e:
            raise self.fail(str(e)) from None
        return value

    def number(
        self,
        key: str,
        default: float | None,
        minimum: float,
        nullable: bool = False,
        exclusive: bool = False,
        maximum: float | None = None,
    ) -> float | None:
        value = self.data.get(key, default)
        if value is None and nullable:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (value <= minimum if exclusive else value < minimum) or (maximum is not None and value > maximum):
            bound = f"> {minimum}" if exclusive else f">= {minimum}"
            if maximum is not None:
                bound += f" and <= {maximum}"
            null = " or null" if nullable else ""
            raise self.fail(f"{self.name(key)} = {value!r} must be a number {bound}{null}")
        return float(value)

    def positive_list(self, key: str) -> tuple[float, ...]:
        value = self.data.get(key, [])
        if value is None:
            value = []
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in value
        ):
            raise self.fail(f"{self.name(key)} = {value!r} must be a list of positive numbers")
        return tuple(float(v) for v in value)
