"""Tables of the COMEDEC-style exchange: requests for acts, verification requests, the
communes' handling preferences, and the requesters' webhook endpoints.

What a request says about a person (names, dates, parents, justification, purpose)
is one sealed JSON document, deferred like the registry's; routing facts (kinds,
capacity, status, dates, the decision's legal basis) stay in clear for the queue.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from securex.db import Base, UTCDateTime
from securex.vault.columns import Sealed


class RequestStatus(StrEnum):
    REFUSED = "refused"
    RECEIVED = "received"  # accepted, being issued automatically
    QUEUED = "queued"  # waiting for an agent (or for the officier's signature)
    ISSUED = "issued"
    NOT_FOUND = "not_found"

    @property
    def label(self) -> str:
        return {
            "refused": "Refusée",
            "received": "Reçue",
            "queued": "À traiter",
            "issued": "Délivrée",
            "not_found": "Acte introuvable",
        }[self.value]


class ActRequest(Base):
    __tablename__ = "act_requests"
    __table_args__ = (UniqueConstraint("client_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("api_clients.id"), index=True)
    channel: Mapped[str] = mapped_column(String(10))  # api | sve (the public counter)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    body_hash: Mapped[str] = mapped_column(String(64))
    act_kind: Mapped[str] = mapped_column(String(20))
    delivery: Mapped[str] = mapped_column(String(30))
    capacity: Mapped[str] = mapped_column(String(30))
    data: Mapped[str] = mapped_column(Sealed("request.data"), deferred=True)
    status: Mapped[str] = mapped_column(String(10), index=True)
    outcome: Mapped[str] = mapped_column(String(10))  # the rules' allowed | refused | review
    legal_basis: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(400))
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    act_id: Mapped[int | None] = mapped_column(ForeignKey("acts.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"), index=True)
    proof_id: Mapped[str | None] = mapped_column(ForeignKey("vault_objects.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    due_on: Mapped[date] = mapped_column(Date)
    decided_by: Mapped[str | None] = mapped_column(String(40))
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Requests are kept one year (décret 2017-890 art. 29), then purged.
    purge_after: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Verification(Base):
    """An art. 39 verification: the submitted identity data and the answer (match,
    mismatch with the corrected fields, not found), signed with the commune's seal."""

    __tablename__ = "verifications"
    __table_args__ = (UniqueConstraint("client_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    body_hash: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(10))
    answer: Mapped[str] = mapped_column(Sealed("verification.answer"), deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    purge_after: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class CommuneSettings(Base):
    """How a commune handles requests (set by its administrator)."""

    __tablename__ = "commune_settings"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # Issue a clean request (entitled, one matching act) at once, signed by the seal.
    auto_issue: Mapped[bool] = mapped_column(Boolean, default=False)
    # Answer `not_found` at once when nothing matches, rather than after an agent looks.
    not_found_at_once: Mapped[bool] = mapped_column(Boolean, default=False)
    due_days: Mapped[int] = mapped_column(Integer, default=3)
    service_name: Mapped[str] = mapped_column(String(200), default="Service de l'état civil")
    service_contact: Mapped[str] = mapped_column(String(300), default="")


class WebhookEndpoint(Base):
    """Where a requester wants to hear of status changes (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    # The signing secret is derived from a platform secret and this nonce (HMAC), so
    # no secret is stored; a new nonce rotates it.
    nonce: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
