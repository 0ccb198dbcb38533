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


def test_vault_encrypt_decrypt_and_refusals(run, tmp_path):
    run("init", "--demo")
    assert stat.S_IMODE((run.instance / "keys" / "master.key").stat().st_mode) == 0o600
    plain = tmp_path / "acte.pdf"
    plain.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 5000)
    sealed, back = tmp_path / "acte.sxv", tmp_path / "acte.back.pdf"
    run("vault", "encrypt", "--tenant", "40192", str(plain), str(sealed))
    assert b"%PDF" not in sealed.read_bytes()
    run("vault", "decrypt", "--tenant", "40192", str(sealed), str(back))
    assert back.read_bytes() == plain.read_bytes()
    # Existing output, wrong commune, tampered file: refused, nothing written.
    assert (
        run("vault", "decrypt", "--tenant", "40192", str(sealed), str(back), ok=False).exit_code
        == 78
    )
    other = tmp_path / "other.pdf"
    result = run("vault", "decrypt", "--tenant", "40088", str(sealed), str(other), ok=False)
    assert result.exit_code == 65 and "altérées" in result.output and not other.exists()
    damaged = bytearray(sealed.read_bytes())
    damaged[-20] ^= 1
    (tmp_path / "bad.sxv").write_bytes(bytes(damaged))
    result = run(
        "vault", "decrypt", "--tenant", "40192", str(tmp_path / "bad.sxv"), str(other), ok=False
    )
    assert result.exit_code == 65 and not other.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    truncated = tmp_path / "cut.sxv"
    truncated.write_bytes(sealed.read_bytes()[:-16])
    assert (
        run("vault", "decrypt", "--tenant", "40192", str(truncated), str(other), ok=False).exit_code
        == 65
    )
    assert run("audit", "verify").exit_code == 0


def test_keys_rotation_commands(run, tmp_path):
    run("init", "--demo")
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"registre des naissances 2026")
    run("vault", "encrypt", "--tenant", "40192", str(plain), str(tmp_path / "a.sxv"))
    status = run("keys", "status").output
    assert "40192\tv1\tactive" in status and "Clé maîtresse : file:" in status
    assert "version 2" in run("keys", "rotate-tenant", "40192").output
    old_master = (run.instance / "keys" / "master.key").read_bytes()
    assert "renouvelée" in run("keys", "rotate-master").output
    assert (run.instance / "keys" / "master.key").read_bytes() != old_master
    status = run("keys", "status").output
    assert "40192\tv1\tretirée" in status and "40192\tv2\tactive" in status
    run("vault", "decrypt", "--tenant", "40192", str(tmp_path / "a.sxv"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == plain.read_bytes()
    assert "Coffre intègre" in run("vault", "verify").output
    assert run("audit", "verify").exit_code == 0


def test_vault_verify_lists_damaged_objects(run, tmp_path):
    import io

    from securex.db import make_engine, make_sessionmaker, transaction, utcnow
    from securex.vault import master_key_source, open_vault

    run("init", "--demo")
    from securex.config import load_settings

    settings = load_settings(
        environ={"SECUREX_INSTANCE": str(run.instance), "SECUREX_DATABASE_URL": run.url}
    )
    vault = open_vault(master_key_source(settings, {}), settings.instance)
    engine = make_engine(run.url)
    with transaction(make_sessionmaker(engine)) as db:
        good = vault.put(db, "40192", io.BytesIO(b"ok" * 1000), now=utcnow()).id
        bad = vault.put(db, "40088", io.BytesIO(b"ko" * 1000), now=utcnow()).id
    engine.dispose()
    blob = next((run.instance / "blobs").glob(f"??/??/{bad}"))
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    result = run("vault", "verify", ok=False)
    assert result.exit_code == 1
    assert bad in result.output and good not in result.output


def test_init_refuses_a_database_of_another_instance(run, tmp_path):
    run("init")
    env = {
        "SECUREX_INSTANCE": str(tmp_path / "second"),
        "SECUREX_DATABASE_URL": run.url,
        "SECUREX_CONFIG": "",
    }
    result = CliRunner().invoke(main, ["init"], env=env)
    assert result.exit_code == 78 and "keys/" in result.output
    assert not (tmp_path / "second" / "keys" / "instance.key").exists()


def test_audit_checkpoint_proof_and_offline_check(run, tmp_path):
    run("init", "--demo")
    note = run("audit", "checkpoint").output
    assert "/securex-audit\n" in note and "\u2014 " in note
    assert "Rien de nouveau" in run("audit", "checkpoint").output
    key = run("audit", "public-key").output.strip()
    proof = tmp_path / "proof.json"
    run("audit", "proof", "3", "-o", str(proof))
    roots = tmp_path / "roots.pem"
    roots.write_text(run("pki", "roots").output)
    # Offline: nothing but the file, the platform's key (and the TSA's roots).
    offline = CliRunner().invoke(
        main,
        ["audit", "check-proof", str(proof), "--key", key, "--tsa-roots", str(roots)],
        env={"SECUREX_INSTANCE": str(tmp_path / "nowhere"), "SECUREX_CONFIG": ""},
    )
    assert offline.exit_code == 0 and "Preuve valide" in offline.output
    data = json.loads(proof.read_text())
    data["event"] = data["event"].replace('"id":3', '"id":4')
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = run("audit", "check-proof", str(bad), "--key", key, ok=False)
    assert result.exit_code == 1 and "INVALIDE" in result.output
    assert "point(s) de contrôle vérifié(s)" in run("audit", "verify").output
    assert run("audit", "proof", "99999", ok=False).exit_code == 66


def test_audit_verify_detects_a_forged_checkpoint(run):
    run("init", "--demo")
    run("audit", "checkpoint")
    engine = make_engine(run.url)
    with engine.begin() as conn:
        if ENGINE == "sqlite":
            conn.execute(text("DROP TRIGGER audit_checkpoints_no_update"))
        else:
            conn.execute(text("DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints"))
        note = conn.execute(text("SELECT note FROM audit_checkpoints")).scalar_one()
        size = note.split("\n")[1]
        forged = note.replace(f"\n{size}\n", f"\n{int(size) + 5}\n")
        conn.execute(text("UPDATE audit_checkpoints SET note = :n"), {"n": forged})
    engine.dispose()
    result = run("audit", "verify", ok=False)
    assert result.exit_code == 1 and "point de contrôle" in result.output


def test_evidence_file_for_a_subject(run, tmp_path):
    run("init", "--demo")
    run("user", "disable", "agent.dax@demo.securex.fr")
    run("user", "enable", "agent.dax@demo.securex.fr")
    engine = make_engine(run.url)
    with engine.connect() as conn:
        subject = conn.execute(
            text("SELECT subject FROM audit_events WHERE action = 'accounts:user:enabled'")
        ).scalar()
    engine.dispose()
    out = tmp_path / "dossier"
    assert "3 événement(s)" in run("audit", "evidence", subject, "-o", str(out)).output
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["subject"] == subject and len(evidence["events"]) == 3
    pdf = (out / "evidence.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"evidence.json" in pdf
    key = run("audit", "public-key").output.strip()
    assert (
        "Dossier valide"
        in run("audit", "check-evidence", str(out / "evidence.json"), "--key", key).output
    )
    # A listed event of another subject, or an edited one, makes the dossier invalid.
    foreign = json.loads(run("audit", "proof", "2").output)
    evidence["events"].append({k: foreign[k] for k in ("event", "leaf_index", "inclusion")})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(evidence))
    result = run("audit", "check-evidence", str(bad), "--key", key, ok=False)
    assert result.exit_code == 1 and "INVALIDE" in result.output
    assert (
        run("audit", "evidence", "nothing:here", "-o", str(tmp_path / "x"), ok=False).exit_code
        == 66
    )
