"""The agents' pages of the exchange: the queue of requests with its tabs and overdue
flags, one request examined and decided (copy prepared for the officier, refusal with
its reason, act not found), the citizen's proof, the dashboard's count, the commune's
settings, and every page refused to another commune or to the wrong role."""

from __future__ import annotations

import re
from datetime import timedelta
from io import BytesIO
from typing import Any

import pytest
from sqlalchemy import select

from securex.accounts.service import Actor
from securex.audit.events import EventType
from securex.audit.models import AuditEvent
from securex.comedec import service as comedec
from securex.comedec.models import ActRequest, CommuneSettings
from securex.comedec.schema import ActRequestIn
from securex.db import transaction
from securex.registry import service as registry
from securex.registry.batch import officer_signing
from tests.conftest import csrf_token
from tests.test_comedec import BIRTH, MDM, bearer, request_body, submit
from tests.test_login import login

DAX = "40088"
PDF = b"%PDF-1.7\n% livret de famille (scan)\n%%EOF\n"


@pytest.fixture
def world(demo_pki, runtime, app, make, clock, factory, vault) -> dict[str, Any]:
    """Mont-de-Marsan with one birth act, its staff, a notary; Dax with an agent."""
    make.tenant()
    make.tenant(DAX, "Dax")
    officer = make.user("officer", MDM)  # officer1@…: the demo PKI has its certificate
    agent = make.user("agent", MDM)
    admin = make.user("admin", MDM)
    dax_agent = make.user("agent", DAX)
    with transaction(factory) as db:
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
    _, notary = make.client("notaire", (MDM,))
    return {
        "act": act_id,
        "notary": notary,
        "officer": officer,
        "agent": agent,
        "admin": admin,
        "dax_agent": dax_agent,
    }


def as_user(app: Any, account: Any, clock: Any) -> Any:
    """A browser of its own, logged in."""
    browser = app.test_client()
    login(browser, account, clock)
    return browser


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def page(browser: Any, url: str, status: int = 200) -> str:
    response = browser.get(url)
    assert response.status_code == status, (url, response.status_code, text(response)[:2000])
    return text(response)


def post(browser: Any, url: str, data: dict[str, Any], form_page: str) -> Any:
    """POST `data` with the session's CSRF token, named as the form's prefix names it
    (the request page's forms are prefixed: copie-, refus-, introuvable-)."""
    token = csrf_token(page(browser, form_page))
    action = url.rsplit("/", 1)[1]
    prefix = {"preparer": "copie-", "refuser": "refus-", "introuvable": "introuvable-"}
    return browser.post(url, data={f"{prefix.get(action, '')}csrf_token": token, **data})


def api_status(client: Any, token: str, request_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/act-requests/{request_id}", headers=bearer(token))
    assert response.status_code == 200, response.json
    result: dict[str, Any] = response.json
    return result


def events(make: Any, action: EventType) -> list[AuditEvent]:
    with make.session() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action.value)))


def queued(client: Any, world: dict[str, Any], **changes: Any) -> int:
    response = submit(client, world["notary"], request_body(**changes) if changes else None)
    assert response.status_code == 201 and response.json["status"] == "queued", response.json
    request_id: int = response.json["id"]
    return request_id


def test_an_agent_prepares_the_copy_and_the_officier_signs_it(
    world, app, client, make, clock, runtime, factory, vault
):
    request_id = queued(client, world)
    agent = as_user(app, world["agent"], clock)

    listing = page(agent, "/demandes")
    row = re.search(
        rf'<tr[^>]*>\s*<th scope="row"><a href="/demandes/{request_id}">.*?</tr>', listing, re.S
    )
    assert row, listing
    for expected in (
        "Client notaire",
        "Acte de naissance",
        "Copie intégrale",
        "Un notaire",
        "03/12/2026",  # three days by default
        "À traiter",
    ):
        assert expected in row.group(0), expected
    assert "En retard" not in row.group(0)

    html = page(agent, f"/demandes/{request_id}")
    for expected in ("DUPONT MARTIN", "02/03/1990", "DUPONT Jean", "Succession Dupont"):
        assert expected in html, expected
    assert "DOSSIER-2026-118" in html and "Décret n° 2017-890" in html
    assert f'href="/registre/actes/{world["act"]}"' in html
    assert f'name="copie-act" required type="radio" value="{world["act"]}"' in html
    assert "/justificatif" not in html  # the notary sent no proof
    assert events(make, EventType.REQUEST_VIEWED)

    # Only an act the page offered can be delivered.
    wrong = post(
        agent, f"/demandes/{request_id}/preparer", {"copie-act": "999"}, f"/demandes/{request_id}"
    )
    assert wrong.status_code == 400 and "Choisissez l&#39;un des actes proposés" in text(wrong)
    none = post(agent, f"/demandes/{request_id}/preparer", {}, f"/demandes/{request_id}")
    assert none.status_code == 400 and "Choisissez l&#39;acte à délivrer" in text(none)

    done = post(
        agent,
        f"/demandes/{request_id}/preparer",
        {"copie-act": str(world["act"])},
        f"/demandes/{request_id}",
    )
    assert done.status_code == 302, text(done)
    after = page(agent, done.headers["Location"])
    assert "signature de l&#39;officier" in after
    assert 'action="/demandes/' not in after  # no more actions
    assert api_status(client, world["notary"], request_id)["status"] == "queued"
    assert "Copie à signer par l'officier" in page(agent, "/demandes")
    assert len(events(make, EventType.REQUEST_ACCEPTED)) == 1
    # A second attempt is turned away, and nothing else is prepared.
    again = post(
        agent,
        f"/demandes/{request_id}/preparer",
        {"copie-act": str(world["act"])},
        f"/registre/actes/{world['act']}",
    )
    assert again.status_code == 302
    assert "attend déjà la signature" in page(agent, again.headers["Location"])
    assert len(events(make, EventType.REQUEST_ACCEPTED)) == 1

    officer = as_user(app, world["officer"], clock)
    signature = page(officer, "/registre/signature")
    assert "delivery:" in signature

    user = make.get_user(world["officer"].id)
    signing = officer_signing(runtime, user, clock())
    with transaction(factory) as db:
        (item,) = registry.signature_queue(db, Actor.for_user(user), MDM, now=clock(), vault=vault)
        assert item.ref.startswith("delivery:")
        registry.sign_item(db, item.ref, signing=signing, now=clock(), vault=vault)
    assert api_status(client, world["notary"], request_id)["status"] == "issued"
    issued = page(agent, f"/demandes/{request_id}")
    assert "Délivrée" in issued and "Voir l'acte délivré" in issued
    assert 'action="/demandes/' not in issued
    assert f'/demandes/{request_id}"' not in page(agent, "/demandes")  # no longer to handle
    assert f'/demandes/{request_id}"' in page(agent, "/demandes?etat=toutes")


def test_a_refusal_needs_a_reason_which_the_requester_sees(world, app, client, make, clock):
    request_id = queued(client, world)
    agent = as_user(app, world["agent"], clock)
    url = f"/demandes/{request_id}"
    empty = post(agent, f"{url}/refuser", {"refus-reason": "   "}, url)
    assert empty.status_code == 400
    assert "Indiquez le motif du refus" in text(empty) and 'id="refus-reason-errors"' in text(empty)
    assert api_status(client, world["notary"], request_id)["status"] == "queued"

    reason = "Le mandat produit ne couvre pas cet acte."
    done = post(agent, f"{url}/refuser", {"refus-reason": reason}, url)
    assert done.status_code == 302
    status = api_status(client, world["notary"], request_id)
    assert status["status"] == "refused" and status["reason"] == reason
    assert "art. 30" in status["legal_basis"]
    html = page(agent, url)
    assert "Refusée" in html and reason in html and "Motif du refus" in html
    assert 'action="/demandes/' not in html
    # Already handled: another decision is turned away.
    late = post(agent, f"{url}/introuvable", {}, "/demandes")
    assert late.status_code == 302 and "déjà traitée" in page(agent, late.headers["Location"])
    assert api_status(client, world["notary"], request_id)["status"] == "refused"


def test_an_agent_answers_that_the_act_cannot_be_found(world, app, client, clock):
    person = {**request_body()["person"], "prenoms": "Inconnue"}
    request_id = queued(client, world, person=person)
    agent = as_user(app, world["agent"], clock)
    url = f"/demandes/{request_id}"
    html = page(agent, url)
    assert "Aucun acte signé de la commune ne correspond" in html
    assert 'name="copie-act"' not in html
    assert post(agent, f"{url}/introuvable", {}, url).status_code == 302
    assert api_status(client, world["notary"], request_id)["status"] == "not_found"
    assert "Acte introuvable" in page(agent, url)


def test_another_communes_agent_gets_404(world, app, client, make, clock, factory, vault):
    request_id = queued(client, world)
    with_proof = public_request(factory, vault, clock)
    dax = as_user(app, world["dax_agent"], clock)
    assert f"/demandes/{request_id}" not in page(dax, "/demandes?etat=toutes")
    for url in (f"/demandes/{request_id}", f"/demandes/{with_proof}/justificatif"):
        page(dax, url, 404)
    for action, data in (
        ("preparer", {"copie-act": str(world["act"])}),
        ("refuser", {"refus-reason": "non"}),
        ("introuvable", {}),
    ):
        response = post(dax, f"/demandes/{request_id}/{action}", data, "/demandes")
        assert response.status_code == 404, action
    assert api_status(client, world["notary"], request_id)["status"] == "queued"
    assert page(dax, "/demandes/2147483647", 404)


def test_pages_need_a_commune_role(world, app, client, make, clock):
    anonymous = app.test_client()
    assert anonymous.get("/demandes").status_code == 302
    platform = make.user("platform_admin", None)
    browser = as_user(app, platform, clock)
    page(browser, "/demandes", 403)
    page(browser, "/commune/parametres", 403)
    page(as_user(app, world["agent"], clock), "/demandes?etat=inconnu", 404)


def public_request(factory: Any, vault: Any, clock: Any) -> int:
    """A citizen's request from the public counter, with an uploaded proof."""
    body = ActRequestIn.model_validate(
        request_body(capacity="ascendant", reference=None, purpose="Mariage de ma fille"),
        strict=False,
    )
    with transaction(factory) as db:
        proof = vault.put(db, MDM, BytesIO(PDF), now=clock())
        view, _ = comedec.submit(
            db,
            None,
            body,
            now=clock(),
            vault=vault,
            channel="sve",
            extra={"email": "sophie.martin@example.fr"},
            proof_id=proof.id,
        )
    return view.id


def test_the_citizens_proof_is_downloaded_and_audited(
    world, app, client, make, clock, factory, vault
):
    request_id = public_request(factory, vault, clock)
    agent = as_user(app, world["agent"], clock)
    listing = page(agent, "/demandes")
    assert "Guichet en ligne" in listing and "Un ascendant" in listing
    html = page(agent, f"/demandes/{request_id}")
    assert "sophie.martin@example.fr" in html and "Mariage de ma fille" in html
    assert f'href="/demandes/{request_id}/justificatif"' in html
    response = agent.get(f"/demandes/{request_id}/justificatif")
    assert response.status_code == 200 and response.data == PDF
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    (event,) = events(make, EventType.DOCUMENT_DOWNLOADED)
    assert event.subject == f"act-request:{request_id}" and event.tenant == MDM
    # A request without a proof has none to download.
    other = queued(client, world)
    assert 'justificatif"' not in page(agent, f"/demandes/{other}")
    page(agent, f"/demandes/{other}/justificatif", 404)


def test_an_overdue_request_is_flagged_and_counted_on_the_dashboard(world, app, client, clock):
    request_id = queued(client, world)
    agent = as_user(app, world["agent"], clock)
    assert "Demandes en retard : 0" in page(agent, "/")
    clock.advance(days=4)  # due on 03/12, now the 04/12: the session has expired too
    agent = as_user(app, world["agent"], clock)
    listing = page(agent, "/demandes")
    row = re.search(
        rf'<tr class="overdue">\s*<th scope="row"><a href="/demandes/{request_id}">', listing
    )
    assert row and "En retard" in listing
    assert "En retard" in page(agent, f"/demandes/{request_id}")
    dashboard = page(agent, "/")
    assert "Demandes en retard : 1" in dashboard and 'href="/demandes"' in dashboard
    # Once handled, it is no longer late.
    post(agent, f"/demandes/{request_id}/introuvable", {}, f"/demandes/{request_id}")
    assert "Demandes en retard : 0" in page(agent, "/")
    assert "En retard" not in page(agent, f"/demandes/{request_id}")


def test_settings_are_the_administrators_and_auto_issue_takes_effect(
    world, app, client, make, clock, factory
):
    agent = as_user(app, world["agent"], clock)
    page(agent, "/commune/parametres", 403)
    page(as_user(app, world["officer"], clock), "/commune/parametres", 403)
    admin = as_user(app, world["admin"], clock)
    form = page(admin, "/commune/parametres")
    assert 'name="due_days"' in form and 'value="3"' in form and "cachet électronique" in form
    assert "Service de l&#39;état civil" in form
    assert "Paramètres des demandes" in page(admin, "/")

    values = {
        "auto_issue": "y",
        "due_days": "0",
        "service_name": "État civil de Mont-de-Marsan",
        "service_contact": "Place du Général Leclerc, 05 58 05 87 87",
    }
    bad = post(admin, "/commune/parametres", values, "/commune/parametres")
    assert bad.status_code == 400 and "de 1 à 60 jours" in text(bad)
    word = post(
        admin, "/commune/parametres", {**values, "due_days": "trois"}, "/commune/parametres"
    )
    assert word.status_code == 400 and "nombre entier de jours" in text(word)
    with factory() as db:
        assert db.scalar(select(CommuneSettings)) is None

    saved = post(admin, "/commune/parametres", {**values, "due_days": "5"}, "/commune/parametres")
    assert saved.status_code == 302
    with factory() as db:
        row = db.scalar(select(CommuneSettings))
        assert row.auto_issue and not row.not_found_at_once and row.due_days == 5
        assert row.service_name == "État civil de Mont-de-Marsan"
    (event,) = events(make, EventType.COMMUNE_SETTINGS_CHANGED)
    assert event.tenant == MDM
    again = page(admin, "/commune/parametres")
    assert 'value="5"' in again and "checked" in again

    response = submit(client, world["notary"])
    assert response.json["status"] == "received" and response.json["due_date"] == "2026-12-05"
    assert f'/demandes/{response.json["id"]}"' in page(agent, "/demandes?etat=recues")
    html = page(agent, f"/demandes/{response.json['id']}")
    assert "délivrance automatique" in html and 'action="/demandes/' not in html
    with factory() as db:
        assert db.get(ActRequest, response.json["id"]).status == "received"
