"""The registry's pages: drafting through the schema-driven forms, the officier's queue
and batch signing with a fresh TOTP code, avis de mention between two communes, roles
and tenants, and the public page that answers for an issued copy's code."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import BytesIO
from typing import Any

from sqlalchemy import func, select

from securex.accounts.service import Actor
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.jobs.models import Job
from securex.jobs.service import run_pending
from securex.registry import service
from securex.registry.batch import officer_signing
from securex.registry.models import Act, Delivery, Mention
from tests.conftest import Account, csrf_token
from tests.test_login import login

MDM, DAX = "40192", "40088"

BIRTH_FORM = {
    "enfant-nom": "Dupont",
    "enfant-prenoms": "Léa Marie",
    "enfant-sexe": "F",
    "naissance-date": "2026-11-28",
    "naissance-heure": "10:30",
    "naissance-lieu": "Mont-de-Marsan (Landes)",
    # Parent 1 left blank, parent 2 filled: the service gets one parent.
    "parents-1-nom": "Martin",
    "parents-1-prenoms": "Sophie",
    "parents-1-sexe": "F",
    "parents-1-date_naissance": "06/05/1992",  # typed by hand: JJ/MM/AAAA
}


def naissance(nom: str = "Dupont", prenoms: str = "Léa") -> dict[str, Any]:
    return {
        "enfant": {"nom": nom, "prenoms": prenoms, "sexe": "F"},
        "naissance": {"date": "2026-11-28", "heure": "10:30", "lieu": "Mont-de-Marsan"},
        "parents": [{"nom": "Martin", "prenoms": "Sophie", "date_naissance": "1992-05-06"}],
    }


def mariage() -> dict[str, Any]:
    return {
        "epoux": [
            {
                "nom": "Lafitte",
                "prenoms": "Pierre",
                "sexe": "M",
                "date_naissance": "1994-04-01",
                "lieu_naissance": "Dax (Landes)",
            },
            {
                "nom": "Etcheverry",
                "prenoms": "Maïté",
                "sexe": "F",
                "date_naissance": "1995-07-14",
                "lieu_naissance": "Bayonne (Pyrénées-Atlantiques)",
            },
        ],
        "celebration": {"date": "2026-11-28", "heure": "15:00", "lieu": "Mont-de-Marsan"},
    }


# --- helpers -------------------------------------------------------------------------


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def page(client: Any, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, text(response)[:2000])
    return text(response)


def post(client: Any, url: str, data: dict[str, Any], form_page: str | None = None) -> Any:
    """POST `data` with the CSRF token of the page that shows the form."""
    token = csrf_token(page(client, form_page or url))
    return client.post(url, data={"csrf_token": token, **data})


def errors_of(html: str, name: str) -> str:
    match = re.search(rf'<ul class="errors" id="{re.escape(name)}-errors">(.*?)</ul>', html, re.S)
    assert match, f"no error shown next to {name}"
    return match.group(1)


def count(make: Any, model: Any) -> int:
    with make.session() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def actor(make: Any, account: Account) -> Actor:
    return Actor.for_user(make.get_user(account.id))


def draft(make: Any, who: Account, content: dict[str, Any], kind: str = "naissance") -> int:
    """A draft presented for signature, through the service."""
    by = actor(make, who)  # before the transaction: SQLite has one writer at a time
    with transaction(make.factory) as db:
        act_id = service.create_act(
            db,
            by,
            insee=who.tenant or MDM,
            kind=kind,
            content=content,
            now=make.clock(),
            vault=make.vault,
        )
        service.submit_act(db, by, who.tenant or MDM, act_id, now=make.clock())
    return act_id


def sign(make: Any, runtime: Any, officer: Account, ref: str) -> None:
    signing = officer_signing(runtime, make.get_user(officer.id), make.clock())
    with transaction(make.factory) as db:
        service.sign_item(db, ref, signing=signing, now=make.clock(), vault=make.vault)


def signed_act(
    make: Any, runtime: Any, officer: Account, content: dict[str, Any], kind: str = "naissance"
) -> int:
    act_id = draft(make, officer, content, kind)
    sign(make, runtime, officer, f"act:{act_id}")
    return act_id


def issued_delivery(make: Any, runtime: Any, officer: Account) -> tuple[str, bytes]:
    act_id = signed_act(make, runtime, officer, naissance())
    by = actor(make, officer)
    with transaction(make.factory) as db:
        delivery_id = service.request_delivery(
            db,
            by,
            MDM,
            act_id,
            kind="extrait_avec_filiation",
            requester="Mme Sophie Martin (mère)",
            purpose="Passeport",
            now=make.clock(),
            vault=make.vault,
        )
    sign(make, runtime, officer, f"delivery:{delivery_id}")
    with transaction(make.factory) as db:
        data, _ = service.document(
            db,
            by,
            MDM,
            f"delivery:{delivery_id}",
            now=make.clock(),
            vault=make.vault,
        )
        code = db.get(Delivery, delivery_id).code
    return code, data


# --- drafting --------------------------------------------------------------------------


def test_agent_drafts_a_birth_edits_it_and_presents_it(demo_pki, client, make, clock):
    make.tenant()
    agent = make.user("agent")
    login(client, agent, clock)
    assert "Acte de naissance" in page(client, "/registre/actes/nouveau")
    form = page(client, "/registre/actes/nouveau?type=naissance")
    assert 'name="parents-1-prenoms"' in form and 'type="date"' in form

    # A missing name is reported next to its field, and nothing is written.
    bad = {**BIRTH_FORM, "enfant-nom": "  ", "parents-1-nom": ""}
    response = post(client, "/registre/actes/nouveau?type=naissance", bad)
    assert response.status_code == 422
    html = text(response)
    assert "obligatoire" in errors_of(html, "enfant-nom")
    # Parent 2 became the first parent of the content: its error comes back to it.
    assert "obligatoire" in errors_of(html, "parents-1-nom")
    assert 'value="Léa Marie"' in html  # what was typed is kept
    assert count(make, Act) == 0

    response = post(client, "/registre/actes/nouveau?type=naissance", BIRTH_FORM)
    assert response.status_code == 302, text(response)
    act_url = response.headers["Location"]
    act_id = int(act_url.rsplit("/", 1)[1])
    html = page(client, act_url)
    assert "DUPONT Léa Marie" in html and "Projet" in html
    assert "06/05/1992" in html and "Martin" in html  # the parent, dates as JJ/MM/AAAA

    # Editing: the form comes back filled in, and saves.
    edit = page(client, f"/registre/actes/{act_id}/modifier")
    assert 'value="Dupont"' in edit and 'value="2026-11-28"' in edit
    wrong = {**BIRTH_FORM, "naissance-date": "31/02/2026"}
    response = post(client, f"/registre/actes/{act_id}/modifier", wrong)
    assert response.status_code == 422
    assert "Date invalide" in errors_of(text(response), "naissance-date")
    changed = {**BIRTH_FORM, "enfant-prenoms": "Léa Louise"}
    response = post(client, f"/registre/actes/{act_id}/modifier", changed)
    assert response.status_code == 302
    assert "DUPONT Léa Louise" in page(client, act_url)
    by = actor(make, agent)
    with transaction(make.factory) as db:
        rec = service.get_act(db, by, MDM, act_id, now=clock(), vault=make.vault)
    assert [p.nom for p in rec.content.parents] == ["Martin"]

    # Presented for signature: it leaves the drafts for the officier's list.
    index = page(client, "/registre")
    assert f"Projet n° {act_id}" in index.split("En attente de signature")[0]
    response = post(client, f"/registre/actes/{act_id}/presenter", {}, form_page=act_url)
    assert response.status_code == 302
    index = page(client, "/registre")
    assert f"Projet n° {act_id}" in index.split("En attente de signature")[1]
    assert "attend la signature" in page(client, act_url)


def test_search_finds_the_act_by_name_and_date(demo_pki, client, make, clock):
    make.tenant()
    agent = make.user("agent")
    act_id = draft(make, agent, naissance("Dupont-Martin", "Léa"))
    login(client, agent, clock)
    html = page(client, "/registre?nom=dupont+martin&prenoms=LEA&date=28%2F11%2F2026&lieu=&type=")
    assert f"/registre/actes/{act_id}" in html and "1 acte trouvé" in html
    html = page(client, "/registre?nom=Dupont-Martin&prenoms=L%C3%A9a&date=2026-11-27")
    assert "0 acte trouvé" in html
    response = client.get("/registre?nom=Dupont&prenoms=")
    assert response.status_code == 422 and "Indiquez au moins le nom" in text(response)


def test_a_mariage_form_reports_errors_of_a_whole_block(demo_pki, client, make, clock):
    make.tenant()
    agent = make.user("agent")
    login(client, agent, clock)
    url = "/registre/actes/nouveau?type=mariage"
    data = {
        "celebration-date": "2026-11-28",
        "celebration-lieu": "Mont-de-Marsan",
        "epoux-0-nom": "Lafitte",
        "epoux-0-prenoms": "Pierre",
        "epoux-0-unions_precedentes": "Mariage avec X, dissous en 2020\n\n",
        "epoux-1-nom": "Etcheverry",
        "epoux-1-prenoms": "Maïté",
        "contrat-existe": "y",  # a contract without its date and notary
    }
    response = post(client, url, data)
    assert response.status_code == 422
    assert "date et notaire obligatoires" in text(response)
    response = post(client, url, {**data, "contrat-date": "01/10/2026", "contrat-notaire": "Me B"})
    assert response.status_code == 302
    html = page(client, response.headers["Location"])
    assert "Mariage avec X, dissous en 2020" in html and "Me B" in html


# --- signature -------------------------------------------------------------------------


def test_officer_batch_signs_an_act_a_mention_and_a_delivery(
    demo_pki, runtime, client, make, clock
):
    make.tenant()
    officer = make.user("officer")  # officer1@…: has a certificate in the demo PKI
    signed = signed_act(make, runtime, officer, naissance())
    login(client, officer, clock)
    login_code = officer.code(clock())

    # A mention and a delivery through their forms, and one more act presented.
    act_url = f"/registre/actes/{signed}"
    assert "Ajouter une mention" in page(client, act_url)
    mention_url = f"/registre/actes/{signed}/mentions/nouvelle"
    form = page(client, mention_url + "?type=pacs")
    assert '<option selected value="pacs">' in form
    assert '"divorce"' in form and '"deces"' in form  # both go on a birth act
    bad = {"kind": "pacs", "texte": "PACS enregistré.", "notaire": "Me Bordes"}
    response = post(client, mention_url, bad)
    assert response.status_code == 422 and "CRPCEN" in text(response)
    good = {**bad, "crpcen": "40012", "conjoint-nom": "Durand", "conjoint-prenoms": "Paul"}
    assert post(client, mention_url, good).status_code == 302
    response = post(
        client,
        f"/registre/actes/{signed}/delivrances/nouvelle",
        {"kind": "copie_integrale", "requester": ""},
        form_page=act_url,
    )
    assert response.status_code == 400 and "Indiquez le demandeur" in text(response)
    response = post(
        client,
        f"/registre/actes/{signed}/delivrances/nouvelle",
        {"kind": "copie_integrale", "requester": "Léa Dupont", "purpose": "Mariage"},
        form_page=act_url,
    )
    assert response.status_code == 302
    second = draft(make, officer, naissance("Bernard", "Tom"))

    html = page(client, "/registre/signature")
    refs = re.findall(r'name="items" value="([^"]+)"', html)
    assert sorted(r.split(":")[0] for r in refs) == ["act", "delivery", "mention"]
    assert f"act:{second}" in refs and "Aperçu" in html
    preview = client.get(f"/registre/apercu/act:{second}")
    assert preview.status_code == 200 and preview.mimetype == "application/pdf"
    assert preview.data.startswith(b"%PDF")

    # The code of the login does not confirm a batch, nor does a wrong one.
    clock.advance(seconds=5)
    for code, expected in ((login_code, "déjà utilisé"), ("000000", "invalide")):
        response = post(client, "/registre/signature", {"items": refs, "code": code})
        assert response.status_code == 401
        assert expected in errors_of(text(response), "code")
        assert count(make, Job) == 0
    with make.session() as db:  # the failures were kept, toward the lockout
        from securex.accounts.models import User

        assert db.get(User, officer.id).failed_logins == 2

    clock.advance(seconds=30)
    response = post(client, "/registre/signature", {"items": refs, "code": officer.code(clock())})
    assert response.status_code == 302, text(response)
    job_url = response.headers["Location"]
    assert re.search(r"/registre/signature/lots/\d+$", job_url)
    html = page(client, job_url)
    assert "0 / 3 signés, 0 échec" in html
    # No timed refresh (WCAG 2.2.1): a link reloads it, a script updates it in place.
    assert 'http-equiv="refresh"' not in html and "<progress" in html
    assert "Actualiser l'avancement" in html and "job-progress.js" in html

    assert run_pending(runtime) == 1
    html = page(client, job_url)
    assert "3 / 3 signés, 0 échec" in html
    assert "job-progress.js" not in html and html.count("<strong>Signé</strong>") == 3
    assert "Rien n'attend votre signature" in page(client, "/registre/signature")

    # The signed copy can be downloaded from the act's page.
    html = page(client, act_url)
    (ref,) = re.findall(r"/registre/documents/(delivery:\d+)", html)
    download = client.get(f"/registre/documents/{ref}")
    assert download.status_code == 200 and download.mimetype == "application/pdf"
    assert "attachment" in download.headers["Content-Disposition"]
    assert b"/ByteRange" in download.data
    with make.session() as db:
        assert db.scalar(select(Mention.status)) == "signed"


def test_selecting_nothing_or_everything(demo_pki, runtime, client, make, clock):
    make.tenant()
    officer = make.user("officer")
    first = draft(make, officer, naissance())
    second = draft(make, officer, naissance("Bernard", "Tom"))
    login(client, officer, clock)
    clock.advance(seconds=30)
    response = post(client, "/registre/signature", {"code": officer.code(clock())})
    assert response.status_code == 422 and "Sélectionnez au moins un élément" in text(response)
    # "Tout signer" takes every item shown, whatever the boxes.
    html = page(client, "/registre/signature")
    shown = re.findall(r'name="shown" value="([^"]+)"', html)
    response = client.post(
        "/registre/signature",
        data={
            "csrf_token": csrf_token(html),
            "shown": shown,
            "action": "all",
            "code": officer.code(clock()),
        },
    )
    assert response.status_code == 302
    with make.session() as db:
        job = db.scalar(select(Job))
        assert sorted(json.loads(job.payload)["items"]) == sorted([f"act:{first}", f"act:{second}"])


def test_roles_and_communes_are_enforced(demo_pki, client, app, make, clock):
    make.tenant()
    make.tenant(DAX, "Dax")
    agent = make.user("agent")
    act_id = draft(make, agent, naissance())
    login(client, agent, clock)
    assert client.get("/registre/signature").status_code == 403
    assert client.get("/registre/signature/lots/1").status_code == 403
    assert client.get("/registre").status_code == 200

    stranger = app.test_client()
    login(stranger, make.user("agent", DAX), clock)
    for url in (
        f"/registre/actes/{act_id}",
        f"/registre/actes/{act_id}/modifier",
        f"/registre/apercu/act:{act_id}",
        f"/registre/documents/act:{act_id}",
    ):
        response = stranger.get(url)
        assert response.status_code == 404, url
        assert "Dupont" not in text(response)
    assert f"Projet n° {act_id}" not in page(stranger, "/registre")

    admin = app.test_client()
    login(admin, make.user("platform_admin", None), clock)
    assert admin.get("/registre").status_code == 403
    assert client.get("/registre/actes/nouveau?type=inconnu").status_code == 404
    anonymous = app.test_client()
    assert anonymous.get("/registre").status_code == 302  # to the login page


def test_a_job_of_another_commune_is_not_found(demo_pki, runtime, client, app, make, clock):
    make.tenant()
    make.tenant(DAX, "Dax")
    officer = make.user("officer")
    act_id = draft(make, officer, naissance())
    login(client, officer, clock)
    clock.advance(seconds=30)
    response = post(
        client, "/registre/signature", {"items": [f"act:{act_id}"], "code": officer.code(clock())}
    )
    job_url = response.headers["Location"]
    other = app.test_client()
    login(other, make.user("officer", DAX), clock)
    assert other.get(job_url).status_code == 404


# --- public verification ---------------------------------------------------------------


def test_the_public_page_answers_for_an_issued_copy(demo_pki, runtime, app, make, clock):
    make.tenant()
    officer = make.user("officer")
    code, data = issued_delivery(make, runtime, officer)
    visitor = app.test_client()
    response = visitor.get(f"/verifier/{code}")
    html = text(response)
    assert response.status_code == 200, html
    assert "Document authentique délivré par securex" in html
    assert "Signature valide" in html and "Mont-de-Marsan" in html
    assert "Extrait avec filiation" in html and "Acte de naissance" in html
    assert "30/11/2026" in html and "Officer 1" in html
    for personal in ("Dupont", "DUPONT", "Léa", "Martin", "Passeport", "n° 1"):
        assert personal not in html
    assert "Set-Cookie" not in response.headers  # nothing kept about the visitor
    with make.session() as db:
        actions = list(db.scalars(select(AuditEvent.action)))
    assert "registry:delivery:verified" in actions

    same = visitor.post(
        f"/verifier/{code}",
        data={"document": (BytesIO(data), "extrait.pdf")},
        content_type="multipart/form-data",
    )
    assert same.status_code == 200 and "est identique au document délivré" in text(same)
    assert "Set-Cookie" not in same.headers
    tampered = data + b"\n% altered\n"
    other = visitor.post(
        f"/verifier/{code}",
        data={"document": (BytesIO(tampered), "extrait.pdf")},
        content_type="multipart/form-data",
    )
    assert other.status_code == 200 and "n'est pas identique" in text(other)

    # Typed by hand, in lower case and without dashes.
    typed = visitor.get(f"/verifier/code?code={code.lower().replace('-', '')}")
    assert typed.status_code == 302 and typed.headers["Location"].endswith(f"/verifier/{code}")
    assert visitor.get("/verifier/code").status_code == 200
    unknown = visitor.get("/verifier/ZZZZ-ZZZZ-ZZZZ")
    assert unknown.status_code == 404
    assert "Aucun document délivré ne porte ce code" in text(unknown)


def test_a_requested_but_unsigned_copy_is_unknown(demo_pki, runtime, app, make, clock):
    make.tenant()
    officer = make.user("officer")
    act_id = signed_act(make, runtime, officer, naissance())
    by = actor(make, officer)
    with transaction(make.factory) as db:
        delivery_id = service.request_delivery(
            db,
            by,
            MDM,
            act_id,
            kind="copie_integrale",
            requester="x",
            purpose="y",
            now=clock(),
            vault=make.vault,
        )
        code = db.get(Delivery, delivery_id).code
    assert app.test_client().get(f"/verifier/{code}").status_code == 404


def test_code_lookups_are_rate_limited_per_address(demo_pki, app, settings, make):
    make.tenant()
    settings.values["registry"]["verify_per_address"] = 3
    visitor = app.test_client()
    statuses = [visitor.get("/verifier/ZZZZ-ZZZZ-ZZZZ").status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    assert "Trop de vérifications" in text(visitor.get("/verifier/ZZZZ-ZZZZ-ZZZZ"))
    other = app.test_client().get(
        "/verifier/ZZZZ-ZZZZ-ZZZZ", environ_base={"REMOTE_ADDR": "192.0.2.9"}
    )
    assert other.status_code == 404  # another address has its own budget
    with make.session() as db:
        refused = list(
            db.scalars(
                select(AuditEvent.action).where(
                    AuditEvent.action == "accounts:address:rate-limited"
                )
            )
        )
    assert len(refused) == 1  # once per window, not once per refusal


# --- avis de mention ----------------------------------------------------------------------


def test_an_avis_is_applied_in_dax_and_its_receipt_returns(
    demo_pki, runtime, client, app, make, clock
):
    make.tenant()
    make.tenant(DAX, "Dax")
    mdm_officer = make.user("officer")  # officer1
    mdm_agent = make.user("agent")
    dax_agent = make.user("agent", DAX)
    dax_officer = make.user("officer", DAX)  # officer4
    by = actor(make, dax_agent)
    with transaction(make.factory) as db:
        birth = service.import_act(
            db,
            by,
            insee=DAX,
            kind="naissance",
            year=1994,
            number=88,
            drawn_at=clock() - timedelta(days=365 * 32),
            officer_name="R. Lacoste",
            content={
                "enfant": {"nom": "Lafitte", "prenoms": "Pierre", "sexe": "M"},
                "naissance": {"date": "1994-04-01", "lieu": "Dax (Landes)"},
            },
            now=clock(),
            vault=make.vault,
        )
    signed_act(make, runtime, mdm_officer, mariage(), kind="mariage")

    login(client, dax_agent, clock)
    html = page(client, "/registre/avis")
    assert "Mention « Mariage » pour LAFITTE Pierre" in html
    assert "Acte de naissance n° 88/1994" in html and "Mont-de-Marsan" in html
    (avis_id,) = map(int, re.findall(r"/registre/avis/(\d+)/appliquer", html))
    token = csrf_token(html)
    # Rejecting needs a reason.
    response = client.post(
        f"/registre/avis/{avis_id}/rejeter",
        data={"csrf_token": token, f"rejet{avis_id}-reason": ""},
    )
    assert response.status_code == 400 and "Indiquez le motif du rejet" in text(response)
    response = client.post(
        f"/registre/avis/{avis_id}/appliquer",
        data={"csrf_token": token, f"avis{avis_id}-act": str(birth)},
    )
    assert response.status_code == 302, text(response)
    assert "Mention « Mariage » pour" not in page(client, "/registre/avis")

    clock.advance(days=2)
    officer_client = app.test_client()
    login(officer_client, dax_officer, clock)
    clock.advance(seconds=30)
    html = page(officer_client, "/registre/signature")
    (ref,) = re.findall(r'name="items" value="([^"]+)"', html)
    assert ref.startswith("mention:") and "LAFITTE Pierre" in html
    response = officer_client.post(
        "/registre/signature",
        data={
            "csrf_token": csrf_token(html),
            "items": [ref],
            "shown": [ref],
            "code": dax_officer.code(clock()),
        },
    )
    assert response.status_code == 302, text(response)
    run_pending(runtime)
    assert "1 / 1 signé, 0 échec" in page(officer_client, response.headers["Location"])

    sender = app.test_client()
    login(sender, mdm_agent, clock)
    html = page(sender, "/registre/avis")
    sent = html.split("Avis envoyés")[1]
    dax_row = next(row for row in sent.split("<tr>") if "Dax" in row)
    assert "Appliqué (accusé reçu)" in dax_row and "02/12/2026" in dax_row
    assert "En retard" not in dax_row
    bayonne_row = next(row for row in sent.split("<tr>") if "Bayonne" in row)
    assert "hors plateforme" in bayonne_row and "À signer par l" in bayonne_row
    assert "LAFITTE" not in sent and "Pierre" not in sent  # sealed for Dax


def test_an_overdue_avis_is_flagged(demo_pki, runtime, client, make, clock):
    make.tenant()
    make.tenant(DAX, "Dax")
    officer = make.user("officer")
    agent = make.user("agent")
    signed_act(make, runtime, officer, mariage(), kind="mariage")
    clock.advance(days=61)
    login(client, agent, clock)
    sent = page(client, "/registre/avis").split("Avis envoyés")[1]
    dax_row = next(row for row in sent.split("<tr>") if "Dax" in row)
    assert "En retard" in dax_row and "Envoyé" in dax_row


def test_dashboard_links_to_the_registry(demo_pki, client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    html = page(client, "/")
    assert 'href="/registre"' in html and 'href="/registre/signature"' in html


def test_ids_beyond_the_database_are_simply_not_found(demo_pki, client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    for url in (
        "/registre/actes/2147483648",
        "/registre/actes/" + "9" * 30 + "/modifier",
        "/registre/documents/act:2147483648",
        "/registre/documents/delivery:" + "9" * 30,
        "/registre/documents/scan:1",
        "/registre/apercu/mention:" + "9" * 30,
        "/registre/signature/lots/" + "9" * 30,
    ):
        assert client.get(url).status_code == 404, url
    assert client.get("/verifier/" + "9" * 300).status_code == 404
