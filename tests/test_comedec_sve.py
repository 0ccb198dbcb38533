"""The citizens' counter (/demande-acte) end to end, with a real SMTP server: the form
asks exactly what art. 29 requires, the challenge and the rate limit hold back
floods, a bad proof is refused with nothing kept, the acknowledgement (CRPA
R112-11-1) is shown and e-mailed, the request joins the agents' queue, and once
issued the copy is downloaded with a code read from the mail that was sent; wrong
codes count and lock, opening the link changes nothing, no log line names anyone.
The mail adapter itself is tried against STARTTLS with a login, and refuses a relay
without it."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from securex.accounts.models import RateLimit, Tenant
from securex.accounts.service import Actor
from securex.audit.models import AuditEvent
from securex.comedec import service as comedec
from securex.comedec.models import ActRequest, CommuneSettings
from securex.comedec.public import NUMBERS
from securex.config import load_settings
from securex.db import transaction
from securex.errors import ConfigError
from securex.mail import MailDisabled, MailError, MailSettings, send
from securex.registry import service as registry
from securex.vault.models import VaultObject
from tests.smtp import SmtpServer

MDM = "40192"
EMAIL = "lea.dupont-martin@example.org"
SERVICE = "Service population — état civil"
CONTACT = (
    "Place du Général-Leclerc, 40000 Mont-de-Marsan ; 05 58 00 00 00 ; "
    "etat-civil@montdemarsan.example.fr"
)
BIRTH = {
    "enfant": {"nom": "Dupont-Martin", "prenoms": "Léa Marie", "sexe": "F"},
    "naissance": {"date": "1990-03-02", "heure": "10:30", "lieu": "Mont-de-Marsan (Landes)"},
    "parents": [
        {"nom": "Dupont", "prenoms": "Jean Paul", "sexe": "M", "date_naissance": "1960-02-03"},
        {"nom": "Martin", "prenoms": "Sophie", "sexe": "F"},
    ],
}
FORM = "/demande-acte/40192/naissance/copie_integrale"
PDF = b"%PDF-1.7\n% livret de famille\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture
def app(mail_app):
    return mail_app


@pytest.fixture
def world(runtime, app, make, clock, factory, vault):
    """Mont-de-Marsan with its service's contacts and one imported birth act."""
    make.tenant()
    with transaction(factory) as db:
        tenant = db.scalar(select(Tenant).where(Tenant.insee == MDM))
        db.add(
            CommuneSettings(
                tenant_id=tenant.id,
                auto_issue=False,
                not_found_at_once=False,
                due_days=3,
                service_name=SERVICE,
                service_contact=CONTACT,
            )
        )
        act_id = registry.import_act(
            db,
            Actor("test"),
            insee=MDM,
            kind="naissance",
            year=1990,
            number=77,
            drawn_at=clock() - timedelta(days=365 * 36),
            officer_name="R. Lacoste",
            content=BIRTH,
            now=clock(),
            vault=vault,
        )
    return {"act": act_id}


# --- helpers -----------------------------------------------------------------------------

QUESTION = re.compile(r"Combien font (\S+) plus (\S+) \?")
CHALLENGE = re.compile(r'name="challenge" type="hidden" value="([^"]+)"')


def challenge(html: str) -> tuple[str, str]:
    """The page's token and the right answer to its question."""
    a, b = QUESTION.search(html).groups()
    return CHALLENGE.search(html).group(1), str(NUMBERS.index(a) + NUMBERS.index(b))


def fields(**changes: Any) -> dict[str, Any]:
    data = {
        "nom": "Dupont-Martin",
        "prenoms": "Léa Marie",
        "date": "02/03/1990",
        "lieu": "Mont-de-Marsan",
        "parent1_nom": "Dupont",
        "parent1_prenoms": "Jean",
        "parent2_nom": "Martin",
        "parent2_prenoms": "Sophie",
        "capacity": "titulaire",
        "purpose": "Dossier de mariage",
        "email": EMAIL,
        "email_confirm": EMAIL,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def post(client, path=FORM, *, proof=None, answer=None, token=None, **changes):
    """Fill the form as a person does: read the page, answer its question, send."""
    page = client.get(path)
    assert page.status_code == 200
    right_token, right = challenge(page.get_data(as_text=True))
    data = fields(**changes)
    data["challenge"] = token or right_token
    data["answer"] = right if answer is None else answer
    if proof is not None:
        data["proof"] = (io.BytesIO(proof), "justificatif.pdf")
    return client.post(path, data=data, content_type="multipart/form-data")


def count(factory, model) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(model))


def follow_link(message) -> str:
    url = re.search(r"http://127\.0\.0\.1:8000(/demande-acte/suivi/\S+)", message.text)
    assert url, message.text
    return url.group(1)


def issue(factory, make, runtime, clock, vault, request_id: int, act_id: int) -> None:
    """An agent prepares the copy, an officier signs it (the request becomes issued)."""
    from securex.registry.batch import officer_signing

    officer = make.user("officer", MDM)
    agent = make.user("agent", MDM, totp=False)
    by = Actor("user", str(agent.id), MDM)
    with transaction(factory) as db:
        comedec.prepare_delivery(db, by, MDM, request_id, act_id, now=clock(), vault=vault)
    user = make.get_user(officer.id)
    signing = officer_signing(runtime, user, clock())
    with transaction(factory) as db:
        (item,) = registry.signature_queue(db, Actor.for_user(user), MDM, now=clock(), vault=vault)
        registry.sign_item(db, item.ref, signing=signing, now=clock(), vault=vault)


def code_from(message) -> str:
    return re.search(r"^\s*(\d{6})\s*$", message.text, re.M).group(1)


# --- the form ------------------------------------------------------------------------------


def test_choosing_the_commune_and_the_document(world, client):
    page = client.get("/demande-acte")
    assert page.status_code == 200 and "Mont-de-Marsan (40192)" in page.get_data(as_text=True)
    wrong = client.get("/demande-acte?commune=40192&act_kind=deces&delivery=extrait_avec_filiation")
    assert wrong.status_code == 422 and "ne se délivre pas" in wrong.get_data(as_text=True)
    unknown = client.get("/demande-acte?commune=33063&act_kind=naissance&delivery=copie_integrale")
    assert unknown.status_code == 422
    right = client.get(
        "/demande-acte?commune=40192&act_kind=naissance&delivery=extrait_sans_filiation"
    )
    assert right.status_code == 302
    assert right.headers["Location"].endswith(
        "/demande-acte/40192/naissance/extrait_sans_filiation"
    )
    assert client.get("/demande-acte/40192/deces/extrait_sans_filiation").status_code == 404
    assert client.get("/demande-acte/33063/naissance/copie_integrale").status_code == 404


COMMON = {"nom", "prenoms", "date", "lieu", "capacity", "proof", "purpose", "email"}
COMMON |= {"email_confirm", "challenge", "answer"}
PARENTS = {"parent1_nom", "parent1_prenoms", "parent2_nom", "parent2_prenoms"}
MARRIAGE = {"mariage_date", "mariage_lieu"}


@pytest.mark.parametrize(
    ("path", "expected", "label"),
    [
        ("naissance/copie_integrale", COMMON | PARENTS, "Date de naissance"),
        ("naissance/extrait_avec_filiation", COMMON | PARENTS, "Date de naissance"),
        ("naissance/extrait_sans_filiation", COMMON, "Date de naissance"),
        # For a marriage, the event is the marriage itself (art. 29), for every delivery.
        ("mariage/copie_integrale", COMMON - {"date", "lieu"} | MARRIAGE, "Date du mariage"),
        ("mariage/extrait_avec_filiation", COMMON - {"date", "lieu"} | MARRIAGE, "Date du mariage"),
        ("mariage/extrait_sans_filiation", COMMON - {"date", "lieu"} | MARRIAGE, "Date du mariage"),
        ("deces/copie_integrale", COMMON, "Date du décès"),
        ("reconnaissance/copie_integrale", COMMON, "Date de naissance de l&#39;enfant"),
    ],
)
def test_the_form_asks_exactly_what_art_29_requires(world, client, path, expected, label):
    page = client.get(f"/demande-acte/{MDM}/{path}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert set(re.findall(r'<(?:input|select|textarea)[^>]* name="([^"]+)"', html)) == expected
    assert label in html and "art. 29" in html
    # Capacities offered are the guichet's, with their French labels.
    assert "Un ascendant (parent, grand-parent)" in html and ">Un notaire<" not in html
    # A public page: no session, no cookie, no inline script.
    assert "Set-Cookie" not in page.headers
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script" not in html


# --- floods and bad input ---------------------------------------------------------------------


def test_a_wrong_answer_is_refused_and_nothing_is_stored(world, client, factory, smtp):
    objects = count(factory, VaultObject)
    response = post(client, answer="99", proof=PDF, capacity="ascendant")
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "Réponse inexacte" in html
    assert "Combien font" in html  # a new question to answer
    assert count(factory, ActRequest) == 0 and count(factory, VaultObject) == objects
    assert smtp.messages == []


def test_an_answer_in_words_is_accepted(world, client, factory):
    page = client.get(FORM).get_data(as_text=True)
    token, right = challenge(page)
    data = {**fields(), "challenge": token, "answer": f"  {NUMBERS[int(right)].upper()} "}
    assert client.post(FORM, data=data).status_code == 200
    assert count(factory, ActRequest) == 1


def test_a_challenge_serves_once_and_expires(world, client, factory, clock):
    page = client.get(FORM).get_data(as_text=True)
    token, right = challenge(page)
    data = {**fields(), "challenge": token, "answer": right}
    assert client.post(FORM, data=data).status_code == 200
    replay = client.post(FORM, data=data)  # the browser's "send again", or a robot
    assert replay.status_code == 422 and "déjà servi" in replay.get_data(as_text=True)
    padded = client.post(FORM, data={**data, "challenge": f"0{token}"})  # the same question
    assert padded.status_code == 422 and "déjà servi" in padded.get_data(as_text=True)
    assert count(factory, ActRequest) == 1

    token, right = challenge(client.get(FORM).get_data(as_text=True))
    clock.advance(minutes=16)
    late = client.post(FORM, data={**fields(), "challenge": token, "answer": right})
    assert late.status_code == 422 and "expiré" in late.get_data(as_text=True)
    issued, nonce, _tag, mac = challenge(client.get(FORM).get_data(as_text=True))[0].split(".")
    made_up = f"{issued}.{nonce}.{'A' * 22}.{mac}"
    forged = client.post(FORM, data={**fields(), "challenge": made_up, "answer": right})
    assert forged.status_code == 422 and "invalide" in forged.get_data(as_text=True)
    # Bound to the form it was served with.
    other = "/demande-acte/40192/naissance/extrait_sans_filiation"
    token, right = challenge(client.get(FORM).get_data(as_text=True))
    moved = client.post(other, data={**fields(), "challenge": token, "answer": right})
    assert moved.status_code == 422 and count(factory, ActRequest) == 1


def test_submissions_are_rate_limited_per_address(world, client, factory, settings):
    settings.values["sve"]["submissions_per_address"] = 2
    assert post(client, answer="0").status_code == 422
    assert post(client).status_code == 200
    limited = post(client)
    assert limited.status_code == 429
    assert "Trop de demandes" in limited.get_data(as_text=True)
    assert count(factory, ActRequest) == 1
    other = client.get(FORM, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    token, right = challenge(other.get_data(as_text=True))
    response = client.post(
        FORM,
        data={**fields(), "challenge": token, "answer": right},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("proof", "limit", "message"),
    [
        (b"GIF89a\x01\x00\x01\x00", None, "PDF, JPEG ou PNG"),
        (b"<html><script>alert(1)</script>", None, "PDF, JPEG ou PNG"),
        (PDF + b"x" * 2000, 1024, "trop volumineux"),
        (None, None, "Joignez un justificatif"),
    ],
)
def test_a_bad_or_missing_proof_is_refused_and_nothing_is_stored(
    world, client, factory, settings, smtp, proof, limit, message
):
    if limit:
        settings.values["sve"]["max_proof_bytes"] = limit
    objects = count(factory, VaultObject)
    response = post(client, proof=proof, capacity="ascendant")
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert count(factory, ActRequest) == 0 and count(factory, VaultObject) == objects
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parent1_nom": "", "parent1_prenoms": ""}, "art. 29"),
        ({"date": "31/02/1990"}, "Date invalide"),
        ({"date": "01/01/2030"}, "dans le futur"),
        ({"email_confirm": "autre@example.org"}, "pas identiques"),
        ({"email": "pas-une-adresse", "email_confirm": "pas-une-adresse"}, "invalide"),
        ({"capacity": "notaire"}, "Choisissez votre qualité"),
        ({"nom": "x" * 201}, "200"),
    ],
)
def test_field_errors_are_shown_next_to_the_fields(world, client, factory, changes, message):
    response = post(client, **changes)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert count(factory, ActRequest) == 0


# --- acknowledgement ----------------------------------------------------------------------


def test_the_acknowledgement_is_shown_and_e_mailed(world, client, factory, smtp, vault, clock):
    response = post(client, proof=PDF, capacity="ascendant")
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    with factory() as db:
        req = db.scalar(select(ActRequest))
        request_id, proof_id = req.id, req.proof_id
        assert req.channel == "sve" and req.client_id is None and req.capacity == "ascendant"
    # The page: number, date of receipt, the service and its contacts (R112-11-1).
    for fact in (f"n° {request_id}", "30/11/2026 09:00", SERVICE, "05 58 00 00 00", "03/12/2026"):
        assert fact in html, fact
    assert "envoyé par e-mail" in html
    # The e-mail that was actually sent.
    (message,) = smtp.messages
    assert message.recipients == [EMAIL] and message.sender == "etat-civil@mairie.example.fr"
    assert f"n° {request_id}" in message.subject and "Mont-de-Marsan" in message.subject
    assert message.message["Reply-To"] == "etat-civil@montdemarsan.example.fr"
    assert message.message["Message-ID"] and message.message["Date"]
    for part in (message.text, message.html):
        for fact in (str(request_id), "30/11/2026 09:00", SERVICE, "05 58 00 00 00"):
            assert fact in part, fact
        assert "R112-11-1" in part and "/demande-acte/suivi/" in part
    assert "Dupont" not in message.text  # the e-mail names no one
    # The same rules and queue as the API's guichet requests.
    agent = Actor("user", "0", MDM)
    with transaction(factory) as db:
        queue = comedec.agent_queue(db, agent, MDM, now=clock())
        assert [(q.view.id, q.channel) for q in queue] == [(request_id, "sve")]
        assert queue[0].requester == "Guichet en ligne (particulier)"
        seen = comedec.examine(db, agent, MDM, request_id, now=clock(), vault=vault)
        assert seen.data["email"] == EMAIL and seen.data["parents"][0]["nom"] == "Dupont"
        assert "art. 30" in seen.view.legal_basis and "justification" in seen.view.reason
        assert vault.read_all(db, MDM, proof_id) == PDF


def test_a_refusal_at_once_states_its_legal_basis(world, client, smtp):
    response = post(client, capacity="tiers")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Refusée" in html
    (message,) = smtp.messages
    assert "refusée" in message.text and "Décret n° 2017-890 du 6 mai 2017, art. 30" in message.text


def test_when_mail_fails_the_request_is_still_registered(world, client, factory, settings, smtp):
    settings.values["mail"]["port"] = 9  # the relay is down: nothing listens there
    response = post(client)
    assert response.status_code == 200
    assert "n'a pas pu vous être envoyé" in response.get_data(as_text=True)
    settings.values["mail"]["host"] = ""  # mail off on this instance
    response = post(client)
    assert response.status_code == 200
    assert "n'a pas pu vous être envoyé" in response.get_data(as_text=True)
    assert count(factory, ActRequest) == 2 and smtp.messages == []


# --- follow-up and download -------------------------------------------------------------------


def test_the_copy_is_downloaded_with_a_code_read_from_the_mail(
    world, client, factory, make, runtime, clock, vault, smtp, caplog
):
    caplog.set_level(logging.DEBUG)
    assert post(client).status_code == 200
    records = list(caplog.records)
    (ack,) = smtp.messages
    link = follow_link(ack)
    with factory() as db:
        request_id = db.scalar(select(ActRequest.id))
    page = client.get(link)
    assert page.status_code == 200 and "À traiter" in page.get_data(as_text=True)
    early = client.post(f"{link}/code")
    assert early.status_code == 409 and "pas encore délivrée" in early.get_data(as_text=True)

    issue(factory, make, runtime, clock, vault, request_id, world["act"])
    caplog.clear()  # the registry's signing is not the counter's to check here
    page = client.get(link).get_data(as_text=True)
    assert "Délivrée" in page and "Recevoir un code par e-mail" in page
    sent = client.post(f"{link}/code")
    assert sent.status_code == 200 and "Un code vient d" in sent.get_data(as_text=True)
    code_mail = smtp.messages[-1]
    assert code_mail.recipients == [EMAIL] and "Code de téléchargement" in code_mail.subject
    code = code_from(code_mail)
    assert code in code_mail.html

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    refused = client.post(f"{link}/copie", data={"code": wrong})
    assert refused.status_code == 422
    assert "il vous reste 4 essais" in refused.get_data(as_text=True)
    pdf = client.post(f"{link}/copie", data={"code": code})
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF") and pdf.headers["Cache-Control"] == "no-store"
    assert "attachment" in pdf.headers["Content-Disposition"]
    again = client.post(f"{link}/copie", data={"code": code})  # a code is used once
    assert again.status_code == 422 and "demandez un nouveau code" in again.get_data(as_text=True)
    with factory() as db:
        assert db.get(ActRequest, request_id).acknowledged_at is not None

    # No log line of the counter names the person, the parents or the address.
    records += caplog.records
    assert any(r.name == "securex.mail" for r in records)
    for record in records:
        if record.name == "mail.log":
            continue  # the test relay's own log (aiosmtpd), not securex's
        line = record.getMessage()
        for secret in (EMAIL, "lea.dupont", "Dupont", "Léa", "Sophie", code):
            assert secret not in line, (record.name, line)


def test_five_wrong_codes_lock_the_download(
    world, client, factory, make, runtime, clock, vault, smtp
):
    assert post(client).status_code == 200
    link = follow_link(smtp.messages[0])
    with factory() as db:
        request_id = db.scalar(select(ActRequest.id))
    issue(factory, make, runtime, clock, vault, request_id, world["act"])
    client.post(f"{link}/code")
    code = code_from(smtp.messages[-1])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        response = client.post(f"{link}/copie", data={"code": wrong})
        assert f"il vous reste {left} essai" in response.get_data(as_text=True)
    locked = client.post(f"{link}/copie", data={"code": wrong})
    assert locked.status_code == 429 and "bloqué" in locked.get_data(as_text=True)
    assert client.post(f"{link}/copie", data={"code": code}).status_code == 429
    assert client.post(f"{link}/code").status_code == 429
    assert "bloqué jusqu" in client.get(link).get_data(as_text=True)
    clock.advance(hours=24, minutes=1)
    assert client.post(f"{link}/code").status_code == 200
    fresh = code_from(smtp.messages[-1])
    assert client.post(f"{link}/copie", data={"code": fresh}).mimetype == "application/pdf"


def test_codes_sent_per_request_are_limited(world, client, factory, make, runtime, clock, vault):
    assert post(client).status_code == 200
    with factory() as db:
        request_id = db.scalar(select(ActRequest.id))
    issue(factory, make, runtime, clock, vault, request_id, world["act"])
    with factory() as db:
        link = comedec.link_token(db, request_id, now=clock(), vault=vault)
    for _ in range(5):
        assert client.post(f"/demande-acte/suivi/{link}/code").status_code == 200
    assert client.post(f"/demande-acte/suivi/{link}/code").status_code == 429


def test_opening_the_link_changes_nothing(
    world, client, factory, make, runtime, clock, vault, smtp
):
    assert post(client).status_code == 200
    link = follow_link(smtp.messages[0])
    with factory() as db:
        request_id = db.scalar(select(ActRequest.id))
    issue(factory, make, runtime, clock, vault, request_id, world["act"])
    client.post(f"{link}/code")

    def snapshot():
        with factory() as db:
            req = db.get(ActRequest, request_id)
            # The sealed column as stored (ciphertext), whatever its keys.
            sealed = db.scalar(text("SELECT data FROM act_requests WHERE id = :id"), {"id": req.id})
            limits = sorted((r.key, r.count) for r in db.scalars(select(RateLimit)))
            events = db.scalar(select(func.count()).select_from(AuditEvent))
            return sealed, req.updated_at, req.acknowledged_at, limits, events

    before, mails = snapshot(), len(smtp.messages)
    for _ in range(3):  # a mail scanner, a preview, the person
        page = client.get(link)
        assert page.status_code == 200 and "Set-Cookie" not in page.headers
    assert snapshot() == before and len(smtp.messages) == mails

    mac = link.rsplit("-", 1)[1]
    for forged in (f"{request_id + 1}-{mac}", f"{request_id}-{mac[:-2]}xx", "abc", f"{request_id}"):
        assert client.get(f"/demande-acte/suivi/{forged}").status_code == 404, forged
        assert client.post(f"/demande-acte/suivi/{forged}/code").status_code == 404, forged
    assert snapshot() == before


def test_an_api_request_has_no_public_link(world, client, make, factory, clock, vault):
    _, token = make.client("guichet", (MDM,))
    body = {
        "commune": MDM,
        "act_kind": "naissance",
        "delivery": "extrait_sans_filiation",
        "capacity": "titulaire",
        "person": {"nom": "Dupont-Martin", "prenoms": "Léa", "date": "1990-03-02", "lieu": "X"},
    }
    created = client.post(
        "/api/v1/act-requests", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    with factory() as db:
        link = comedec.link_token(db, created.json["id"], now=clock(), vault=vault)
    assert client.get(f"/demande-acte/suivi/{link}").status_code == 404


# --- the mail adapter -----------------------------------------------------------------------


def mail_settings(**mail: Any) -> Any:
    return load_settings(environ={}, overrides={"mail": mail})


def test_mail_over_starttls_with_a_login(tmp_path):
    with SmtpServer(tls_dir=tmp_path, username="relay", password="s3cret") as smtp:
        settings = mail_settings(**smtp.mail_settings())
        mail = MailSettings.from_settings(settings, {"SECUREX_MAIL_PASSWORD": "s3cret"})
        message_id = send(
            mail,
            to="personne@example.org",
            subject="Accusé de réception n° 12 — Mont-de-Marsan",
            text="Bonjour,\nréçu.",
            html="<p>Bonjour, <strong>réçu</strong>.</p>",
        )
        (received,) = smtp.messages
        assert received.tls and received.login == "relay"
        assert received.message["Message-ID"] == message_id
        assert received.subject == "Accusé de réception n° 12 — Mont-de-Marsan"
        assert "réçu" in received.text and "<strong>réçu</strong>" in received.html
        assert received.message.get_content_type() == "multipart/alternative"
        assert received.message["Auto-Submitted"] == "auto-generated"
        bad = MailSettings.from_settings(settings, {"SECUREX_MAIL_PASSWORD": "wrong"})
        with pytest.raises(MailError):
            send(bad, to="personne@example.org", subject="x", text="x", html="x")
        assert len(smtp.messages) == 1


def test_mail_is_never_sent_in_clear_when_starttls_is_required(tmp_path, caplog):
    with SmtpServer() as smtp:
        settings = mail_settings(**{**smtp.mail_settings(), "starttls": True})
        mail = MailSettings.from_settings(settings, {})
        with pytest.raises(MailError, match="STARTTLS"):
            send(mail, to="personne@example.org", subject="x", text="x", html="x")
        assert smtp.messages == []
    assert all("personne@" not in r.getMessage() for r in caplog.records)


def test_mail_refuses_what_it_cannot_send_clearly():
    with pytest.raises(MailDisabled, match="pas configuré"):
        send(MailSettings.from_settings(mail_settings(), {}), to="a@example.org", **_MSG)
    on = mail_settings(host="127.0.0.1", starttls=False, port=9)
    mail = MailSettings.from_settings(on, {})
    for bad in ("a@example.org\r\nBcc: b@example.org", "a@example.org, b@example.org", "a"):
        with pytest.raises(MailError, match="adresse"):
            send(mail, to=bad, **_MSG)
    with pytest.raises(MailError, match="En-tête de message invalide"):
        send(mail, to="a@example.org", **{**_MSG, "subject": "x\r\nBcc: b@example.org"})
    with pytest.raises(MailError, match="n'a pas accepté"):  # nothing listens on port 9
        send(mail, to="a@example.org", **_MSG)
    with pytest.raises(ConfigError, match="SECUREX_MAIL_PASSWORD"):
        MailSettings.from_settings(mail_settings(host="relay.example", username="u"), {})
    with pytest.raises(ConfigError, match="sender"):
        MailSettings.from_settings(mail_settings(host="relay.example", sender="x"), {})


_MSG = {"subject": "Objet", "text": "texte", "html": "<p>texte</p>"}
