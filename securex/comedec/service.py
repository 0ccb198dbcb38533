"""Requests for acts and verification requests: validate, decide under the law, match
in the registry by blind index, then issue automatically, queue for an agent, refuse
or answer not found; status reads, documents, data and receipts for the requester.

Order of a submission (the issue's contract): validate (art. 29: what the request
must state) -> decide the entitlement (`rules.decide`; a refusal is final at once,
with its legal basis) -> match (unique and consistent with what the request states)
-> issue automatically when the commune allows it (a job renders and signs with the
commune's seal), else queue. Every step is audited without personal data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from securex.accounts.models import ApiClient, Tenant
from securex.accounts.service import AccountKeys, Actor, throttle
from securex.audit.events import EventType
from securex.audit.log import record
from securex.comedec import rules
from securex.comedec.models import (
    ActRequest,
    CommuneSettings,
    RequestStatus,
    Verification,
    WebhookEndpoint,
)
from securex.comedec.schema import ActRequestIn, VerificationIn
from securex.errors import Conflict, Forbidden, NotFound, RateLimited, ValidationFailed
from securex.jobs.service import enqueue
from securex.registry import render
from securex.registry import service as registry
from securex.registry.models import Delivery, Status
from securex.registry.schema import (
    ActKind,
    DeliveryKind,
    Mariage,
    Naissance,
    Person,
    main_event,
    subjects,
)
from securex.vault import Vault
from securex.vault.columns import BlindIndexer, column_keys, normalise
from securex.vault.errors import KeyUnavailable

PARIS = ZoneInfo("Europe/Paris")
KEEP = timedelta(days=365)  # requests are kept one year (décret 2017-890 art. 29)
PURGED_PURPOSE = "Motif effacé avec la demande, après un an (décret 2017-890 art. 29)"
ART_29 = "Décret n° 2017-890 du 6 mai 2017, art. 29"
ISSUE_JOB = "comedec.issue"
WEBHOOK_JOB = "comedec.webhook"


@dataclass(frozen=True)
class RequestView:
    """What the requester sees of a request (no personal data beyond its own ref)."""

    id: int
    commune: str
    act_kind: str
    delivery: str
    capacity: str
    status: RequestStatus
    legal_basis: str
    reason: str
    due_on: date
    created_at: datetime
    updated_at: datetime
    issued_at: datetime | None
    acknowledged_at: datetime | None
    reference: str | None


def client_actor(client: ApiClient) -> Actor:
    return Actor("client", str(client.id))


def settings_of(db: Session, tenant: Tenant) -> CommuneSettings:
    row = db.get(CommuneSettings, tenant.id)
    return row or CommuneSettings(
        tenant_id=tenant.id,
        auto_issue=False,
        not_found_at_once=False,
        due_days=3,
        service_name="Service de l'état civil",
        service_contact="",
    )


def body_hash(db: Session, vault: Vault, body: ActRequestIn | VerificationIn) -> str:
    """A keyed digest of the body (HMAC under the commune's index key): a plain hash of
    names and dates could be confirmed by guessing. "" for an unknown commune, whose
    request is refused before anything is stored."""
    try:
        indexer = BlindIndexer(db, vault.keyring, body.commune)
    except KeyUnavailable:
        return ""
    return indexer.mac("request-body", body.model_dump_json().encode())


# --- validation (art. 29) -------------------------------------------------------------


def required_fields(act_kind: ActKind, delivery: DeliveryKind) -> list[str]:
    """What a request must state (art. 29): nom, prénoms, date and place of the event
    — for a marriage, the marriage's (`event`), for the other acts the person's
    (`person.date`, `person.lieu`) —; for a copie intégrale or an extrait avec
    filiation of a birth, also the parents."""
    fields = ["person.nom", "person.prenoms"]
    if act_kind is ActKind.MARIAGE:
        fields += ["event.date", "event.lieu"]
    else:
        fields += ["person.date", "person.lieu"]
    if act_kind is ActKind.NAISSANCE and delivery is not DeliveryKind.EXTRAIT_SANS_FILIATION:
        fields.append("parents")
    return fields


def _missing(body: ActRequestIn | VerificationIn, fields: list[str]) -> list[dict[str, Any]]:
    data = body.model_dump()
    errors = []
    for name in fields:
        node: Any = data
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", []):
            errors.append(
                {
                    "field": name,
                    "message": f"obligatoire pour cette demande ({ART_29})",
                    "type": "missing",
                }
            )
    return errors


# --- matching ------------------------------------------------------------------------


def _same_name(given: Any, recorded: Person) -> bool:
    """Same nom, and the prénoms given are the first ones recorded (people often give
    only their first prénom)."""
    if normalise(given.nom) != normalise(recorded.nom):
        return False
    asked, held = normalise(given.prenoms).split(), normalise(recorded.prenoms).split()
    return asked == held[: len(asked)]


def _same_place(given: str | None, recorded: str | None) -> bool:
    if not given:
        return True
    return registry._commune_of(given) == registry._commune_of(recorded)


def _subject(act: registry.ActRecord, body: ActRequestIn | VerificationIn) -> Person | None:
    for person in subjects(act.content):
        if _same_name(body.person, person):
            return person
    return None


def differences(act: registry.ActRecord, body: ActRequestIn | VerificationIn) -> dict[str, Any]:
    """The submitted fields that disagree with the act, with the act's value: only the
    fields the request itself states (art. 41: corrected within its limits)."""
    person = _subject(act, body)
    content = act.content
    event = main_event(content)
    out: dict[str, Any] = {}
    if person is None:
        # The blind index matched on a folded form: report the recorded spelling.
        person = subjects(content)[0]
        out["person.nom"] = person.nom
        out["person.prenoms"] = person.prenoms
    own_event = event if isinstance(content, Naissance) or act.kind is ActKind.DECES else None
    day = own_event.date if own_event else person.date_naissance
    place = own_event.lieu if own_event else person.lieu_naissance
    if body.person.date and day and body.person.date != day:
        out["person.date"] = day.isoformat()
    if body.person.lieu and place and not _same_place(body.person.lieu, place):
        out["person.lieu"] = place
    if body.person.sexe and person.sexe and body.person.sexe != person.sexe.value:
        out["person.sexe"] = person.sexe.value
    parents = getattr(content, "parents", None) or getattr(person, "parents", None) or []
    for n, given in enumerate(body.parents):
        if not any(_same_name(given, p) for p in parents):
            out[f"parents.{n}"] = (
                {"nom": parents[n].nom, "prenoms": parents[n].prenoms} if n < len(parents) else None
            )
    if isinstance(content, Mariage):
        others = [p for p in content.epoux if p is not person]
        if body.spouse and others and not _same_name(body.spouse, others[0]):
            out["spouse"] = {"nom": others[0].nom, "prenoms": others[0].prenoms}
        if body.event and event:
            if body.event.date != event.date:
                out["event.date"] = event.date.isoformat()
            if not _same_place(body.event.lieu, event.lieu):
                out["event.lieu"] = event.lieu
    return out


def _candidates(
    db: Session, actor: Actor, insee: str, body: ActRequestIn | VerificationIn, *, now, vault
) -> list[registry.ActRecord]:
    """Signed acts of the right kind found by nom + prénoms (+ date when given)."""
    found = registry.search(
        db,
        actor,
        insee,
        nom=body.person.nom,
        prenoms=body.person.prenoms,
        day=body.person.date,
        kind=body.act_kind,
        now=now,
        vault=vault,
        audited=False,  # the request's own event records the outcome
        light=True,  # matching needs the content, not the mentions and scans
    )
    return [act for act in found if act.status == Status.SIGNED]


def match(
    db: Session, actor: Actor, insee: str, body: ActRequestIn, *, now: datetime, vault: Vault
) -> list[registry.ActRecord]:
    """The acts consistent with everything the request states."""
    return [
        act
        for act in _candidates(db, actor, insee, body, now=now, vault=vault)
        if not differences(act, body)
    ]


# --- submission ----------------------------------------------------------------------


def _view(db: Session, req: ActRequest, reference: str | None) -> RequestView:
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    return RequestView(
        id=req.id,
        commune=tenant.insee,
        act_kind=req.act_kind,
        delivery=req.delivery,
        capacity=req.capacity,
        status=RequestStatus(req.status),
        legal_basis=req.legal_basis,
        reason=req.reason,
        due_on=req.due_on,
        created_at=req.created_at,
        updated_at=req.updated_at,
        issued_at=req.issued_at,
        acknowledged_at=req.acknowledged_at,
        reference=reference,
    )


def _tenant_in_scope(db: Session, client: ApiClient | None, insee: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.insee == insee))
    if tenant is None or (client is not None and tenant not in client.communes):
        raise Forbidden(
            f"La commune {insee} n'est pas dans le périmètre de ce client API : demandez à "
            "l'administrateur de la plateforme de l'y ajouter."
        )
    return tenant


def _existing(
    db: Session, model: Any, client: ApiClient | None, key: str | None, digest: str
) -> Any:
    """Idempotency: the same key and body gives back the first answer; the same key
    with another body is a conflict."""
    if client is None or not key:
        return None
    row = db.scalar(select(model).where(model.client_id == client.id, model.idempotency_key == key))
    if row is not None and row.body_hash != digest:
        raise Conflict(
            "Cette clé d'idempotence a déjà servi pour une autre demande : utilisez une "
            "nouvelle clé pour une nouvelle demande."
        )
    return row


def submit(
    db: Session,
    client: ApiClient | None,
    body: ActRequestIn,
    *,
    now: datetime,
    vault: Vault,
    idempotency_key: str | None = None,
    channel: str = "api",
    extra: dict[str, Any] | None = None,
    proof_id: str | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[RequestView, bool]:
    """File a request; returns its view and whether it was created now (False for an
    idempotent retry). `client` is None for the public counter, whose citizens
    declare a capacity like the `guichet` clients'.

    Everything up to the decision only reads; `between` (e.g. the session's commit)
    is called before the writes, so that a caller who began with a read-only
    transaction (`securex.db.reading`) holds SQLite's write lock only for the insert,
    its audit event and its job — about a millisecond instead of the whole request."""
    digest = body_hash(db, vault, body)
    previous = _existing(db, ActRequest, client, idempotency_key, digest)
    if previous is not None:
        return _view(db, previous, body.reference), False
    category = client.category if client else "guichet"
    capacity = rules.Capacity(body.capacity)
    act_kind, delivery = _check_request(
        body,
        category,
        (
            f"Un client « {category} » ne peut pas demander en qualité de « {capacity.value} ».",
            "qualité hors de la catégorie du client",
        ),
    )
    tenant = _tenant_in_scope(db, client, body.commune)
    prefs = settings_of(db, tenant)
    actor = client_actor(client) if client else Actor("public", "sve")
    declared = body.event.date if body.event and act_kind is ActKind.MARIAGE else body.person.date

    def decide(act_year: int | None) -> rules.Decision:
        return rules.decide(
            act_kind,
            delivery,
            capacity,
            act_year=act_year,
            today=registry.paris_date(now),
            justified=bool(body.justification) or proof_id is not None,
            legal_reference=bool(body.legal_reference),
        )

    decision = decide(_year(declared))
    status, reason, found = RequestStatus.REFUSED, decision.reason, []
    basis = decision.legal_basis
    if decision.outcome is not rules.Outcome.REFUSED:
        found = match(db, actor, tenant.insee, body, now=now, vault=vault)
        if len(found) == 1:
            # The act's own year decides (a declared date may be wrong by a day).
            decision = decide(found[0].view.year)
            basis, reason = decision.legal_basis, decision.reason
        status, reason = _route(decision, found, prefs, reason)
    if between is not None:
        between()
        previous = _existing(db, ActRequest, client, idempotency_key, digest)
        if previous is not None:  # the same key filed meanwhile by a concurrent retry
            return _view(db, previous, body.reference), False
    data = {**body.model_dump(mode="json"), **(extra or {})}
    try:
        req = _insert_request(
            db,
            vault,
            tenant,
            ActRequest(
                tenant_id=tenant.id,
                client_id=client.id if client else None,
                channel=channel,
                idempotency_key=idempotency_key if client else None,
                body_hash=digest,
                act_kind=act_kind.value,
                delivery=delivery.value,
                capacity=capacity.value,
                data=json.dumps(data, ensure_ascii=False),
                status=status.value,
                outcome=decision.outcome.value,
                legal_basis=basis,
                reason=reason[:400],
                candidates=len(found),
                act_id=found[0].id if len(found) == 1 else None,
                proof_id=proof_id,
                created_at=now,
                updated_at=now,
                due_on=registry.paris_date(now) + timedelta(days=prefs.due_days),
                purge_after=now + KEEP,
            ),
        )
    except IntegrityError:
        # A concurrent retry with the same key committed first (PostgreSQL's read
        # committed lets both pass the check above): answer as its replay.
        previous = _existing(db, ActRequest, client, idempotency_key, digest)
        if previous is None:
            raise
        return _view(db, previous, body.reference), False
    record(
        db,
        EventType.REQUEST_RECEIVED,
        actor=str(actor),
        subject=f"act-request:{req.id}",
        tenant=tenant.insee,
        details={
            "kind": act_kind.value,
            "delivery": delivery.value,
            "capacity": capacity.value,
            "outcome": decision.outcome.value,
            "status": status.value,
            "candidates": len(found),
            "channel": channel,
        },
        now=now,
    )
    if status is RequestStatus.RECEIVED:
        enqueue(db, ISSUE_JOB, {"request": req.id}, tenant_id=tenant.id, actor=str(actor), now=now)
    _notify(db, req, now)
    return _view(db, req, body.reference), True


def _insert_request(db: Session, vault: Vault, tenant: Tenant, req: ActRequest) -> ActRequest:
    """Insert in a savepoint, so that a duplicate idempotency key leaves the session
    usable for the replay."""
    with db.begin_nested(), column_keys(db, vault.keyring, tenant.insee):
        db.add(req)
        db.flush()
    return req


def _check_request(
    body: ActRequestIn, category: str, capacity_refusal: tuple[str, str]
) -> tuple[ActKind, DeliveryKind]:
    """What any request must pass before anything is decided or stored: a capacity of
    the requester's category, a delivery the act kind has, what art. 29 requires."""
    act_kind, delivery = ActKind(body.act_kind), DeliveryKind(body.delivery)
    if rules.Capacity(body.capacity) not in rules.CLIENT_CAPACITIES.get(category, frozenset()):
        detail, message = capacity_refusal
        raise ValidationFailed(detail, errors=[{"field": "capacity", "message": message}])
    if not rules.deliverable(act_kind, delivery):
        raise ValidationFailed(
            f"Un {act_kind.label.lower()} ne se délivre pas en « {delivery.label} ».",
            errors=[{"field": "delivery", "message": "délivrance impossible pour ce type d'acte"}],
        )
    errors = _missing(body, required_fields(act_kind, delivery))
    if errors:
        raise ValidationFailed("La demande n'indique pas tout ce que la loi exige.", errors=errors)
    return act_kind, delivery


def _year(day: date | None) -> int | None:
    return day.year if day else None


def _route(
    decision: rules.Decision,
    found: list[registry.ActRecord],
    prefs: CommuneSettings,
    reason: str,
) -> tuple[RequestStatus, str]:
    if decision.outcome is rules.Outcome.REFUSED:
        # Refused once the act is known (its own year): final at once, like any refusal.
        return RequestStatus.REFUSED, reason
    if not found:
        if prefs.not_found_at_once:
            return RequestStatus.NOT_FOUND, "Aucun acte ne correspond aux données de la demande."
        return RequestStatus.QUEUED, "Aucun acte trouvé automatiquement : un agent recherche."
    if len(found) > 1:
        return RequestStatus.QUEUED, "Plusieurs actes possibles : un agent choisit."
    if decision.outcome is rules.Outcome.ALLOWED:
        if prefs.auto_issue:
            return RequestStatus.RECEIVED, reason
        return RequestStatus.QUEUED, reason + " Un agent prépare la délivrance."
    return RequestStatus.QUEUED, reason


# --- status changes and webhooks ------------------------------------------------------


def _notify(db: Session, req: ActRequest, now: datetime) -> None:
    """Queue a webhook to the requester, if it registered an endpoint."""
    if req.client_id is None:
        return
    endpoint = db.scalar(
        select(WebhookEndpoint.id).where(
            WebhookEndpoint.client_id == req.client_id, WebhookEndpoint.disabled_at.is_(None)
        )
    )
    if endpoint is None:
        return
    payload = {
        "type": "act_request.status_changed",
        "timestamp": now.isoformat(),
        "data": {"id": req.id, "status": req.status, "reference_hash": None},
    }
    enqueue(
        db,
        WEBHOOK_JOB,
        {"endpoint": endpoint, "event": payload},
        tenant_id=req.tenant_id,
        actor="system",
        now=now,
    )


def _set_status(
    db: Session,
    req: ActRequest,
    status: RequestStatus,
    *,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
    legal_basis: str | None = None,
) -> None:
    req.status = status.value
    req.updated_at = now
    if reason is not None:
        req.reason = reason[:400]
    if legal_basis is not None:
        req.legal_basis = legal_basis
    if status is RequestStatus.ISSUED:
        req.issued_at = now
    tenant = db.get(Tenant, req.tenant_id)
    record(
        db,
        EventType.REQUEST_STATUS_CHANGED,
        actor=str(actor),
        subject=f"act-request:{req.id}",
        tenant=tenant.insee if tenant else None,
        details={"status": status.value},
        now=now,
    )
    _notify(db, req, now)


def _on_delivery_issued(db: Session, delivery_id: int, now: datetime) -> None:
    req = db.scalar(select(ActRequest).where(ActRequest.delivery_id == delivery_id))
    if req is not None and req.status in (RequestStatus.QUEUED, RequestStatus.RECEIVED):
        _set_status(db, req, RequestStatus.ISSUED, actor=Actor("system"), now=now)


registry.delivery_issued_hooks.append(_on_delivery_issued)


# --- the requester's reads -------------------------------------------------------------


def _own(db: Session, client: ApiClient, request_id: int) -> ActRequest:
    req = db.get(ActRequest, request_id)
    # Another client's request answers exactly like a missing one.
    if req is None or req.client_id != client.id:
        raise NotFound("Demande introuvable.")
    return req


def _reference(db: Session, vault: Vault, req: ActRequest) -> str | None:
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    with column_keys(db, vault.keyring, tenant.insee):
        ref: str | None = json.loads(req.data).get("reference")
        return ref


def get(db: Session, client: ApiClient, request_id: int, *, vault: Vault) -> RequestView:
    req = _own(db, client, request_id)
    return _view(db, req, _reference(db, vault, req))


def list_requests(
    db: Session,
    client: ApiClient,
    *,
    status: str | None,
    since: datetime | None,
    limit: int,
    after: int | None,
    vault: Vault,
) -> list[RequestView]:
    """The client's own requests, oldest change first, `limit` after id cursor `after`
    (stable paging while requests keep changing)."""
    query = select(ActRequest).where(ActRequest.client_id == client.id)
    if status:
        query = query.where(ActRequest.status == RequestStatus(status).value)
    if since:
        query = query.where(ActRequest.updated_at >= since)
    if after:
        query = query.where(ActRequest.id > after)
    rows = db.scalars(query.order_by(ActRequest.id).limit(limit))
    return [_view(db, r, _reference(db, vault, r)) for r in rows]


def _issued(db: Session, client: ApiClient, request_id: int) -> tuple[ActRequest, Delivery]:
    req = _own(db, client, request_id)
    delivery = db.get(Delivery, req.delivery_id) if req.delivery_id else None
    if req.status != RequestStatus.ISSUED or delivery is None:
        raise Conflict(
            f"La demande n'est pas délivrée (statut : {RequestStatus(req.status).label}) : "
            "attendez le statut « issued »."
        )
    return req, delivery


def document(
    db: Session, client: ApiClient, request_id: int, *, now: datetime, vault: Vault
) -> bytes:
    req, delivery = _issued(db, client, request_id)
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    data, _ = registry.document(
        db, client_actor(client), tenant.insee, f"delivery:{delivery.id}", now=now, vault=vault
    )
    return data


def data(
    db: Session, client: ApiClient, request_id: int, *, now: datetime, vault: Vault
) -> dict[str, Any]:
    """The issued delivery's content as structured data: exactly what the signed copy
    states (the same selection as the PDF), mentions applied up to its issue."""
    req, delivery = _issued(db, client, request_id)
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None and delivery.signed_at is not None
    act = registry.get_act(
        db, client_actor(client), tenant.insee, delivery.act_id, now=now, vault=vault
    )
    issued_on = registry.paris_date(delivery.signed_at)
    mentions = [m for m in act.signed_mentions() if m.applied_on <= issued_on]
    lines = render.delivery_lines(
        act.view, mentions, DeliveryKind(delivery.kind), all_marriages=delivery.all_marriages
    )
    return {
        "request": req.id,
        "commune": {"insee": tenant.insee, "name": tenant.name},
        "act": {"kind": act.kind.value, "year": act.view.year, "number": act.view.number},
        "delivery": {
            "kind": delivery.kind,
            "title": lines.title,
            "issued_on": issued_on.isoformat(),
            "signer": delivery.signer_name,
            "verification_code": delivery.code,
            "sha256": delivery.sha256,
        },
        "fields": [{"label": label, "value": value} for label, value in lines.fields],
        "mentions": list(lines.mentions),
    }


def acknowledge(db: Session, client: ApiClient, request_id: int, *, now: datetime) -> RequestView:
    """The requester confirms it received the document."""
    req, _ = _issued(db, client, request_id)
    if req.acknowledged_at is None:
        req.acknowledged_at = now
        tenant = db.get(Tenant, req.tenant_id)
        record(
            db,
            EventType.REQUEST_ACKNOWLEDGED,
            actor=str(client_actor(client)),
            subject=f"act-request:{req.id}",
            tenant=tenant.insee if tenant else None,
            now=now,
        )
    return _view(db, req, None)


# --- automatic issue ------------------------------------------------------------------


def issue_automatically(
    db: Session,
    request_id: int,
    *,
    signing_for: Callable[[Tenant], Any],
    now: datetime,
    vault: Vault,
) -> None:
    """The job's work: a delivery of the matched act, signed with the commune's seal
    (`signing_for(tenant)`), in one transaction. If the seal cannot sign, the request
    goes to the agents' queue with the reason rather than failing silently."""
    req = db.get(ActRequest, request_id)
    if (
        req is None
        or req.status != RequestStatus.RECEIVED
        or req.act_id is None
        or req.delivery_id is not None
    ):
        return  # already handled (a retried job, or an agent took it over)
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    client = db.get(ApiClient, req.client_id) if req.client_id else None
    actor = client_actor(client) if client else Actor("public", "sve")
    with column_keys(db, vault.keyring, tenant.insee):
        purpose = json.loads(req.data).get("purpose") or "Demande COMEDEC"
    delivery_id = registry.request_delivery(
        db,
        actor,
        tenant.insee,
        req.act_id,
        kind=req.delivery,
        requester=f"{client.name} ({req.capacity})" if client else f"Guichet ({req.capacity})",
        purpose=purpose,
        now=now,
        vault=vault,
        record_event=False,
    )
    req.delivery_id = delivery_id
    # The audit events only once the copy is rendered and signed: the first one takes
    # the log's head, which every audited write of every node waits for until commit.
    registry.sign_item(
        db,
        f"delivery:{delivery_id}",
        signing=signing_for(tenant),
        now=now,
        vault=vault,
        before_events=lambda: registry.delivery_requested(
            db, actor, tenant.insee, delivery_id, now=now
        ),
    )


def fall_back_to_queue(db: Session, request_id: int, *, now: datetime) -> None:
    req = db.get(ActRequest, request_id)
    if req is not None and req.status == RequestStatus.RECEIVED:
        _set_status(
            db,
            req,
            RequestStatus.QUEUED,
            actor=Actor("system"),
            now=now,
            reason="Délivrance automatique impossible : un agent prend le relais.",
        )


# --- the agents' queue -----------------------------------------------------------------


@dataclass(frozen=True)
class QueuedRequest:
    view: RequestView
    channel: str
    requester: str
    overdue: bool
    data: dict[str, Any] | None = None
    candidates: list[registry.ActRecord] | None = None


def _requester_name(db: Session, req: ActRequest) -> str:
    client = db.get(ApiClient, req.client_id) if req.client_id else None
    return client.name if client else "Guichet en ligne (particulier)"


def agent_queue(
    db: Session, actor: Actor, insee: str, *, now: datetime, status: str | None = "queued"
) -> list[QueuedRequest]:
    """The commune's requests to handle (no personal data opened: list level)."""
    registry._check_tenant(actor, insee)
    tenant = registry.tenant_of(db, insee)
    query = select(ActRequest).where(ActRequest.tenant_id == tenant.id)
    if status:
        query = query.where(ActRequest.status == status)
    today = registry.paris_date(now)
    return [
        QueuedRequest(
            view=_view(db, req, None),
            channel=req.channel,
            requester=_requester_name(db, req),
            overdue=req.status in (RequestStatus.QUEUED, RequestStatus.RECEIVED)
            and req.due_on < today,
        )
        for req in db.scalars(query.order_by(ActRequest.due_on, ActRequest.id).limit(500))
    ]


def overdue_count(db: Session, insee: str, *, now: datetime) -> int:
    tenant = registry.tenant_of(db, insee)
    count = db.scalar(
        select(func.count()).where(
            ActRequest.tenant_id == tenant.id,
            ActRequest.status.in_([RequestStatus.QUEUED, RequestStatus.RECEIVED]),
            ActRequest.due_on < registry.paris_date(now),
        )
    )
    return int(count or 0)


def _commune_request(db: Session, actor: Actor, insee: str, request_id: int) -> ActRequest:
    registry._check_tenant(actor, insee)
    tenant = registry.tenant_of(db, insee)
    req = db.get(ActRequest, request_id)
    if req is None or req.tenant_id != tenant.id:
        raise NotFound("Demande introuvable.")
    return req


def examine(
    db: Session, actor: Actor, insee: str, request_id: int, *, now: datetime, vault: Vault
) -> QueuedRequest:
    """One request with what it states and the candidate acts (audited reads)."""
    req = _commune_request(db, actor, insee, request_id)
    with column_keys(db, vault.keyring, insee):
        payload = json.loads(req.data)
    body = ActRequestIn.model_validate(
        {k: v for k, v in payload.items() if k in ActRequestIn.model_fields}, strict=False
    )
    candidates = _candidates(db, actor, insee, body, now=now, vault=vault)
    if not candidates:
        # A spelling variant may hide the act from the exact index: widen to nom+prénoms.
        loose = body.model_copy(update={"person": body.person.model_copy(update={"date": None})})
        candidates = _candidates(db, actor, insee, loose, now=now, vault=vault)
    record(
        db,
        EventType.REQUEST_VIEWED,
        actor=str(actor),
        subject=f"act-request:{req.id}",
        tenant=insee,
        now=now,
    )
    return QueuedRequest(
        view=_view(db, req, payload.get("reference")),
        channel=req.channel,
        requester=_requester_name(db, req),
        overdue=req.status in (RequestStatus.QUEUED, RequestStatus.RECEIVED)
        and req.due_on < registry.paris_date(now),
        data=payload,
        candidates=candidates,
    )


def _open(req: ActRequest) -> None:
    """Only a queued request with no copy on its way can be decided by an agent."""
    if req.status != RequestStatus.QUEUED:
        raise Conflict("Cette demande est déjà traitée ou en cours de délivrance automatique.")
    if req.delivery_id is not None:
        raise Conflict(
            "La copie de cette demande attend la signature de l'officier : elle ne peut "
            "plus être refusée ni déclarée introuvable."
        )


def prepare_delivery(
    db: Session,
    actor: Actor,
    insee: str,
    request_id: int,
    act_id: int,
    *,
    now: datetime,
    vault: Vault,
) -> int:
    """The agent picked the act and checked the justification: the copy goes to the
    officier's signature queue; the request is issued when it is signed."""
    req = _commune_request(db, actor, insee, request_id)
    _open(req)
    with column_keys(db, vault.keyring, insee):
        payload = json.loads(req.data)
    act = registry.get_act(db, actor, insee, act_id, now=now, vault=vault)
    if act.kind.value != req.act_kind:
        raise ValidationFailed(
            f"La demande porte sur un {ActKind(req.act_kind).label.lower()}, pas sur un "
            f"{act.kind.label.lower()}."
        )
    # The act's own year decides the 75-year rule; a proof the agent checked counts.
    decision = rules.decide(
        act.kind,
        DeliveryKind(req.delivery),
        rules.Capacity(req.capacity),
        act_year=act.view.year,
        today=registry.paris_date(now),
        justified=True,
        legal_reference=bool(payload.get("legal_reference")),
    )
    if decision.outcome is rules.Outcome.REFUSED:
        raise Conflict(f"Délivrance impossible : {decision.reason} ({decision.legal_basis}).")
    if decision.outcome is rules.Outcome.REVIEW and not (
        req.proof_id or payload.get("justification")
    ):
        raise Conflict(
            "La loi ouvre ce droit sur justificatif et la demande n'en comporte aucun : "
            "demandez-le au demandeur ou refusez la demande."
        )
    req.outcome, req.legal_basis = decision.outcome.value, decision.legal_basis
    req.reason = decision.reason[:400]
    client = db.get(ApiClient, req.client_id) if req.client_id else None
    requester = f"{client.name} ({req.capacity})" if client else f"Particulier ({req.capacity})"
    delivery_id = registry.request_delivery(
        db,
        actor,
        insee,
        act_id,
        kind=req.delivery,
        requester=requester,
        purpose=payload.get("purpose") or "Demande d'acte",
        now=now,
        vault=vault,
    )
    req.act_id, req.delivery_id = act_id, delivery_id
    req.decided_by = str(actor)
    req.updated_at = now
    record(
        db,
        EventType.REQUEST_ACCEPTED,
        actor=str(actor),
        subject=f"act-request:{req.id}",
        tenant=insee,
        details={"act": act_id, "delivery": delivery_id},
        now=now,
    )
    return delivery_id


def refuse(
    db: Session,
    actor: Actor,
    insee: str,
    request_id: int,
    *,
    reason: str,
    now: datetime,
    legal_basis: str = rules.ART_30,
) -> None:
    req = _commune_request(db, actor, insee, request_id)
    _open(req)
    if not reason.strip():
        raise ValidationFailed("Indiquez le motif du refus : il est communiqué au demandeur.")
    req.decided_by = str(actor)
    _set_status(
        db,
        req,
        RequestStatus.REFUSED,
        actor=actor,
        now=now,
        reason=reason.strip(),
        legal_basis=legal_basis,
    )


def confirm_not_found(
    db: Session, actor: Actor, insee: str, request_id: int, *, now: datetime
) -> None:
    req = _commune_request(db, actor, insee, request_id)
    _open(req)
    req.decided_by = str(actor)
    _set_status(
        db,
        req,
        RequestStatus.NOT_FOUND,
        actor=actor,
        now=now,
        reason="Aucun acte ne correspond aux données de la demande dans les registres.",
    )


# --- verifications (art. 39 to 41) --------------------------------------------------------


@dataclass(frozen=True)
class VerificationView:
    id: int
    commune: str
    result: str  # match | mismatch | not_found
    differences: dict[str, Any]
    legal_basis: str
    checked_at: datetime
    reference: str | None
    answer: dict[str, Any]  # the signed document, canonical JSON
    signature: str | None  # base64 DER CMS (detached) over the canonical answer


def canonical(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify(
    db: Session,
    client: ApiClient,
    body: VerificationIn,
    *,
    now: datetime,
    vault: Vault,
    seal: Callable[[Tenant, bytes], str],
    idempotency_key: str | None = None,
) -> tuple[VerificationView, bool]:
    """Confirm or correct identity data without handing over the act (Code civil
    101-1); only art. 39 requesters, and only when the person was informed (art. 40).
    `seal(tenant, data)` signs the canonical answer with the commune's seal."""
    if client.category not in rules.VERIFIERS:
        raise Forbidden(
            "Seuls les administrations, organismes, notaires et officiers de l'état civil "
            f"peuvent demander une vérification ({rules.ART_39})."
        )
    if not body.person_informed:
        raise ValidationFailed(
            f"La personne doit avoir été informée de la vérification ({rules.ART_40}).",
            errors=[{"field": "person_informed", "message": "doit être vrai"}],
        )
    if client.category == "administration" and not body.legal_reference:
        raise ValidationFailed(
            "Une administration cite le texte qui l'autorise à vérifier (legal_reference).",
            errors=[{"field": "legal_reference", "message": "obligatoire pour une administration"}],
        )
    digest = body_hash(db, vault, body)
    previous = _existing(db, Verification, client, idempotency_key, digest)
    tenant = _tenant_in_scope(db, client, body.commune)
    if previous is not None:
        return _verification_view(db, vault, previous, tenant), False
    actor = client_actor(client)
    if body.person.date is None:
        raise ValidationFailed(
            "Une vérification indique au moins le nom, les prénoms et la date de l'événement.",
            errors=[{"field": "person.date", "message": "obligatoire pour une vérification"}],
        )
    # Only a strict key (nom, prénoms and date) identifies the person: a looser search
    # would hand a verifier the data of whoever bears a guessed name (Code civil 101-1:
    # a verification confirms or corrects, it does not deliver the act).
    found = _candidates(db, actor, tenant.insee, body, now=now, vault=vault)
    if len(found) == 1:
        diff = differences(found[0], body)
        result = "mismatch" if diff else "match"
    else:
        diff, result = {}, "not_found"  # none, or several the request cannot tell apart
    answer = {
        "commune": tenant.insee,
        "act_kind": body.act_kind,
        "result": result,
        "differences": diff,
        "legal_basis": rules.ART_39,
        "checked_at": now.isoformat(),
        "reference": body.reference,
    }
    with column_keys(db, vault.keyring, tenant.insee):
        row = Verification(
            tenant_id=tenant.id,
            client_id=client.id,
            idempotency_key=idempotency_key,
            body_hash=digest,
            result=result,
            answer=json.dumps(
                {"answer": answer, "signature": seal(tenant, canonical(answer))},
                ensure_ascii=False,
            ),
            created_at=now,
            purge_after=now + KEEP,
        )
        db.add(row)
        db.flush()
    record(
        db,
        EventType.VERIFICATION_ANSWERED,
        actor=str(actor),
        subject=f"verification:{row.id}",
        tenant=tenant.insee,
        details={"result": result, "kind": body.act_kind},
        now=now,
    )
    return _verification_view(db, vault, row, tenant), True


def _verification_view(
    db: Session, vault: Vault, row: Verification, tenant: Tenant
) -> VerificationView:
    with column_keys(db, vault.keyring, tenant.insee):
        stored = json.loads(row.answer)
    answer = stored["answer"]
    return VerificationView(
        id=row.id,
        commune=tenant.insee,
        result=row.result,
        differences=answer["differences"],
        legal_basis=answer["legal_basis"],
        checked_at=row.created_at,
        reference=answer.get("reference"),
        answer=answer,
        signature=stored["signature"],
    )


# --- retention --------------------------------------------------------------------------


def purge(db: Session, *, now: datetime, vault: Vault) -> int:
    """Requests and verifications past their year (art. 29) are deleted with their
    sealed data; an uploaded proof is crypto-shredded. The trail keeps the facts."""
    count = 0
    for req in db.scalars(select(ActRequest).where(ActRequest.purge_after <= now)):
        tenant = db.get(Tenant, req.tenant_id)
        assert tenant is not None
        if req.proof_id:
            # Already shredded when a restored backup replayed its shreds: nothing to do.
            with contextlib.suppress(NotFound):
                vault.shred(db, tenant.insee, req.proof_id, now=now, actor="system")
        if req.delivery_id:
            # The copy stays with the registry; the requester's purpose does not.
            delivery = db.get(Delivery, req.delivery_id)
            if delivery is not None:
                with column_keys(db, vault.keyring, tenant.insee):
                    delivery.purpose = PURGED_PURPOSE
                    db.flush()
        db.delete(req)
        count += 1
    for ver in db.scalars(select(Verification).where(Verification.purge_after <= now)):
        db.delete(ver)
        count += 1
    if count:
        record(
            db,
            EventType.REQUESTS_PURGED,
            actor="system",
            subject="comedec:retention",
            details={"count": count},
            now=now,
        )
    return count


# --- the citizens' counter ---------------------------------------------------------------
# The public page /demande-acte (securex.comedec.public): a person without an account
# files a request like a `guichet` client's, gets the acknowledgement of CRPA
# R112-11-1 and a follow-up link; once the copy is issued, a code e-mailed to the
# address of the request opens its download. The link is an HMAC of the request id
# (nothing stored); the code's HMAC, its expiry and the wrong entries are kept in the
# request's sealed data, under "download", next to the address ("email").

PUBLIC = Actor("public", "sve")
LINK_PURPOSE = "sve-links"
CODE_PURPOSE = "sve-codes"


@dataclass(frozen=True)
class CounterPolicy:
    """The `[sve]` settings."""

    submissions_per_address: int = 10
    window_seconds: int = 3600
    challenge_minutes: int = 15
    max_proof_bytes: int = 10 * 1024 * 1024
    code_minutes: int = 15
    code_attempts: int = 5
    code_lockout_hours: int = 24
    codes_per_hour: int = 5

    @classmethod
    def from_settings(cls, settings: Any) -> CounterPolicy:
        return cls(**{name: int(settings[f"sve.{name}"]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PublicRequest:
    """What the person holding the follow-up link sees: the request's routing facts
    and the service that handles it (R112-11-1), never what the request states."""

    view: RequestView
    commune_name: str
    service_name: str
    service_contact: str
    link: str  # the follow-up link's token
    code_until: datetime | None  # a download code was sent and is valid until then
    locked_until: datetime | None  # too many wrong codes: the download is locked


def needs_proof(
    act_kind: ActKind,
    delivery: DeliveryKind,
    capacity: rules.Capacity,
    *,
    declared: date | None,
    today: date,
) -> bool:
    """Whether the person must attach a proof: exactly when the rules open the right
    only on a justification (the link, the mandate, the archives' authorisation)."""
    # The declared date is not trusted here: a false old date must not spare the
    # proof by making the act look public (L213-2); the act's own year counts later.
    decision = rules.decide(
        act_kind,
        delivery,
        capacity,
        act_year=None,
        today=today,
        justified=False,
        legal_reference=False,
    )
    return decision.outcome is rules.Outcome.REVIEW


def _check_public(db: Session, body: ActRequestIn) -> None:
    """What `submit` refuses, checked before the proof is stored (nothing is kept of
    a request that does not validate)."""
    _check_request(
        body, "guichet", ("Qualité non proposée au guichet en ligne.", "qualité non proposée")
    )
    registry.tenant_of(db, body.commune)


def _platform_key(db: Session, vault: Vault, purpose: str, now: datetime) -> bytes:
    return vault.keyring.platform_secret(db, purpose, now=now, actor=str(PUBLIC))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def link_token(db: Session, request_id: int, *, now: datetime, vault: Vault) -> str:
    """The follow-up link of a public request: its id and an HMAC of it."""
    key = _platform_key(db, vault, LINK_PURPOSE, now)
    mac = hmac.new(key, f"act-request:{request_id}".encode(), hashlib.sha256).digest()
    return f"{request_id}-{_b64(mac)}"


def _by_link(
    db: Session, token: str, *, now: datetime, vault: Vault, lock: bool = False
) -> ActRequest:
    """The public request a link names; every way a link can be wrong (forged, cut,
    another channel's request, a purged request) answers the same NotFound."""
    gone = NotFound("Ce lien de suivi n'est pas valide, ou la demande n'est plus conservée.")
    ident, _, _mac = token.partition("-")
    if not ident.isascii() or not ident.isdigit() or len(ident) > 10:
        raise gone
    request_id = int(ident)
    if request_id > 2**31 - 1 or not hmac.compare_digest(
        link_token(db, request_id, now=now, vault=vault), token
    ):
        raise gone
    req = db.get(ActRequest, request_id, with_for_update=lock)
    if req is None or req.channel != "sve" or req.client_id is not None:
        raise gone
    return req


def _sealed(db: Session, vault: Vault, req: ActRequest) -> tuple[str, dict[str, Any]]:
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    with column_keys(db, vault.keyring, tenant.insee):
        payload: dict[str, Any] = json.loads(req.data)
    return tenant.insee, payload


def _reseal(
    db: Session, vault: Vault, req: ActRequest, insee: str, payload: dict[str, Any]
) -> None:
    with column_keys(db, vault.keyring, insee):
        req.data = json.dumps(payload, ensure_ascii=False)
        db.flush()  # sealed while the commune's keys are loaded


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _public_view(
    db: Session, req: ActRequest, token: str, payload: dict[str, Any], now: datetime
) -> PublicRequest:
    tenant = db.get(Tenant, req.tenant_id)
    assert tenant is not None
    prefs = settings_of(db, tenant)
    state = payload.get("download") or {}
    code_until = _moment(state.get("expires"))
    locked_until = _moment(state.get("locked_until"))
    return PublicRequest(
        view=_view(db, req, None),
        commune_name=tenant.name,
        service_name=prefs.service_name,
        service_contact=prefs.service_contact,
        link=token,
        code_until=code_until if code_until and code_until > now else None,
        locked_until=locked_until if locked_until and locked_until > now else None,
    )


def submit_public(
    db: Session,
    *,
    body: ActRequestIn,
    email: str,
    proof: bytes | None,
    now: datetime,
    vault: Vault,
) -> tuple[PublicRequest, str]:
    """File a citizen's request (the proof encrypted into the commune's vault, the
    address sealed with what the request states); returns what the acknowledgement
    shows and the address to send it to. The caller commits, then sends."""
    _check_public(db, body)
    proof_id = vault.put(db, body.commune, io.BytesIO(proof), now=now).id if proof else None
    view, _ = submit(
        db,
        None,
        body,
        now=now,
        vault=vault,
        channel="sve",
        extra={"email": email},
        proof_id=proof_id,
    )
    req = db.get(ActRequest, view.id)
    assert req is not None
    token = link_token(db, req.id, now=now, vault=vault)
    return _public_view(db, req, token, {}, now), email


def public_status(db: Session, token: str, *, now: datetime, vault: Vault) -> PublicRequest:
    """The status page behind a follow-up link: a read that changes nothing (mail
    scanners open links before people do)."""
    req = _by_link(db, token, now=now, vault=vault)
    _, payload = _sealed(db, vault, req)
    return _public_view(db, req, token, payload, now)


def _issued_public(req: ActRequest) -> None:
    if req.status != RequestStatus.ISSUED or req.delivery_id is None:
        raise Conflict(
            "La copie n'est pas encore délivrée "
            f"(statut : {RequestStatus(req.status).label.lower()})."
        )


def _not_locked(state: dict[str, Any], now: datetime) -> None:
    locked_until = _moment(state.get("locked_until"))
    if locked_until and locked_until > now:
        raise RateLimited(
            "Trop de codes erronés : le téléchargement de cette copie est bloqué jusqu'au "
            f"{locked_until.astimezone(PARIS):%d/%m/%Y à %H:%M}. Vous pourrez alors demander "
            "un nouveau code, ou contactez le service d'état civil."
        )


def _code_mac(db: Session, vault: Vault, req: ActRequest, code: str, now: datetime) -> str:
    key = _platform_key(db, vault, CODE_PURPOSE, now)
    return hmac.new(key, f"act-request:{req.id}:{code}".encode(), hashlib.sha256).hexdigest()


def new_download_code(
    db: Session,
    keys: AccountKeys,
    token: str,
    *,
    now: datetime,
    vault: Vault,
    policy: CounterPolicy,
) -> tuple[PublicRequest, str, str]:
    """A fresh 6-digit code for the issued copy behind `token` (the previous one no
    longer works); returns the page's view, the code and the address to e-mail it to.
    Codes sent per request are limited; wrong entries made so far still count."""
    req = _by_link(db, token, now=now, vault=vault, lock=True)
    _issued_public(req)
    insee, payload = _sealed(db, vault, req)
    state = dict(payload.get("download") or {})
    _not_locked(state, now)
    wait = throttle(
        db,
        keys,
        "sve-code",
        f"act-request:{req.id}",
        limit=policy.codes_per_hour,
        window_seconds=3600,
        now=now,
    )
    if wait:
        raise RateLimited(
            f"Trop de codes demandés pour cette demande : réessayez dans {wait // 60 + 1} min."
        )
    code = f"{secrets.randbelow(10**6):06d}"
    state.update(
        code=_code_mac(db, vault, req, code, now),
        expires=(now + timedelta(minutes=policy.code_minutes)).isoformat(),
        locked_until=None,
    )
    payload["download"] = state
    _reseal(db, vault, req, insee, payload)
    return _public_view(db, req, token, payload, now), code, str(payload["email"])


def public_document(
    db: Session,
    token: str,
    code: str,
    *,
    now: datetime,
    vault: Vault,
    policy: CounterPolicy,
) -> tuple[bytes, str]:
    """The signed copy, for the right code (used once). A wrong code counts; after
    `code_attempts` wrong ones in a row the download locks for `code_lockout_hours`.
    The caller commits whether this returns or raises (the count must stay)."""
    req = _by_link(db, token, now=now, vault=vault, lock=True)
    _issued_public(req)
    insee, payload = _sealed(db, vault, req)
    state = dict(payload.get("download") or {})
    _not_locked(state, now)
    expires = _moment(state.get("expires"))
    if not state.get("code") or expires is None or expires <= now:
        raise ValidationFailed(
            "Aucun code en cours de validité pour cette demande : demandez un nouveau code.",
            errors=[{"field": "code", "message": "code expiré ou non demandé"}],
        )
    given = "".join(code.split())
    if not (given.isascii() and given.isdigit() and len(given) == 6) or not hmac.compare_digest(
        _code_mac(db, vault, req, given, now), state["code"]
    ):
        tries = int(state.get("tries", 0)) + 1
        state["tries"] = tries
        if tries >= policy.code_attempts:
            state.update(
                code=None,
                expires=None,
                tries=0,
                locked_until=(now + timedelta(hours=policy.code_lockout_hours)).isoformat(),
            )
        payload["download"] = state
        _reseal(db, vault, req, insee, payload)
        _not_locked(state, now)
        left = policy.code_attempts - tries
        raise ValidationFailed(
            f"Code incorrect : il vous reste {left} essai{'s' if left > 1 else ''} avant que "
            "le téléchargement soit bloqué.",
            errors=[{"field": "code", "message": "code incorrect"}],
        )
    state.update(code=None, expires=None, tries=0)
    payload["download"] = state
    _reseal(db, vault, req, insee, payload)
    data, name = registry.document(
        db, PUBLIC, insee, f"delivery:{req.delivery_id}", now=now, vault=vault
    )
    if req.acknowledged_at is None:
        # The person has the copy: the same receipt an API client gives with /ack.
        req.acknowledged_at = now
        record(
            db,
            EventType.REQUEST_ACKNOWLEDGED,
            actor=str(PUBLIC),
            subject=f"act-request:{req.id}",
            tenant=insee,
            now=now,
        )
    return data, name
