"""Tables of the confidential exchange: plis (a message and files sent to recipients),
their files and recipients, downloads, resumable uploads, deposit links and the
recipients' OpenPGP keys.

What says something about a person (subject, message, file names, addresses, the
address a download came from) is sealed for the sending commune; what the service
needs to route, count and expire stays in clear. Codes are stored as keyed digests
(the commune's index key), random 256-bit link tokens and cookies as SHA-256 digests.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from securex.db import Base, UTCDateTime
from securex.vault.columns import Sealed


class PliStatus(StrEnum):
    SCANNING = "scanning"  # files being checked by the antivirus, not offered yet
    PREPARING = "preparing"  # OpenPGP copies, notifications on their way
    SENT = "sent"
    BLOCKED = "blocked"  # a file was refused by the antivirus: nothing was offered
    REVOKED = "revoked"
    EXPIRED = "expired"  # purged: the files' keys are destroyed

    @property
    def label(self) -> str:
        return {
            "scanning": "Analyse antivirus en cours",
            "preparing": "En préparation",
            "sent": "Envoyé",
            "blocked": "Bloqué (fichier refusé par l'antivirus)",
            "revoked": "Révoqué",
            "expired": "Expiré",
        }[self.value]


class Verification(StrEnum):
    EMAIL = "email"  # a code sent to the recipient's address
    EMAIL_PHONE = "email+phone"  # plus a code the sender passes by phone

    @property
    def label(self) -> str:
        return {
            "email": "Code envoyé par e-mail",
            "email+phone": "Code par e-mail et code transmis par téléphone",
        }[self.value]


class ScanStatus(StrEnum):
    NOT_SCANNED = "not_scanned"  # no antivirus configured
    PENDING = "pending"
    CLEAN = "clean"
    INFECTED = "infected"
    TOO_LARGE = "too_large"  # beyond the antivirus' limit, offered per the policy


class Pli(Base):
    __tablename__ = "exchange_plis"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # outgoing: an agent sends; incoming: a deposit or a recipient's reply to the commune
    direction: Mapped[str] = mapped_column(String(10))
    sender_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    # An incoming pli's external sender: the recipient who replied, or the deposit used.
    # (no foreign key: recipients already point to plis, and the cycle would stop
    # tables from being created and dropped in order)
    reply_from_id: Mapped[int | None] = mapped_column(Integer)
    deposit_id: Mapped[int | None] = mapped_column(ForeignKey("exchange_deposits.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("exchange_plis.id"), index=True)
    # JSON: subject, message, and for incoming plis the sender's name and address.
    content: Mapped[str] = mapped_column(Sealed("pli.content"), deferred=True)
    status: Mapped[str] = mapped_column(String(10), index=True)
    verification: Mapped[str] = mapped_column(String(12))
    download_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    source: Mapped[str] = mapped_column(String(10))  # web | api | deposit | reply


class PliFile(Base):
    __tablename__ = "exchange_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    pli_id: Mapped[int] = mapped_column(ForeignKey("exchange_plis.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    object_id: Mapped[str] = mapped_column(ForeignKey("vault_objects.id"))
    # JSON: name, media type, SHA-256 of the content.
    meta: Mapped[str] = mapped_column(Sealed("pli.file"), deferred=True)
    size: Mapped[int] = mapped_column(BigInteger)
    scan: Mapped[str] = mapped_column(String(12))
    scan_signature: Mapped[str | None] = mapped_column(String(200))


class Recipient(Base):
    __tablename__ = "exchange_recipients"

    id: Mapped[int] = mapped_column(primary_key=True)
    pli_id: Mapped[int] = mapped_column(ForeignKey("exchange_plis.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    email: Mapped[str] = mapped_column(Sealed("pli.recipient"), deferred=True)
    # The recipient's link token (sealed: reminders carry it again) and its digest.
    link: Mapped[str] = mapped_column(Sealed("pli.link"), deferred=True)
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    pgp_fingerprint: Mapped[str | None] = mapped_column(String(40))
    # The e-mailed code (and the phone code): keyed digests, expiry, wrong tries.
    code_mac: Mapped[str | None] = mapped_column(String(64))
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    phone_code_mac: Mapped[str | None] = mapped_column(String(64))
    codes_sent: Mapped[int] = mapped_column(Integer, default=0)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # After a right code: a cookie whose digest is here gives access until access_until.
    access_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    access_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notify_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # every file
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Download(Base):
    """One download of a file (or of every file, as a zip) by a recipient."""

    __tablename__ = "exchange_downloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("exchange_recipients.id"), index=True)
    file_id: Mapped[int | None] = mapped_column(ForeignKey("exchange_files.id"))  # None: zip
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    range_start: Mapped[int] = mapped_column(BigInteger)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)  # OpenPGP copy
    address: Mapped[str] = mapped_column(Sealed("pli.download.address"), deferred=True)


class PgpCopy(Base):
    """A file encrypted to one recipient's OpenPGP key, stored in the vault too."""

    __tablename__ = "exchange_pgp_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("exchange_files.id"), index=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("exchange_recipients.id"), index=True)
    object_id: Mapped[str] = mapped_column(ForeignKey("vault_objects.id"))
    size: Mapped[int] = mapped_column(BigInteger)


class PgpKey(Base):
    """A recipient's OpenPGP public key, registered by an agent of the commune for an
    external address. Kept sealed (its user ids name a person); imported into a
    throwaway GnuPG home only to encrypt."""

    __tablename__ = "exchange_pgp_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    email_index: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str] = mapped_column(Sealed("pgp.email"), deferred=True)
    armored: Mapped[str] = mapped_column(Sealed("pgp.key"), deferred=True)
    fingerprint: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Deposit(Base):
    """A deposit link (guest voucher): anyone holding it may send files to the commune
    until it expires or its uses are spent."""

    __tablename__ = "exchange_deposits"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # JSON: the label the agent gives, the instructions shown, the expected address.
    content: Mapped[str] = mapped_column(Sealed("deposit.content"), deferred=True)
    uses_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Upload(Base):
    """A resumable upload (tus 1.0) in progress or finished, written straight into the
    vault: the state of `securex.vault.upload` between requests."""

    __tablename__ = "exchange_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # = the vault object id
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)  # user:1, deposit:3, …
    meta: Mapped[str] = mapped_column(Sealed("upload.meta"), deferred=True)  # name, type
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # vault upload state
    lease: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # attached to a pli
