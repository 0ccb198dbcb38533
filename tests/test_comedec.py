"""The request API end to end: decisions with their legal basis, idempotent retries,
cross-client isolation, the agents' queue, automatic issue with the commune's seal to
a copy pdfsig validates, structured data (JSON and XML against the published XSD),
receipts, verifications with signed answers, and the one-year purge."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from securex.accounts.models import Tenant
from securex.accounts.service import Actor
from securex.comedec import service as comedec
from securex.comedec.models import ActRequest, CommuneSettings, Verification
from securex.comedec.schema import ActRequestIn
from securex.db import transaction
from securex.errors import Conflict, ValidationFailed
from securex.jobs.service import run_pending
from securex.registry import service as registry
from tests.conftest import pdfsig_against_demo_pki

MDM = "40192"
ROOT = Path(__file__).resolve().parent.parent
BIRTH = {
    "enfant": {"nom": "Dupont-Martin", "prenoms": "Léa Marie", "sexe": "F"},
    "naissance": {"date": "1990-03-02", "heure": "10:30", "lieu": "Mont-de-Marsan (Landes)"},
    "parents": [
        {"nom": "Dupont", "prenoms": "Jean Paul", "sexe": "M", "date_naissance": "1960-02-03"},
        {"nom": "Martin", "prenoms": "Sophie", "sexe": "F"},
    ],
}


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def request_body(**changes):
    body = {
        "commune": MDM,
        "act_kind": "naissance",
        "delivery": "copie_integrale",
        "capacity": "notaire",
        "person": {
            "nom": "DUPONT MARTIN",
            "prenoms": "Léa Marie",
            "sexe": "F",
            "date": "1990-03-02",
            "lieu": "Mont-de-Marsan",
        },
        "parents": [{"nom": "Dupont", "prenoms": "Jean"}, {"nom": "Martin", "prenoms": "Sophie"}],
        "purpose": "Succession Dupont",
        "reference": "DOSSIER-2026-118",
    }
    body.update(changes)
    return body


@pytest.fixture
def world(demo_pki, runtime, app, make, clock, factory, vault):
    """Mont-de-Marsan with one imported birth act, a notary and an administration."""
    make.tenant()
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
    _, other_notary = make.client("notaire", (MDM,))
    _, admin = make.client("administration", (MDM,))
    return {"act": act_id, "notary": notary, "other": other_notary, "admin": admin, "vault": vault}


def auto_issue(factory, on: bool = True) -> None:
    with transaction(factory) as db:
        tenant = db.scalar(select(Tenant).where(Tenant.insee == MDM))
        db.merge(CommuneSettings(tenant_id=tenant.id, auto_issue=on, due_days=2))


def submit(client, token, body=None, key=None):
    return client.post(
        "/api/v1/act-requests", json=body or request_body(), headers=bearer(token, key)
    )


def test_a_clean_request_is_issued_automatically_and_pdfsig_validates_it(
    world, client, factory, runtime, demo_pki, settings, tmp_path
):
    auto_issue(factory)
    response = submit(client, world["notary"])
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "received" and body["legal_basis"].startswith("Décret n° 2017-890")
    assert body["due_date"] == "2026-12-02" and body["reference"] == "DOSSIER-2026-118"
    request_id = body["id"]
    assert (
        client.get(
            f"/api/v1/act-requests/{request_id}/document", headers=bearer(world["notary"])
        ).status_code
        == 409
    )
    assert run_pending(runtime) == 1
    status = client.get(f"/api/v1/act-requests/{request_id}", headers=bearer(world["notary"]))
    assert status.json["status"] == "issued" and status.json["issued_at"]
    pdf = client.get(f"/api/v1/act-requests/{request_id}/document", headers=bearer(world["notary"]))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    path = tmp_path / "copie.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
    assert "Cachet de la commune" in text and "Dupont-Martin" in text

    out = pdfsig_against_demo_pki(settings, demo_pki, path, tmp_path)
    assert "Signature Validation: Signature is Valid." in out, out
    assert "Certificate Validation: Certificate is Trusted." in out, out
    assert "Mairie de Mont-de-Marsan — cachet" in out or "cachet" in out


def test_issued_data_in_json_and_in_xml_valid_against_the_published_schema(
    world, client, factory, runtime
):
    auto_issue(factory)
    request_id = submit(client, world["notary"]).json["id"]
    run_pending(runtime)
    data = client.get(f"/api/v1/act-requests/{request_id}/data", headers=bearer(world["notary"]))
    assert data.status_code == 200
    labels = {f["label"]: f["value"] for f in data.json["fields"]}
    assert "Dupont-Martin" in labels.values() and data.json["delivery"]["kind"] == "copie_integrale"
    as_xml = client.get(
        f"/api/v1/act-requests/{request_id}/data",
        headers={**bearer(world["notary"]), "Accept": "application/xml"},
    )
    assert as_xml.mimetype == "application/xml"
    schema = etree.XMLSchema(etree.parse(str(ROOT / "docs" / "comedec-data.xsd")))
    document = etree.fromstring(as_xml.data)
    schema.assertValid(document)
    values = [f.text for f in document.iter("{urn:securex:comedec:act-data:1}field")]
    assert values == [f["value"] for f in data.json["fields"]]
    ack = client.post(f"/api/v1/act-requests/{request_id}/ack", headers=bearer(world["notary"]))
    assert ack.status_code == 200 and ack.json["acknowledged_at"]


def test_idempotent_retries_return_the_same_request(world, client, factory):
    first = submit(client, world["notary"], key="abc-1")
    again = submit(client, world["notary"], key="abc-1")
    assert first.status_code == again.status_code == 201
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = submit(client, world["notary"], request_body(purpose="autre"), key="abc-1")
    assert other.status_code == 409 and other.mimetype == "application/problem+json"
    # The same key from another client is another request.
    assert submit(client, world["other"], key="abc-1").json["id"] != first.json["id"]
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(ActRequest)) == 2
        stored = set(db.scalars(select(ActRequest.body_hash)))
    # The body's digest is keyed: a plain hash of names and dates could be confirmed.
    body = ActRequestIn.model_validate_json(json.dumps(request_body()))
    plain = hashlib.sha256(body.model_dump_json().encode())
    assert plain.hexdigest() not in stored and all(len(h) == 64 for h in stored)


def test_a_client_sees_only_its_own_requests(world, client):
    request_id = submit(client, world["notary"]).json["id"]
    for path in ("", "/document", "/data"):
        response = client.get(
            f"/api/v1/act-requests/{request_id}{path}", headers=bearer(world["other"])
        )
        assert response.status_code == 404, path
    assert (
        client.post(
            f"/api/v1/act-requests/{request_id}/ack", headers=bearer(world["other"])
        ).status_code
        == 404
    )
    mine = client.get("/api/v1/act-requests", headers=bearer(world["notary"])).json["requests"]
    theirs = client.get("/api/v1/act-requests", headers=bearer(world["other"])).json["requests"]
    assert [r["id"] for r in mine] == [request_id] and theirs == []


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"capacity": "titulaire"}, 422, "capacity"),  # a notary acts as a notary
        ({"parents": []}, 422, "parents"),  # art. 29: a full copy of a birth states them
        ({"person": {"nom": "Dupont", "prenoms": "Léa"}}, 422, "person.date"),
        ({"act_kind": "deces", "delivery": "extrait_avec_filiation"}, 422, "delivery"),
        ({"commune": "33063"}, 403, None),  # outside the client's scope
        ({"unknown": 1}, 422, "unknown"),
    ],
)
def test_bad_requests_are_refused_clearly_and_nothing_is_kept(
    world, client, factory, changes, status, field
):
    response = submit(client, world["notary"], request_body(**changes))
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    if field:
        assert field in {e["field"] for e in response.json["errors"]}
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(ActRequest)) == 0


def test_refusals_state_their_legal_basis(world, client, make):
    _, counter = make.client("guichet", (MDM,))
    refused = submit(client, counter, request_body(capacity="tiers"))
    assert refused.json["status"] == "refused"
    assert (
        "art. 30" in refused.json["legal_basis"]
        and "extrait sans filiation" in refused.json["reason"]
    )
    admin = submit(client, world["admin"], request_body(capacity="administration"))
    assert admin.json["status"] == "refused" and "legal_reference" in admin.json["reason"]
    allowed = submit(
        client,
        world["admin"],
        request_body(
            capacity="administration", legal_reference="Code de la sécurité sociale, L161-1"
        ),
    )
    assert allowed.json["status"] == "queued"


def test_the_queue_an_agent_and_the_officier(world, client, factory, make, clock, runtime, vault):
    officer = make.user("officer", MDM)
    agent = make.user("agent", MDM, totp=False)
    request_id = submit(client, world["notary"]).json["id"]
    by = Actor("user", str(agent.id), MDM)
    with transaction(factory) as db:
        (queued,) = comedec.agent_queue(db, by, MDM, now=clock())
        assert queued.view.id == request_id and queued.requester.startswith("Client notaire")
        seen = comedec.examine(db, by, MDM, request_id, now=clock(), vault=vault)
        assert [c.id for c in seen.candidates] == [world["act"]]
        comedec.prepare_delivery(db, by, MDM, request_id, world["act"], now=clock(), vault=vault)
    from securex.registry.batch import officer_signing

    user = make.get_user(officer.id)
    signing = officer_signing(runtime, user, clock())
    with transaction(factory) as db:
        (item,) = registry.signature_queue(db, Actor.for_user(user), MDM, now=clock(), vault=vault)
        registry.sign_item(db, item.ref, signing=signing, now=clock(), vault=vault)
    status = client.get(f"/api/v1/act-requests/{request_id}", headers=bearer(world["notary"]))
    assert status.json["status"] == "issued"


def test_not_found_at_once_or_after_an_agent(world, client, factory, make, clock):
    body = request_body(person={**request_body()["person"], "prenoms": "Inconnue"})
    assert submit(client, world["notary"], body).json["status"] == "queued"
    with transaction(factory) as db:
        tenant = db.scalar(select(Tenant).where(Tenant.insee == MDM))
        db.merge(CommuneSettings(tenant_id=tenant.id, not_found_at_once=True))
    assert submit(client, world["notary"], body).json["status"] == "not_found"


def test_verifications_confirm_or_correct_and_are_signed(world, client, demo_pki, tmp_path, clock):
    body = {
        "commune": MDM,
        "act_kind": "naissance",
        "person": {
            "nom": "Dupont-Martin",
            "prenoms": "Léa Marie",
            "sexe": "F",
            "date": "1990-03-02",
        },
        "parents": [{"nom": "Dupont", "prenoms": "Jean"}],
        "person_informed": True,
        "reference": "V-1",
    }
    ok = client.post("/api/v1/verifications", json=body, headers=bearer(world["notary"]))
    assert ok.status_code == 201 and ok.json["result"] == "match", ok.json
    wrong = {**body, "person": {**body["person"], "lieu": "Dax", "sexe": "M"}}
    fixed = client.post("/api/v1/verifications", json=wrong, headers=bearer(world["notary"]))
    assert fixed.json["result"] == "mismatch"
    assert fixed.json["differences"] == {
        "person.lieu": "Mont-de-Marsan (Landes)",
        "person.sexe": "F",
    }
    # A guessed name with a wrong date reveals nothing, not even that the act exists.
    guessed = {**body, "person": {**body["person"], "date": "1990-03-12"}}
    loose = client.post("/api/v1/verifications", json=guessed, headers=bearer(world["notary"]))
    assert loose.json["result"] == "not_found" and loose.json["differences"] == {}
    nobody = {**body, "person": {**body["person"], "nom": "Personne"}}
    assert (
        client.post("/api/v1/verifications", json=nobody, headers=bearer(world["notary"])).json[
            "result"
        ]
        == "not_found"
    )
    uninformed = {**body, "person_informed": False}
    assert (
        client.post(
            "/api/v1/verifications", json=uninformed, headers=bearer(world["notary"])
        ).status_code
        == 422
    )

    # The answer is signed by the commune's seal: openssl checks it against the root.
    from cryptography.hazmat.primitives.serialization import Encoding

    answer = tmp_path / "answer.json"
    answer.write_bytes(comedec.canonical(fixed.json["answer"]))
    signature = tmp_path / "answer.p7s"
    signature.write_bytes(base64.b64decode(fixed.json["signature"]))
    roots = tmp_path / "roots.pem"
    roots.write_bytes(
        demo_pki.root_cert.public_bytes(Encoding.PEM) + demo_pki.ca_cert.public_bytes(Encoding.PEM)
    )
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(signature),
            "-content",
            str(answer),
            "-CAfile",
            str(roots),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
            "-attime",  # at the answer's time (the pinned clock)
            str(int(clock().timestamp())),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(answer.read_bytes().replace(b"mismatch", b"match"))
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(signature),
            "-content",
            str(tampered),
            "-CAfile",
            str(roots),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
            "-attime",  # at the answer's time (the pinned clock)
            str(int(clock().timestamp())),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def test_a_guichet_cannot_verify(world, client, make):
    _, counter = make.client("guichet", (MDM,))
    body = {
        "commune": MDM,
        "act_kind": "naissance",
        "person": {"nom": "Dupont-Martin", "prenoms": "Léa Marie"},
        "person_informed": True,
    }
    assert (
        client.post("/api/v1/verifications", json=body, headers=bearer(counter)).status_code == 403
    )


def test_requests_are_purged_after_one_year(world, client, factory, clock, vault):
    submit(client, world["notary"])
    client.post(
        "/api/v1/verifications",
        json={
            "commune": MDM,
            "act_kind": "naissance",
            "person": {"nom": "Dupont-Martin", "prenoms": "Léa Marie", "date": "1990-03-02"},
            "person_informed": True,
        },
        headers=bearer(world["notary"]),
    )
    with transaction(factory) as db:
        assert comedec.purge(db, now=clock() + timedelta(days=364), vault=vault) == 0
    with transaction(factory) as db:
        assert comedec.purge(db, now=clock() + timedelta(days=366), vault=vault) == 2
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(ActRequest)) == 0
        assert db.scalar(select(func.count()).select_from(Verification)) == 0


def test_the_openapi_document_describes_the_contract(client):
    doc = client.get("/api/v1/openapi.json").json
    for path in (
        "/api/v1/act-requests",
        "/api/v1/act-requests/{request_id}",
        "/api/v1/act-requests/{request_id}/document",
        "/api/v1/act-requests/{request_id}/data",
        "/api/v1/act-requests/{request_id}/ack",
        "/api/v1/verifications",
    ):
        assert path in doc["paths"], path
    post = doc["paths"]["/api/v1/act-requests"]["post"]
    assert "201" in post["responses"] and any(
        p["name"] == "Idempotency-Key" for p in post["parameters"]
    )
    assert json.dumps(doc)  # serialisable


def test_the_purge_command_and_the_workers_housekeeping(
    world, client, factory, settings, monkeypatch
):
    from click.testing import CliRunner
    from sqlalchemy import update

    from securex.cli import main

    for _ in range(2):
        submit(client, world["notary"], request_body(reference=None))
    with transaction(factory) as db:  # one is a year old on the real clock
        first = db.scalar(select(func.min(ActRequest.id)))
        db.execute(
            update(ActRequest)
            .where(ActRequest.id == first)
            .values(purge_after=datetime(2020, 1, 1, tzinfo=UTC))
        )
    monkeypatch.setenv("SECUREX_INSTANCE", str(settings.instance))
    monkeypatch.setenv("SECUREX_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(main, ["comedec", "purge"])
    assert result.exit_code == 0 and "1 demande(s)" in result.output, result.output
    with transaction(factory) as db:
        db.execute(update(ActRequest).values(purge_after=datetime(2020, 1, 1, tzinfo=UTC)))
    assert CliRunner().invoke(main, ["worker", "--once"]).exit_code == 0
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(ActRequest)) == 0


def test_an_agent_cannot_answer_with_the_wrong_act_or_twice(
    world, client, factory, make, clock, vault
):
    agent = make.user("agent", MDM, totp=False)
    by = Actor("user", str(agent.id), MDM)
    with transaction(factory) as db:
        death = registry.import_act(
            db,
            by,
            insee=MDM,
            kind="deces",
            year=2001,
            number=4,
            drawn_at=clock() - timedelta(days=9000),
            officer_name="X",
            content={
                "defunt": {"nom": "Roux", "prenoms": "Marcel", "sexe": "M"},
                "deces": {"date": "2001-05-05", "lieu": "Mont-de-Marsan"},
            },
            now=clock(),
            vault=vault,
        )
    request_id = submit(client, world["notary"]).json["id"]
    with (
        transaction(factory) as db,
        pytest.raises(ValidationFailed, match="pas sur un acte de décès"),
    ):
        comedec.prepare_delivery(db, by, MDM, request_id, death, now=clock(), vault=vault)
    with transaction(factory) as db:
        comedec.prepare_delivery(db, by, MDM, request_id, world["act"], now=clock(), vault=vault)
    with transaction(factory) as db, pytest.raises(Conflict, match="attend la signature"):
        comedec.refuse(db, by, MDM, request_id, reason="finalement non", now=clock())
    with transaction(factory) as db, pytest.raises(Conflict):
        comedec.prepare_delivery(db, by, MDM, request_id, world["act"], now=clock(), vault=vault)


def test_a_refusal_that_appears_once_the_act_is_known_is_final(world, client, make, factory, clock):
    """A reconnaissance drawn up in 1960 for a child born in 1945: the declared date
    looks public (L213-2), the act is not; a third party is refused at once."""
    _, counter = make.client("guichet", (MDM,))
    with transaction(factory) as db:
        registry.import_act(
            db,
            Actor("test"),
            insee=MDM,
            kind="reconnaissance",
            year=1960,
            number=3,
            drawn_at=datetime(1960, 6, 1, tzinfo=UTC),
            officer_name="X",
            content={
                "auteur": {"nom": "Lafon", "prenoms": "Henri"},
                "enfant": {"nom": "Lafon", "prenoms": "Jeanne", "sexe": "F"},
                "naissance_enfant": {"date": "1945-02-01", "lieu": "Mont-de-Marsan"},
            },
            now=clock(),
            vault=world["vault"],
        )
    body = request_body(
        act_kind="reconnaissance",
        capacity="tiers",
        person={
            "nom": "Lafon",
            "prenoms": "Jeanne",
            "date": "1945-02-01",
            "lieu": "Mont-de-Marsan",
        },
        parents=[],
    )
    answer = submit(client, counter, body).json
    assert answer["status"] == "refused" and "art. 30" in answer["legal_basis"]


def test_an_agent_cannot_grant_a_right_that_needs_a_proof_without_one(
    world, client, make, factory, clock, vault
):
    _, counter = make.client("guichet", (MDM,))
    agent = make.user("agent", MDM, totp=False)
    by = Actor("user", str(agent.id), MDM)
    # An ascendant declares a false old date: nothing matches, the request is queued.
    body = request_body(
        capacity="ascendant",
        person={**request_body()["person"], "date": "1940-03-02"},
    )
    request_id = submit(client, counter, body).json["id"]
    with transaction(factory) as db, pytest.raises(Conflict, match="justificatif"):
        comedec.prepare_delivery(db, by, MDM, request_id, world["act"], now=clock(), vault=vault)
    with factory() as db:
        assert db.get(ActRequest, request_id).delivery_id is None


def test_an_automatic_issue_that_fails_unexpectedly_goes_to_an_agent(
    world, client, factory, runtime, monkeypatch
):
    from securex.comedec import jobs as comedec_jobs

    def broken(*args, **kwargs):
        raise OSError("timestamp server unreachable")

    monkeypatch.setattr(comedec_jobs, "seal_signing", broken)
    auto_issue(factory)
    request_id = submit(client, world["notary"]).json["id"]
    run_pending(runtime)
    answer = client.get(f"/api/v1/act-requests/{request_id}", headers=bearer(world["notary"])).json
    assert answer["status"] == "queued" and "un agent prend le relais" in answer["reason"]
    assert "unreachable" not in answer["reason"]


def test_malformed_values_are_refused_not_crashed(world, client):
    far = request_body(person={**request_body()["person"], "date": "9990-01-01"})
    assert submit(client, world["notary"], far).status_code == 422
    deep = client.post(
        "/api/v1/act-requests",
        data="[" * 50000,
        headers={**bearer(world["notary"]), "Content-Type": "application/json"},
    )
    assert deep.status_code == 400 and deep.mimetype == "application/problem+json"
    assert client.get("/demande-acte/suivi/%C2%B2-x").status_code == 404


def test_the_purge_also_forgets_the_purpose_kept_with_the_copy(
    world, client, factory, runtime, clock, vault
):
    from securex.registry.models import Delivery
    from securex.vault.columns import column_keys

    auto_issue(factory)
    request_id = submit(client, world["notary"]).json["id"]
    run_pending(runtime)
    with factory() as db:
        delivery_id = db.get(ActRequest, request_id).delivery_id
    with transaction(factory) as db:
        assert comedec.purge(db, now=clock() + timedelta(days=366), vault=vault) == 1
    with factory() as db, column_keys(db, vault.keyring, MDM):
        delivery = db.get(Delivery, delivery_id)
        assert delivery.purpose == comedec.PURGED_PURPOSE and delivery.status == "signed"


def test_an_ipv6_subscriber_has_one_budget_for_its_whole_64(factory, keys, clock):
    from securex.accounts.service import throttle

    with transaction(factory) as db:
        waits = [
            throttle(
                db, keys, "test", f"2001:db8:1:2::{n}", limit=3, window_seconds=60, now=clock()
            )
            for n in range(1, 5)
        ]
        other = throttle(
            db, keys, "test", "2001:db8:1:3::1", limit=3, window_seconds=60, now=clock()
        )
    assert waits[:3] == [0, 0, 0] and waits[3] > 0 and other == 0
