"""The `securex` command: demo instance, users, clients, audit, errors without tracebacks."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from securex.cli import main
from securex.db import make_engine
from tests.conftest import ENGINE


@pytest.fixture
def run(tmp_path: Path, database_url: str):
    instance = tmp_path / "inst"
    env = {
        "SECUREX_INSTANCE": str(instance),
        "SECUREX_DATABASE_URL": database_url,
        "SECUREX_CONFIG": "",
    }

    def invoke(*args: str, input: str | None = None, ok: bool = True):
        result = CliRunner().invoke(main, list(args), env=env, input=input)
        if ok:
            assert result.exit_code == 0, result.output + str(result.exception)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    invoke.instance = instance  # type: ignore[attr-defined]
    invoke.url = database_url  # type: ignore[attr-defined]
    return invoke


def test_init_demo_writes_the_credentials_contract(run):
    result = run("init", "--demo")
    path = run.instance / "demo-credentials.json"
    assert str(path) in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((run.instance / "keys" / "instance.key").stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert {"tenants", "users", "api_clients"} <= set(data)
    assert data["tenants"] == [
        {"insee": "40192", "name": "Mont-de-Marsan"},
        {"insee": "40088", "name": "Dax"},
    ]
    for user in data["users"]:
        assert set(user) == {"email", "password", "totp_secret", "role", "tenant"}
    roles = sorted((u["tenant"], u["role"]) for u in data["users"])
    assert roles == sorted(
        (t, r) for t in ("40192", "40088") for r in ("officer", "agent", "admin")
    )
    assert sorted(c["category"] for c in data["api_clients"]) == [
        "administration",
        "guichet",
        "notaire",
    ]
    for c in data["api_clients"]:
        assert set(c) == {"name", "category", "token"} and c["token"].startswith("sx_")
    # The file's secrets work: the demo TOTP command agrees with the file.
    officer = next(u for u in data["users"] if u["role"] == "officer")
    code = run("totp", officer["email"]).output.strip()
    assert pyotp.TOTP(officer["totp_secret"]).verify(code, valid_window=1)
    assert run("audit", "verify").output.startswith("Journal d'audit intègre")


def test_init_twice_is_refused(run):
    run("init")
    result = run("init", ok=False)
    assert result.exit_code == 78 and "déjà initialisée" in result.output


def test_totp_only_on_demo_instances(run):
    run("init")
    run("tenant", "add", "40192", "Mont-de-Marsan")
    run(
        "user",
        "add",
        "--email",
        "o@mairie.fr",
        "--name",
        "Olivia Officier",
        "--role",
        "officer",
        "--tenant",
        "40192",
        "--password",
        "un mot de passe long et rare",
    )
    result = run("totp", "o@mairie.fr", ok=False)
    assert result.exit_code != 0 and "démonstration" in result.output


def test_user_lifecycle(run):
    run("init")
    run("tenant", "add", "40088", "Dax")
    out = run(
        "user",
        "add",
        "--email",
        "Agent@Dax.fr",
        "--name",
        "Ana Agent",
        "--role",
        "agent",
        "--tenant",
        "40088",
        input="une phrase de passe solide\nune phrase de passe solide\n",
    ).output
    assert "Compte créé : agent@dax.fr" in out
    assert "agent@dax.fr\tagent\t40088\tsans 2FA\tactif" in run("user", "list").output
    run("user", "set-role", "agent@dax.fr", "officer")
    run("user", "disable", "agent@dax.fr")
    assert (
        "agent@dax.fr\tofficer\t40088\tsans 2FA\tdésactivé"
        in run("user", "list", "--tenant", "40088").output
    )
    run("user", "reset-2fa", "agent@dax.fr")
    log = run("audit", "verify").output
    assert "intègre" in log


@pytest.mark.parametrize(
    "args,code,message",
    [
        (
            [
                "user",
                "add",
                "--email",
                "x@dax.fr",
                "--name",
                "X",
                "--role",
                "agent",
                "--tenant",
                "40088",
                "--password",
                "short",
            ],
            65,
            "au moins 12 caractères",
        ),
        (
            [
                "user",
                "add",
                "--email",
                "x@dax.fr",
                "--name",
                "X",
                "--role",
                "agent",
                "--tenant",
                "40088",
                "--password",
                "Motdepasse123!",
            ],
            65,
            "trop courant",
        ),
        (
            [
                "user",
                "add",
                "--email",
                "x@dax.fr",
                "--name",
                "X",
                "--role",
                "agent",
                "--tenant",
                "99999",
                "--password",
                "une phrase de passe solide",
            ],
            66,
            "Commune inconnue",
        ),
        (
            [
                "user",
                "add",
                "--email",
                "pas-un-email",
                "--name",
                "X",
                "--role",
                "agent",
                "--tenant",
                "40088",
                "--password",
                "une phrase de passe solide",
            ],
            65,
            "Adresse e-mail invalide",
        ),
        (
            [
                "user",
                "add",
                "--email",
                "p@dax.fr",
                "--name",
                "X",
                "--role",
                "platform_admin",
                "--tenant",
                "40088",
                "--password",
                "une phrase de passe solide",
            ],
            65,
            "plateforme",
        ),
        (["user", "disable", "nobody@dax.fr"], 66, "Aucun compte"),
        (["client", "revoke", "42"], 66, "Aucun client API"),
        (
            ["client", "add", "--name", "N", "--category", "notaire", "--commune", "12"],
            66,
            "Commune inconnue",
        ),
        (["tenant", "add", "40088", "Dax encore"], 65, "existe déjà"),
        (["tenant", "add", "4008", "Dax"], 65, "Code INSEE invalide"),
    ],
)
def test_mistakes_give_a_message_and_exit_code(run, args, code, message):
    run("init")
    run("tenant", "add", "40088", "Dax")
    result = run(*args, ok=False)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_commands_before_init_say_what_to_do(run):
    result = run("user", "list", ok=False)
    assert result.exit_code == 78 and "securex init" in result.output


def test_client_lifecycle(run):
    run("init")
    run("tenant", "add", "40192", "Mont-de-Marsan")
    out = run(
        "client", "add", "--name", "Étude Lafitte", "--category", "notaire", "--commune", "40192"
    ).output
    token = out.strip().splitlines()[-1]
    assert token.startswith("sx_") and len(token) > 40
    listing = run("client", "list").output
    assert "notaire" in listing and token not in listing and token[:10] in listing
    run("client", "revoke", "1")
    assert "révoqué" in run("client", "list").output


def test_audit_verify_fails_on_an_edited_row(run):
    run("init", "--demo")
    engine = make_engine(run.url)
    with engine.begin() as conn:
        if ENGINE == "sqlite":
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_append_only ON audit_events"))
        conn.execute(text("UPDATE audit_events SET actor = 'cli:mallory' WHERE id = 4"))
    engine.dispose()
    result = run("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert "ALTÉRÉ" in result.output and "événement 4" in result.output


def test_instance_folder_is_private(run):
    run("init")
    assert stat.S_IMODE(run.instance.stat().st_mode) == 0o700
    assert stat.S_IMODE((run.instance / "keys").stat().st_mode) == 0o700


def test_failed_init_can_be_run_again(tmp_path, database_url):
    instance = tmp_path / "again"
    broken = {
        "SECUREX_INSTANCE": str(instance),
        "SECUREX_CONFIG": "",
        "SECUREX_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    result = CliRunner().invoke(main, ["init"], env=broken)
    assert result.exit_code == 78 and "SECUREX_DATABASE_URL" in result.output
    assert "Traceback" not in result.output
    assert not (instance / "keys" / "instance.key").exists()
    fixed = {**broken, "SECUREX_DATABASE_URL": database_url}
    assert CliRunner().invoke(main, ["init"], env=fixed).exit_code == 0


def test_disabled_user_can_be_enabled_again(run):
    run("init")
    run("tenant", "add", "40088", "Dax")
    run(
        "user",
        "add",
        "--email",
        "a@dax.fr",
        "--name",
        "A",
        "--role",
        "agent",
        "--tenant",
        "40088",
        "--password",
        "une phrase de passe solide",
    )
    run("user", "disable", "a@dax.fr")
    run("user", "enable", "a@dax.fr")
    assert "a@dax.fr\tagent\t40088\tsans 2FA\tactif" in run("user", "list").output
