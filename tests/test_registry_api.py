"""The registry's API for the commune's staff (personal tokens): search by blind index
with case and accent folding, one act with its mentions and deliveries, its signed PDF,
the register's list; another commune's acts are invisible; platform administrators are
refused; every read is audited; the OpenAPI document describes it all."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from securex.accounts import service as accounts
from securex.accounts.models import User
from securex.accounts.service import Actor
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.registry import service
from securex.registry.models import Act
from tests.test_api import assert_problem, bearer

MDM, DAX = "40192", "40088"
SETUP = Actor("test")  # bypasses the tenant check: setup only
PDF = b"%PDF-1.7\n% a signed act, as far as this test cares\n%%EOF\n"


def naissance(nom: str = "Dupont", prenoms: str = "Léa", day: str = "2026-11-27") -> dict:
    return {
        "enfant": {"nom": nom, "prenoms": prenoms, "sexe": "F"},
        "naissance": {"date": day, "heure": "10:30", "lieu": "Mont-de-Marsan (Landes)"},
        "parents": [{"nom": "Dupont", "prenoms": "Jean", "date_naissance": "1990-02-03"}],
    }


class Commune:
    """Two communes, staff with personal tokens, and one imported (signed) birth act of
    Léa Dupont in Mont-de-Marsan."""

    def __init__(self, make, clock, vault) -> None:
        self.make, self.clock, self.vault = make, clock, vault
        make.tenant(MDM, "Mont-de-Marsan")
        make.tenant(DAX, "Dax")
        self.agent = make.user("agent", MDM, totp=False)
        self.token = self.token_for(self.agent.id)
        with transaction(make.factory) as db:
            self.act_id = service.import_act(
                db,
                SETUP,
                insee=MDM,
                kind="naissance",
                year=2026,
                number=12,
                drawn_at=datetime(2026, 11, 27, 14, 0, tzinfo=UTC),
                officer_name="Marie Officier",
                content=naissance(),
                now=clock(),
                vault=vault,
            )

    def token_for(self, user_id: int) -> str:
        with transaction(self.make.factory) as db:
            user = db.get(User, user_id)
            _, token = accounts.create_personal_token(db, SETUP, user, name="t", now=self.clock())
            return token

    def draft(self, content: dict, insee: str = MDM) -> int:
        with transaction(self.make.factory) as db:
            return service.create_act(
                db,
                SETUP,
                insee=insee,
                kind="naissance",
                content=content,
                now=self.clock(),
                vault=self.vault,
            )

    def events(self, action: str) -> list[tuple[str, str, str | None]]:
        with self.make.session() as db:
            rows = db.execute(
                select(AuditEvent.actor, AuditEvent.subject, AuditEvent.tenant)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.id)
            )
            return [tuple(r) for r in rows]


@pytest.fixture
def reg(make, clock, vault) -> Commune:
    return Commune(make, clock, vault)


def search(client, token: str, **params: str):
    return client.get("/api/v1/acts", query_string=params, headers=bearer(token))


def found(response) -> list[int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [act["id"] for act in response.get_json()["acts"]]


# --- search --------------------------------------------------------------------------


def test_search_folds_case_and_accents(client, reg):
    response = search(client, reg.token, nom="DUPONT", prenoms="lea")
    assert found(response) == [reg.act_id]
    assert response.get_json()["acts"][0] == {
        "id": reg.act_id,
        "kind": "naissance",
        "year": 2026,
        "number": 12,
        "status": "signed",
        "title": "Acte de naissance n° 12/2026 — DUPONT Léa",
        "drawn_at": "2026-11-27T14:00:00Z",
        "imported": True,
    }
    assert found(search(client, reg.token, nom="dupont", prenoms="LÉA")) == [reg.act_id]
    assert found(search(client, reg.token, nom="Dupont", prenoms="Léa Marie")) == []
    assert found(search(client, reg.token, nom="Dupond", prenoms="Léa")) == []


def test_search_with_date_and_place(client, reg):
    hit = {"nom": "Dupont", "prenoms": "Léa"}
    assert found(search(client, reg.token, **hit, date="2026-11-27")) == [reg.act_id]
    assert found(
        search(client, reg.token, **hit, date="2026-11-27", lieu="MONT DE MARSAN (landes)")
    ) == [reg.act_id]
    assert found(search(client, reg.token, **hit, date="2026-11-28")) == []
    assert found(search(client, reg.token, **hit, date="2026-11-27", lieu="Dax (Landes)")) == []
    assert found(search(client, reg.token, **hit, kind="naissance")) == [reg.act_id]
    assert found(search(client, reg.token, **hit, kind="mariage")) == []


def test_search_finds_drafts_too(client, reg):
    draft = reg.draft(naissance(nom="Martin", prenoms="Noé"))
    response = search(client, reg.token, nom="martin", prenoms="noe")
    assert found(response) == [draft]
    summary = response.get_json()["acts"][0]
    assert summary["status"] == "draft" and summary["number"] is None
    assert summary["drawn_at"] is None and summary["title"].endswith("(projet) — MARTIN Noé")


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({}, ["nom", "prenoms"]),
        ({"nom": "Dupont"}, ["prenoms"]),
        ({"prenoms": "Léa", "nom": "  "}, ["nom"]),
        ({"nom": "Dupont", "prenoms": "Léa", "date": "27/11/2026"}, ["date"]),
        ({"nom": "Dupont", "prenoms": "Léa", "date": "2026-02-30"}, ["date"]),
        ({"nom": "Dupont", "prenoms": "Léa", "date": "20261127"}, ["date"]),
        ({"nom": "Dupont", "prenoms": "Léa", "lieu": "Dax"}, ["lieu"]),
    ],
)
def test_search_refuses_bad_parameters(client, reg, params, fields):
    body = assert_problem(search(client, reg.token, **params), 422)
    assert [e["field"] for e in body["errors"]] == fields
    assert reg.events("registry:act:searched") == []


def test_search_refuses_unknown_kind_and_empty_names(client, reg):
    assert_problem(search(client, reg.token, nom="Dupont", prenoms="Léa", kind="bapteme"), 422)
    assert_problem(search(client, reg.token, nom="--", prenoms="Léa"), 422)


def test_search_is_audited_as_the_user(client, reg):
    search(client, reg.token, nom="Dupont", prenoms="Léa")
    assert reg.events("registry:act:searched") == [(f"user:{reg.agent.id}", f"tenant:{MDM}", MDM)]


# --- one act -------------------------------------------------------------------------


def test_get_act_with_content_mentions_and_deliveries(client, reg, clock, vault, make):
    with transaction(make.factory) as db:
        mention_id = service.add_mention(
            db,
            SETUP,
            MDM,
            reg.act_id,
            kind="rectification",
            facts={"texte": "Rectifié par décision du procureur."},
            now=clock(),
            vault=vault,
        )
        delivery_id = service.request_delivery(
            db,
            SETUP,
            MDM,
            reg.act_id,
            kind="copie_integrale",
            requester="Léa Dupont",
            purpose="Dossier de passeport",
            now=clock(),
            vault=vault,
        )
    response = client.get(f"/api/v1/acts/{reg.act_id}", headers=bearer(reg.token))
    assert response.status_code == 200, response.get_data(as_text=True)
    act = response.get_json()
    assert act["id"] == reg.act_id and act["status"] == "signed" and act["imported"] is True
    assert act["insee"] == MDM and act["commune"] == "Mont-de-Marsan"
    assert act["officer"] == "Marie Officier"
    assert act["has_document"] is False
    assert act["content"]["kind"] == "naissance"
    assert act["content"]["enfant"]["prenoms"] == "Léa"
    assert act["content"]["naissance"] == {
        "date": "2026-11-27",
        "heure": "10:30:00",
        "lieu": "Mont-de-Marsan (Landes)",
    }
    assert act["mentions"] == [
        {
            "id": mention_id,
            "kind": "rectification",
            "label": "Rectification",
            "texte": "Rectifié par décision du procureur.",
            "applied_on": "2026-11-30",
            "applied_place": "Mont-de-Marsan",
            "officer": None,
            "status": "pending",
            "struck": False,
        }
    ]
    [delivery] = act["deliveries"]
    assert delivery["id"] == delivery_id and delivery["kind"] == "copie_integrale"
    assert delivery["status"] == "pending" and delivery["signed_at"] is None
    assert len(delivery["code"]) == 14
    # The requester and the purpose stay out of the API.
    assert "Dossier de passeport" not in response.get_data(as_text=True)
    assert reg.events("registry:act:viewed") == [(f"user:{reg.agent.id}", f"act:{reg.act_id}", MDM)]


@pytest.mark.parametrize("act_id", ["999999", "2147483648", "9" * 30])
def test_missing_act_is_404(client, reg, act_id):
    body = assert_problem(client.get(f"/api/v1/acts/{act_id}", headers=bearer(reg.token)), 404)
    # Ids beyond a database integer are just not found, like any other (never a driver
    # overflow, never a 405 from a route that failed to match).
    assert body["detail"] == "Acte introuvable."
    path = f"/api/v1/acts/{act_id}/document"
    body = assert_problem(client.get(path, headers=bearer(reg.token)), 404)
    assert body["detail"] == "Document signé introuvable."


# --- isolation and roles -------------------------------------------------------------


def test_another_communes_act_is_invisible(client, reg, make):
    dax_agent = make.user("agent", DAX, totp=False)
    token = reg.token_for(dax_agent.id)
    mine = assert_problem(client.get(f"/api/v1/acts/{reg.act_id}", headers=bearer(token)), 404)
    missing = assert_problem(client.get("/api/v1/acts/999999", headers=bearer(token)), 404)
    assert mine["detail"] == missing["detail"]
    assert_problem(client.get(f"/api/v1/acts/{reg.act_id}/document", headers=bearer(token)), 404)
    assert found(search(client, token, nom="Dupont", prenoms="Léa")) == []
    assert found(search(client, token, nom="Dupont", prenoms="Léa", date="2026-11-27")) == []
    assert reg.events("registry:act:viewed") == []


@pytest.mark.parametrize("role", ["agent", "officer", "admin"])
def test_every_commune_role_may_read(client, reg, make, role):
    user = make.user(role, MDM, totp=False)
    token = reg.token_for(user.id)
    assert client.get(f"/api/v1/acts/{reg.act_id}", headers=bearer(token)).status_code == 200


def test_platform_admin_is_refused(client, reg, make):
    admin = make.user("platform_admin", None, totp=False)
    token = reg.token_for(admin.id)
    for path in (
        "/api/v1/acts?nom=Dupont&prenoms=L%C3%A9a",
        f"/api/v1/acts/{reg.act_id}",
        f"/api/v1/acts/{reg.act_id}/document",
        "/api/v1/registry/acts",
    ):
        assert_problem(client.get(path, headers=bearer(token)), 403)


def test_client_tokens_are_refused(client, reg, make):
    _, client_token = make.client("notaire", (MDM,))
    for path in ("/api/v1/acts?nom=Dupont&prenoms=Lea", f"/api/v1/acts/{reg.act_id}"):
        assert_problem(client.get(path, headers=bearer(client_token)), 401)
        assert_problem(client.get(path), 401)


# --- the signed PDF ------------------------------------------------------------------


def test_act_without_signed_document_is_404(client, reg):
    body = assert_problem(
        client.get(f"/api/v1/acts/{reg.act_id}/document", headers=bearer(reg.token)), 404
    )
    assert body["detail"] == "Document signé introuvable."
    assert_problem(client.get("/api/v1/acts/999999/document", headers=bearer(reg.token)), 404)


def test_signed_document_download_is_audited(client, reg, make, vault, clock):
    with transaction(make.factory) as db:
        stored = vault.put(db, MDM, io.BytesIO(PDF), now=clock())
        db.get(Act, reg.act_id).document_id = stored.id
    response = client.get(f"/api/v1/acts/{reg.act_id}/document", headers=bearer(reg.token))
    assert response.status_code == 200
    assert response.mimetype == "application/pdf" and response.data == PDF
    assert response.headers["Content-Disposition"] == f'attachment; filename="act-{reg.act_id}.pdf"'
    assert response.headers["Cache-Control"] == "no-store"
    assert reg.events("registry:document:downloaded") == [
        (f"user:{reg.agent.id}", f"act:{reg.act_id}", MDM)
    ]
    detail = client.get(f"/api/v1/acts/{reg.act_id}", headers=bearer(reg.token)).get_json()
    assert detail["has_document"] is True


# --- the register --------------------------------------------------------------------


def test_register_lists_latest_acts_without_personal_data(client, reg, clock):
    clock.advance(minutes=1)
    draft = reg.draft(naissance(nom="Martin", prenoms="Noé"))
    reg.draft(naissance(nom="Autre", prenoms="Commune"), insee=DAX)
    response = client.get("/api/v1/registry/acts", headers=bearer(reg.token))
    assert response.status_code == 200, response.get_data(as_text=True)
    page = response.get_json()
    assert (page["limit"], page["offset"]) == (50, 0)
    assert [a["id"] for a in page["acts"]] == [draft, reg.act_id]
    assert page["acts"][1] == {
        "id": reg.act_id,
        "kind": "naissance",
        "year": 2026,
        "number": 12,
        "status": "signed",
        "drawn_at": "2026-11-27T14:00:00Z",
        "updated_at": "2026-11-30T08:00:00Z",
        "imported": True,
    }
    assert "Martin" not in response.get_data(as_text=True)
    pending = client.get("/api/v1/registry/acts?status=draft", headers=bearer(reg.token))
    assert [a["id"] for a in pending.get_json()["acts"]] == [draft]
    second = client.get("/api/v1/registry/acts?limit=1&offset=1", headers=bearer(reg.token))
    assert [a["id"] for a in second.get_json()["acts"]] == [reg.act_id]


@pytest.mark.parametrize(
    "query",
    [
        "status=cancelled",
        "limit=0",
        "limit=201",
        "limit=x",
        "limit=²",
        "limit=" + "9" * 5000,
        "offset=-1",
        "offset=1.5",
        "offset=10001",
    ],
)
def test_register_refuses_bad_parameters(client, reg, query):
    assert_problem(client.get(f"/api/v1/registry/acts?{query}", headers=bearer(reg.token)), 422)


# --- OpenAPI -------------------------------------------------------------------------


def test_openapi_describes_the_registry(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]

    def ok_schema(path: str) -> str:
        op = paths[path]["get"]
        assert op["tags"] == ["registre"] and op["security"] == [{"bearer": []}]
        assert "sxp_" in op["description"]
        assert {"401", "403"} <= set(op["responses"])
        return op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]

    assert ok_schema("/api/v1/acts") == "#/components/schemas/ActList"
    assert ok_schema("/api/v1/acts/{act_id}") == "#/components/schemas/ActDetail"
    assert ok_schema("/api/v1/registry/acts") == "#/components/schemas/RegisterPage"
    search_op = paths["/api/v1/acts"]["get"]
    params = {p["name"]: p for p in search_op["parameters"]}
    assert set(params) == {"nom", "prenoms", "date", "lieu", "kind"}
    assert params["nom"]["required"] and params["prenoms"]["required"]
    assert params["date"]["schema"] == {"type": "string", "format": "date"}
    assert "422" in search_op["responses"]
    assert "404" in paths["/api/v1/acts/{act_id}"]["get"]["responses"]
    document = paths["/api/v1/acts/{act_id}/document"]["get"]
    assert document["responses"]["200"]["content"] == {
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}
    }
    assert {"401", "403", "404"} <= set(document["responses"])
    summary = schemas["ActSummary"]
    assert summary["description"].startswith("Un acte en résumé")
    assert set(summary["required"]) == {
        "id", "kind", "year", "number", "status", "title", "drawn_at", "imported",
    }  # fmt: skip
    detail = schemas["ActDetail"]["properties"]
    assert {"content", "mentions", "deliveries"} <= set(detail)
    assert set(detail["content"]["discriminator"]["mapping"]) == {
        "naissance", "mariage", "deces", "reconnaissance", "enfant_sans_vie",
    }  # fmt: skip
    assert schemas["MentionOut"]["properties"]["texte"]["type"] == "string"
    assert schemas["DeliveryOut"]["properties"]["code"]["type"] == "string"
