"""Configuration: dataclasses whose defaults are the reference settings, with named profiles and overrides
from YAML files and papermill parameters.

A profile is a dict of overrides (``quick`` for tests, ``full`` for the real run); ``with_overrides`` checks
every key so that a misspelt knob fails loudly instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _coerce(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the type the field is annotated with (dataclass annotations are strings here): numbers
    written as strings (YAML 1.1 reads ``1e-3`` as a string), integral floats for ints; anything else that does
    not fit raises ConfigError naming the option, the expected type and the value."""
    ann = annotation.replace(" ", "")
    optional = "None" in ann.split("|")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"option {name} cannot be null (expected {annotation})")
    base = [a for a in ann.split("|") if a != "None"]
    base = base[0] if len(base) == 1 else ann
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
            raise TypeError
        if base == "int":
            if isinstance(value, bool):
                raise TypeError
            v = float(value) if isinstance(value, str) else value
            if isinstance(v, float) and v.is_integer():
                return int(v)
            if isinstance(v, int):
                return v
            raise TypeError
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "str":
            if isinstance(value, str):
                return value
            raise TypeError
    except (TypeError, ValueError):
        raise ConfigError(f"option {name} expects {annotation}, got {value!r} ({type(value).__name__})") from None
    return value


def with_overrides(cfg: T, overrides: dict[str, Any] | None = None, **kw) -> T:
    """Return a copy of dataclass ``cfg`` with fields replaced; unknown keys raise ConfigError, and values are
    checked against (and, for numbers written as strings, converted to) the fields' types."""
    changes = dict(overrides or {}, **kw)
    names = {f.name: f for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {type(cfg).__name__}; valid: {sorted(names)}")
    for k, v in list(changes.items()):
        cur = getattr(cfg, k)
        if isinstance(cur, tuple) and isinstance(v, list):
            changes[k] = tuple(v)
        elif dataclasses.is_dataclass(cur) and isinstance(v, dict):  # nested config, e.g. world: {seed: 1}
            changes[k] = with_overrides(cur, v)
        elif isinstance(names[k].type, str):
            changes[k] = _coerce(k, names[k].type, v)
    try:
        return dataclasses.replace(cfg, **changes)
    except ValueError as e:  # the config's own checks (__post_init__)
        raise ConfigError(f"{type(cfg).__name__}: {e}") from None


def load_yaml(cfg: T, path: str | Path) -> T:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}; write one 'option: value' per line") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file: a config is YAML text, 'option: value' per line") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value, got {type(data).__name__}")
    try:
        return with_overrides(cfg, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(*parts: Any, n: int = 12) -> str:
    """A short stable hash of dataclasses / dicts / strings (JSON with sorted keys)."""
    blob = json.dumps([to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


PROFILES = ("quick", "full")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; use one of {PROFILES}")
    return profile


def check_seed(name: str, value) -> int:
    """A seed (or another index that seeds a generator) must be a non-negative integer: numpy's generators refuse
    negative ones with a message that names no parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (it seeds a random generator), got {value!r}: pass "
                         f"0 or a positive integer")
    return int(value)
