"""HTTP surface of the audit log: the latest signed checkpoint (public, for witnesses),
inclusion proofs of a requester's own events, consistency proofs between checkpoints."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Response, request
from pydantic import BaseModel

from securex.audit.models import AuditCheckpoint, AuditEvent
from securex.audit.proofs import (
    checkpoint_covering,
    checkpoint_json,
    consistency_json,
    create_checkpoint,
    event_proof,
    latest_checkpoint,
)
from securex.errors import NotFound, ValidationFailed
from securex.seal import checkpoint_if_due, sealer
from securex.web.api import ApiBlueprint, current_client
from securex.web.context import db, now, state

log = logging.getLogger("securex.audit")
api = ApiBlueprint("audit_api", __name__, tag="journal")


def _sealer() -> Any:
    st = state()
    return sealer(st.settings, db(), st.vault.keyring, st.pki, now())


class SignedCheckpoint(BaseModel):
    """A C2SP signed note of the log's tree head, with its RFC 3161 timestamp."""

    size: int
    root: str
    note: str
    timestamp_token: str | None
    created_at: str
    verifier_key: str


class EventProof(BaseModel):
    """An event, its inclusion proof and the checkpoint it is proved against
    (format securex-audit-proof/1, see docs/audit-format.md)."""

    model_config = {"extra": "allow"}
    format: str
    event: str
    leaf_index: int
    tree_size: int
    inclusion: list[str]
    checkpoint: SignedCheckpoint


class ConsistencyProof(BaseModel):
    """Proof that the `from` checkpoint's tree is a prefix of the `to` one's."""

    model_config = {"extra": "allow"}
    format: str
    proof: list[str]


def _latest_or_new() -> AuditCheckpoint:
    row = latest_checkpoint(db())
    if row is None:
        row = create_checkpoint(db(), _sealer(), now=now())
        db().commit()
    if row is None:
        raise NotFound("Le journal est vide.")
    return row


@api.operation(
    "/audit/checkpoint",
    summary="Dernier point de contrôle signé du journal",
    response=SignedCheckpoint,
    auth=False,
    errors=(404,),
)
def checkpoint() -> SignedCheckpoint:
    """Public: a witness fetches it and checks each new one is consistent with the last."""
    seal = _sealer()
    row = _latest_or_new()
    return SignedCheckpoint.model_validate(checkpoint_json(row, seal.verifier))


@api.operation(
    "/audit/events/<int:event_id>/proof",
    summary="Preuve d'inclusion d'un événement",
    response=EventProof,
    errors=(404,),
)
def proof(event_id: int) -> EventProof:
    """A requester obtains proofs of the events it caused (its requests, downloads);
    any other event answers 404, like a missing one."""
    client = current_client()
    event = db().get(AuditEvent, event_id)
    if event is None or event.actor != f"client:{client.id}":
        raise NotFound(f"Aucun événement n° {event_id} pour ce client.")
    seal = _sealer()
    row = checkpoint_covering(db(), event_id) or create_checkpoint(db(), seal, now=now())
    db().commit()
    assert row is not None
    return EventProof.model_validate(event_proof(db(), event_id, row, seal.verifier))


@api.operation(
    "/audit/consistency",
    summary="Preuve de cohérence entre deux points de contrôle",
    response=ConsistencyProof,
    auth=False,
    errors=(404, 422),
    query=[
        {
            "name": "from",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "to",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
    ],
)
def consistency() -> ConsistencyProof:
    """Both sizes must be those of published checkpoints."""
    try:
        old_size, new_size = int(request.args["from"]), int(request.args["to"])
    except (KeyError, ValueError):
        raise ValidationFailed(
            "Paramètres « from » et « to » (tailles entières) requis.",
            errors=[{"field": "from"}, {"field": "to"}],
        ) from None
    if not 1 <= old_size <= new_size:
        raise ValidationFailed("Il faut 1 ≤ from ≤ to.")
    if new_size > 2**63 - 1:  # beyond the column: no such checkpoint, not a driver error
        raise NotFound("Pas de point de contrôle publié à ces tailles.")
    session = db()
    old = session.query(AuditCheckpoint).filter_by(size=old_size).one_or_none()
    new = session.query(AuditCheckpoint).filter_by(size=new_size).one_or_none()
    if old is None or new is None:
        raise NotFound("Pas de point de contrôle publié à ces tailles.")
    return ConsistencyProof.model_validate(consistency_json(session, old, new, _sealer().verifier))


CHECK_EVERY = 30.0  # seconds between two looks per process (a throttle, not state)
_next_check = 0.0
_QUIET_PATHS = ("/static/", "/healthz", "/readyz", "/metrics")


def checkpoint_after_request(response: Response) -> Response:
    """Sign a checkpoint when enough events or minutes have passed. Never fails the
    request: a problem is logged and retried later. Looks at most every 30 s per
    process, and never for static files or health checks."""
    global _next_check
    if request.path.startswith(_QUIET_PATHS) or time.monotonic() < _next_check:
        return response
    _next_check = time.monotonic() + CHECK_EVERY
    st = state()
    try:
        with st.sessions() as session, session.begin():
            checkpoint_if_due(st.settings, session, st.vault.keyring, st.pki, st.clock())
    except Exception:  # the response is already made; the next request retries
        log.exception("audit checkpoint failed")
    return response
