"""Configuration: defaults, SECUREX_* overrides, clear errors."""

from __future__ import annotations

import pytest

from securex.config import load_settings
from securex.errors import ConfigError


def test_defaults():
    s = load_settings(environ={})
    assert s["security.lockout_threshold"] == 5
    assert s["security.session_idle_minutes"] == 30
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("/var/securex.db")


def test_environment_overrides_with_types(tmp_path):
    s = load_settings(
        environ={
            "SECUREX_INSTANCE": str(tmp_path),
            "SECUREX_DATABASE_URL": "postgresql+psycopg://db/securex",
            "SECUREX_SECURITY_LOCKOUT_THRESHOLD": "7",
            "SECUREX_SECURITY_SESSION_COOKIE_SECURE": "false",
        }
    )
    assert s.instance == tmp_path
    assert s.database_url == "postgresql+psycopg://db/securex"
    assert s["security.lockout_threshold"] == 7
    assert s["security.session_cookie_secure"] is False


def test_config_file_overrides_defaults(tmp_path):
    extra = tmp_path / "prod.toml"
    extra.write_text('base_url = "https://etat-civil.example.fr"\n[server]\nworkers = 8\n')
    s = load_settings(environ={"SECUREX_CONFIG": str(extra), "SECUREX_SERVER_WORKERS": "4"})
    assert s["base_url"] == "https://etat-civil.example.fr"
    assert s["server.workers"] == 4  # the environment wins over the file


@pytest.mark.parametrize(
    "environ,message",
    [
        ({"SECUREX_SECURITY_LOCKOUT_THRESHOLD": "five"}, "nombre entier"),
        ({"SECUREX_SECURITY_SESSION_COOKIE_SECURE": "maybe"}, "true ou false"),
        ({"SECUREX_CONFIG": "/nonexistent/securex.toml"}, "introuvable"),
    ],
)
def test_bad_values_are_config_errors(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_unknown_keys_in_a_file_are_refused(tmp_path):
    extra = tmp_path / "typo.toml"
    extra.write_text("[security]\nlockout_treshold = 3\n")
    with pytest.raises(ConfigError, match="inconnue"):
        load_settings(environ={"SECUREX_CONFIG": str(extra)})
    extra.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="illisible"):
        load_settings(environ={"SECUREX_CONFIG": str(extra)})
