"""The pages of the confidential exchange, end to end in the Flask test client with a
real SMTP server: an agent sends a pli without JavaScript (files in the form), the
recipient's link changes nothing until a POST, the code comes by e-mail and wrong
codes count and lock, downloads serve HTTP ranges and a zip and are recorded to the
byte, the sender follows it all, unlocks and revokes (the files are shredded); deposit
links and replies bring files back to the commune; the resumable upload (tus) works
through the staff's endpoint with the page's CSRF token; platform users open plis with
their account; bad input comes back as readable messages, never a 500."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.serving import make_server
from werkzeug.test import encode_multipart

from securex.accounts.models import User
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.exchange import service, views
from securex.exchange.models import Download, PliFile, Recipient
from securex.jobs.service import run_pending
from securex.vault.models import VaultObject
from tests.conftest import csrf_token
from tests.smtp import SmtpServer
from tests.test_login import login, post_code, post_password

MDM = "40192"
DAX = "40088"
LEA = "lea.dupont@example.org"
BASE = "http://127.0.0.1:8000"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"  # 10 KiB and a bit
CSV = "nom;prénom\nDupont;Léa\n".encode() * 50
BIG = 5 * 2**20 // 2  # more than a vault segment (1 MiB)


@pytest.fixture
def app(mail_app):
    return mail_app


@pytest.fixture
def world(runtime, app, make):
    make.tenant()
    make.tenant(DAX, "Dax")
    return {"agent": make.user("agent", MDM), "dax": make.user("agent", DAX)}


# --- helpers -------------------------------------------------------------------------------


def text(response: Any) -> str:
    """The page, its character references resolved (French has apostrophes)."""
    return html.unescape(response.get_data(as_text=True))


def browser(app: Any, account: Any, clock: Any) -> Any:
    client = app.test_client()
    login(client, account, clock)
    return client


def token_of(client: Any, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, text(page)[:2000]
    return csrf_token(text(page))


def send_pli(client: Any, *, files: list[tuple[bytes, str]] | None = None, **fields: Any) -> Any:
    """The new-pli form as a browser without JavaScript sends it."""
    data: dict[str, Any] = {
        "csrf_token": token_of(client, "/plis/nouveau"),
        "recipients": LEA,
        "subject": "Copie de votre acte",
        "message": "Bonjour,\nvoici les pièces demandées.",
        "expires_in_days": "7",
        "download_limit": "5",
        "verification": "email",
    }
    data.update(fields)
    if files is None:
        files = [(PDF, "acte-naissance.pdf"), (CSV, "liste été.csv")]
    return multipart(client, "/plis/nouveau", data, files)


def multipart(client: Any, url: str, fields: dict[str, Any], files: list[tuple[bytes, str]]) -> Any:
    """POST a multipart form. Encoded here, in memory: the test client would spool a
    large body to a temporary file that nobody closes when the server refuses it."""
    values = MultiDict(list(fields.items()))
    for content, name in files:
        values.add("files", FileStorage(io.BytesIO(content), filename=name))
    boundary, body = encode_multipart(values)
    return client.post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def sent_pli(client: Any, **fields: Any) -> int:
    response = send_pli(client, **fields)
    assert response.status_code == 303, text(response)[:3000]
    match = re.fullmatch(r".*/plis/(\d+)", response.headers["Location"])
    assert match
    return int(match.group(1))


def mails_to(smtp: SmtpServer, address: str) -> list[Any]:
    return [m for m in smtp.messages if address in m.recipients]


def link_of(message: Any) -> str:
    match = re.search(re.escape(BASE) + r"(/plis/d/[A-Za-z0-9_-]+)", message.text)
    assert match, message.text
    return match.group(1)


def code_of(message: Any) -> str | None:
    match = re.search(r"^\s*(\d{6})\s*$", message.text, re.M)
    return match.group(1) if match else None


def audit_count(factory: Any) -> int:
    with factory() as db:
        return int(db.scalar(select(func.count()).select_from(AuditEvent)))


def open_pli(client: Any, smtp: SmtpServer, link: str) -> None:
    """Ask for a code, read it in the mail, give it: the access cookie is set."""
    before = len(mails_to(smtp, LEA))
    assert client.post(f"{link}/code").status_code == 200
    mail = mails_to(smtp, LEA)[before]
    code = code_of(mail)
    assert code
    response = client.post(f"{link}/ouvrir", data={"code": code})
    assert response.status_code == 303, text(response)
    assert response.headers["Location"].endswith(f"{link}/pli")


def sent_and_notified(app, world, clock, runtime, smtp, **fields) -> tuple[Any, int, str]:
    agent = browser(app, world["agent"], clock)
    pli_id = sent_pli(agent, **fields)
    run_pending(runtime)
    (notice,) = mails_to(smtp, fields.get("recipients", LEA))
    return agent, pli_id, link_of(notice)


# --- the journey ---------------------------------------------------------------------------


def test_a_pli_sent_without_javascript_is_opened_downloaded_and_followed(
    world, app, clock, runtime, smtp, factory
):
    agent = browser(app, world["agent"], clock)
    form = agent.get("/plis/nouveau")
    page = text(form)
    assert 'name="files"' in page and "multiple" in page and 'name="csrf_token"' in page
    assert 'data-tus-endpoint="/plis/televersements"' in page and "tus-upload.js" in page
    assert 'value="7"' in page and 'value="5"' in page  # the policy's defaults
    assert 'aria-describedby="recipients-hint"' in page

    pli_id = sent_pli(agent)
    page = text(agent.get(f"/plis/{pli_id}"))
    assert "Copie de votre acte" in page and LEA in page and "En préparation" in page
    assert "acte-naissance.pdf" in page and views.size_fr(len(PDF)) in page

    run_pending(runtime)
    (notice,) = mails_to(smtp, LEA)
    link = link_of(notice)
    assert code_of(notice) is None  # the link, never the code
    assert "Copie de votre acte" not in notice.text and "acte-naissance" not in notice.text

    # Mail scanners open links: three GETs change nothing at all.
    recipient = app.test_client()
    events, mails = audit_count(factory), len(smtp.messages)
    for _ in range(3):
        landing = recipient.get(link)
        assert landing.status_code == 200
        body = text(landing)
        assert "Mont-de-Marsan" in body and "Recevoir un code par e-mail" in body
        assert "Copie de votre acte" not in body  # the subject waits for the code
    assert audit_count(factory) == events and len(smtp.messages) == mails
    assert "Set-Cookie" not in landing.headers
    with factory() as db:
        opened_at = db.scalar(select(Recipient.opened_at).where(Recipient.pli_id == pli_id))
    assert opened_at is None

    asked = recipient.post(f"{link}/code")
    assert asked.status_code == 200
    assert "Un code vient d'être envoyé à l'adresse l***@example.org" in text(asked)
    assert 'name="code"' in text(asked)
    code = code_of(mails_to(smtp, LEA)[1])
    assert code

    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        refused = recipient.post(f"{link}/ouvrir", data={"code": wrong})
        assert refused.status_code == 422
        assert f"il vous reste {left} essai" in text(refused)
        assert f'value="{wrong}"' in text(refused)  # what was typed stays
    opened = recipient.post(f"{link}/ouvrir", data={"code": code})
    assert opened.status_code == 303 and opened.headers["Location"].endswith(f"{link}/pli")
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith("sx_pli=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert f"Path={link}" in cookie and "Max-Age=3600" in cookie and "Secure" in cookie

    content = text(recipient.get(f"{link}/pli"))
    assert "Copie de votre acte" in content and "voici les pièces demandées" in content
    files = re.findall(rf'href="({re.escape(link)}/fichiers/(\d+))"', content)
    assert len(files) == 2
    (pdf_url, _), (csv_url, _) = files

    partial = recipient.get(pdf_url, headers={"Range": "bytes=10-"})
    assert partial.status_code == 206
    assert partial.data == PDF[10:]
    assert partial.headers["Content-Range"] == f"bytes 10-{len(PDF) - 1}/{len(PDF)}"
    assert partial.headers["Content-Length"] == str(len(PDF) - 10)
    assert partial.headers["Accept-Ranges"] == "bytes"
    assert partial.headers["Content-Type"] == "application/pdf"
    assert partial.headers["Cache-Control"] == "no-store"
    assert partial.headers["X-Content-Type-Options"] == "nosniff"
    assert "attachment" in partial.headers["Content-Disposition"]

    middle = recipient.get(pdf_url, headers={"Range": "bytes=100-199"})
    assert middle.status_code == 206 and middle.data == PDF[100:200]
    suffix = recipient.get(pdf_url, headers={"Range": "bytes=-7"})
    assert suffix.status_code == 206 and suffix.data == PDF[-7:]
    beyond = recipient.get(pdf_url, headers={"Range": f"bytes={len(PDF)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(PDF)}"
    stale = recipient.get(pdf_url, headers={"Range": "bytes=10-", "If-Range": '"autre"'})
    assert stale.status_code == 200 and stale.data == PDF

    whole = recipient.get(csv_url)
    assert whole.status_code == 200 and whole.data == CSV
    assert "filename*=UTF-8''liste%20%C3%A9t%C3%A9.csv" in whole.headers["Content-Disposition"]
    assert 'filename="liste ete.csv"' in whole.headers["Content-Disposition"]

    run_pending(runtime)  # every file downloaded: the receipt to the sender
    (receipt,) = [m for m in mails_to(smtp, world["agent"].email) if "téléchargé" in m.subject]
    assert f"/plis/{pli_id}" in receipt.text

    archive = recipient.get(f"{link}/tout.zip")
    assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as zipped:
        assert zipped.namelist() == ["acte-naissance.pdf", "liste été.csv"]
        assert zipped.read("acte-naissance.pdf") == PDF
        assert zipped.read("liste été.csv") == CSV
        assert zipped.testzip() is None

    with factory() as db:
        rows = db.execute(
            select(Download.range_start, Download.bytes_sent, Download.completed_at).order_by(
                Download.id
            )
        ).all()
    assert [(start, sent, done is not None) for start, sent, done in rows] == [
        (10, len(PDF) - 10, False),  # to the end, but bytes 0-9 were never sent
        (100, 100, False),
        (len(PDF) - 7, 7, False),
        (0, len(PDF), True),
        (0, len(CSV), True),
        (0, rows[-1][1], True),  # the zip
    ]

    follow = text(agent.get(f"/plis/{pli_id}"))
    assert "Envoyé" in follow and "Téléchargements de lea.dupont@example.org" in follow
    assert "tous les fichiers (zip)" in follow and "interrompu ou en cours" in follow
    assert follow.count("30/11/2026") >= 5  # notified, opened, verified, downloaded…


def test_a_client_that_goes_away_leaves_an_unfinished_download(
    world, app, clock, runtime, smtp, factory
):
    _, _, link = sent_and_notified(
        app, world, clock, runtime, smtp, files=[(b"x" * BIG, "gros.bin")]
    )
    recipient = app.test_client()
    open_pli(recipient, smtp, link)
    (url,) = re.findall(
        rf'href="({re.escape(link)}/fichiers/\d+)"', text(recipient.get(f"{link}/pli"))
    )
    response = recipient.get(url, buffered=False)
    assert response.status_code == 200
    first = next(iter(response.response))
    assert first
    # Mid-download, others write as usual: the body holds no transaction (on SQLite,
    # one would hold the write lock for as long as the recipient takes).
    started = time.monotonic()
    with transaction(factory) as db:
        db.execute(update(Recipient).values(tries=0))
    assert time.monotonic() - started < 5
    response.close()  # the client hangs up
    with factory() as db:
        ((completed_at, sent),) = db.execute(select(Download.completed_at, Download.bytes_sent))
        assert completed_at is None and 0 < sent < BIG
        assert db.scalar(select(Recipient.downloaded_at)) is None


def test_only_every_byte_delivered_makes_a_download_and_a_receipt(
    world, app, clock, runtime, smtp, factory
):
    """The last byte alone (a suffix Range) is no download; an interrupted download
    resumed from where it stopped is one, and gives the receipt."""
    content = bytes(range(256)) * 2000
    _, _, link = sent_and_notified(app, world, clock, runtime, smtp, files=[(content, "a.bin")])
    recipient = app.test_client()
    open_pli(recipient, smtp, link)
    (url,) = re.findall(
        rf'href="({re.escape(link)}/fichiers/\d+)"', text(recipient.get(f"{link}/pli"))
    )
    last = recipient.get(url, headers={"Range": "bytes=-1"})
    assert last.status_code == 206 and last.data == content[-1:]
    with factory() as db:
        assert db.scalar(select(Recipient.downloaded_at)) is None
    first = recipient.get(url, headers={"Range": "bytes=0-99999"})
    assert first.data == content[:100000]
    with factory() as db:
        assert db.scalar(select(Recipient.downloaded_at)) is None
    rest = recipient.get(url, headers={"Range": "bytes=100000-"})
    assert rest.status_code == 206 and first.data + rest.data == content
    with factory() as db:
        assert db.scalar(select(Recipient.downloaded_at)) is not None
    run_pending(runtime)
    assert [m.subject for m in mails_to(smtp, world["agent"].email)][-1].endswith("téléchargé")


def test_wrong_codes_lock_the_pli_until_the_sender_unlocks_it(world, app, clock, runtime, smtp):
    agent, pli_id, link = sent_and_notified(app, world, clock, runtime, smtp)
    recipient = app.test_client()
    assert recipient.post(f"{link}/code").status_code == 200
    for _ in range(4):
        assert recipient.post(f"{link}/ouvrir", data={"code": "12345x"}).status_code == 422
    locked = recipient.post(f"{link}/ouvrir", data={"code": "12345x"})
    assert locked.status_code == 429 and "verrouillé" in text(locked)
    assert recipient.post(f"{link}/code").status_code == 429
    assert "verrouillé pour vous" in text(recipient.get(link))

    page = text(agent.get(f"/plis/{pli_id}"))
    assert "Verrouillé" in page
    action = re.search(r'action="(/plis/\d+/destinataires/\d+/deverrouiller)"', page).group(1)
    unlocked = agent.post(action, data={"csrf_token": csrf_token(page)})
    assert unlocked.status_code == 303
    assert "Destinataire déverrouillé" in text(agent.get(f"/plis/{pli_id}"))
    open_pli(recipient, smtp, link)
    assert recipient.get(f"{link}/pli").status_code == 200


def test_downloads_stop_at_the_limit_the_sender_chose(world, app, clock, runtime, smtp):
    _, _, link = sent_and_notified(
        app, world, clock, runtime, smtp, download_limit="1", files=[(PDF, "acte.pdf")]
    )
    recipient = app.test_client()
    open_pli(recipient, smtp, link)
    (url,) = re.findall(
        rf'href="({re.escape(link)}/fichiers/\d+)"', text(recipient.get(f"{link}/pli"))
    )
    assert recipient.head(url).status_code == 200  # a look at the headers counts nothing
    assert recipient.get(url).data == PDF
    again = recipient.get(url)
    assert again.status_code == 403
    assert "Nombre de téléchargements atteint (1)" in text(again)
    assert recipient.get(f"{link}/tout.zip").status_code == 403  # a zip holds that file too


def test_ranges_that_stop_short_still_count_against_the_limit(world, app, clock, runtime, smtp):
    _, _, link = sent_and_notified(
        app, world, clock, runtime, smtp, download_limit="1", files=[(PDF, "acte.pdf")]
    )
    recipient = app.test_client()
    open_pli(recipient, smtp, link)
    (url,) = re.findall(
        rf'href="({re.escape(link)}/fichiers/\d+)"', text(recipient.get(f"{link}/pli"))
    )
    short = f"bytes=0-{len(PDF) - 2}"  # never the last byte: never a completed download
    assert recipient.get(url, headers={"Range": short}).status_code == 206
    assert recipient.get(url, headers={"Range": short}).status_code == 206
    # limit × size bytes are out (more than the file): no more, whole or in ranges.
    assert recipient.get(url, headers={"Range": short}).status_code == 403
    assert recipient.get(url, headers={"Range": "bytes=-1"}).status_code == 403


def test_revoking_a_pli_shreds_its_files_and_closes_its_links(
    world, app, clock, runtime, smtp, factory, vault
):
    agent, pli_id, link = sent_and_notified(app, world, clock, runtime, smtp)
    recipient = app.test_client()
    open_pli(recipient, smtp, link)
    with factory() as db:
        objects = list(db.scalars(select(PliFile.object_id).where(PliFile.pli_id == pli_id)))

    confirm = agent.get(f"/plis/{pli_id}/revoquer")
    assert confirm.status_code == 200 and "Confirmer la révocation" in text(confirm)
    done = agent.post(f"/plis/{pli_id}/revoquer", data={"csrf_token": csrf_token(text(confirm))})
    assert done.status_code == 303
    page = text(agent.get(f"/plis/{pli_id}"))
    assert "Révoqué" in page and "détruit" in page

    for url in (link, f"{link}/pli", f"{link}/tout.zip"):
        gone = recipient.get(url)
        assert gone.status_code == 410, url
        assert "retiré ce pli" in text(gone)
    assert recipient.post(f"{link}/code").status_code == 410
    blobs = {name for name, _ in vault.blobs.names()}
    with factory() as db:
        for object_id in objects:
            assert db.get(VaultObject, object_id).wrapped_key is None
            assert object_id not in blobs


def test_a_phone_code_is_shown_once_and_needed_with_the_mailed_one(
    world, app, clock, runtime, smtp
):
    agent = browser(app, world["agent"], clock)
    response = send_pli(agent, verification="email+phone")
    assert response.status_code == 200
    page = text(response)
    assert "ne seront plus jamais affichés" in page and LEA in page
    phone = "".join(re.search(r'<code class="secret">(\d{3}) (\d{3})</code>', page).groups())
    run_pending(runtime)
    link = link_of(mails_to(smtp, LEA)[0])
    assert "par téléphone" in mails_to(smtp, LEA)[0].text

    recipient = app.test_client()
    asked = text(recipient.post(f"{link}/code"))
    assert 'name="phone_code"' in asked
    code = code_of(mails_to(smtp, LEA)[1])
    wrong = "000000" if phone != "000000" else "111111"
    refused = recipient.post(f"{link}/ouvrir", data={"code": code, "phone_code": wrong})
    assert refused.status_code == 422
    opened = recipient.post(f"{link}/ouvrir", data={"code": code, "phone_code": phone})
    assert opened.status_code == 303


# --- replies and deposits ------------------------------------------------------------------


def test_a_recipient_replies_with_a_file(world, app, clock, runtime, smtp):
    agent, pli_id, link = sent_and_notified(app, world, clock, runtime, smtp)
    recipient = app.test_client()
    open_pli(recipient, smtp, link)

    empty = recipient.post(f"{link}/repondre", data={"message": "Merci"})
    assert empty.status_code == 422 and "Joignez au moins un fichier" in text(empty)
    assert "Merci" in text(empty)  # the message typed stays
    sent = multipart(
        recipient,
        f"{link}/repondre",
        {"message": "Voici le justificatif."},
        [(b"%PDF-1.4 scan", "rib.pdf")],
    )
    assert sent.status_code == 303
    assert "Votre réponse a été transmise" in text(recipient.get(sent.headers["Location"]))

    run_pending(runtime)
    assert any("Une réponse à un pli" in m.subject for m in mails_to(smtp, world["agent"].email))
    received = text(agent.get("/plis?onglet=recus"))
    row = r'href="/plis/(\d+)">\d+<span[^>]*> — ouvrir le pli</span></a></th>\s*<td>Re : Copie'
    match = re.search(row, received)
    assert match, received
    reply_id = int(match.group(1))
    page = text(agent.get(f"/plis/{reply_id}"))
    assert "Voici le justificatif." in page and LEA in page and f"pli n° {pli_id}" in page
    file_url = re.search(rf'href="(/plis/{reply_id}/fichiers/\d+)"', page).group(1)
    assert agent.get(file_url).data == b"%PDF-1.4 scan"
    assert f"pli n° {reply_id}" in text(agent.get(f"/plis/{pli_id}"))


def test_a_citizen_deposits_files_through_a_deposit_link(world, app, clock, runtime, smtp, factory):
    agent = browser(app, world["agent"], clock)
    token = token_of(agent, "/plis/depots")
    created = agent.post(
        "/plis/depots",
        data={
            "csrf_token": token,
            "label": "Pièces du dossier de mariage",
            "instructions": "Pièce d'identité et justificatif de domicile.",
            "email": "futur.epoux@example.org",
            "days": "10",
            "uses": "1",
        },
    )
    assert created.status_code == 200
    page = text(created)
    link = re.search(
        r'<code class="secret" id="deposit-link">http://127\.0\.0\.1:8000(/depot/\S+)</code>', page
    ).group(1)
    assert "envoyé par e-mail à futur.epoux@example.org" in page
    (mail,) = mails_to(smtp, "futur.epoux@example.org")
    assert link in mail.text and "10/12/2026" in mail.text
    listing = text(agent.get("/plis/depots"))
    assert link not in listing and "Pièces du dossier de mariage" in listing and "actif" in listing

    citizen = app.test_client()
    events = audit_count(factory)
    form = citizen.get(link)
    assert form.status_code == 200 and "Pièce d'identité" in text(form)
    assert audit_count(factory) == events
    missing = multipart(
        citizen,
        link,
        {"name": "", "email": "futur.epoux@example.org", "message": "Bonjour"},
        [(b"identite", "cni.pdf")],
    )
    assert missing.status_code == 422 and "Indiquez votre nom." in text(missing)
    assert 'value="futur.epoux@example.org"' in text(missing)
    assert "Bonjour</textarea>" in text(missing)
    assert "choisissez-les à nouveau" in text(missing)
    done = multipart(
        citizen,
        link,
        {
            "name": "Jean Lafitte",
            "email": "futur.epoux@example.org",
            "message": "Voici mes pièces.",
        },
        [(b"identite", "cni.pdf"), (b"domicile", "edf.pdf")],
    )
    assert done.status_code == 200
    assert "Vos fichiers ont été transmis à la mairie de Mont-de-Marsan" in text(done)
    assert citizen.get(link).status_code == 410  # one use only

    run_pending(runtime)
    assert any("dépôt" in m.subject.lower() for m in mails_to(smtp, world["agent"].email))
    received = text(agent.get("/plis?onglet=recus"))
    assert "Dépôt : Pièces du dossier de mariage" in received and "Jean Lafitte" in received
    pli_id = int(re.search(r'href="/plis/(\d+)">', received).group(1))
    page = text(agent.get(f"/plis/{pli_id}"))
    assert "Voici mes pièces." in page and "Lien de dépôt" in page
    urls = re.findall(rf'href="(/plis/{pli_id}/fichiers/\d+)"', page)
    assert [agent.get(u).data for u in urls] == [b"identite", b"domicile"]
    with zipfile.ZipFile(io.BytesIO(agent.get(f"/plis/{pli_id}/tout.zip").data)) as zipped:
        assert zipped.namelist() == ["cni.pdf", "edf.pdf"]
    # Another commune's agent sees none of it.
    dax = browser(app, world["dax"], clock)
    assert dax.get(f"/plis/{pli_id}").status_code == 404
    assert dax.get(urls[0]).status_code == 404


def tus_upload(client: Any, endpoint: str, content: bytes, name: str) -> str:
    """A resumable upload in two PATCHes, with no session and no CSRF token (public
    pages): returns the upload's id."""
    meta = "filename " + base64.b64encode(name.encode()).decode()
    tus = {"Tus-Resumable": "1.0.0"}
    created = client.post(
        endpoint, headers={**tus, "Upload-Length": str(len(content)), "Upload-Metadata": meta}
    )
    assert created.status_code == 201, text(created)
    location = created.headers["Location"]
    assert location.startswith(endpoint + "/")
    half = len(content) // 2
    for offset, part in ((0, content[:half]), (half, content[half:])):
        patched = client.patch(
            location,
            data=part,
            headers={
                **tus,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, text(patched)
    return location.rsplit("/", 1)[1]


def test_deposits_and_replies_take_resumable_uploads(world, app, clock, runtime, smtp, factory):
    agent, _, link = sent_and_notified(app, world, clock, runtime, smtp)
    big = os.urandom(3 * 2**20 + 11)
    recipient = app.test_client()
    refused = recipient.post(
        f"{link}/televersements", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"}
    )
    assert refused.status_code == 403  # not opened with a code yet
    open_pli(recipient, smtp, link)
    upload = tus_upload(recipient, f"{link}/televersements", big, "scan registre.pdf")
    sent = recipient.post(f"{link}/repondre", data={"message": "Le scan.", "uploads": upload})
    assert sent.status_code == 303, text(sent)

    with transaction(factory) as db:
        user = db.get(User, world["agent"].id)
        _, token = service.create_deposit(
            db,
            app.extensions["securex"].vault,
            user,
            label="Pièces",
            instructions="",
            email="",
            days=None,
            uses=1,
            now=clock(),
            policy=service.ExchangePolicy(),
        )
    citizen = app.test_client()
    deposit = f"/depot/{token}"
    upload = tus_upload(citizen, f"{deposit}/televersements", big[::-1], "gros.pdf")
    # An upload is its uploader's: the recipient's cannot serve the depositor, nor the reverse.
    stolen = citizen.post(
        deposit,
        data={"name": "Jean Lafitte", "email": "jean@example.org", "uploads": upload + "0"},
    )
    assert stolen.status_code in (404, 422)
    done = citizen.post(
        deposit, data={"name": "Jean Lafitte", "email": "jean@example.org", "uploads": upload}
    )
    assert done.status_code == 200, text(done)

    run_pending(runtime)
    received = text(agent.get("/plis?onglet=recus"))
    ids = [int(i) for i in re.findall(r'href="/plis/(\d+)">', received)]
    contents = []
    for incoming in ids:
        page = text(agent.get(f"/plis/{incoming}"))
        contents += [
            agent.get(u).data for u in re.findall(rf'href="(/plis/{incoming}/fichiers/\d+)"', page)
        ]
    assert sorted(contents) == sorted([big, big[::-1]])


def test_revoking_a_deposit_link(world, app, clock):
    agent = browser(app, world["agent"], clock)
    created = agent.post(
        "/plis/depots",
        data={
            "csrf_token": token_of(agent, "/plis/depots"),
            "label": "RIB",
            "days": "3",
            "uses": "2",
        },
    )
    link = re.search(r"http://127\.0\.0\.1:8000(/depot/\S+)</code>", text(created)).group(1)
    page = text(agent.get("/plis/depots"))
    action = re.search(r'action="(/plis/depots/\d+/revoquer)"', page).group(1)
    assert agent.post(action, data={"csrf_token": csrf_token(page)}).status_code == 303
    assert "révoqué le 30/11/2026" in text(agent.get("/plis/depots"))
    assert app.test_client().get(link).status_code == 410
    bad = agent.post(
        "/plis/depots", data={"csrf_token": csrf_token(page), "label": "X", "uses": "99"}
    )
    assert bad.status_code == 422 and "Un lien de dépôt sert de 1 à 20 fois." in text(bad)


# --- resumable uploads ---------------------------------------------------------------------


def test_the_resumable_upload_needs_the_csrf_token_and_feeds_a_new_pli(
    world, app, clock, runtime, smtp
):
    agent = browser(app, world["agent"], clock)
    token = token_of(agent, "/plis/nouveau")
    content = bytes(range(256)) * 6144  # 1.5 MiB: more than the app's 1 MiB body limit
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(len(content)),
        "Upload-Metadata": "filename cmFwcG9ydCDDqXTDqS5wZGY=,filetype YXBwbGljYXRpb24vcGRm",
    }
    assert agent.post("/plis/televersements", headers=headers).status_code == 400  # no token
    assert (
        app.test_client()
        .post("/plis/televersements", headers={**headers, "X-CSRFToken": token})
        .status_code
        == 400
    )
    created = agent.post("/plis/televersements", headers={**headers, "X-CSRFToken": token})
    assert created.status_code == 201, text(created)
    location = created.headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    patch = {
        "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream",
        "X-CSRFToken": token,
    }
    first = agent.patch(location, data=content[:1_200_000], headers={**patch, "Upload-Offset": "0"})
    assert first.status_code == 204 and first.headers["Upload-Offset"] == "1200000"
    stale = agent.patch(location, data=b"x", headers={**patch, "Upload-Offset": "0"})
    assert stale.status_code == 409 and stale.headers["Upload-Offset"] == "1200000"
    second = agent.patch(
        location, data=content[1_200_000:], headers={**patch, "Upload-Offset": "1200000"}
    )
    assert second.status_code == 204
    head = agent.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert head.status_code == 200 and head.headers["Upload-Offset"] == str(len(content))

    # A form that comes back with an error keeps the finished upload (not sent again).
    again = agent.post(
        "/plis/nouveau",
        data={
            "csrf_token": token,
            "recipients": "pas-une-adresse",
            "subject": "Rapport",
            "uploads": upload_id,
        },
    )
    assert again.status_code == 422
    page = text(again)
    assert "Adresse e-mail invalide" in page and "rapport été.pdf (1,5 Mo)" in page
    assert f'name="uploads" value="{upload_id}"' in page and 'value="Rapport"' in page
    sent = agent.post(
        "/plis/nouveau",
        data={"csrf_token": token, "recipients": LEA, "subject": "Rapport", "uploads": upload_id},
    )
    assert sent.status_code == 303, text(sent)
    pli_id = int(sent.headers["Location"].rsplit("/", 1)[1])
    assert "rapport été.pdf" in text(agent.get(f"/plis/{pli_id}"))
    run_pending(runtime)
    recipient = app.test_client()
    link = link_of(mails_to(smtp, LEA)[0])
    open_pli(recipient, smtp, link)
    (url,) = re.findall(
        rf'href="({re.escape(link)}/fichiers/\d+)"', text(recipient.get(f"{link}/pli"))
    )
    assert recipient.get(url).data == content
    # The upload went into the pli: it cannot be attached twice.
    assert agent.head(location, headers={"Tus-Resumable": "1.0.0"}).status_code == 410


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_comes_back_as_messages_with_what_was_typed(world, app, clock, settings):
    agent = browser(app, world["agent"], clock)
    bad = send_pli(
        agent, recipients=f"{LEA}\nnimportequoi", subject="Mon objet", expires_in_days="90"
    )
    assert bad.status_code == 422
    page = text(bad)
    assert "Adresse e-mail invalide : 'nimportequoi'" in page
    assert "Mon objet" in page and "nimportequoi</textarea>" in page
    assert "choisissez-les à nouveau" in page

    days = send_pli(agent, expires_in_days="90")
    assert days.status_code == 422 and "de 1 à 30 jours" in text(days)
    assert 'aria-invalid="true"' in text(days) and "expires_in_days-errors" in text(days)
    words = send_pli(agent, download_limit="beaucoup")
    assert words.status_code == 422 and "Indiquez un nombre entier." in text(words)
    nothing = send_pli(agent, files=[])
    assert nothing.status_code == 422 and "Joignez au moins un fichier." in text(nothing)

    settings.values["exchange"]["form_max_bytes"] = 4096
    large = send_pli(agent, files=[(b"x" * (2 * 2**20), "gros.bin")])
    assert large.status_code == 413
    assert "navigateur récent avec JavaScript" in text(large)


def test_links_that_do_not_exist_or_expired(world, app, clock, runtime, smtp):
    client = app.test_client()
    assert client.get("/plis/d/" + "x" * 43).status_code == 404
    assert "Lien introuvable" in text(client.get("/plis/d/" + "x" * 43))
    assert client.post("/plis/d/court/code").status_code == 404
    assert client.get("/depot/" + "y" * 43).status_code == 404
    _, _, link = sent_and_notified(app, world, clock, runtime, smtp)
    assert client.get(f"{link}/pli").headers["Location"].endswith(f"{link}?acces=expire")
    assert client.get(f"{link}/fichiers/1").status_code == 303
    clock.advance(days=8)
    expired = client.get(link)
    assert expired.status_code == 410 and "a expiré le 07/12/2026" in text(expired)


def test_staff_pages_are_the_staffs(world, app, clock, make):
    officer = make.user("officer", MDM)
    assert app.test_client().get("/plis").status_code == 302  # to the login page
    page = text(browser(app, officer, clock).get("/plis"))
    assert "Aucun" in page or "n'a encore envoyé" in page
    assert 'href="/plis"' in page  # the navigation's link


# --- platform users ------------------------------------------------------------------------


def test_a_platform_user_opens_a_pli_with_their_account(world, app, clock, runtime, smtp):
    dax_email = world["dax"].email
    _, pli_id, link = sent_and_notified(app, world, clock, runtime, smtp, recipients=dax_email)
    anonymous = text(app.test_client().get(link))
    assert "Se connecter" in anonymous and "Recevoir un code" not in anonymous
    assert app.test_client().post(f"{link}/code").status_code == 403

    # "Se connecter" comes back to the pli after the password and the TOTP code (the
    # way back names the pli by its number, never the link's token).
    visitor = app.test_client()
    login_url = html.unescape(re.search(r'href="(/login\?next=[^"]+)"', anonymous).group(1))
    assert "/plis/recus/" in login_url and link.rsplit("/", 1)[1] not in login_url
    visitor.get(login_url)
    assert post_password(visitor, world["dax"]).headers["Location"].endswith("/login/totp")
    back = post_code(visitor, world["dax"].code(clock()))
    assert back.headers["Location"].endswith(f"/plis/recus/{pli_id}")
    assert visitor.get(back.headers["Location"]).headers["Location"].endswith(link)
    # Never to another site.
    clock.advance(seconds=30)
    elsewhere = app.test_client()
    elsewhere.get("/login?next=//evil.example/x")
    post_password(elsewhere, world["dax"])
    assert post_code(elsewhere, world["dax"].code(clock())).headers["Location"].endswith("/")
    clock.advance(seconds=30)

    dax = browser(app, world["dax"], clock)
    received = text(dax.get("/plis?onglet=recus"))
    assert "Adressés à vous" in received and "Copie de votre acte" in received
    assert f'href="/plis/recus/{pli_id}"' in received
    redirected = dax.get(f"/plis/recus/{pli_id}")
    assert redirected.status_code == 302 and redirected.headers["Location"].endswith(link)
    landing = text(dax.get(link))
    assert "Ouvrir le pli" in landing
    opened = dax.post(f"{link}/compte", data={"csrf_token": csrf_token(landing)})
    assert opened.status_code == 303
    assert "voici les pièces demandées" in text(dax.get(f"{link}/pli"))
    # Another account is not the recipient.
    clock.advance(seconds=30)  # a TOTP code is accepted once
    other = browser(app, world["agent"], clock)
    assert other.get(f"/plis/recus/{pli_id}").status_code == 404
    assert "autre compte" in text(other.get(link))


# --- OpenPGP keys --------------------------------------------------------------------------


def test_the_key_page_refuses_what_is_not_a_public_key(world, app, clock):
    agent = browser(app, world["agent"], clock)
    token = token_of(agent, "/plis/cles")
    garbage = agent.post(
        "/plis/cles", data={"csrf_token": token, "email": LEA, "key": "ceci n'est pas une clé"}
    )
    assert garbage.status_code == 422
    page = text(garbage)
    assert "pas une clé publique OpenPGP lisible" in page and LEA in page
    empty = agent.post("/plis/cles", data={"csrf_token": token, "email": LEA})
    assert empty.status_code == 422 and "Collez la clé publique" in text(empty)


def test_a_public_key_is_registered_from_its_file_and_a_private_one_refused(
    world, app, clock, tmp_path
):
    import gnupg

    from securex.exchange.openpgp import OpenPgp

    home = tempfile.mkdtemp(prefix="sx-gpg-")  # short: gpg-agent's socket lives there
    try:
        gpg = gnupg.GPG(gnupghome=home, encoding="utf-8")
        made = gpg.gen_key(
            gpg.gen_key_input(
                key_type="EDDSA",
                key_curve="ed25519",
                subkey_type="ECDH",
                subkey_curve="cv25519",
                name_real="Léa Dupont",
                name_email=LEA,
                no_protection=True,
            )
        )
        binary = gpg.export_keys(made.fingerprint, armor=False)
        secret = gpg.export_keys(made.fingerprint, secret=True, expect_passphrase=False)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
    # The binary key is stored armored: GnuPG reads the armor back as the same key.
    assert OpenPgp(tmp_path / "gnupg").inspect(views.armor(binary)).fingerprint == made.fingerprint

    agent = browser(app, world["agent"], clock)
    token = token_of(agent, "/plis/cles")
    refused = agent.post("/plis/cles", data={"csrf_token": token, "email": LEA, "key": secret})
    assert refused.status_code == 422 and "Ceci est une clé privée OpenPGP" in text(refused)
    assert "PRIVATE KEY" not in text(refused)  # not shown back
    registered = agent.post(
        "/plis/cles",
        data={"csrf_token": token, "email": LEA, "key_file": (io.BytesIO(binary), "lea.gpg")},
        content_type="multipart/form-data",
    )
    assert registered.status_code == 303
    page = text(agent.get("/plis/cles"))
    grouped = views.fingerprint(made.fingerprint)
    assert f"Clé {grouped} enregistrée" in page
    assert re.search(rf"<th scope=\"row\">{re.escape(LEA)}</th>\s*<td><code[^>]*>{grouped}", page)
    assert "sans expiration" in page


# --- pure helpers --------------------------------------------------------------------------


def test_ranges_sizes_and_names():
    assert views.byte_range(None, 100) is None
    assert views.byte_range("bytes=10-", 100) == (10, 99)
    assert views.byte_range("bytes=10-1000", 100) == (10, 99)
    assert views.byte_range("bytes=-5", 100) == (95, 99)
    assert views.byte_range("bytes=-500", 100) == (0, 99)
    assert views.byte_range("bytes=5-2", 100) is None
    assert views.byte_range("bytes=0-1,5-6", 100) is None
    assert views.byte_range("items=0-1", 100) is None
    for unsatisfiable in ("bytes=100-", "bytes=-0", "bytes=200-300"):
        with pytest.raises(ValueError):
            views.byte_range(unsatisfiable, 100)
    assert [views.size_fr(n) for n in (0, 1, 812, 1024, 1536 * 1024, 5 * 2**30)] == [
        "0 octet",
        "1 octet",
        "812 octets",
        "1 Ko",
        "1,5 Mo",
        "5 Go",
    ]
    assert views.masked("jeanne@example.fr") == "j***@example.fr"
    assert views.fingerprint("0123456789ABCDEF0123") == "0123 4567 89AB CDEF 0123"
    assert views.unique_names(["a.pdf", "A.pdf", "b", "b"]) == ["a.pdf", "A (2).pdf", "b", "b (2)"]
    assert (
        views.disposition('x"y.pdf')
        == "attachment; filename=\"x_y.pdf\"; filename*=UTF-8''x%22y.pdf"
    )


# --- the resumable upload in a real browser ------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One Chromium tab, driven over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.last = ws, 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.last += 1
        await self.ws.send_json({"id": self.last, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == self.last:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 30) -> Any:
        for _ in range(int(seconds * 10)):
            try:
                value = await self.eval(expression)
            except AssertionError:  # the page is navigating
                value = None
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"still false after {seconds} s: {expression}")


@contextlib.contextmanager
def chromium(folder: Path) -> Iterator[str]:
    """A headless Chromium; yields the WebSocket address of its page."""
    assert CHROMIUM
    profile = folder / "profile"
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.load(answer) if t["type"] == "page"]
        yield pages[0]["webSocketDebuggerUrl"]
    finally:
        process.terminate()
        process.wait(timeout=10)


class FailingOnce:
    """Answers 503 to the `nth` PATCH, as an overloaded proxy would: the browser must
    ask where the upload stands and go on from there."""

    def __init__(self, app: Any, nth: int) -> None:
        self.app, self.nth, self.patches = app, nth, 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PATCH":
            self.patches += 1
            if self.patches == self.nth:
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return [b""]
        return self.app(environ, start_response)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_browser_uploads_resumably_then_sends_the_form(
    world, app, clock, settings, factory, vault, tmp_path
):
    """tus-upload.js in Chromium: a file whose upload was cut at 3 MiB resumes there
    (the URL remembered in localStorage, HEAD, then PATCHes of 8 MiB) and gets over a
    server error (HEAD again, then on), another goes from the start, and the form is sent
    with their upload ids and no file in its body."""
    assert CHROMIUM, "Chromium manquant : lancez « make system-deps » (paquet chromium)."
    settings.values["security"]["session_cookie_secure"] = False  # plain http here
    agent = browser(app, world["agent"], clock)
    token = token_of(agent, "/plis/nouveau")
    big = os.urandom(12 * 2**20 + 12345)
    small = b"%PDF-1.7 petit fichier\n"
    folder = tmp_path / "fichiers"
    folder.mkdir()
    (folder / "rapport annuel.pdf").write_bytes(big)
    (folder / "note.pdf").write_bytes(small)
    stamp = 1_780_000_000
    for name in ("rapport annuel.pdf", "note.pdf"):
        os.utime(folder / name, (stamp, stamp))
    # The first 3 MiB of the big file went before the connection was lost.
    tus = {"Tus-Resumable": "1.0.0", "X-CSRFToken": token}
    created = agent.post(
        "/plis/televersements",
        headers={
            **tus,
            "Upload-Length": str(len(big)),
            "Upload-Metadata": "filename " + base64.b64encode(b"rapport annuel.pdf").decode(),
        },
    )
    location = created.headers["Location"]
    cut = 3 * 2**20
    first = agent.patch(
        location,
        data=big[:cut],
        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert first.status_code == 204
    session = agent.get_cookie("securex_session").value

    async def scenario(base: str, address: str) -> str:
        async with aiohttp.ClientSession() as http, http.ws_connect(address) as ws:
            page = Page(ws)
            await page.send("Network.enable")
            await page.send(
                "Network.setCookie", name="securex_session", value=session, url=base, httpOnly=True
            )
            await page.send("Page.navigate", url=f"{base}/plis/nouveau")
            await page.wait_for("document.readyState === 'complete' && !!document.forms[1]")
            key = f"securex-tus:/plis/televersements|rapport annuel.pdf|{len(big)}|{stamp * 1000}"
            remembered = json.dumps({"url": base + location, "at": 0})
            await page.eval(
                f"localStorage.setItem({json.dumps(key)}, JSON.stringify("
                f"Object.assign({remembered}, {{at: Date.now()}})))"
            )
            await page.eval(
                "document.getElementById('recipients').value = 'lea.dupont@example.org';"
                "document.getElementById('subject').value = 'Rapport annuel';"
            )
            root = await page.send("DOM.getDocument")
            node = await page.send(
                "DOM.querySelector", nodeId=root["root"]["nodeId"], selector="#files"
            )
            await page.send(
                "DOM.setFileInputFiles",
                nodeId=node["nodeId"],
                files=[str(folder / "rapport annuel.pdf"), str(folder / "note.pdf")],
            )
            await page.eval("document.querySelector('form.send-form').requestSubmit()")
            path: str = await page.wait_for(
                "/^\\/plis\\/\\d+$/.test(location.pathname) && location.pathname"
            )
            assert "Rapport annuel" in await page.eval("document.body.innerText")
            return path

    flaky = FailingOnce(app, nth=2)
    with serving(flaky) as base, chromium(tmp_path) as address:
        path = asyncio.run(scenario(base, address))
    assert flaky.patches == 4  # 3 to 11 MiB, the rest (503), the rest again, the small file
    pli_id = int(path.rsplit("/", 1)[1])
    with factory() as db:
        files = db.execute(
            select(PliFile.object_id, PliFile.size)
            .where(PliFile.pli_id == pli_id)
            .order_by(PliFile.position)
        ).all()
        assert files[0] == (location.rsplit("/", 1)[1], len(big))  # the upload resumed
        assert vault.read_all(db, MDM, files[0][0]) == big
        assert vault.read_all(db, MDM, files[1][0]) == small
