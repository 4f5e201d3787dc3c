from pathlib import Path

from schemewatch.settings import load_settings


def test_defaults_are_what_users_expect():
    settings = load_settings(environ={})
    assert settings.db_path == Path("transactions.db")
    assert settings.model_dir == Path("modeling")


def test_environment_overrides_defaults_and_options_override_environment():
    environ = {"SCHEMEWATCH_DB": "/data/env.db", "SCHEMEWATCH_MODEL_DIR": "/models"}
    assert load_settings(environ=environ).db_path == Path("/data/env.db")
    assert load_settings(environ=environ).model_dir == Path("/models")
    assert load_settings(environ=environ, db_path=Path("cli.db")).db_path == Path("cli.db")
