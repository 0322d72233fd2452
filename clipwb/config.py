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

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def with_overrides(cfg: T, overrides: dict[str, Any] | None = None, **kw) -> T:
    """Return a copy of dataclass ``cfg`` with fields replaced; unknown keys raise ConfigError."""
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
    return dataclasses.replace(cfg, **changes)


def load_yaml(cfg: T, path: str | Path) -> T:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value, got {type(data).__name__}")
    return with_overrides(cfg, data)


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
