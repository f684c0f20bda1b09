"""Validation and coercion of config values: what every config dataclass (run, model,
experiment) uses to check its fields and to take values from files and the command line.
A leaf: it imports nothing of mnistlab but its errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields
from typing import Any

from .errors import ConfigError


def brief(value, most: int = 80) -> str:
    """A short, printable rendering of a value from a file or the command line: bounded in the
    work it does (reprlib cuts deep and long values) and in length, control characters escaped."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, most, most, 40
    text = safe_text(value if isinstance(value, str) else r.repr(value))
    return text if len(text) <= most else text[: most - 3] + "..."


def safe_text(text: str) -> str:
    """Control characters (newlines, escape sequences, ...) shown escaped, never acted on by a
    terminal: for anything printed that came from disk or the user."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


# ---------------------------------------------------------------- declared ranges


def cpus() -> int:
    """This machine's CPUs: the most threads a setting may ask for."""
    import os

    return os.cpu_count() or 1


def ranged(default: Any, least: float, most: float | typing.Callable[[], float], why: str = "") -> Any:
    """A numeric config field and its range, declared together: ``lr: float = ranged(1e-3, 1e-9, 10)``.
    A tuple field's range holds for each of its values; `most` may be a function (the CPUs).
    ``check_ranges`` checks every such field before any work; ``tests/hostile/test_ranges.py``
    fails when a numeric field of a config has none."""
    return dataclasses.field(default=default, metadata={"range": (least, most, why)})


def field_range(f: dataclasses.Field) -> tuple[float, float, str] | None:
    r = f.metadata.get("range")
    if r is None:
        return None
    least, most, why = r
    return least, (most() if callable(most) else most), why


def _fmt(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def check_ranges(obj, section: str) -> None:
    """Every ranged field of dataclass `obj` within its range (a finite number), else one
    ConfigError naming the key and the range."""
    for f in fields(obj):
        r = field_range(f)
        if r is None:
            continue
        least, most, why = r
        value = getattr(obj, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if v is None:
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and least <= v <= most
            check(
                ok, f"{section}.{f.name}", f"must be in {_fmt(least)}..{_fmt(most)}{f' ({why})' if why else ''}", value
            )


def check_count(value: int, key: str, most: int, least: int = 1) -> None:
    """A count that sizes work (epochs, rounds, widths, steps): within least..most."""
    check(least <= value <= most, key, f"must be in {least:,}..{most:,}", value)


def check_threads(value: int, key: str) -> None:
    """A thread count: 0 (torch's choice) up to this machine's CPUs."""
    import os

    cpus = os.cpu_count() or 1
    check(0 <= value <= cpus, key, f"must be in 0..{cpus} (this machine's CPUs)", value)


def as_number(value) -> float | None:
    """`value` as a float when it is a real number (not a bool, not NaN), else None: for figures
    read from files that may have been edited."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def check(ok: bool, key: str, why: str, value) -> None:
    """Raise ConfigError naming `key` unless `ok`: the one way configs validate a value."""
    if not ok:
        raise ConfigError(f"{why}, got {brief(value if not isinstance(value, str) else repr(value))}", subject=key)


# ---------------------------------------------------------------- coercion


def parse_bool(text: str, key: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected true or false, got {brief(repr(text))}", subject=key)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn `value` (a string from the command line, or a parsed TOML/YAML value) into `hint`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"bad value {value!r}", subject=key)
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items = [t.strip() for t in text.split(",") if t.strip()] if text else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"expected a list, got {brief(value)}", subject=key)
        elem = args[0] if args else str
        out = [coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value, key)
        raise ConfigError(f"expected true or false, got {brief(value)}", subject=key)
    if hint in (int, float):
        return _number(value, hint, key)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected a string, got {brief(value)}", subject=key)
    return value


INT_LIMIT = 2**62  # every int setting fits 64 bits with room for seed + offset arithmetic


def _number(value: Any, hint: type, key: str) -> int | float:
    """An int or a finite float: never NaN, infinity, a bool, or an int too large for 64 bits."""
    what = "an integer" if hint is int else "a number"
    # bools are ints to Python, never numbers to a user; floats are not ints either
    accepted = (int,) if hint is int else (int, float)
    out = None
    if isinstance(value, accepted) and not isinstance(value, bool):
        out = value
    elif isinstance(value, str) and len(value) <= 100:
        try:
            out = hint(value.strip())
        except (ValueError, OverflowError):
            pass
    if out is None:
        shown = value if not isinstance(value, str) or len(value) <= 100 else value[:40] + "..."
        raise ConfigError(f"expected {what}, got {brief(shown)}", subject=key)
    if hint is int:
        if not -INT_LIMIT < out < INT_LIMIT:
            raise ConfigError(f"{what} within ±2^62 expected, got one of {len(str(abs(out)))} digits", subject=key)
        return int(out)
    try:
        out = float(out)
    except OverflowError:
        raise ConfigError(f"a finite number expected, got one of {len(str(abs(out)))} digits", subject=key) from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ConfigError(f"a finite number expected, got {out}", subject=key)
    return out


def _hints(obj) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def apply_overrides(obj, values: dict[str, Any], section: str):
    """A copy of dataclass `obj` with `values` coerced to its field types; unknown keys are errors."""
    names = {f.name for f in fields(obj)}
    hints = _hints(obj)
    changes = {}
    for k, v in values.items():
        if k not in names:
            raise ConfigError(f"unknown key {section}.{k} (known: {', '.join(sorted(names))})")
        changes[k] = coerce(v, hints[k], f"{section}.{k}")
    new = dataclasses.replace(obj, **changes)
    check_ranges(new, section)  # before anything is built from it
    return new
