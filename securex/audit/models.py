"""Audit tables. `audit_events` is append-only (database triggers refuse UPDATE and
DELETE); `audit_head` holds the size and last chain value, and is locked by every
writer so that event numbers are gapless and the chain is linear."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from securex.db import Base, UTCDateTime

GENESIS = bytes(32)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    # 1-based and gapless: event `id` is leaf `id - 1` of the Merkle tree.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    tenant: Mapped[str | None] = mapped_column(String(5), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80), index=True)
    subject: Mapped[str] = mapped_column(String(120), index=True)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # The Merkle tree's right edge: the roots of the perfect subtrees that make up the
    # tree, one per set bit of `size`, lowest level first (32 bytes each).
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class AuditNode(Base):
    """Every complete subtree's hash: level 0 holds the leaf hashes, level L index i the
    root of leaves [i * 2^L, (i + 1) * 2^L). Proofs read O(log n) of these rows."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A signed (C2SP signed note) and timestamped (RFC 3161) tree head."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    timestamp_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
