"""The request API (a contract integrators build on, see docs/comedec.md): requests for
acts and their documents, verification requests. Callers are API clients of requester
organisations (`Auth.CLIENT`); a client sees only its own requests."""

from __future__ import annotations

import base64
from datetime import date, datetime, time
from typing import Any, Literal

from flask import Response, request, url_for
from pydantic import BaseModel, Field

from securex.accounts.service import throttle
from securex.comedec import service, webhooks, xml
from securex.comedec.models import RequestStatus
from securex.comedec.schema import ActRequestIn, VerificationIn
from securex.errors import RateLimited
from securex.web.api import (
    ApiBlueprint,
    current_client,
    invalid_field,
    query_arg,
    query_date,
    query_int,
    query_param,
)
from securex.web.context import db, now, state

bp = ApiBlueprint("comedec_api", __name__, tag="demandes d'actes")

MAX_KEY = 100


class Links(BaseModel):
    self: str
    document: str = Field(description="Le PDF signé, une fois la demande délivrée.")
    data: str = Field(description="Les données de l'acte délivré (JSON, ou XML selon Accept).")
    ack: str = Field(description="Accusé de réception du document (POST).")


class ActRequestOut(BaseModel):
    """Une demande d'acte et la décision prise."""

    id: int
    commune: str = Field(description="Code INSEE de la commune qui détient l'acte.")
    act_kind: str
    delivery: str
    capacity: str
    status: RequestStatus = Field(
        description="`refused`, `received` (délivrance automatique en cours), `queued` (un "
        "agent traite), `issued`, `not_found`."
    )
    legal_basis: str = Field(description="L'article sur lequel repose la décision.")
    reason: str = Field(description="La décision expliquée, en français.")
    due_date: date = Field(description="Date à laquelle la commune s'engage à répondre.")
    created_at: datetime
    updated_at: datetime
    issued_at: datetime | None
    acknowledged_at: datetime | None
    reference: str | None = Field(description="Votre référence, telle qu'envoyée.")
    links: Links


class ActRequestPage(BaseModel):
    """Vos demandes, par identifiant croissant ; `next_after` pour la page suivante."""

    requests: list[ActRequestOut]
    next_after: int | None = Field(description="À passer en `after` ; null : dernière page.")


class ActData(BaseModel):
    """Le contenu de la copie ou de l'extrait délivré : exactement ce que le PDF signé
    énonce (mêmes champs, mêmes mentions)."""

    model_config = {"extra": "allow"}
    request: int
    fields: list[dict[str, str]]
    mentions: list[str]


class VerificationOut(BaseModel):
    """Réponse à une vérification (décret 2017-890 art. 39 à 41), signée par le cachet
    de la commune : `signature` est une signature CMS détachée (DER, base64) sur
    `answer` encodé en JSON canonique (clés triées, sans espaces, UTF-8)."""

    id: int
    result: Literal["match", "mismatch", "not_found"]
    differences: dict[str, Any] = Field(
        description="Pour `mismatch` : chaque champ envoyé qui diffère, avec la valeur de l'acte."
    )
    legal_basis: str
    answer: dict[str, Any]
    signature: str | None


def _out(view: service.RequestView) -> ActRequestOut:
    def link(endpoint: str) -> str:
        return url_for(f"comedec_api.{endpoint}", request_id=view.id)

    return ActRequestOut(
        id=view.id,
        commune=view.commune,
        act_kind=view.act_kind,
        delivery=view.delivery,
        capacity=view.capacity,
        status=view.status,
        legal_basis=view.legal_basis,
        reason=view.reason,
        due_date=view.due_on,
        created_at=view.created_at,
        updated_at=view.updated_at,
        issued_at=view.issued_at,
        acknowledged_at=view.acknowledged_at,
        reference=view.reference,
        links=Links(
            self=link("get_request"),
            document=link("request_document"),
            data=link("request_data"),
            ack=link("acknowledge"),
        ),
    )


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_KEY:
        raise invalid_field("Idempotency-Key", f"Au plus {MAX_KEY} caractères.")
    return key or None


IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Clé unique par demande : un nouvel envoi avec la même clé et le même "
    "corps rend la même demande (pas de doublon) ; avec un autre corps : 409.",
    "schema": {"type": "string", "maxLength": MAX_KEY},
}


@bp.operation(
    "/act-requests",
    "POST",
    summary="Demander une copie ou un extrait d'acte",
    body=ActRequestIn,
    response=ActRequestOut,
    status=201,
    errors=(403, 409, 422),
    query=[IDEMPOTENCY],
    read_first=True,
)
def submit(body: ActRequestIn) -> Any:
    """La demande est vérifiée (art. 29), la qualité du demandeur confrontée à la loi
    (art. 30, L213-2 : un refus est immédiat, avec son fondement), l'acte recherché ;
    une demande nette est délivrée automatiquement si la commune l'a choisi, sinon un
    agent la traite avant la date `due_date`."""
    view, created = service.submit(
        db(),
        current_client(),
        body,
        now=now(),
        vault=state().vault,
        idempotency_key=_idempotency_key(),
        between=db().commit,  # ends the read-only transaction: the writes take the lock
    )
    db().commit()
    headers = {"Location": url_for("comedec_api.get_request", request_id=view.id)}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _out(view), 201, headers


@bp.operation(
    "/act-requests",
    summary="Vos demandes",
    read_first=True,
    response=ActRequestPage,
    errors=(422,),
    query=[
        query_param(
            "status",
            "Seulement cet état.",
            {"type": "string", "enum": [s.value for s in RequestStatus]},
        ),
        query_param(
            "since",
            "Seulement les demandes modifiées depuis cette date (AAAA-MM-JJ).",
            {"type": "string", "format": "date"},
        ),
        query_param(
            "limit", "Taille de page (50).", {"type": "integer", "minimum": 1, "maximum": 200}
        ),
        query_param("after", "Identifiant après lequel reprendre.", {"type": "integer"}),
    ],
)
def list_requests() -> ActRequestPage:
    status = query_arg("status")
    if status is not None and status not in {s.value for s in RequestStatus}:
        raise invalid_field("status", f"État inconnu : {status!r}.")
    since = query_date("since")
    limit = query_int("limit", 50, 1, 200)
    views = service.list_requests(
        db(),
        current_client(),
        status=status,
        since=datetime.combine(since, time.min, tzinfo=service.PARIS) if since else None,
        limit=limit + 1,
        after=query_int("after", 0, 0, 2**31 - 1) or None,
        vault=state().vault,
    )
    page = views[:limit]
    return ActRequestPage(
        requests=[_out(v) for v in page],
        next_after=page[-1].id if len(views) > limit else None,
    )


@bp.operation(
    "/act-requests/<int:request_id>",
    summary="État d'une demande",
    response=ActRequestOut,
    errors=(404,),
    read_first=True,
)
def get_request(request_id: int) -> ActRequestOut:
    return _out(service.get(db(), current_client(), request_id, vault=state().vault))


@bp.operation(
    "/act-requests/<int:request_id>/document",
    summary="Le PDF signé délivré",
    raw_response="application/pdf",
    errors=(404, 409),
)
def request_document(request_id: int) -> Response:
    """La copie ou l'extrait, PDF/A signé (PAdES). 409 tant que la demande n'est pas
    délivrée. Chaque téléchargement est journalisé."""
    data = service.document(db(), current_client(), request_id, now=now(), vault=state().vault)
    db().commit()
    return Response(
        data,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="acte-{request_id}.pdf"'},
    )


@bp.operation(
    "/act-requests/<int:request_id>/data",
    summary="Les données de l'acte délivré (JSON ou XML)",
    response=ActData,
    errors=(404, 406, 409),
)
def request_data(request_id: int) -> Any:
    """En JSON par défaut ; en XML (schéma `docs/comedec-data.xsd`) avec
    `Accept: application/xml` ou `?format=xml`."""
    content = service.data(db(), current_client(), request_id, now=now(), vault=state().vault)
    db().commit()
    wants_xml = query_arg("format") == "xml" or (
        request.accept_mimetypes.best_match(["application/json", "application/xml"])
        == "application/xml"
    )
    if wants_xml:
        return Response(xml.act_data(content), mimetype="application/xml")
    return ActData.model_validate(content)


@bp.operation(
    "/act-requests/<int:request_id>/ack",
    "POST",
    summary="Accuser réception du document",
    response=ActRequestOut,
    errors=(404, 409),
)
def acknowledge(request_id: int) -> ActRequestOut:
    view = service.acknowledge(db(), current_client(), request_id, now=now())
    db().commit()
    return _out(service.get(db(), current_client(), view.id, vault=state().vault))


@bp.operation(
    "/verifications",
    "POST",
    summary="Vérifier des données d'état civil",
    body=VerificationIn,
    response=VerificationOut,
    status=201,
    errors=(403, 409, 422),
    query=[IDEMPOTENCY],
)
def verify(body: VerificationIn) -> Any:
    """Pour les demandeurs de l'art. 39 (administrations, organismes, notaires,
    officiers), la personne informée (art. 40) : la réponse confirme (`match`) ou
    corrige (`mismatch`, dans la limite des champs envoyés, art. 41) les données, ou
    dit `not_found` ; l'acte lui-même n'est pas transmis."""
    st, client = state(), current_client()
    wait = throttle(
        db(),
        st.keys,
        "verify-client",
        f"client:{client.id}",
        limit=int(st.settings["comedec.verifications_per_hour"]),
        window_seconds=3600,
        now=now(),
    )
    if wait:
        db().commit()
        raise RateLimited(f"Trop de vérifications : réessayez dans {wait // 60 + 1} min.")
    rt = st.runtime()

    def seal(tenant: Any, data: bytes) -> str:
        from securex.comedec.sealing import sign_detached
        from securex.registry.batch import seal_signing

        signing = seal_signing(rt, tenant, now())
        return base64.b64encode(sign_detached(signing.setup, data)).decode()

    view, _ = service.verify(
        db(),
        current_client(),
        body,
        now=now(),
        vault=state().vault,
        seal=seal,
        idempotency_key=_idempotency_key(),
    )
    db().commit()
    return (
        VerificationOut(
            id=view.id,
            result=view.result,  # type: ignore[arg-type]
            differences=view.differences,
            legal_basis=view.legal_basis,
            answer=view.answer,
            signature=view.signature,
        ),
        201,
        {},
    )


# --- webhooks ---------------------------------------------------------------------------


class WebhookIn(BaseModel):
    model_config = {"extra": "forbid", "strict": True}
    url: str = Field(
        description="HTTPS (http:// seulement vers 127.0.0.1, localhost ou [::1]), au plus "
        "500 caractères ASCII, sans identifiants."
    )


class WebhookOut(BaseModel):
    """Votre point de réception des changements d'état (Standard Webhooks)."""

    url: str
    created_at: datetime = Field(description="Date de l'enregistrement de cette URL et du secret.")
    enabled: bool = Field(description="Faux après DELETE : plus rien n'est envoyé.")


class WebhookRegistered(BaseModel):
    """Le point de réception enregistré, avec son secret de signature."""

    url: str
    secret: str = Field(
        description="`whsec_` + base64 de la clé HMAC-SHA256 : affiché cette fois seulement ; "
        "un nouvel enregistrement en donne un autre (l'ancien ne vaut plus)."
    )
    created_at: datetime


@bp.operation(
    "/webhook",
    "PUT",
    summary="Enregistrer (ou remplacer) votre webhook",
    body=WebhookIn,
    response=WebhookRegistered,
    errors=(422,),
)
def put_webhook(body: WebhookIn) -> WebhookRegistered:
    """À chaque changement d'état d'une de vos demandes, securex envoie un POST signé
    (Standard Webhooks) à cette URL. Chaque enregistrement remplace le précédent et
    change le secret : c'est ainsi qu'on le renouvelle."""
    endpoint, secret = webhooks.register(
        db(), current_client(), body.url, now=now(), keyring=state().vault.keyring
    )
    db().commit()
    return WebhookRegistered(url=endpoint.url, secret=secret, created_at=endpoint.created_at)


@bp.operation("/webhook", summary="Votre webhook", response=WebhookOut, errors=(404,))
def get_webhook() -> WebhookOut:
    """Le secret n'est jamais réaffiché : enregistrez à nouveau pour en obtenir un autre."""
    endpoint = webhooks.get(db(), current_client())
    return WebhookOut(
        url=endpoint.url, created_at=endpoint.created_at, enabled=endpoint.disabled_at is None
    )


@bp.operation("/webhook", "DELETE", summary="Arrêter les webhooks", status=204)
def delete_webhook() -> Any:
    """Plus aucun envoi, y compris des événements en attente de nouvel essai."""
    webhooks.disable(db(), current_client(), now=now())
    db().commit()
    return None, 204, {}
