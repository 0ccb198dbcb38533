"""Archival renewal of the register: the signed PDFs of acts and mentions get a fresh
document timestamp (PAdES B-LTA, with fresh revocation data in the DSS) before the
certificate of their last one expires, so that they stay verifiable for as long as the
register is kept.

A periodic task of the workers looks at the documents whose `renew_after` date has
come (every signed one once, at first) for at most `BUDGET` per run. A document not
yet due gets `renew_after` = the expiry of its last timestamp's certificate minus
`signing.renew_margin_days`; a renewed one is stored as a new vault object, which the
act or mention then points to (the previous version stays in the vault, untouched),
and `signing:document:timestamp-renewed` is recorded. A document below B-LTA has no
archival timestamp to extend and is looked at again a year later.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from securex.accounts.models import Tenant
from securex.audit.events import EventType
from securex.audit.log import record
from securex.db import reading, transaction
from securex.errors import SecurexError
from securex.jobs.service import Runtime, periodic
from securex.registry.models import Act, Mention

log = logging.getLogger(__name__)

ACTOR = "system:archive"
BUDGET = 20.0  # seconds of work per run, so that the worker's jobs are not held up
RETRY = timedelta(days=30)  # a renewed document is not looked at again before this
NOT_LTA = timedelta(days=365)  # nor is one without an archival timestamp


@periodic("registry.renew", timedelta(minutes=10))
def renew_due(rt: Runtime) -> None:
    renew_documents(rt, budget=BUDGET)


def _due(rt: Runtime, model: Any, today: date, after: int) -> list[Any]:
    insee = Act.insee if model is Act else Tenant.insee
    query = (
        select(model.id, model.document_id, insee)
        .where(
            model.document_id.is_not(None),
            or_(model.renew_after.is_(None), model.renew_after <= today),
            model.id > after,
        )
        .order_by(model.id)
        .limit(100)
    )
    if model is Mention:
        query = query.join(Tenant, Tenant.id == Mention.tenant_id)
    with rt.sessions() as db:
        reading(db)
        rows = db.execute(query).all()
        db.rollback()
    return list(rows)


def renew_documents(rt: Runtime, *, budget: float | None = None) -> int:
    """Look at every document due (within `budget` seconds if given); return how many
    were renewed. Each document is first claimed until tomorrow, so that several
    workers never ask the TSA for the same one, and one that fails (a damaged blob, the
    TSA unreachable) waits a day instead of holding up the others at every run."""
    started = time.monotonic()
    margin = timedelta(days=int(rt.settings["signing.renew_margin_days"]))
    tools: dict[str, Any] = {}
    renewed = 0
    for model in (Act, Mention):
        after = 0
        while rows := _due(rt, model, rt.clock().date(), after):
            for row_id, object_id, insee in rows:
                if budget is not None and time.monotonic() - started > budget:
                    return renewed
                if not _claim(rt, model, row_id, object_id):
                    continue
                try:
                    renewed += _renew_one(rt, model, row_id, object_id, insee, margin, tools)
                except Exception as exc:  # any failure: logged, tried again tomorrow
                    log.warning(
                        "archive renewal of %s %s failed: %s",
                        model.__name__,
                        row_id,
                        type(exc).__name__,
                    )
            after = rows[-1][0]
    return renewed


def _claim(rt: Runtime, model: Any, row_id: int, object_id: str) -> bool:
    today = rt.clock().date()
    with transaction(rt.sessions) as db:
        result = db.execute(
            update(model)
            .where(
                model.id == row_id,
                model.document_id == object_id,
                or_(model.renew_after.is_(None), model.renew_after <= today),
            )
            .values(renew_after=today + timedelta(days=1))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _renew_one(
    rt: Runtime,
    model: Any,
    row_id: int,
    object_id: str,
    insee: str,
    margin: timedelta,
    tools: dict[str, Any],
) -> int:
    from securex.signing import pades
    from securex.signing.setup import timestamper

    now = rt.clock()
    with rt.sessions() as db:
        reading(db)
        data = rt.vault.read_all(db, insee, object_id)
        db.rollback()
    try:
        reason, expires = _status(data, now, margin)
    except SecurexError:  # below B-LTA: no archival timestamp to extend
        _look_again(rt, model, row_id, object_id, (now + NOT_LTA).date())
        return 0
    if reason is None:
        # The day after the one when the certificate enters the margin.
        _look_again(rt, model, row_id, object_id, (expires - margin).date() + timedelta(days=1))
        return 0
    if not tools:
        tools["stamper"] = timestamper(rt.settings, rt.pki)
        # Every officer's OCSP answer and the CRLs, made once per run.
        tools["material"] = rt.pki.validation_material(now) if rt.pki is not None else None
    fresh = _renew(rt, data, now, tools["stamper"], tools["material"])
    if pades.archive_expiry(fresh) <= expires:
        # The TSA's own certificate expires no later: a new copy would buy nothing.
        log.warning(
            "archive renewal of %s %s: the TSA's certificate expires too soon; replace the TSA",
            model.__name__,
            row_id,
        )
        _look_again(rt, model, row_id, object_id, (now + RETRY).date())
        return 0
    return _store(rt, model, row_id, object_id, insee, fresh, reason, margin, now)


def _status(data: bytes, now: datetime, margin: timedelta) -> tuple[str | None, datetime]:
    from securex.signing import pades

    return pades.renewal_reason(data, now, margin), pades.archive_expiry(data)


def _renew(rt: Runtime, data: bytes, now: datetime, stamper: Any, material: Any) -> bytes:
    from securex.signing import pades
    from securex.signing.setup import validation_context_factory

    # Only this document's signer's revocation data goes into its DSS.
    signer = pades.signer_certificate(data)
    contexts = validation_context_factory(rt.settings, rt.pki, now, signer, material)
    return pades.renew(data, stamper, contexts())


def _look_again(rt: Runtime, model: Any, row_id: int, object_id: str, on: date) -> None:
    with transaction(rt.sessions) as db:
        row = db.get(model, row_id, with_for_update=True)
        if row is not None and row.document_id == object_id:
            row.renew_after = on


def _store(
    rt: Runtime,
    model: Any,
    row_id: int,
    object_id: str,
    insee: str,
    fresh: bytes,
    reason: str,
    margin: timedelta,
    now: datetime,
) -> int:
    from securex.signing import pades

    next_check = max((pades.archive_expiry(fresh) - margin).date(), (now + RETRY).date())
    kind = "act" if model is Act else "mention"
    with transaction(rt.sessions) as db:
        row = db.get(model, row_id, with_for_update=True)
        if row is None or row.document_id != object_id:
            return 0  # another worker renewed it meanwhile
        obj = rt.vault.put(db, insee, io.BytesIO(fresh), now=now)
        row.document_id = obj.id
        row.renew_after = next_check
        record(
            db,
            EventType.DOCUMENT_RENEWED,
            actor=ACTOR,
            subject=f"document:{hashlib.sha256(fresh).hexdigest()}",
            tenant=insee,
            details={"reason": reason, kind: row_id},
            now=now,
        )
    log.info("archive renewal: %s %s renewed (%s)", kind, row_id, reason)
    return 1
