"""Recording and verifying the hash-chained event log (format: docs/audit-format.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.audit.events import EventType
from securex.audit.models import GENESIS, AuditEvent, AuditHead

FORMAT_VERSION = 1
_SCALARS = (str, int, bool, type(None))


def _check_details(details: Mapping[str, Any]) -> None:
    """Details are flat, small and typed; free text is where personal data would leak."""
    for key, value in details.items():
        if not isinstance(key, str):
            raise TypeError("audit detail keys are strings")
        if isinstance(value, list | tuple):
            if not all(isinstance(v, _SCALARS) for v in value):
                raise TypeError(f"audit detail {key!r}: lists hold scalars only")
        elif not isinstance(value, _SCALARS):
            raise TypeError(f"audit detail {key!r} must be a scalar, got {type(value).__name__}")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_encoding(event: AuditEvent) -> bytes:
    """The bytes that the chain (and later the Merkle tree) commits to."""
    body = {
        "v": FORMAT_VERSION,
        "id": event.id,
        "at": _timestamp(event.recorded_at),
        "tenant": event.tenant,
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "details": json.loads(event.details),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_value(prev_hash: bytes, data: bytes) -> bytes:
    return hashlib.sha256(prev_hash + data).digest()


def _head(session: Session) -> AuditHead:
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, size=0, last_hash=GENESIS)
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    action: EventType,
    *,
    actor: str,
    subject: str,
    tenant: str | None = None,
    details: Mapping[str, Any] | None = None,
    now: datetime,
) -> AuditEvent:
    """Append one event in the caller's transaction. Details must hold no personal data
    in clear: ids, counts, codes and reasons only."""
    details = dict(details or {})
    _check_details(details)
    head = _head(session)
    event = AuditEvent(
        id=head.size + 1,
        recorded_at=now,
        tenant=tenant,
        actor=actor,
        action=str(action),
        subject=subject,
        details=json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        prev_hash=head.last_hash,
    )
    event.entry_hash = chain_value(head.last_hash, canonical_encoding(event))
    session.add(event)
    head.size = event.id
    head.last_hash = event.entry_hash
    session.flush()
    return event


@dataclass
class ChainReport:
    """What `verify_chain` found: `problems` is empty when the log is intact."""

    size: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(session: Session, batch: int = 5000) -> ChainReport:
    """Recompute every chain value from the columns, in order, and compare with the
    stored ones and the head. Streams the table; memory stays flat. Given a session
    that has not begun its transaction yet, it reads one snapshot (on PostgreSQL,
    REPEATABLE READ), so that events appended meanwhile are not taken for a
    truncated tail."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # One snapshot for the rows and the head, or an event appended meanwhile would
        # look like a truncated log. (SQLite transactions here are already serialised.)
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    report = ChainReport()
    prev = GENESIS
    expected_id = 1
    rows = session.execute(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch)
    ).scalars()
    for event in rows:
        if event.id != expected_id:
            report.problems.append(
                f"événement {expected_id} : absent (suivant trouvé : {event.id})"
            )
            expected_id = event.id
        if event.prev_hash != prev:
            report.problems.append(f"événement {event.id} : chaînage rompu avec le précédent")
        try:
            computed = chain_value(prev, canonical_encoding(event))
        except (ValueError, TypeError):
            computed = b""
        if computed != event.entry_hash:
            report.problems.append(f"événement {event.id} : contenu modifié")
        prev = event.entry_hash
        expected_id += 1
        report.size += 1
        session.expunge(event)
    head = session.get(AuditHead, 1)
    head_size, head_hash = (head.size, head.last_hash) if head else (0, GENESIS)
    if head_size != report.size or head_hash != prev:
        report.problems.append(
            f"tête du journal : {head_size} événements annoncés, {report.size} trouvés "
            "(événements supprimés en fin de journal ?)"
        )
    return report
