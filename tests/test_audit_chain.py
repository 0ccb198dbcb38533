"""The hash-chained audit log: recording, and detection of every kind of tampering."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError

from securex.audit import EventType, canonical_encoding, record, verify_chain
from securex.audit.log import chain_value
from securex.audit.models import GENESIS, AuditEvent, AuditHead
from securex.db import transaction
from tests.conftest import ENGINE


def fill(factory, clock, n: int = 5) -> None:
    with transaction(factory) as db:
        for i in range(n):
            record(
                db,
                EventType.LOGIN_SUCCEEDED,
                actor=f"user:{i}",
                subject=f"user:{i}",
                tenant="40192",
                details={"method": "totp", "n": i},
                now=clock.advance(seconds=1),
            )


def drop_guards(db) -> None:
    """What an attacker with the owner's rights does first."""
    if ENGINE == "sqlite":
        db.execute(text("DROP TRIGGER audit_events_no_update"))
        db.execute(text("DROP TRIGGER audit_events_no_delete"))
    else:
        db.execute(text("DROP TRIGGER audit_events_append_only ON audit_events"))


def report(factory):
    with factory() as db:
        return verify_chain(db)


def test_events_are_numbered_and_chained(factory, clock):
    fill(factory, clock, 3)
    with factory() as db:
        events = list(db.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        head = db.get(AuditHead, 1)
    assert [e.id for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS
    for prev, event in itertools.pairwise(events):
        assert event.prev_hash == prev.entry_hash
        assert event.entry_hash == chain_value(prev.entry_hash, canonical_encoding(event))
    assert head is not None and head.size == 3 and head.last_hash == events[-1].entry_hash
    assert report(factory).ok and report(factory).size == 3


def test_canonical_encoding_is_stable(factory, clock):
    fill(factory, clock, 1)
    with factory() as db:
        event = db.get(AuditEvent, 1)
        data = canonical_encoding(event)
    assert data == (
        b'{"action":"accounts:login:succeeded","actor":"user:0","at":"2026-11-30T08:00:01.000000Z",'
        b'"details":{"method":"totp","n":0},"id":1,"subject":"user:0","tenant":"40192","v":1}'
    )


def test_rolled_back_events_leave_no_gap(factory, clock):
    fill(factory, clock, 2)
    with pytest.raises(RuntimeError), transaction(factory) as db:
        record(db, EventType.LOGOUT, actor="user:1", subject="user:1", now=clock())
        raise RuntimeError("the change being recorded failed")
    fill(factory, clock, 1)
    with factory() as db:
        assert list(db.scalars(select(AuditEvent.id).order_by(AuditEvent.id))) == [1, 2, 3]
    assert report(factory).ok


def test_details_refuse_nested_values():
    with pytest.raises(TypeError):
        record(
            None,
            EventType.LOGOUT,
            actor="x",
            subject="y",  # type: ignore[arg-type]
            details={"person": {"nom": "Dupont"}},
            now=None,
        )  # type: ignore[arg-type]


def test_database_refuses_update_and_delete(factory, clock):
    fill(factory, clock, 2)
    with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as db:
        db.execute(update(AuditEvent).where(AuditEvent.id == 1).values(actor="user:99"))
    with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as db:
        db.execute(text("DELETE FROM audit_events WHERE id = 2"))
    assert report(factory).ok


@pytest.mark.parametrize(
    "column,value",
    [
        ("actor", "user:99"),
        ("details", json.dumps({"method": "password", "n": 1})),
        ("action", "accounts:login:failed"),
        ("subject", "user:42"),
        ("tenant", "40088"),
    ],
)
def test_edited_row_is_detected(factory, clock, column, value):
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        db.execute(update(AuditEvent).where(AuditEvent.id == 2).values(**{column: value}))
    result = report(factory)
    assert not result.ok
    assert any("événement 2" in p for p in result.problems)


def test_edited_timestamp_is_detected(factory, clock):
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        db.execute(
            update(AuditEvent).where(AuditEvent.id == 3).values(recorded_at=clock.advance(hours=1))
        )
    assert not report(factory).ok


def test_recomputed_entry_hash_still_breaks_the_next_link(factory, clock):
    """An attacker who edits a row and recomputes its hash breaks the following row."""
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        event = db.get(AuditEvent, 2)
        forged = AuditEvent(
            **{
                c: getattr(event, c)
                for c in (
                    "id",
                    "recorded_at",
                    "tenant",
                    "action",
                    "subject",
                    "details",
                    "prev_hash",
                )
            },
            actor="user:99",
        )
        db.execute(
            update(AuditEvent)
            .where(AuditEvent.id == 2)
            .values(
                actor="user:99", entry_hash=chain_value(event.prev_hash, canonical_encoding(forged))
            )
        )
    result = report(factory)
    assert any("événement 3 : chaînage rompu" in p for p in result.problems)


def test_deleted_row_is_detected(factory, clock):
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        db.execute(text("DELETE FROM audit_events WHERE id = 3"))
    result = report(factory)
    assert any("événement 3 : absent" in p for p in result.problems)


def test_truncated_tail_is_detected(factory, clock):
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        db.execute(text("DELETE FROM audit_events WHERE id = 5"))
    result = report(factory)
    assert any("tête du journal" in p for p in result.problems)


def test_inserted_row_is_detected(factory, clock):
    fill(factory, clock, 3)
    with transaction(factory) as db:
        head = db.get(AuditHead, 1)
        last = db.get(AuditEvent, 3)
        db.execute(
            insert(AuditEvent).values(
                id=4,
                recorded_at=clock(),
                tenant=None,
                actor="user:1",
                action="accounts:logout",
                subject="user:1",
                details="{}",
                prev_hash=last.entry_hash,
                entry_hash=bytes(32),
            )
        )
        assert head is not None
    result = report(factory)
    assert not result.ok


def test_reordered_rows_are_detected(factory, clock):
    fill(factory, clock)
    with transaction(factory) as db:
        drop_guards(db)
        two, three = db.get(AuditEvent, 2), db.get(AuditEvent, 3)
        cols = ("recorded_at", "actor", "action", "subject", "details", "prev_hash", "entry_hash")
        values2 = {c: getattr(two, c) for c in cols}
        values3 = {c: getattr(three, c) for c in cols}
        db.execute(update(AuditEvent).where(AuditEvent.id == 2).values(**values3))
        db.execute(update(AuditEvent).where(AuditEvent.id == 3).values(**values2))
    assert not report(factory).ok
