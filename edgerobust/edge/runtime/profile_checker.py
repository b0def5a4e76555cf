"""Reads typed fields out of a device profile's TOML tables; every error names the file and the field."""
from __future__ import annotations

from typing import Mapping

from edgerobust.errors import ProfileError


class Checker:
    """Reads typed fields out of TOML tables; every error names the file and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field_name: str, what: str, fix: str | None = None) -> ProfileError:
        return ProfileError(f"Invalid device profile '{self.source}': field '{field_name}' {what}",
                            fix=fix or "Fix the field in the profile file (see `edgerobust profiles show laptop-cpu` for a valid example).")

    def table(self, data: Mapping, key: str, where: str, required: bool = False) -> dict:
        v = data.get(key)
        if v is None:
            if required:
                raise self.fail(f"{where}{key}", "is missing.")
            return {}
        if not isinstance(v, dict):
            raise self.fail(f"{where}{key}", f"must be a table ([{key}]), not {type(v).__name__}.")
        return v

    def no_unknown(self, data: Mapping, allowed: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(f"{where}{key}", "is not a known field.",
                                fix=f"Known fields here: {', '.join(allowed)}. Check the spelling.")

    def string(self, data: Mapping, key: str, where: str, default: str | None = None) -> str | None:
        v = data.get(key, default)
        if v is not None and not isinstance(v, str):
            raise self.fail(f"{where}{key}", f"must be a string, not {v!r}.")
        return v

    def choice(self, data: Mapping, key: str, where: str, choices, default: str | None) -> str | None:
        v = self.string(data, key, where, default)
        if v is not None and v not in choices:
            raise self.fail(f"{where}{key}", f"must be one of {', '.join(choices)}; got {v!r}.")
        return v

    def boolean(self, data: Mapping, key: str, where: str, default: bool) -> bool:
        v = data.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(f"{where}{key}", f"must be true or false, not {v!r}.")
        return v

    def integer(self, data: Mapping, key: str, where: str, default: int | None, minimum: int,
                maximum: int | None = None) -> int | None:
        v = data.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{where}{key}", f"must be an integer, not {v!r}.")
        if v < minimum:
            raise self.fail(f"{where}{key}", f"must be at least {minimum}; got {v}.")
        if maximum is not None and v > maximum:
            raise self.too_costly(f"{where}{key}", v, maximum)
        return v

    def too_costly(self, name: str, value, maximum) -> ProfileError:
        """A count or time past what any measurement needs: it would only make the audit hang."""
        def num(v) -> str:
            return f"{v:,}" if isinstance(v, int) else f"{v:g}"

        return self.fail(name, f"is {num(value)}, over its limit of {num(maximum)}.",
                         fix=f"Use at most {num(maximum)}: the limits keep an audit to minutes per model (a profile's "
                             "measure.min_seconds/max_seconds already stop a measurement once its median is stable).")

    def number(self, data: Mapping, key: str, where: str, default: float | None,
               positive: bool, maximum: float | None = None) -> float | None:
        v = data.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise self.fail(f"{where}{key}", f"must be a number, not {v!r}.")
        if positive and v <= 0:
            raise self.fail(f"{where}{key}", f"must be greater than 0; got {v}.")
        if not positive and v < 0:
            raise self.fail(f"{where}{key}", f"must not be negative; got {v}.")
        if maximum is not None and v > maximum:
            raise self.too_costly(f"{where}{key}", v, maximum)
        return float(v)
