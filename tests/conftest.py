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


# -- the dashboard site every AppTest uses ---------------------------------------------------------

PASSWORD = "a long enough secret"
VIEWS = "schemewatch/dashboard/views"
ACCOUNTS = (("asha", "auditor"), ("ravi", "supervisor"), ("meera", "admin"))


def make_site(scored_template, tmp_path, monkeypatch, accounts=ACCOUNTS) -> Path:
    """A private copy of the scored database and its models, with accounts added by 'setup'."""
    db, models = scored_template
    shutil.copy(db, tmp_path / "transactions.db")
    shutil.copytree(models, tmp_path / "modeling")
    add_accounts(tmp_path / "transactions.db", accounts)
    monkeypatch.setenv("SCHEMEWATCH_DB", str(tmp_path / "transactions.db"))
    monkeypatch.setenv("SCHEMEWATCH_MODEL_DIR", str(tmp_path / "modeling"))
    monkeypatch.setenv("SCHEMEWATCH_CREDENTIALS", str(tmp_path / "no-credentials.yaml"))
    return tmp_path


def add_accounts(db_path, accounts=ACCOUNTS) -> None:
    """Dashboard accounts with PASSWORD, added by the actor 'setup' (tests ignore that actor)."""
    from schemewatch import users

    conn = store.open_database(db_path)
    for name, role in accounts:
        users.add_user(conn, name, role, PASSWORD, actor="setup")
    conn.close()


@pytest.fixture
def site(scored_template, tmp_path, monkeypatch) -> Path:
    """The scored site with asha (auditor), ravi (supervisor) and meera (admin)."""
    return make_site(scored_template, tmp_path, monkeypatch)


def open_dashboard():
    """A fresh AppTest of the dashboard, run once (the login form)."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=90)
    app.run()
    return app


def login(username: str, password: str = PASSWORD):
    """A dashboard session signed in (or refused) through the login form."""
    app = open_dashboard()
    app.text_input[0].input(username)
    app.text_input[1].input(password)
    app.button[0].click()
    app.run()
    return app
