"""A sweep's search space: ``--grid key=v1,v2`` lists (a grid's size counted before any point is
listed) and ``--search key=LOW:HIGH[:log]`` ranges or ``key=a|b`` choices; a point's folder name."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

from ...errors import ConfigError

_RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*(?::\s*(log))?\s*$")


# ---------------------------------------------------------------- the search space


def _split_values(item: str, flag: str) -> tuple[str, list[str]]:
    if "=" not in item:
        raise ConfigError(
            f"{flag} {item!r}: expected key=v1,v2,..." + (" or key=LOW:HIGH[:log]" if flag == "--search" else "")
        )
    key, values = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ConfigError(f"{flag} {item!r}: no key before '='")
    parts = [v.strip() for v in values.split("|" if "|" in values else ",")]
    if not all(parts):
        raise ConfigError(f"{flag} {item!r}: empty value")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{flag} {item!r}: a value is given twice")
    return key, parts


MAX_GRID = 10_000  # points of one grid, counted (Space.size) before any is listed


@dataclass
class Range:
    low: float
    high: float
    log: bool
    integer: bool


@dataclass
class Space:
    """Keys to vary: each a list of values (categorical) or a numeric Range."""

    dims: dict[str, list[str] | Range] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.dims)

    @property
    def discrete(self) -> bool:
        return all(isinstance(v, list) for v in self.dims.values())

    @property
    def size(self) -> int:
        """How many grid points: counted, never built (a 10^10-point grid must not be listed)."""
        return math.prod(len(v) for v in self.dims.values() if isinstance(v, list))

    def points(self) -> list[tuple[str, ...]]:
        """Every grid point, in the order the values were given (the table's order); plan_sweep
        has bounded their count (MAX_GRID)."""
        return list(itertools.product(*self.dims.values()))

    def spec(self) -> dict:
        return {
            k: v if isinstance(v, list) else {"low": v.low, "high": v.high, "log": v.log, "int": v.integer}
            for k, v in self.dims.items()
        }

    def suggest(self, trial) -> dict[str, str]:
        """The trial's values, as --set strings."""
        out = {}
        for k, v in self.dims.items():
            if isinstance(v, list):
                out[k] = trial.suggest_categorical(k, v)
            elif v.integer:
                out[k] = str(trial.suggest_int(k, int(v.low), int(v.high), log=v.log))
            else:
                out[k] = repr(trial.suggest_float(k, v.low, v.high, log=v.log))
        return out


def _number(text: str, item: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ConfigError(f"--search {item!r}: {text!r} is not a number") from None
    if not math.isfinite(x):
        raise ConfigError(f"--search {item!r}: bounds must be finite")
    return x


def parse_space(grid: list[str] | None = None, search: list[str] | None = None) -> Space:
    """--grid key=v1,v2 (values split on '|' when there is one, for list values) and --search
    key=LOW:HIGH[:log] (int when both bounds are) or key=a|b|c."""
    space = Space()
    for flag, items in (("--grid", grid or []), ("--search", search or [])):
        for item in items:
            m = _RANGE.match(item.split("=", 1)[1]) if flag == "--search" and "=" in item else None
            if m:
                key = item.split("=", 1)[0].strip()
                lo, hi = _number(m[1], item), _number(m[2], item)
                if not lo < hi:
                    raise ConfigError(f"--search {item!r}: LOW must be below HIGH")
                if m[3] and lo <= 0:
                    raise ConfigError(f"--search {item!r}: a log range needs LOW > 0")
                integer = all(re.fullmatch(r"[-+]?\d+", s.strip()) for s in (m[1], m[2]))
                value: list[str] | Range = Range(lo, hi, bool(m[3]), integer)
            elif (
                flag == "--search"
                and "=" in item
                and ":" in item.split("=", 1)[1]
                and not re.search(r"[|,]", item.split("=", 1)[1])
            ):
                raise ConfigError(f"--search {item!r}: expected LOW:HIGH[:log] with numbers LOW < HIGH")
            else:
                key, value = _split_values(item, flag)
            if key in space.dims:
                raise ConfigError(f"{flag} {item!r}: {key} is given twice")
            space.dims[key] = value
    if not space.dims:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2 or --search key=LOW:HIGH")
    return space


def _slug(combo: dict[str, str]) -> str:
    def short(v: str) -> str:
        try:
            x = float(v)
        except ValueError:
            return v
        return v if len(v) <= 8 else f"{x:.4g}"

    return "_".join(f"{k.split('.')[-1]}-{re.sub(r'[^A-Za-z0-9.]+', '-', short(v))}" for k, v in combo.items())[:100]
