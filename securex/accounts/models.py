"""Tenants (communes), users, second factors, API clients, web sessions, rate limits."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from securex.db import Base, UTCDateTime


class Role(StrEnum):
    PLATFORM_ADMIN = "platform_admin"  # the syndicate's administrators, no commune
    ADMIN = "admin"
    OFFICER = "officer"  # officier de l'état civil
    AGENT = "agent"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]

    @property
    def requires_totp(self) -> bool:
        return self is not Role.AGENT


ROLE_LABELS = {
    Role.PLATFORM_ADMIN: "Administrateur de la plateforme",
    Role.ADMIN: "Administrateur de la commune",
    Role.OFFICER: "Officier de l'état civil",
    Role.AGENT: "Agent",
}


class ClientCategory(StrEnum):
    NOTAIRE = "notaire"
    ADMINISTRATION = "administration"
    GUICHET = "guichet"  # the commune's online counter, filing for citizens
    MAIRIE = "mairie"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    insee: Mapped[str] = mapped_column(String(5), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    # TOTP secret sealed with AES-GCM under an instance purpose key (see service).
    totp_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column()
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    tenant: Mapped[Tenant | None] = relationship(lazy="joined")

    @property
    def role_enum(self) -> Role:
        return Role(self.role)

    @property
    def totp_enrolled(self) -> bool:
        return self.totp_sealed is not None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    # The protocol Flask-Login expects of a user object.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


api_client_scope = Table(
    "api_client_scope",
    Base.metadata,
    Column("client_id", ForeignKey("api_clients.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
)


class ApiClient(Base):
    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    communes: Mapped[list[Tenant]] = relationship(
        secondary=api_client_scope, lazy="selectin", order_by=Tenant.insee
    )


class PersonalToken(Base):
    """A user's own API token (an agent's script, a payroll system sending as an
    agent): it acts as that user, within their commune and role."""

    __tablename__ = "personal_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="joined")


class WebSession(Base):
    """Server-side browser sessions: the cookie holds a random id, the row its hash."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RateLimit(Base):
    """Fixed-window counters; the key holds a keyed hash, never an address in clear."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer)


class InstanceMeta(Base):
    """Facts about the instance itself (for example whether it is a demo)."""

    __tablename__ = "instance_meta"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
