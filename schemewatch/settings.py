"""Settings built once at start-up: defaults, then environment (SCHEMEWATCH_*), then options."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from schemewatch.store.engine import DatabaseURL, locate

_DATABASE = "Path | DatabaseURL"


@dataclass(frozen=True)
class Settings:
    """Paths and knobs every command shares."""

    db_path: Path | DatabaseURL = Path("transactions.db")  # a SQLite file or postgresql:// URL
    model_dir: Path = Path("modeling")
    # Read once, by the first command or dashboard run after upgrading, then no longer used:
    # accounts live in the database.
    credentials_path: Path = Path("credentials.yaml")
    busy_timeout_ms: int = 10_000
    session_hours: int = 12  # a dashboard session and its cookie last this long at most
    idle_minutes: int = 30  # a dashboard session with no page load for this long ends


def load_settings(environ: dict | None = None, **overrides) -> Settings:
    """Defaults, overridden by SCHEMEWATCH_<FIELD> variables, overridden by non-None options."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in fields(Settings):
        raw = environ.get(f"SCHEMEWATCH_{field.name.upper()}")
        if raw is None:
            raw = environ.get(f"SCHEMEWATCH_{field.name.upper().removesuffix('_PATH')}")
        if raw is not None:
            values[field.name] = _coerce(field.type, raw)
    values.update({k: _coerce_value(k, v) for k, v in overrides.items() if v is not None})
    return replace(Settings(), **values)


def _coerce(type_name, raw: str):
    if type_name in ("int", int):
        return int(raw)
    # A database is a SQLite file or a postgresql:// URL (store/engine.py).
    return locate(raw) if type_name == _DATABASE else Path(raw)


def _coerce_value(name: str, value):
    field_type = {f.name: f.type for f in fields(Settings)}[name]
    if isinstance(value, int | Path | DatabaseURL):
        return value
    return _coerce(field_type, str(value))
