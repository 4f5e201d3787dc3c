"""Shared fixtures: small generated databases under tmp_path or in a throwaway PostgreSQL.

A test module marked `pytestmark = pytest.mark.both_engines` runs each test that uses a database
fixture twice: on a SQLite file and on a PostgreSQL database in a cluster the session starts.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from schemewatch import generator, schemes, store

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config):
    """Ctrl-C works on the commands tests start, however `make test` itself was started.

    A shell that starts a job in the background (`make test &`, a script under nohup) makes it
    ignore SIGINT, and every command it starts inherits that: the tests that press Ctrl-C on a
    monitor or feed would wait for it in vain.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines"):
        metafunc.parametrize("engine", ENGINES)


@pytest.fixture
def engine() -> str:
    """The store engine under test (SQLite unless the module is marked both_engines)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster on a Unix socket; fails (never skips) without the server."""
    from schemewatch.errors import DatabaseError
    from schemewatch.throwaway_postgres import ThrowawayCluster

    try:
        cluster = ThrowawayCluster().start()
    except DatabaseError as exc:
        pytest.fail(f"PostgreSQL tests need the server programs: {exc}")
    yield cluster
    cluster.stop()


def new_database(engine: str, folder: Path, request, name: str = "transactions.db"):
    """Where a new, empty database of `engine` goes: a file under `folder` or a PostgreSQL URL."""
    if engine == "sqlite":
        return folder / name
    cluster = request.getfixturevalue("postgres_cluster")
    return _dropped_after_the_test(cluster, cluster.create_database(), request)


def copy_database(engine: str, source, folder: Path, request, name: str = "transactions.db"):
    """A private copy of a template database of `engine`."""
    if engine == "sqlite":
        shutil.copy(source, folder / name)
        return folder / name
    cluster = request.getfixturevalue("postgres_cluster")
    return _dropped_after_the_test(cluster, cluster.create_database(template=source.name), request)


def _dropped_after_the_test(cluster, url: str, request):
    """The test's PostgreSQL database is dropped when it ends (the cluster stays small)."""
    location = store.locate(url)
    request.addfinalizer(lambda: cluster.drop_database(location.name))
    return location


@pytest.fixture
def empty_db(engine, tmp_path, request):
    """A new database location (nothing created yet on SQLite; an empty database on PostgreSQL)."""
    return new_database(engine, tmp_path, request, "empty.db")


def _generated(location) -> None:
    conn = store.open_database(location)
    generator.generate(conn, transactions=6_000, seed=7, anomaly_rate=0.02)
    if not store.is_postgres(conn):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.fixture(scope="session")
def generated_template_pg(postgres_cluster):
    """The generated template in PostgreSQL, built once per test session when asked for."""
    location = store.locate(postgres_cluster.create_database("template_generated"))
    _generated(location)
    return location


@pytest.fixture(scope="session")
def generated_template(tmp_path_factory) -> Path:
    """A 6,000-row generated database, built once per test session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    _generated(path)
    return path


@pytest.fixture
def generated_db(engine, tmp_path, request):
    """A private copy of the generated database (a Path, or a DatabaseURL on PostgreSQL)."""
    template = request.getfixturevalue(
        "generated_template" if engine == "sqlite" else "generated_template_pg"
    )
    return copy_database(engine, template, tmp_path, request)


@pytest.fixture
def conn(generated_db):
    connection = store.open_database(generated_db)
    yield connection
    connection.close()


@pytest.fixture
def empty_conn(empty_db):
    connection = store.open_database(empty_db)
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


@pytest.fixture(scope="session")
def scored_template_pg(generated_template_pg, postgres_cluster, tmp_path_factory):
    """The same in PostgreSQL: the scored template database and its models."""
    from schemewatch import modeling
    from schemewatch.detector import AutoencoderConfig
    from schemewatch.monitor import Monitor

    db = store.locate(
        postgres_cluster.create_database("scored_template", template=generated_template_pg.name)
    )
    models = tmp_path_factory.mktemp("scored_pg") / "modeling"
    modeling.train(db, models, config=AutoencoderConfig(epochs=3, batch_size=512, seed=1))
    monitor = Monitor(db, models)
    monitor.tick()
    monitor.conn.close()
    return db, models


# -- the dashboard site every AppTest uses ---------------------------------------------------------

PASSWORD = "a long enough secret"
VIEWS = "schemewatch/dashboard/views"
ACCOUNTS = (("asha", "auditor"), ("ravi", "supervisor"), ("meera", "admin"))


def make_site(scored_template, tmp_path, monkeypatch, accounts=ACCOUNTS, request=None):
    """A private copy of the scored database and its models, with accounts added by 'setup'.

    With `request` of a test running on PostgreSQL, the copy is a PostgreSQL database.
    """
    db, models = scored_template
    engine = request.getfixturevalue("engine") if request is not None else "sqlite"
    if engine != "sqlite":
        db, models = request.getfixturevalue("scored_template_pg")
    target = copy_database(engine, db, tmp_path, request)
    shutil.copytree(models, tmp_path / "modeling")
    add_accounts(target, accounts)
    monkeypatch.setenv("SCHEMEWATCH_DB", str(target))
    monkeypatch.setenv("SCHEMEWATCH_MODEL_DIR", str(tmp_path / "modeling"))
    monkeypatch.setenv("SCHEMEWATCH_CREDENTIALS", str(tmp_path / "no-credentials.yaml"))
    return tmp_path


def site_db():
    """The database of the site the current test made (what the dashboard reads)."""
    import os

    return store.locate(os.environ["SCHEMEWATCH_DB"])


def add_accounts(db_path, accounts=ACCOUNTS) -> None:
    """Dashboard accounts with PASSWORD, added by the actor 'setup' (tests ignore that actor)."""
    from schemewatch import users

    conn = store.open_database(db_path)
    for name, role in accounts:
        users.add_user(conn, name, role, PASSWORD, actor="setup")
    conn.close()


@pytest.fixture
def site(scored_template, tmp_path, monkeypatch, request, engine) -> Path:
    """The scored site with asha (auditor), ravi (supervisor) and meera (admin)."""
    return make_site(scored_template, tmp_path, monkeypatch, request=request)


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


def today_at_ist(hour: float):
    """A clock running from the latest `hour` o'clock IST (today's, or yesterday's if today's
    is still to come), as fast as the real one (agents' counters are closed at night: a feed's
    payouts depend on the hour)."""
    started = time.time()
    ist_midnight = (int(started) + schemes.IST_OFFSET_SECONDS) // schemes.DAY * schemes.DAY
    at = ist_midnight - schemes.IST_OFFSET_SECONDS + int(hour * 3600)
    if at > started:
        at -= schemes.DAY
    return lambda: at + (time.time() - started)
