"""Vault tables: wrapped tenant keys, stored objects, and the crypto-shredding ledger.
Tenants are named by their INSEE code; the vault knows nothing else of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from securex.db import Base, UTCDateTime


class TenantKey(Base):
    """A version of a tenant's key-encryption key, wrapped by the master key."""

    __tablename__ = "vault_tenant_keys"
    __table_args__ = (UniqueConstraint("tenant", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(5), index=True)
    version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TenantSubkey(Base):
    """Long-lived tenant keys wrapped by the tenant key: `columns` seals personal data
    in encrypted columns, `index` keys the blind indexes. Rotation rewraps them."""

    __tablename__ = "vault_tenant_subkeys"
    __table_args__ = (UniqueConstraint("tenant", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(5))
    purpose: Mapped[str] = mapped_column(String(20))
    key_version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class VaultObject(Base):
    """A stored, encrypted object. `wrapped_key` is its data key wrapped by the tenant
    key `key_version`; it is erased when the object is shredded."""

    __tablename__ = "vault_objects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(5), index=True)
    key_version: Mapped[int | None] = mapped_column(Integer, index=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Shred(Base):
    """The crypto-shredding ledger, also appended to <instance>/keys/shred-ledger.jsonl
    so that a restore of an older database can replay it."""

    __tablename__ = "vault_shreds"

    object_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(5))
    shredded_at: Mapped[datetime] = mapped_column(UTCDateTime())
