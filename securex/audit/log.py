"""Recording and verifying the hash-chained event log (format: docs/audit-format.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from securex.audit.events import EventType
from securex.audit.merkle import leaf_hash
from securex.audit.models import GENESIS, AuditEvent, AuditHead, AuditNode
from securex.audit.tree import (
    dump_frontier,
    fold_frontier,
    frontier_root,
    parse_frontier,
    push,
)

FORMAT_VERSION = 1
_HEAD_CACHE = "securex.audit.head"
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
    m = moment.astimezone(UTC) if moment.utcoffset() else moment
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:"
        f"{m.second:02d}.{m.microsecond:06d}Z"
    )


def encode(
    event_id: int,
    recorded_at: datetime,
    tenant: str | None,
    actor: str,
    action: str,
    subject: str,
    details: str,
) -> bytes:
    """The canonical encoding (docs/audit-format.md): JSON, keys sorted, no spaces, UTF-8.
    `details` is the stored details text, itself canonical JSON, inserted as is."""
    text = (
        f'{{"action":{_json(action)},"actor":{_json(actor)},"at":"{_timestamp(recorded_at)}",'
        f'"details":{details},"id":{event_id},"subject":{_json(subject)},'
        f'"tenant":{_json(tenant)},"v":{FORMAT_VERSION}}}'
    )
    return text.encode()


@lru_cache(maxsize=4096)
def _json(value: str | None) -> str:
    # Actors, actions, subjects and communes repeat: verifying a million events
    # encodes each distinct one once.
    return json.dumps(value, ensure_ascii=False)


def canonical_encoding(event: AuditEvent) -> bytes:
    """The bytes that the hash chain and the Merkle tree commit to."""
    return encode(
        event.id,
        event.recorded_at,
        event.tenant,
        event.actor,
        event.action,
        event.subject,
        event.details,
    )


def chain_value(prev_hash: bytes, data: bytes) -> bytes:
    return hashlib.sha256(prev_hash + data).digest()


def record(
    session: Session,
    action: EventType,
    *,
    actor: str,
    subject: str,
    tenant: str | None = None,
    details: Mapping[str, Any] | None = None,
    now: datetime,
) -> int:
    """Append one event in the caller's transaction; returns its number. Details must
    hold no personal data in clear: ids, counts, codes and reasons only.

    Written with Core statements on the session's connection (the ORM's unit of work
    cost more than the hashing): lock the head, insert the event and the Merkle nodes
    it completes, move the head."""
    _check_details(details or {})
    details_text = json.dumps(
        dict(details or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    conn = session.connection()
    # The head is locked by the first event of a transaction; later events of the same
    # transaction reuse what it wrote instead of reading it again.
    transaction = session.get_nested_transaction() or session.get_transaction()
    cached = session.info.get(_HEAD_CACHE)
    if cached is not None and cached[0] is transaction:
        size, last_hash, frontier_blob = cached[1]
    else:
        head = conn.execute(
            select(AuditHead.size, AuditHead.last_hash, AuditHead.frontier)
            .where(AuditHead.id == 1)
            .with_for_update()
        ).one_or_none()
        if head is None:
            conn.execute(insert(AuditHead).values(id=1, size=0, last_hash=GENESIS, frontier=b""))
            size, last_hash, frontier_blob = 0, GENESIS, b""
        else:
            size, last_hash, frontier_blob = head
    event_id = int(size) + 1
    action_name = str(action)
    data = encode(event_id, now, tenant, actor, action_name, subject, details_text)
    entry_hash = chain_value(last_hash, data)
    conn.execute(
        insert(AuditEvent).values(
            id=event_id,
            recorded_at=now,
            tenant=tenant,
            actor=actor,
            action=action_name,
            subject=subject,
            details=details_text,
            prev_hash=last_hash,
            entry_hash=entry_hash,
        )
    )
    frontier = parse_frontier(size, frontier_blob or b"")
    made = push(frontier, size, leaf_hash(data))
    conn.execute(insert(AuditNode), [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in made])
    frontier_blob = dump_frontier(frontier)
    conn.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(size=event_id, last_hash=entry_hash, frontier=frontier_blob)
    )
    session.info[_HEAD_CACHE] = (transaction, (event_id, entry_hash, frontier_blob))
    return event_id


@dataclass
class ChainReport:
    """What `verify_chain` found: `problems` is empty when the log is intact. `roots`
    holds the tree roots recomputed from the events at the sizes asked for."""

    size: int = 0
    problems: list[str] = field(default_factory=list)
    roots: dict[int, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    session: Session, batch: int = 5000, at_sizes: Collection[int] = ()
) -> ChainReport:
    """Recompute, from the events' columns and in order, every chain value and every
    Merkle leaf, and the tree's root; compare with what is stored (chain values, level-0
    nodes, the head). Streams the table; memory stays flat (O(log n) for the tree).
    Given a session that has not begun its transaction yet, it reads one snapshot (on
    PostgreSQL, REPEATABLE READ), so that events appended meanwhile are not taken for a
    truncated tail."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    report = ChainReport()
    wanted = set(at_sizes)
    prev = GENESIS
    expected_id = 1
    frontier: dict[int, bytes] = {}
    conn = session.connection()
    events = conn.execution_options(yield_per=batch).execute(
        select(
            AuditEvent.id,
            AuditEvent.recorded_at,
            AuditEvent.tenant,
            AuditEvent.actor,
            AuditEvent.action,
            AuditEvent.subject,
            AuditEvent.details,
            AuditEvent.prev_hash,
            AuditEvent.entry_hash,
        )
        .order_by(AuditEvent.id)
        .execution_options(yield_per=batch)
    )
    leaves_result = conn.execution_options(yield_per=batch).execute(
        select(AuditNode.idx, AuditNode.hash)
        .where(AuditNode.level == 0)
        .order_by(AuditNode.idx)
        .execution_options(yield_per=batch)
    )
    leaves = iter(leaves_result)
    problems = report.problems
    for event_id, at, tenant, actor, action, subject, details, prev_hash, entry_hash in events:
        if event_id != expected_id:
            problems.append(f"événement {expected_id} : absent (suivant trouvé : {event_id})")
            expected_id = event_id
        if prev_hash != prev:
            problems.append(f"événement {event_id} : chaînage rompu avec le précédent")
        data = encode(event_id, at, tenant, actor, action, subject, details)
        if chain_value(prev, data) != entry_hash:
            problems.append(f"événement {event_id} : contenu modifié")
        leaf = leaf_hash(data)
        stored = next(leaves, None)
        if stored is None or stored[0] != report.size or stored[1] != leaf:
            problems.append(f"événement {event_id} : feuille de l'arbre de Merkle différente")
        push(frontier, report.size, leaf)
        prev = entry_hash
        expected_id += 1
        report.size += 1
        if report.size in wanted:
            report.roots[report.size] = fold_frontier(frontier)
    if next(leaves, None) is not None:
        problems.append("arbre de Merkle : feuilles sans événement")
    leaves_result.close()  # server-side cursors on PostgreSQL
    events.close()
    head = session.get(AuditHead, 1, populate_existing=True)
    head_size, head_hash = (head.size, head.last_hash) if head else (0, GENESIS)
    if head_size != report.size or head_hash != prev:
        problems.append(
            f"tête du journal : {head_size} événements annoncés, {report.size} trouvés "
            "(événements supprimés en fin de journal ?)"
        )
    elif head is not None:
        try:
            stored_root = frontier_root(head.size, head.frontier)
        except ValueError:
            stored_root = b""
        if stored_root != fold_frontier(frontier):
            problems.append("tête du journal : racine de l'arbre de Merkle différente")
    return report
