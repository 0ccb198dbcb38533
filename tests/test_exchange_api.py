"""Confidential sends through /api/v1 (personal tokens of agents) and the resumable
upload protocol (tus 1.0), with the background work that follows: notifications read
from a real SMTP server, antivirus by a real clamd, OpenPGP copies decrypted with the
recipient's own key, reminders, revocation and the purge (key and blob gone)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from datetime import timedelta
from typing import Any

import gnupg
import pytest
from sqlalchemy import func, select
from werkzeug.exceptions import ClientDisconnected

from securex.accounts import service as accounts
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.errors import Gone
from securex.exchange import jobs as exchange_jobs
from securex.exchange import service
from securex.exchange.models import PgpCopy, Pli, PliFile, Recipient, Upload
from securex.jobs.service import run_pending
from securex.vault.models import VaultObject
from tests.clamd import EICAR, REPORTED, clamd_socket_fixture  # noqa: F401

ADMIN = accounts.Actor("test")
LINK = re.compile(r"/plis/d/([A-Za-z0-9_-]{40,})")
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def app(mail_app):
    return mail_app


@pytest.fixture
def world(app, make, factory, clock, runtime):
    make.tenant("40192", "Mont-de-Marsan")
    make.tenant("40088", "Dax")
    agent = make.user("agent", totp=False)
    other = make.user("agent", tenant="40088", totp=False)
    officer_dax = make.user("officer", tenant="40088")
    tokens = {}
    with transaction(factory) as db:
        for account in (agent, other):
            user = db.get(accounts.User, account.id)
            _, tokens[account.email] = accounts.create_personal_token(
                db, ADMIN, user, name="paie", now=clock()
            )
    return {
        "agent": agent,
        "other": other,
        "officer_dax": officer_dax,
        "token": tokens[agent.email],
        "other_token": tokens[other.email],
    }


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(client, token: str, **body: Any):
    payload = {
        "recipients": ["jeanne.martin@example.org"],
        "subject": "Bulletin de paie novembre",
        "message": "Bonjour, voici votre bulletin.",
        "files": [{"name": "paie.pdf", "media_type": "application/pdf", "content": b64(b"%PDF")}],
    }
    payload.update(body)
    return client.post("/api/v1/sends", json=payload, headers=auth(token))


def test_a_send_notifies_by_mail_with_the_link_and_never_the_code(
    world, client, runtime, smtp, factory
):
    content = os.urandom(300_000)
    response = send(
        client,
        world["token"],
        recipients=["Jeanne.Martin@example.org", world["officer_dax"].email],
        files=[
            {"name": "../../paie nov.pdf", "media_type": "application/pdf", "content": b64(content)}
        ],
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "preparing"
    assert response.headers["Location"] == f"/api/v1/sends/{body['id']}"
    assert [r["platform"] for r in body["recipients"]] == [False, True]
    assert body["files"][0]["name"] == "paie nov.pdf"  # no folders from the sender's side
    assert run_pending(runtime) >= 1
    assert sorted(m.recipients[0] for m in smtp.messages) == sorted(
        ["jeanne.martin@example.org", world["officer_dax"].email]
    )
    external = next(m for m in smtp.messages if m.recipients == ["jeanne.martin@example.org"])
    assert LINK.search(external.text) and LINK.search(external.html)
    assert not re.search(r"\b\d{6}\b", external.text)  # never a code
    assert "Bulletin de paie" not in external.text  # nor the subject, nor the message
    assert external.message["Reply-To"] == world["agent"].email
    followed = client.get(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).get_json()
    assert followed["status"] == "sent"
    assert all(r["notified_at"] for r in followed["recipients"])
    with factory() as db:  # reading the follow-up is audited
        last = db.scalars(select(AuditEvent.action).order_by(AuditEvent.id.desc())).first()
        assert last == "exchange:pli:viewed"
    assert followed["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    listed = client.get("/api/v1/sends?limit=5", headers=auth(world["token"])).get_json()
    assert [s["id"] for s in listed["sends"]] == [body["id"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipients": ["pas une adresse"]}, "recipients"),
        ({"recipients": []}, "recipients"),
        ({"subject": ""}, "subject"),
        ({"expires_in_days": 99}, "expires_in_days"),
        ({"download_limit": 0}, "download_limit"),
        ({"verification": "sms"}, "verification"),
        ({"files": []}, "files"),
        ({"files": [{"name": "a.pdf", "content": "%%%"}]}, "files.0.content"),
        ({"files": [{"upload": "0" * 32, "content": "AA=="}]}, "files"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_sends_are_refused_with_the_field_and_keep_nothing(
    world, client, factory, change, field
):
    response = send(client, world["token"], **change)
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert any(e["field"].startswith(field.split(".")[0]) for e in problem["errors"]), problem
    with factory() as db:
        assert db.scalar(select(func.count(Pli.id))) == 0
        assert db.scalar(select(func.count(VaultObject.id))) == 0


def test_sends_are_kept_within_their_commune(world, client):
    created = send(client, world["token"]).get_json()
    assert (
        client.get(f"/api/v1/sends/{created['id']}", headers=auth(world["other_token"])).status_code
        == 404
    )
    assert (
        client.delete(
            f"/api/v1/sends/{created['id']}", headers=auth(world["other_token"])
        ).status_code
        == 404
    )
    assert client.get(f"/api/v1/sends/{created['id']}").status_code == 401
    assert (
        client.get(f"/api/v1/sends/{created['id']}", headers=auth("sxp_" + "x" * 43)).status_code
        == 401
    )


def test_phone_codes_are_shown_once(world, client):
    body = send(client, world["token"], verification="email+phone").get_json()
    (code,) = body["phone_codes"].values()
    assert re.fullmatch(r"\d{6}", code)
    again = client.get(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).get_json()
    assert again["phone_codes"] is None


# --- tus ------------------------------------------------------------------------------------


def create_upload(client, token: str, length: int, name: str = "acte.pdf"):
    meta = f"filename {b64(name.encode())},filetype {b64(b'application/pdf')}"
    return client.post(
        "/api/v1/uploads",
        headers=auth(token, **TUS, **{"Upload-Length": str(length), "Upload-Metadata": meta}),
    )


def patch(client, token: str, location: str, offset: int, data: Any):
    return client.patch(
        location,
        data=data,
        headers=auth(
            token,
            **TUS,
            **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        ),
    )


def test_tus_upload_resumes_and_becomes_a_file_of_a_send(world, client, factory, vault):
    token = world["token"]
    options = client.options("/api/v1/uploads")
    assert options.status_code == 204
    assert options.headers["Tus-Version"] == "1.0.0"
    assert "creation" in options.headers["Tus-Extension"]
    content = os.urandom(3 * 2**20 + 5)
    created = create_upload(client, token, len(content))
    assert created.status_code == 201, created.get_json()
    location = created.headers["Location"]
    assert (
        patch(client, token, location, 0, content[:1_500_000]).headers["Upload-Offset"] == "1500000"
    )
    wrong = patch(client, token, location, 0, content[:10])
    assert wrong.status_code == 409 and wrong.headers["Upload-Offset"] == "1500000"
    head = client.head(location, headers=auth(token, **TUS))
    assert head.headers["Upload-Offset"] == "1500000"
    assert head.headers["Upload-Length"] == str(len(content))
    assert head.headers["Cache-Control"] == "no-store"
    done = patch(client, token, location, 1_500_000, content[1_500_000:])
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(content))
    assert patch(client, token, location, len(content), b"x").status_code == 409
    upload_id = location.rsplit("/", 1)[1]
    body = send(client, token, files=[{"upload": upload_id}]).get_json()
    assert body["files"][0]["size"] == len(content) and body["files"][0]["name"] == "acte.pdf"
    with factory() as db:
        assert vault.read_all(db, "40192", upload_id) == content
    again = send(client, token, files=[{"upload": upload_id}])
    assert again.status_code == 410


def test_an_upload_whose_completion_a_crash_cut_off_is_completed_at_the_send(
    world, client, factory, vault, clock, monkeypatch
):
    """Killed between a PATCH's last commit (every byte kept) and the commit that makes
    the file a vault object, an upload shows its full offset: the send completes it,
    unless a PATCH still holds it, or its part has gone meanwhile (410, not a 500)."""
    from securex.exchange import uploads

    token = world["token"]
    content = os.urandom(300_000)
    locations = [create_upload(client, token, len(content)).headers["Location"] for _ in "ab"]
    with monkeypatch.context() as crash:  # the process dies before the completion
        crash.setattr(uploads, "_complete", lambda *args: None)
        for location in locations:
            assert patch(client, token, location, 0, content).status_code == 204
    first, second = (location.rsplit("/", 1)[1] for location in locations)
    with transaction(factory) as db:
        assert db.get(Upload, first).completed_at is None
        assert db.get(VaultObject, first) is None
        # The second one is still held by a PATCH of another process.
        held = db.get(Upload, second)
        held.lease, held.lease_until = "another-connection", clock() + timedelta(minutes=1)
    refused = send(client, token, files=[{"upload": second}])
    assert refused.status_code == 422 and "entièrement" in refused.get_json()["detail"]

    body = send(client, token, files=[{"upload": first}]).get_json()
    assert body["files"][0]["size"] == len(content)
    with factory() as db:
        assert vault.read_all(db, "40192", first) == content

    vault.blobs.delete_part(second)  # its part collected meanwhile
    clock.advance(minutes=2)  # and the other PATCH's lease lapsed
    gone = send(client, token, files=[{"upload": second}])
    assert gone.status_code == 410 and "téléversez-le de nouveau" in gone.get_json()["detail"]


class Interrupted:
    """A request body that breaks after `cut` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut, self.pos = data, cut, 0

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = len(self.data) + offset if whence == 2 else offset
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.cut:
            raise ClientDisconnected()
        size = self.cut - self.pos if size < 0 else min(size, self.cut - self.pos)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk


def test_an_interrupted_patch_keeps_what_arrived_and_resumes_there(world, client, factory, vault):
    token = world["token"]
    content = os.urandom(5 * 2**20 + 123)
    location = create_upload(client, token, len(content)).headers["Location"]
    cut = int(len(content) * 0.8)
    client.patch(
        location,
        input_stream=Interrupted(content, cut),
        headers=auth(
            token,
            **TUS,
            **{
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(len(content)),
            },
        ),
    )
    offset = int(client.head(location, headers=auth(token, **TUS)).headers["Upload-Offset"])
    assert offset == cut  # everything that arrived was kept, not a segment less
    assert patch(client, token, location, offset, content[offset:]).status_code == 204
    upload_id = location.rsplit("/", 1)[1]
    with factory() as db:
        assert vault.read_all(db, "40192", upload_id) == content


def test_tus_errors_follow_the_protocol(world, client, settings):
    token = world["token"]
    location = create_upload(client, token, 100).headers["Location"]
    no_version = client.head(location, headers=auth(token))
    assert no_version.status_code == 412
    wrong_type = client.patch(
        location,
        data=b"x",
        headers=auth(token, **TUS, **{"Upload-Offset": "0", "Content-Type": "text/plain"}),
    )
    assert wrong_type.status_code == 415
    too_long = patch(client, token, location, 0, b"y" * 101)
    assert too_long.status_code == 413
    assert client.head(location, headers=auth(token, **TUS)).headers["Upload-Offset"] == "0"
    assert client.head(location, headers=auth(world["other_token"], **TUS)).status_code == 404
    assert client.head(location).status_code == 401
    huge = create_upload(client, token, settings["exchange.max_file_bytes"] + 1)
    assert huge.status_code == 413
    bad_meta = client.post(
        "/api/v1/uploads",
        headers=auth(token, **TUS, **{"Upload-Length": "5", "Upload-Metadata": "filename !!!"}),
    )
    assert bad_meta.status_code == 422
    no_length = client.post("/api/v1/uploads", headers=auth(token, **TUS))
    assert no_length.status_code == 422
    assert client.delete(location, headers=auth(token, **TUS)).status_code == 204
    assert client.head(location, headers=auth(token, **TUS)).status_code == 404


def test_an_upload_locked_by_another_patch_answers_423(world, client, factory, clock):
    token = world["token"]
    location = create_upload(client, token, 10).headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    with transaction(factory) as db:
        row = db.get(Upload, upload_id)
        row.lease, row.lease_until = (
            "another-connection-000000000000",
            clock() + timedelta(minutes=1),
        )
    assert patch(client, token, location, 0, b"0123456789").status_code == 423
    clock.advance(minutes=3)  # the other connection's holder died: its lease lapses
    assert patch(client, token, location, 0, b"0123456789").status_code == 204


# --- life cycle ----------------------------------------------------------------------------------


def _recipient_token(smtp, address: str) -> str:
    message = next(m for m in reversed(smtp.messages) if m.recipients == [address])
    match = LINK.search(message.text)
    assert match
    return match.group(1)


def test_revocation_destroys_the_files_at_once(world, client, runtime, factory, settings, smtp):
    body = send(client, world["token"]).get_json()
    run_pending(runtime)
    token = _recipient_token(smtp, "jeanne.martin@example.org")
    with factory() as db:
        (object_id,) = db.scalars(select(PliFile.object_id).where(PliFile.pli_id == body["id"]))
    assert list((settings.instance / "blobs").rglob(object_id))
    assert (
        client.delete(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).status_code
        == 204
    )
    with factory() as db:
        assert db.get(VaultObject, object_id).wrapped_key is None
        with pytest.raises(Gone):
            service.by_link(db, token, now=runtime.clock())
    assert not list((settings.instance / "blobs").rglob(object_id))
    followed = client.get(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).get_json()
    assert followed["status"] == "revoked"
    assert (
        client.delete(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).status_code
        == 410
    )


def test_expiry_purges_key_and_blob_and_keeps_the_facts(
    world, client, runtime, factory, clock, settings
):
    body = send(client, world["token"], expires_in_days=2).get_json()
    run_pending(runtime)
    with factory() as db:
        (object_id,) = db.scalars(select(PliFile.object_id).where(PliFile.pli_id == body["id"]))
    clock.advance(days=2, seconds=1)
    assert exchange_jobs.purge(runtime) == 1
    with factory() as db:
        assert db.get(VaultObject, object_id).wrapped_key is None
        events = db.scalars(select(AuditEvent.action)).all()
        assert "exchange:pli:purged" in events
    assert not list((settings.instance / "blobs").rglob(object_id))
    followed = client.get(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).get_json()
    assert followed["status"] == "expired"
    assert followed["subject"] == "Bulletin de paie novembre"  # the facts stay
    assert exchange_jobs.purge(runtime) == 0


def test_a_reminder_goes_two_days_before_expiry_to_who_has_not_downloaded(
    world, client, runtime, clock, smtp
):
    send(client, world["token"], expires_in_days=7)
    run_pending(runtime)
    before = len(smtp.messages)
    clock.advance(days=4)
    assert exchange_jobs.send_reminders(runtime) == 0
    clock.advance(days=1, hours=1)
    assert exchange_jobs.send_reminders(runtime) == 1
    reminder = smtp.messages[-1]
    assert len(smtp.messages) == before + 1
    assert reminder.recipients == ["jeanne.martin@example.org"]
    assert "expire" in reminder.subject and LINK.search(reminder.text)
    assert exchange_jobs.send_reminders(runtime) == 0  # once


# --- antivirus -----------------------------------------------------------------------------------


def test_an_infected_file_blocks_the_send_and_is_reported(
    world, client, runtime, settings, smtp, clamd_socket, factory
):
    settings.values["exchange"]["clamd"] = clamd_socket
    clean = send(client, world["token"]).get_json()
    infected = send(
        client,
        world["token"],
        files=[
            {"name": "ok.txt", "content": b64(b"rien")},
            {"name": "virus.com", "content": b64(EICAR)},
        ],
    ).get_json()
    assert clean["status"] == infected["status"] == "scanning"
    run_pending(runtime)
    ok = client.get(f"/api/v1/sends/{clean['id']}", headers=auth(world["token"])).get_json()
    assert ok["status"] == "sent" and ok["files"][0]["scan"] == "clean"
    bad = client.get(f"/api/v1/sends/{infected['id']}", headers=auth(world["token"])).get_json()
    assert bad["status"] == "blocked"
    assert [f["scan"] for f in bad["files"]] == ["clean", "infected"]
    assert all(r["notified_at"] is None for r in bad["recipients"])
    with factory() as db:
        row = db.scalars(
            select(PliFile).where(PliFile.pli_id == infected["id"]).order_by(PliFile.position)
        ).all()[1]
        assert row.scan_signature == REPORTED
        assert db.get(VaultObject, row.object_id).wrapped_key is None
    to_sender = [m for m in smtp.messages if m.recipients == [world["agent"].email]]
    assert len(to_sender) == 1 and "bloqué" in to_sender[0].subject


# --- OpenPGP ---------------------------------------------------------------------------------


@pytest.fixture
def recipient_gpg(tmp_path):
    """The recipient's own GnuPG home (keys made and messages read there); the agent
    that gpg starts for it is stopped afterwards."""
    home = tmp_path / "recipient-gnupg"
    home.mkdir(mode=0o700)
    yield gnupg.GPG(gnupghome=str(home))
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=False,
        capture_output=True,
    )


def test_a_recipient_with_a_key_receives_files_encrypted_to_it(
    recipient_gpg, world, client, runtime, factory, vault, tmp_path, clock
):
    from securex.exchange.openpgp import OpenPgp

    gpg = recipient_gpg
    key = gpg.gen_key(
        gpg.gen_key_input(
            key_type="RSA",
            key_length=2048,
            name_email="notaire@etude.example.fr",
            no_protection=True,
        )
    )
    armored = gpg.export_keys(key.fingerprint)
    inspect_home = tmp_path / "inspect"
    inspect_home.mkdir(mode=0o700)
    public = OpenPgp(inspect_home).inspect(armored)
    with transaction(factory) as db:
        user = db.get(accounts.User, world["agent"].id)
        service.register_key(
            db, vault, user, "notaire@etude.example.fr", public, armored, now=clock()
        )
    content = os.urandom(200_000)
    body = send(
        client,
        world["token"],
        recipients=["notaire@etude.example.fr", "jeanne.martin@example.org"],
        files=[{"name": "acte.pdf", "content": b64(content)}],
    ).get_json()
    assert [r["openpgp"] for r in body["recipients"]] == [True, False]
    run_pending(runtime)
    with factory() as db:
        (copy,) = db.scalars(select(PgpCopy)).all()
        rcpt = db.get(Recipient, copy.recipient_id)
        pli = db.get(Pli, rcpt.pli_id)
        served = service.servables(db, vault, service.Access(pli, rcpt))
        assert [(s.name, s.encrypted) for s in served] == [("acte.pdf.gpg", True)]
        encrypted = vault.read_all(db, "40192", copy.object_id)
    assert encrypted != content and content[:64] not in encrypted
    clear = gpg.decrypt(encrypted)
    assert clear.ok, clear.status
    assert clear.data == content


def test_a_key_expired_before_preparation_does_not_hold_the_pli(
    recipient_gpg, world, client, runtime, factory, vault, tmp_path, clock, smtp
):
    """The key was valid when the pli was sent, has expired when the job prepares it:
    that recipient gets the files like any other one (protected by the code)."""
    from securex.exchange.openpgp import OpenPgp

    gpg = recipient_gpg
    expiry = (clock() + timedelta(days=1)).date().isoformat()
    key = gpg.gen_key(
        gpg.gen_key_input(
            key_type="RSA",
            key_length=2048,
            name_email="notaire@etude.example.fr",
            no_protection=True,
            expire_date=expiry,
        )
    )
    armored = gpg.export_keys(key.fingerprint)
    inspect_home = tmp_path / "inspect"
    inspect_home.mkdir(mode=0o700)
    public = OpenPgp(inspect_home, clock=clock).inspect(armored)
    with transaction(factory) as db:
        user = db.get(accounts.User, world["agent"].id)
        service.register_key(
            db, vault, user, "notaire@etude.example.fr", public, armored, now=clock()
        )
    body = send(client, world["token"], recipients=["notaire@etude.example.fr"]).get_json()
    assert body["recipients"][0]["openpgp"] is True
    clock.advance(days=2)
    run_pending(runtime)
    followed = client.get(f"/api/v1/sends/{body['id']}", headers=auth(world["token"])).get_json()
    assert followed["status"] == "sent"
    assert followed["recipients"][0]["openpgp"] is False
    assert followed["recipients"][0]["notified_at"] is not None
    with factory() as db:
        assert db.scalar(select(func.count(PgpCopy.id))) == 0
