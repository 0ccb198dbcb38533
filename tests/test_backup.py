"""`securex backup create | verify | restore`, and the ransomware drill: data made, backup
taken, instance and database destroyed, restore into a new folder and a new database
with the master key from its own copy; every document decrypts, the audit trail
verifies, API tokens and sessions work as before, shreddings made after the backup are
replayed from the lost instance's ledger."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select, text

from securex import backup as backups
from securex.app import create_app
from securex.cli import main
from securex.config import load_settings
from securex.db import make_engine, make_sessionmaker, utcnow
from securex.errors import NotFound
from securex.exchange.models import PliFile
from securex.jobs.service import run_pending
from securex.vault import master_key_source, open_vault
from securex.web.sessions import COOKIE
from tests.conftest import ENGINE, csrf_token


class Cli:
    def __init__(self, instance: Path, url: str, **extra: str) -> None:
        self.env = {
            "SECUREX_INSTANCE": str(instance),
            "SECUREX_DATABASE_URL": url,
            "SECUREX_CONFIG": "",
            **extra,
        }
        self.instance, self.url = instance, url

    def __call__(self, *args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(main, list(args), env=self.env)
        if ok:
            assert result.exit_code == 0, result.output + str(result.exception)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    def settings(self) -> Any:
        return load_settings(environ={k: v for k, v in self.env.items() if v})

    def app(self) -> Any:
        return create_app({"TESTING": True}, settings=self.settings())


@pytest.fixture
def empty_url(_template: Any, tmp_path: Path) -> Any:
    """Another database, empty (no migration): where a restore goes."""
    urls = []

    def make(name: str) -> str:
        if ENGINE == "sqlite":
            return f"sqlite:///{tmp_path / (name + '.db')}"
        db = f"securex_restore_{os.getpid()}_{name}"
        with _template.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db}"))
            conn.execute(text(f"CREATE DATABASE {db}"))
        urls.append(db)
        return re.sub(r"/[^/]*$", f"/{db}", _template.url.render_as_string(hide_password=False))

    yield make
    for db in urls:
        with _template.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))


def _doc_reader(folder: Path) -> str:
    """The reader program that docs/backup-format.md gives, as a file."""
    doc = (Path(__file__).parent.parent / "docs" / "backup-format.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S)
    assert code, "no reader in docs/backup-format.md"
    path = folder / "check_backup.py"
    path.write_text(code.group(1))
    return str(path)


def _destroy_database(url: str) -> None:
    """What ransomware leaves: no table, no row."""
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _login(client: Any, user: dict[str, Any]) -> None:
    page = client.get("/login").get_data(as_text=True)
    answer = client.post(
        "/login",
        data={"csrf_token": csrf_token(page), "email": user["email"], "password": user["password"]},
    )
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/login/totp")
    page = client.get("/login/totp").get_data(as_text=True)
    code = pyotp.TOTP(user["totp_secret"]).now()
    answer = client.post("/login/totp", data={"csrf_token": csrf_token(page), "code": code})
    assert answer.status_code == 302


def _send(client: Any, token: str, name: str, content: bytes) -> int:
    answer = client.post(
        "/api/v1/sends",
        json={
            "subject": "Pièces du dossier",
            "recipients": ["notaire@example.org"],
            "files": [
                {
                    "name": name,
                    "media_type": "application/pdf",
                    "content": base64.b64encode(content).decode(),
                }
            ],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.get_json()
    return int(answer.get_json()["id"])


def _objects(app: Any, pli_id: int) -> list[str]:
    with app.extensions["securex"].sessions() as db:
        return list(db.scalars(select(PliFile.object_id).where(PliFile.pli_id == pli_id)))


def _read(app: Any, object_id: str) -> bytes:
    st = app.extensions["securex"]
    with st.sessions() as db:
        return bytes(st.vault.read_all(db, "40192", object_id))


def test_ransomware_drill(tmp_path, database_url, empty_url):
    cli = Cli(tmp_path / "inst", database_url)
    cli("init", "--demo")
    creds = json.loads((cli.instance / "demo-credentials.json").read_text())
    agent = next(u for u in creds["users"] if u["role"] == "agent" and u["tenant"] == "40192")
    notary = next(c for c in creds["api_clients"] if c["category"] == "notaire")
    token = re.search(r"\bsxp_\S+", cli("token", "add", agent["email"], "--name", "drill").output)
    assert token, "no personal token printed"
    personal = token.group(0)

    # Data: two plis with files in the vault, a logged-in session, audit events.
    app = cli.app()
    web = app.test_client()
    kept_content, revoked_content = os.urandom(200_000), os.urandom(50_000)
    kept = _send(web, personal, "acte.pdf", kept_content)
    revoked = _send(web, personal, "piece.pdf", revoked_content)
    run_pending(app.extensions["securex"].runtime())
    (kept_object,) = _objects(app, kept)
    (revoked_object,) = _objects(app, revoked)
    browser = app.test_client()
    _login(browser, agent)
    assert "Mont-de-Marsan" in browser.get("/").get_data(as_text=True)
    cookie = browser.get_cookie(COOKIE)
    cli("audit", "checkpoint")

    backup = tmp_path / "offsite" / "instance.sxb"
    backup.parent.mkdir()
    made = cli("backup", "create", str(backup))
    assert "Sauvegarde écrite" in made.output
    backup_id = re.search(r"sauvegarde ([0-9a-f]{32})", made.output).group(1)
    verifier = cli("audit", "public-key").output.strip()
    checked = cli("backup", "verify", str(backup), "--verifier", verifier)
    assert f"Sauvegarde intègre : sauvegarde {backup_id}" in checked.output
    raw = backup.read_bytes()
    for secret in (kept_content[:64], revoked_content[:64], agent["email"].encode(), b"SQLite"):
        assert secret not in raw

    # After the backup: the second pli is revoked (its key destroyed, the ledger says so).
    answer = web.delete(f"/api/v1/sends/{revoked}", headers={"Authorization": f"Bearer {personal}"})
    assert answer.status_code in (200, 204), answer.get_data(as_text=True)
    app.extensions["securex"].engine.dispose()

    # The attack: the instance folder and the database are gone. What survives: the
    # backup, the master key (kept apart) and a copy of the shred ledger.
    escrow = tmp_path / "escrow"
    escrow.mkdir()
    shutil.copy(cli.instance / "keys" / "master.key", escrow / "master.key")
    shutil.copy(cli.instance / "keys" / "shred-ledger.jsonl", escrow / "shred-ledger.jsonl")
    shutil.rmtree(cli.instance)
    _destroy_database(database_url)

    new = Cli(
        tmp_path / "rebuilt",
        empty_url("rebuilt"),
        SECUREX_MASTER_KEY_FILE=str(escrow / "master.key"),
    )
    restored = new(
        "backup",
        "restore",
        str(backup),
        "--shred-ledger",
        str(escrow / "shred-ledger.jsonl"),
        "--verifier",
        verifier,
    )
    assert f"Restaurée : sauvegarde {backup_id}" in restored.output
    assert "1 document(s) détruit(s) de nouveau" in restored.output
    assert "journal d'audit intègre" in restored.output
    assert "Coffre intègre : 1 objets vérifiés" in new("vault", "verify").output
    assert "Journal d'audit intègre" in new("audit", "verify").output
    assert not (new.instance / "keys" / "master.key").exists()  # never came from the backup

    app = new.app()
    assert _read(app, kept_object) == kept_content
    with pytest.raises(NotFound):
        _read(app, revoked_object)
    web = app.test_client()
    me = web.get("/api/v1/me", headers={"Authorization": f"Bearer {notary['token']}"})
    assert me.status_code == 200 and me.get_json()["name"] == notary["name"]
    mine = web.get(f"/api/v1/sends/{kept}", headers={"Authorization": f"Bearer {personal}"})
    assert mine.status_code == 200 and mine.get_json()["status"] == "sent"
    # The session made before the attack still opens the agent's pages.
    browser = app.test_client()
    browser.set_cookie(COOKIE, cookie.value)
    home = browser.get("/")
    assert home.status_code == 200 and "Mont-de-Marsan" in home.get_data(as_text=True)
    # New rows get new ids (the sequences moved past the restored ones).
    again = _send(web, personal, "nouveau.pdf", b"%PDF-1.7 nouveau")
    assert again > revoked
    app.extensions["securex"].engine.dispose()
    assert "Journal d'audit intègre" in new("audit", "verify").output


def test_a_damaged_backup_is_refused_and_restores_nothing(tmp_path, database_url, empty_url):
    cli = Cli(tmp_path / "inst", database_url)
    cli("init")
    cli("tenant", "add", "40192", "Mont-de-Marsan")
    # Files someone left in the folder are not the instance's: not in the backup.
    (cli.instance / "notes de service.txt").write_text("x")
    (cli.instance / "keys" / "copie de master.key").write_bytes(b"k" * 32)
    backup = tmp_path / "b.sxb"
    result = cli("backup", "create", str(tmp_path / "missing" / "b.sxb"), ok=False)
    assert result.exit_code == 78 and "n'existe pas" in result.output
    cli("backup", "create", str(backup))
    good = backup.read_bytes()
    # The independent reader of docs/backup-format.md accepts it, without securex.
    verifier = cli("audit", "public-key").output.strip()
    reader = _doc_reader(tmp_path)
    master = str(cli.instance / "keys" / "master.key")
    checked = subprocess.run(
        [sys.executable, reader, str(backup), master, verifier], capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout.startswith("OK "), checked.stderr
    target_url = empty_url("target")
    target = tmp_path / "target"
    (target / "keys").mkdir(parents=True)
    shutil.copy(cli.instance / "keys" / "master.key", target / "keys" / "master.key")
    restore = Cli(target, target_url)

    def nothing_restored() -> None:
        assert [p.name for p in target.rglob("*")] == ["keys", "master.key"]
        engine = make_engine(target_url)
        assert inspect(engine).get_table_names() == []
        engine.dispose()

    cases = {
        "flipped": good[:-3000] + bytes([good[-3000] ^ 1]) + good[-2999:],
        # after tar's end marker: the last segment is still checked
        "last byte": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": good[: len(good) // 2],
        "preamble": good.replace(b'"format": 1', b'"format": 1 ', 1),
        "not a backup": b"%PDF-1.7\n" + good[10:],
    }
    for name, data in cases.items():
        bad = tmp_path / f"{name}.sxb"
        bad.write_bytes(data)
        result = cli("backup", "verify", str(bad), ok=False)
        assert result.exit_code == 65, (name, result.output)
        assert "Rien n'a été restauré" in result.output or "pas une sauvegarde" in result.output
        result = restore("backup", "restore", str(bad), ok=False)
        assert result.exit_code == 65, (name, result.output)
        nothing_restored()
        refused = subprocess.run(
            [sys.executable, reader, str(bad), master, verifier], capture_output=True
        )
        assert refused.returncode != 0, name

    # Another instance's master key does not open it, and says what to do.
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    result = Cli(cli.instance, cli.url, SECUREX_MASTER_KEY_FILE=str(other))(
        "backup", "verify", str(backup), ok=False
    )
    assert result.exit_code == 65 and "clé maîtresse fournie n'ouvre pas" in result.output
    # Signed by another log's key: refused when the expected key is given.
    result = cli("backup", "verify", str(backup), "--verifier", "x+00000000+AAAA", ok=False)
    assert result.exit_code == 65 and "clé de journal attendue" in result.output

    # Signed by another key than the one given: refused at restore too, nothing left.
    result = restore("backup", "restore", str(backup), "--verifier", "x+00000000+AAAA", ok=False)
    assert result.exit_code == 65 and "Rien n'a été restauré" in result.output
    nothing_restored()
    # Even a backup whose signature checks may only write the instance's own files.
    writer = backups._Restorer(restore.settings(), None, None)  # type: ignore[arg-type]
    for name in ("keys/master.key", "keys/master.json", "securex.db", "logs/x", "notes.txt"):
        with pytest.raises(backups.BackupError):
            writer._file(name, io.BytesIO(b"X" * 32))
    nothing_restored()

    # A target that is not empty is refused before anything is read.
    (target / "notes.txt").write_text("x")
    result = restore("backup", "restore", str(backup), ok=False)
    assert result.exit_code == 78 and "n'est pas vide" in result.output
    (target / "notes.txt").unlink()
    # The good file restores into the same target afterwards.
    restored = restore("backup", "restore", str(backup))
    assert "journal d'audit intègre" in restored.output
    # and a second restore over it is refused: the database is no longer empty.
    shutil.rmtree(target / "pki", ignore_errors=True)
    result = Cli(tmp_path / "third", target_url)("backup", "restore", str(backup), ok=False)
    assert result.exit_code == 78 and "contient déjà" in result.output
    assert not (target / "notes de service.txt").exists()
    assert not (target / "keys" / "copie de master.key").exists()


def test_restore_into_a_new_folder_with_its_own_sqlite_database(tmp_path, database_url):
    """The embedded default: no SECUREX_DATABASE_URL, the database inside the folder,
    the folder not made yet; the master key named by SECUREX_MASTER_KEY_FILE."""
    cli = Cli(tmp_path / "inst", database_url)
    cli("init")
    backup = tmp_path / "b.sxb"
    cli("backup", "create", str(backup))
    key = tmp_path / "master.key"
    shutil.copy(cli.instance / "keys" / "master.key", key)
    new = Cli(tmp_path / "new" / "inst", "", SECUREX_MASTER_KEY_FILE=str(key))
    assert "journal d'audit intègre" in new("backup", "restore", str(backup)).output
    assert (new.instance / "securex.db").exists()
    # A backup from a newer securex (a schema this one does not know) is refused cleanly.
    newer = tmp_path / "newer"
    newer.mkdir()
    known = backups._known_revision
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backups, "_known_revision", lambda _: known("9999_from_the_future"))
        result = Cli(newer, "", SECUREX_MASTER_KEY_FILE=str(key))(
            "backup", "restore", str(backup), ok=False
        )
    assert result.exit_code == 65 and "version plus récente" in result.output
    assert list(newer.rglob("*")) == []


def test_passphrase_instance_restores_with_the_passphrase_alone(tmp_path, database_url, empty_url):
    phrase = "une phrase de passe assez longue"
    extra = {"SECUREX_MASTER_KEY_PROVIDER": "passphrase", "SECUREX_MASTER_PASSPHRASE": phrase}
    cli = Cli(tmp_path / "inst", database_url, **extra)
    cli("init")
    cli("tenant", "add", "40192", "Mont-de-Marsan")
    settings = cli.settings()
    vault = open_vault(master_key_source(settings, cli.env), settings.instance)
    engine = make_engine(cli.url)
    with make_sessionmaker(engine)() as db, db.begin():
        obj = vault.put(db, "40192", io.BytesIO(b"acte de naissance"), now=utcnow())
    engine.dispose()
    backup = tmp_path / "b.sxb"
    cli("backup", "create", str(backup))
    # Off-site, with nothing but the passphrase: the Argon2 parameters ride in the file.
    elsewhere = Cli(tmp_path / "offsite", "sqlite://", **extra)
    assert "Sauvegarde intègre" in elsewhere("backup", "verify", str(backup)).output
    new = Cli(tmp_path / "rebuilt", empty_url("pass"), **extra)
    new("backup", "restore", str(backup))
    assert (new.instance / "keys" / "master.json").exists()
    settings = new.settings()
    vault = open_vault(master_key_source(settings, new.env), settings.instance)
    engine = make_engine(new.url)
    with make_sessionmaker(engine)() as db:
        assert vault.read_all(db, "40192", obj.id) == b"acte de naissance"
    engine.dispose()
    extra["SECUREX_MASTER_PASSPHRASE"] = "x" * 20
    wrong = Cli(tmp_path / "again", empty_url("wrong"), **extra)
    result = wrong("backup", "restore", str(backup), ok=False)
    assert result.exit_code == 78 and "Phrase de passe" in result.output
    assert not any((tmp_path / "again").rglob("*.json"))
