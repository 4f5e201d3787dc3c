"""Shared fixtures: small generated databases under tmp_path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from schemewatch import generator, store

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def generated_template(tmp_path_factory) -> Path:
    """A 6,000-row generated database, built once per test session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    conn = store.open_database(path)
    generator.generate(conn, transactions=6_000, seed=7, anomaly_rate=0.02)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture
def generated_db(generated_template, tmp_path) -> Path:
    """A private copy of the generated database."""
    path = tmp_path / "transactions.db"
    shutil.copy(generated_template, path)
    return path


@pytest.fixture
def conn(generated_db):
    connection = store.open_database(generated_db)
    yield connection
    connection.close()


@pytest.fixture
def empty_conn(tmp_path):
    connection = store.open_database(tmp_path / "empty.db")
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def scored_template(generated_template, tmp_path_factory) -> tuple[Path, Path]:
    """The template database with a small trained model and every row scored."""
    from schemewatch import modeling
    from schemewatch.detector import AutoencoderConfig
    from schemewatch.monitor import Monitor

    folder = tmp_path_factory.mktemp("scored")
    db = folder / "transactions.db"
    shutil.copy(generated_template, db)
    models = folder / "modeling"
    modeling.train(db, models, config=AutoencoderConfig(epochs=3, batch_size=512, seed=1))
    monitor = Monitor(db, models)
    monitor.tick()
    monitor.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    monitor.conn.close()
    return db, models
