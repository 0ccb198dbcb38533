"""Tables of the registry: acts, their blind indexes and scanned pages, mentions
marginales, avis de mention between communes, and deliveries (copies and extraits).

Every piece of personal data is a `Sealed` column, deferred (loaded on first access,
which must happen inside the commune's `column_keys`; rows can be listed and routed
without opening anything), (encrypted for the commune) or a
vault object (the signed PDFs, the scans); what stays in clear is what the workflow
needs to route and count: kinds, numbers, statuses, dates of the workflow itself.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from securex.db import Base, UTCDateTime
from securex.vault.columns import Sealed


class Status(StrEnum):
    DRAFT = "draft"  # being written by an agent
    PENDING = "pending"  # waiting for the officier's signature
    SIGNED = "signed"  # sealed: never edited again (Code civil 49)

    @property
    def label(self) -> str:
        return {"draft": "Projet", "pending": "À signer", "signed": "Signé"}[self.value]


class Act(Base):
    __tablename__ = "acts"
    # Natural key (domain page): INSEE code, year, register, number in the register's
    # continuous yearly series. `register` is the kind, except enfant sans vie, kept in
    # the death register (Code civil 79-1). Drafts have no number yet.
    __table_args__ = (UniqueConstraint("insee", "year", "register", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    insee: Mapped[str] = mapped_column(String(5))
    kind: Mapped[str] = mapped_column(String(20))
    register: Mapped[str] = mapped_column(String(20))
    year: Mapped[int | None] = mapped_column(Integer)
    number: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), index=True)
    content: Mapped[str] = mapped_column(Sealed("act.content"), deferred=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when the officier signs (or, for an imported act, when it was drawn up).
    drawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    officer_name: Mapped[str | None] = mapped_column(String(120))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("vault_objects.id"))
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the archive renewal looks at the signed PDF again (securex/registry/renewal.py).
    renew_after: Mapped[date | None] = mapped_column(Date, index=True)


class ActIndex(Base):
    """Blind indexes of an act's subjects (nom + prénoms + date, with and without the
    place): HMAC values, never the names."""

    __tablename__ = "act_index"
    __table_args__ = (Index("ix_act_index_lookup", "tenant_id", "name", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    act_id: Mapped[int] = mapped_column(ForeignKey("acts.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(30))
    value: Mapped[str] = mapped_column(String(32))


class ActScan(Base):
    """A scanned page image (PDF) of a paper register, attached to an act."""

    __tablename__ = "act_scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    act_id: Mapped[int] = mapped_column(ForeignKey("acts.id"), index=True)
    object_id: Mapped[str] = mapped_column(ForeignKey("vault_objects.id"))
    filename: Mapped[str] = mapped_column(Sealed("scan.filename"), deferred=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Mention(Base):
    """A mention marginale: appended to a signed act, signed on its own (Code civil 49;
    décret 2019-993: appended without altering stored data)."""

    __tablename__ = "mentions"

    id: Mapped[int] = mapped_column(primary_key=True)
    act_id: Mapped[int] = mapped_column(ForeignKey("acts.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    facts: Mapped[str] = mapped_column(Sealed("mention.facts"), deferred=True)
    applied_place: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(10), index=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    applied_on: Mapped[date | None] = mapped_column(Date)
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    officer_name: Mapped[str | None] = mapped_column(String(120))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("vault_objects.id"))
    # A répertoire civil mention that strikes out (radie) an earlier one.
    strikes_id: Mapped[int | None] = mapped_column(ForeignKey("mentions.id"))
    avis_id: Mapped[int | None] = mapped_column(ForeignKey("avis.id"))
    renew_after: Mapped[date | None] = mapped_column(Date, index=True)


class AvisStatus(StrEnum):
    SENT = "sent"  # in the target commune's queue
    APPLIED = "applied"  # the target's officier applied it: the receipt
    REJECTED = "rejected"  # the target found no such act, or refused it with a reason
    TO_SIGN = "to_sign"  # off the platform: a PDF waiting for the officier's signature
    READY = "ready"  # off the platform: signed PDF ready to send

    @property
    def label(self) -> str:
        return {
            "sent": "Envoyé",
            "applied": "Appliqué (accusé reçu)",
            "rejected": "Rejeté",
            "to_sign": "À signer",
            "ready": "PDF signé à envoyer",
        }[self.value]


class Avis(Base):
    """An avis de mention to the commune holding the act a mention goes on. The payload
    is sealed for the commune that must read it: the target on the platform, else the
    sender (who mails the signed PDF)."""

    __tablename__ = "avis"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    source_act_id: Mapped[int | None] = mapped_column(ForeignKey("acts.id"))
    target_tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    target_commune: Mapped[str] = mapped_column(String(120))
    mention_kind: Mapped[str] = mapped_column(String(30))
    payload: Mapped[str] = mapped_column(Sealed("avis.payload"), deferred=True)
    status: Mapped[str] = mapped_column(String(10), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_on: Mapped[date | None] = mapped_column(Date)
    target_act_id: Mapped[int | None] = mapped_column(ForeignKey("acts.id"))
    receipt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(String(300))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("vault_objects.id"))


class Delivery(Base):
    """A copy or extrait of an act: requested, then signed and issued with a short
    verification code that the public verification page answers for."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    act_id: Mapped[int] = mapped_column(ForeignKey("acts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    all_marriages: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    requester: Mapped[str] = mapped_column(Sealed("delivery.requester"), deferred=True)
    purpose: Mapped[str] = mapped_column(Sealed("delivery.purpose"), deferred=True)
    status: Mapped[str] = mapped_column(String(10), index=True)
    requested_by: Mapped[str] = mapped_column(String(40))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    signer_name: Mapped[str | None] = mapped_column(String(120))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("vault_objects.id"))
    sha256: Mapped[str | None] = mapped_column(String(64))
