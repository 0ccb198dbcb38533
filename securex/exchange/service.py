"""Confidential plis: an agent sends files and a message to recipients (platform users
or external addresses) instead of e-mail attachments.

Life of a pli: created (files already in the vault) → `scanning` while the antivirus
reads each file (when clamd is configured) → `preparing` (OpenPGP copies, then one
notification per recipient, by jobs) → `sent` → `revoked` or, at expiry, purged:
every file's key is destroyed (crypto-shredding) and its blob removed; the rows keep
the facts (who, when, how many bytes), the audit trail too, never the content.

A recipient's link only shows a page: codes are sent, checked and counted, and
downloads become possible, only after a POST, so mail scanners that open links
change nothing. Codes and link tokens are kept as keyed digests (and the link sealed,
for reminders); a right code gives a cookie valid `access_minutes`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from securex.accounts.models import Role, Tenant, User
from securex.accounts.service import AccountKeys, Actor, throttle
from securex.audit import EventType, record
from securex.errors import (
    Forbidden,
    Gone,
    InsufficientStorage,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from securex.exchange import uploads
from securex.exchange.models import (
    Deposit,
    Download,
    PgpCopy,
    PgpKey,
    Pli,
    PliFile,
    PliStatus,
    Recipient,
    ScanStatus,
    Verification,
)
from securex.jobs.service import enqueue
from securex.mail import valid_address
from securex.vault import BlindIndexer, Vault
from securex.vault.columns import column_keys

PARIS = ZoneInfo("Europe/Paris")
T = TypeVar("T")
PREPARE_JOB = "exchange.prepare"
RECEIPT_JOB = "exchange.receipt"
MAX_RECIPIENTS = 50
MAX_FILES = 100
MAX_SUBJECT = 200
MAX_MESSAGE = 10_000
OUTGOING, INCOMING = "outgoing", "incoming"
ACCESS_COOKIE = "sx_pli"


@dataclass(frozen=True)
class ExchangePolicy:
    max_file_bytes: int = 10 * 2**30
    form_max_bytes: int = 64 * 2**20
    default_expiry_days: int = 7
    max_expiry_days: int = 30
    default_download_limit: int = 5
    max_download_limit: int = 100
    code_minutes: int = 15
    code_attempts: int = 5
    codes_per_hour: int = 5
    access_minutes: int = 60
    reminder_days: int = 2
    upload_hours: int = 24
    upload_lease_seconds: int = 300
    deposit_days: int = 7
    clamd: str = ""
    scan_too_large: str = "refuse"

    @classmethod
    def from_settings(cls, settings: Any) -> ExchangePolicy:
        values = {name: settings[f"exchange.{name}"] for name in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True)
class FileInput:
    """A file for a new pli: a finished upload, or content held in memory (a form)."""

    name: str = ""
    media_type: str = "application/octet-stream"
    content: bytes | None = None
    upload_id: str | None = None


@dataclass
class RecipientView:
    id: int
    email: str
    platform: bool
    notified_at: datetime | None
    notify_failed: bool
    opened_at: datetime | None
    verified_at: datetime | None
    downloaded_at: datetime | None
    locked: bool
    reminded_at: datetime | None
    pgp: bool
    downloads: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PliView:
    id: int
    insee: str
    commune: str
    direction: str
    status: PliStatus
    subject: str
    message: str
    sender: str  # the agent's name, or the external sender's name and address
    sender_email: str
    verification: Verification
    download_limit: int
    created_at: datetime
    expires_at: datetime
    files: list[dict[str, Any]]
    recipients: list[RecipientView]
    parent_id: int | None
    replies: list[int]
    source: str

    @property
    def open(self) -> bool:
        return self.status in (PliStatus.SENT, PliStatus.PREPARING, PliStatus.SCANNING)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _tenant(db: Session, tenant_id: int) -> Tenant:
    tenant = db.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant


def _address(value: str) -> str:
    return value.strip().lower()


def parse_recipients(entries: Sequence[str]) -> list[str]:
    """Distinct, valid addresses (one per entry; blank entries ignored)."""
    seen: list[str] = []
    for raw in entries:
        address = _address(raw)
        if not address:
            continue
        if not valid_address(address):
            raise ValidationFailed(
                f"Adresse e-mail invalide : {raw.strip()[:80]!r}. Une adresse par ligne.",
                errors=[{"field": "recipients", "message": "adresse invalide"}],
            )
        if address not in seen:
            seen.append(address)
    if not seen:
        raise ValidationFailed(
            "Indiquez au moins un destinataire.",
            errors=[{"field": "recipients", "message": "au moins un destinataire"}],
        )
    if len(seen) > MAX_RECIPIENTS:
        raise ValidationFailed(
            f"Au plus {MAX_RECIPIENTS} destinataires par pli.",
            errors=[{"field": "recipients", "message": "trop de destinataires"}],
        )
    return seen


def _check_text(subject: str, message: str) -> None:
    if not subject.strip():
        raise ValidationFailed(
            "Donnez un objet au pli.", errors=[{"field": "subject", "message": "obligatoire"}]
        )
    if len(subject) > MAX_SUBJECT or len(message) > MAX_MESSAGE:
        raise ValidationFailed(
            f"Objet limité à {MAX_SUBJECT} caractères, message à {MAX_MESSAGE}.",
            errors=[{"field": "message", "message": "trop long"}],
        )


def _expiry(days: int | None, policy: ExchangePolicy, now: datetime) -> datetime:
    days = policy.default_expiry_days if days is None else days
    if not 1 <= days <= policy.max_expiry_days:
        raise ValidationFailed(
            f"La durée de mise à disposition va de 1 à {policy.max_expiry_days} jours.",
            errors=[{"field": "expires_in_days", "message": "hors limites"}],
        )
    return now + timedelta(days=days)


def _limit(value: int | None, policy: ExchangePolicy) -> int:
    value = policy.default_download_limit if value is None else value
    if not 1 <= value <= policy.max_download_limit:
        raise ValidationFailed(
            f"Le nombre de téléchargements par destinataire va de 1 à {policy.max_download_limit}.",
            errors=[{"field": "download_limit", "message": "hors limites"}],
        )
    return value


def _store_files(
    db: Session,
    vault: Vault,
    tenant: Tenant,
    owner: str,
    pli: Pli,
    files: Sequence[FileInput],
    policy: ExchangePolicy,
    now: datetime,
) -> None:
    if not files:
        raise ValidationFailed(
            "Joignez au moins un fichier.", errors=[{"field": "files", "message": "obligatoire"}]
        )
    if len(files) > MAX_FILES:
        raise ValidationFailed(
            f"Au plus {MAX_FILES} fichiers par pli.",
            errors=[{"field": "files", "message": "trop de fichiers"}],
        )
    scan = ScanStatus.PENDING if policy.clamd else ScanStatus.NOT_SCANNED
    written: list[str] = []  # blobs this call wrote (not finished uploads)
    for position, item in enumerate(files):
        if item.upload_id is not None:
            row = uploads.take(db, vault, item.upload_id, owner, now=now)
            upload_meta = json.loads(row.meta)
            row.meta = "{}"  # the name now lives with the pli's file only
            name, media_type, object_id, size = (
                upload_meta["name"],
                upload_meta["type"],
                row.id,
                row.length,
            )
        else:
            content = item.content or b""
            if len(content) > policy.max_file_bytes:
                raise ValidationFailed(
                    f"Fichier trop volumineux : {uploads.clean_name(item.name)}."
                )
            try:
                obj = vault.put(db, tenant.insee, io.BytesIO(content), now=now)
            except InsufficientStorage:
                # The transaction will not commit: the files already written for this
                # pli would be orphans taking the little room left until `exchange.gc`.
                for earlier in written:
                    vault.blobs.delete(earlier)
                raise
            written.append(obj.id)
            name, media_type, object_id, size = (
                uploads.clean_name(item.name),
                uploads.clean_media_type(item.media_type),
                obj.id,
                obj.size,
            )
        db.add(
            PliFile(
                pli_id=pli.id,
                position=position,
                object_id=object_id,
                meta=json.dumps({"name": name, "type": media_type[:100]}),
                size=size,
                scan=scan,
            )
        )


def _add_recipient(
    db: Session, pli: Pli, email: str, user: User | None, pgp: str | None
) -> Recipient:
    link = secrets.token_urlsafe(32)
    rcpt = Recipient(
        pli_id=pli.id,
        user_id=user.id if user else None,
        email=email,
        link=link,
        link_hash=_digest(link),
        pgp_fingerprint=pgp,
        codes_sent=0,
        tries=0,
        notify_failed=False,
    )
    db.add(rcpt)
    return rcpt


def _pgp_fingerprint(
    db: Session, vault: Vault, tenant: Tenant, email: str, now: datetime
) -> str | None:
    index = BlindIndexer(db, vault.keyring, tenant.insee).mac("pgp.email", email.encode())
    key = db.scalars(
        select(PgpKey)
        .where(PgpKey.tenant_id == tenant.id, PgpKey.email_index == index)
        .order_by(PgpKey.id.desc())
    ).first()
    if key is None or (key.expires_at is not None and key.expires_at <= now):
        return None
    return key.fingerprint


def _start(db: Session, pli: Pli, actor: str, now: datetime, policy: ExchangePolicy) -> None:
    pli.status = PliStatus.SCANNING if policy.clamd else PliStatus.PREPARING
    db.flush()
    enqueue(db, PREPARE_JOB, {"pli": pli.id}, tenant_id=pli.tenant_id, actor=actor, now=now)


def send(
    db: Session,
    vault: Vault,
    sender: User,
    *,
    recipients: Sequence[str],
    subject: str,
    message: str,
    files: Sequence[FileInput],
    expires_in_days: int | None,
    download_limit: int | None,
    verification: str,
    source: str,
    now: datetime,
    policy: ExchangePolicy,
) -> tuple[Pli, dict[str, str]]:
    """Create a pli and queue its preparation; returns it with the phone codes to pass
    (address → code) when the sender chose `email+phone`. Nothing is kept if anything
    is invalid (the caller's transaction is rolled back)."""
    tenant = sender.tenant
    if tenant is None:
        raise Forbidden("Seuls les agents d'une commune envoient des plis.")
    addresses = parse_recipients(recipients)
    _check_text(subject, message)
    try:
        mode = Verification(verification)
    except ValueError:
        raise ValidationFailed(
            "Vérification : « email » ou « email+phone ».",
            errors=[{"field": "verification", "message": "valeur inconnue"}],
        ) from None
    phone_codes: dict[str, str] = {}
    with column_keys(db, vault.keyring, tenant.insee):
        pli = Pli(
            tenant_id=tenant.id,
            direction=OUTGOING,
            sender_user_id=sender.id,
            content=json.dumps({"subject": subject.strip(), "message": message}),
            status=PliStatus.PREPARING,
            verification=mode,
            download_limit=_limit(download_limit, policy),
            created_at=now,
            expires_at=_expiry(expires_in_days, policy, now),
            source=source,
        )
        db.add(pli)
        db.flush()
        _store_files(db, vault, tenant, f"user:{sender.id}", pli, files, policy, now)
        for address in addresses:
            user = db.scalar(select(User).where(User.email == address))
            if user is not None and user.disabled_at is not None:
                user = None
            pgp = None if user else _pgp_fingerprint(db, vault, tenant, address, now)
            rcpt = _add_recipient(db, pli, address, user, pgp)
            if mode is Verification.EMAIL_PHONE and user is None:
                code = f"{secrets.randbelow(10**6):06d}"
                db.flush()
                rcpt.phone_code_mac = _code_mac(db, vault, pli, rcpt, "phone", code)
                phone_codes[address] = code
        db.flush()
    record(
        db,
        EventType.PLI_CREATED,
        actor=str(Actor.for_user(sender)),
        subject=f"pli:{pli.id}",
        tenant=tenant.insee,
        details={"recipients": len(addresses), "files": len(files), "source": source},
        now=now,
    )
    _start(db, pli, f"user:{sender.id}", now, policy)
    return pli, phone_codes


def _code_mac(db: Session, vault: Vault, pli: Pli, rcpt: Recipient, kind: str, code: str) -> str:
    """A keyed digest of a code (the commune's index key), bound to its recipient and
    kind: the code itself is never stored."""
    indexer = BlindIndexer(db, vault.keyring, _tenant(db, pli.tenant_id).insee)
    return indexer.mac("pli.code", f"{kind}:{rcpt.id}:{code}".encode())


# --- reading --------------------------------------------------------------------------


def _meta(row: PliFile) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(row.meta)
    return meta


def files_of(db: Session, pli: Pli) -> list[PliFile]:
    return list(
        db.scalars(select(PliFile).where(PliFile.pli_id == pli.id).order_by(PliFile.position))
    )


def recipients_of(db: Session, pli: Pli) -> list[Recipient]:
    return list(
        db.scalars(select(Recipient).where(Recipient.pli_id == pli.id).order_by(Recipient.id))
    )


def view(db: Session, vault: Vault, pli: Pli, *, with_downloads: bool = True) -> PliView:
    tenant = _tenant(db, pli.tenant_id)
    with column_keys(db, vault.keyring, tenant.insee):
        content = json.loads(pli.content)
        files = [
            {
                "id": f.id,
                "name": _meta(f)["name"],
                "type": _meta(f)["type"],
                "size": f.size,
                "scan": f.scan,
                "signature": f.scan_signature,
                "sha256": _meta(f).get("sha256"),
            }
            for f in files_of(db, pli)
        ]
        names = {f["id"]: f["name"] for f in files}
        rcpts = []
        for r in recipients_of(db, pli):
            rv = RecipientView(
                r.id,
                r.email,
                r.user_id is not None,
                r.notified_at,
                r.notify_failed,
                r.opened_at,
                r.verified_at,
                r.downloaded_at,
                r.locked_at is not None,
                r.reminded_at,
                r.pgp_fingerprint is not None,
            )
            if with_downloads:
                for d in db.scalars(
                    select(Download).where(Download.recipient_id == r.id).order_by(Download.id)
                ):
                    rv.downloads.append(
                        {
                            "file": names.get(d.file_id, "tous les fichiers (zip)")
                            if d.file_id
                            else "tous les fichiers (zip)",
                            "started_at": d.started_at,
                            "completed_at": d.completed_at,
                            "bytes": d.bytes_sent,
                            "address": d.address,
                            "encrypted": d.encrypted,
                        }
                    )
            rcpts.append(rv)
        sender_name, sender_email = "", ""
        if pli.sender_user_id is not None:
            user = db.get(User, pli.sender_user_id)
            assert user is not None
            sender_name, sender_email = user.name, user.email
        else:
            sender_name = content.get("from_name", "")
            sender_email = content.get("from_email", "")
        replies = list(db.scalars(select(Pli.id).where(Pli.parent_id == pli.id).order_by(Pli.id)))
        return PliView(
            id=pli.id,
            insee=tenant.insee,
            commune=tenant.name,
            direction=pli.direction,
            status=PliStatus(pli.status),
            subject=content.get("subject", ""),
            message=content.get("message", ""),
            sender=sender_name,
            sender_email=sender_email,
            verification=Verification(pli.verification),
            download_limit=pli.download_limit,
            created_at=pli.created_at,
            expires_at=pli.expires_at,
            files=files,
            recipients=rcpts,
            parent_id=pli.parent_id,
            replies=replies,
            source=pli.source,
        )


def read(db: Session, vault: Vault, pli: Pli, actor: Actor, *, now: datetime) -> PliView:
    """The pli as its commune's staff see it (recipients, downloads, addresses): each
    reading is audited, as reading the registry is. The caller commits."""
    record(
        db,
        EventType.PLI_VIEWED,
        actor=str(actor),
        subject=f"pli:{pli.id}",
        tenant=_tenant(db, pli.tenant_id).insee,
        now=now,
    )
    return view(db, vault, pli)


def get_for_staff(db: Session, user: User, pli_id: int) -> Pli:
    """A pli of the user's commune: sent by anyone of it, or received by it."""
    pli = db.get(Pli, pli_id)
    if pli is None or user.tenant_id is None or pli.tenant_id != user.tenant_id:
        raise NotFound("Pli introuvable.")
    return pli


def list_for_staff(
    db: Session,
    vault: Vault,
    user: User,
    *,
    direction: str,
    limit: int = 200,
    with_downloads: bool = False,
) -> list[PliView]:
    """The commune's plis, newest first: sent (outgoing) or received (incoming)."""
    assert user.tenant_id is not None
    rows = db.scalars(
        select(Pli)
        .where(Pli.tenant_id == user.tenant_id, Pli.direction == direction)
        .order_by(Pli.id.desc())
        .limit(limit)
    )
    return [view(db, vault, pli, with_downloads=with_downloads) for pli in rows]


def received_by_user(db: Session, vault: Vault, user: User, limit: int = 200) -> list[PliView]:
    """Plis addressed to this platform user by any commune (outgoing from theirs)."""
    rows = db.scalars(
        select(Pli)
        .join(Recipient, Recipient.pli_id == Pli.id)
        .where(Recipient.user_id == user.id, Pli.direction == OUTGOING)
        .order_by(Pli.id.desc())
        .limit(limit)
    )
    return [view(db, vault, pli, with_downloads=False) for pli in rows]


# --- the recipient's side --------------------------------------------------------------


@dataclass
class Access:
    pli: Pli
    recipient: Recipient


def _by_token(db: Session, model: type[T], digest: Any, token: str, lock: bool) -> T | None:
    """The row whose digest column holds this token's (links and deposit links)."""
    if not 20 <= len(token) <= 100:
        return None
    stmt = select(model).where(digest == _digest(token))
    return db.scalar(stmt.with_for_update() if lock else stmt)


def by_link(db: Session, token: str, *, now: datetime, lock: bool = False) -> Access:
    """The pli behind a recipient's link; Gone once revoked or expired."""
    rcpt = _by_token(db, Recipient, Recipient.link_hash, token, lock)
    if rcpt is None:
        raise NotFound("Ce lien ne correspond à aucun pli.")
    pli = db.get(Pli, rcpt.pli_id)
    assert pli is not None
    if pli.status == PliStatus.REVOKED:
        raise Gone("L'expéditeur a retiré ce pli : il n'est plus disponible.")
    if pli.status == PliStatus.EXPIRED or pli.expires_at <= now:
        raise Gone(
            f"Ce pli a expiré le {pli.expires_at.astimezone(PARIS):%d/%m/%Y} : demandez à "
            "l'expéditeur de vous le renvoyer."
        )
    if pli.status == PliStatus.BLOCKED:
        raise Gone("Ce pli a été bloqué : un fichier a été refusé par l'antivirus.")
    return Access(pli, rcpt)


def _opened(db: Session, access: Access, actor: str, now: datetime) -> None:
    if access.recipient.opened_at is None:
        access.recipient.opened_at = now
        record(
            db,
            EventType.PLI_OPENED,
            actor=actor,
            subject=f"pli:{access.pli.id}",
            tenant=_tenant(db, access.pli.tenant_id).insee,
            details={"recipient": access.recipient.id},
            now=now,
        )


def _not_locked(rcpt: Recipient) -> None:
    if rcpt.locked_at is not None:
        raise RateLimited(
            "Trop de codes erronés : ce pli est verrouillé pour vous. Demandez à l'expéditeur "
            "de le déverrouiller."
        )


def new_code(
    db: Session,
    vault: Vault,
    keys: AccountKeys,
    token: str,
    *,
    now: datetime,
    policy: ExchangePolicy,
) -> tuple[Access, str, str]:
    """A fresh 6-digit code for an external recipient (the previous one stops working);
    returns the access, the code and the address to e-mail it to."""
    access = by_link(db, token, now=now, lock=True)
    rcpt = access.recipient
    if rcpt.user_id is not None:
        raise Forbidden("Ce pli vous est adressé sur la plateforme : connectez-vous pour l'ouvrir.")
    _not_locked(rcpt)
    wait = throttle(
        db,
        keys,
        "pli-code",
        f"recipient:{rcpt.id}",
        limit=policy.codes_per_hour,
        window_seconds=3600,
        now=now,
    )
    if wait:
        raise RateLimited(f"Trop de codes demandés : réessayez dans {wait // 60 + 1} min.")
    code = f"{secrets.randbelow(10**6):06d}"
    rcpt.code_mac = _code_mac(db, vault, access.pli, rcpt, "email", code)
    rcpt.code_expires_at = now + timedelta(minutes=policy.code_minutes)
    rcpt.codes_sent += 1
    _opened(db, access, f"recipient:{rcpt.id}", now)
    record(
        db,
        EventType.PLI_CODE_SENT,
        actor=f"recipient:{rcpt.id}",
        subject=f"pli:{access.pli.id}",
        tenant=_tenant(db, access.pli.tenant_id).insee,
        details={"recipient": rcpt.id},
        now=now,
    )
    insee = _tenant(db, access.pli.tenant_id).insee
    with column_keys(db, vault.keyring, insee):
        address = rcpt.email
    return access, code, address


def _digits(value: str) -> str:
    return "".join(value.split())


def _matches(
    db: Session, vault: Vault, access: Access, kind: str, given: str, expected: str | None
) -> bool:
    given = _digits(given)
    ok = given.isascii() and given.isdigit() and len(given) == 6
    computed = _code_mac(db, vault, access.pli, access.recipient, kind, given if ok else "0")
    return ok and expected is not None and secrets.compare_digest(computed, expected)


def check_code(
    db: Session,
    vault: Vault,
    token: str,
    code: str,
    phone_code: str,
    *,
    now: datetime,
    policy: ExchangePolicy,
) -> tuple[Access, str]:
    """Check the e-mailed code (and the phone code); returns the access and a cookie
    value that opens the pli for `access_minutes`. Wrong entries count and lock the pli
    for this recipient after `code_attempts`; the caller commits whatever happens."""
    access = by_link(db, token, now=now, lock=True)
    rcpt = access.recipient
    insee = _tenant(db, access.pli.tenant_id).insee
    _not_locked(rcpt)
    if rcpt.code_mac is None or rcpt.code_expires_at is None or rcpt.code_expires_at <= now:
        raise ValidationFailed(
            "Aucun code en cours de validité : demandez un nouveau code.",
            errors=[{"field": "code", "message": "code expiré ou non demandé"}],
        )
    right = _matches(db, vault, access, "email", code, rcpt.code_mac)
    if rcpt.phone_code_mac is not None:
        right = _matches(db, vault, access, "phone", phone_code, rcpt.phone_code_mac) and right
    if not right:
        rcpt.tries += 1
        details = {"recipient": rcpt.id, "tries": rcpt.tries}
        if rcpt.tries >= policy.code_attempts:
            rcpt.locked_at = now
            rcpt.code_mac = None
            record(
                db,
                EventType.PLI_LOCKED,
                actor=f"recipient:{rcpt.id}",
                subject=f"pli:{access.pli.id}",
                tenant=insee,
                details=details,
                now=now,
            )
            _not_locked(rcpt)
        record(
            db,
            EventType.PLI_CODE_FAILED,
            actor=f"recipient:{rcpt.id}",
            subject=f"pli:{access.pli.id}",
            tenant=insee,
            details=details,
            now=now,
        )
        left = policy.code_attempts - rcpt.tries
        raise ValidationFailed(
            f"Code incorrect : il vous reste {left} essai{'s' if left > 1 else ''} avant que "
            "le pli soit verrouillé.",
            errors=[{"field": "code", "message": "code incorrect"}],
        )
    rcpt.code_mac = None
    rcpt.code_expires_at = None
    rcpt.tries = 0
    if rcpt.verified_at is None:
        rcpt.verified_at = now
    record(
        db,
        EventType.PLI_CODE_VERIFIED,
        actor=f"recipient:{rcpt.id}",
        subject=f"pli:{access.pli.id}",
        tenant=insee,
        details={"recipient": rcpt.id},
        now=now,
    )
    return access, _grant(rcpt, now, policy)


def _grant(rcpt: Recipient, now: datetime, policy: ExchangePolicy) -> str:
    cookie = secrets.token_urlsafe(32)
    rcpt.access_hash = _digest(cookie)
    rcpt.access_until = now + timedelta(minutes=policy.access_minutes)
    return cookie


def open_as_user(
    db: Session, token: str, user: User, *, now: datetime, policy: ExchangePolicy
) -> tuple[Access, str]:
    """A platform user opens a pli addressed to them, once logged in."""
    access = by_link(db, token, now=now, lock=True)
    if access.recipient.user_id != user.id:
        raise Forbidden(
            "Ce pli est adressé à un autre compte : connectez-vous avec le compte du destinataire."
        )
    _opened(db, access, str(Actor.for_user(user)), now)
    if access.recipient.verified_at is None:
        access.recipient.verified_at = now
    return access, _grant(access.recipient, now, policy)


def with_access(db: Session, token: str, cookie: str | None, *, now: datetime) -> Access:
    """The pli, for a recipient holding a valid access cookie; Forbidden otherwise."""
    access = by_link(db, token, now=now)
    rcpt = access.recipient
    if (
        not cookie
        or rcpt.access_hash is None
        or rcpt.access_until is None
        or rcpt.access_until <= now
        or not secrets.compare_digest(rcpt.access_hash, _digest(cookie))
    ):
        raise Forbidden("Session expirée : entrez un nouveau code pour accéder au pli.")
    _not_locked(rcpt)
    return access


# --- downloads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Servable:
    """What a download streams: the vault object, its name and size."""

    tenant: str
    object_id: str
    name: str
    media_type: str
    size: int
    file_id: int
    encrypted: bool


def servables(db: Session, vault: Vault, access: Access) -> list[Servable]:
    insee = _tenant(db, access.pli.tenant_id).insee
    copies = {
        c.file_id: c
        for c in db.scalars(select(PgpCopy).where(PgpCopy.recipient_id == access.recipient.id))
    }
    out = []
    with column_keys(db, vault.keyring, insee):
        for f in files_of(db, access.pli):
            meta = _meta(f)
            copy = copies.get(f.id)
            if copy is not None:
                out.append(
                    Servable(
                        insee,
                        copy.object_id,
                        meta["name"] + ".gpg",
                        "application/pgp-encrypted",
                        copy.size,
                        f.id,
                        True,
                    )
                )
            elif access.recipient.pgp_fingerprint is None:
                out.append(
                    Servable(insee, f.object_id, meta["name"], meta["type"], f.size, f.id, False)
                )
    return out


def _available(pli: Pli) -> None:
    if pli.status != PliStatus.SENT:
        raise Gone(
            "Les fichiers de ce pli ne sont pas disponibles "
            f"({PliStatus(pli.status).label.lower()})."
        )


def start_download(
    db: Session,
    vault: Vault,
    access: Access,
    file_id: int | None,
    *,
    range_start: int,
    address: str,
    now: datetime,
) -> tuple[int, list[Servable]]:
    """Count a download (of one file, or of all as a zip when `file_id` is None) and
    return its row id and what to stream. Refused past the download limit."""
    _available(access.pli)
    items = servables(db, vault, access)
    if file_id is not None:
        items = [s for s in items if s.file_id == file_id]
        if not items:
            raise NotFound("Fichier introuvable dans ce pli.")
    limit = access.pli.download_limit
    # A zip is a download of each of its files too; ranges count by the bytes they
    # send (limit × size in all), and starts are bounded, so that neither partial
    # ranges nor parallel downloads go past the limit.
    for item in items:
        _within_limit(db, access.recipient.id, item.file_id, item.size, limit)
    if file_id is None:
        _within_limit(db, access.recipient.id, None, None, limit)
    insee = _tenant(db, access.pli.tenant_id).insee
    with column_keys(db, vault.keyring, insee):
        row = Download(
            recipient_id=access.recipient.id,
            file_id=file_id,
            started_at=now,
            range_start=range_start,
            bytes_sent=0,
            encrypted=any(s.encrypted for s in items),
            address=address,
        )
        db.add(row)
        db.flush()
    record(
        db,
        EventType.PLI_DOWNLOAD_STARTED,
        actor=f"recipient:{access.recipient.id}",
        subject=f"pli:{access.pli.id}",
        tenant=insee,
        details={"recipient": access.recipient.id, "file": file_id, "from": range_start},
        now=now,
    )
    return row.id, items


def _within_limit(
    db: Session, recipient_id: int, file_id: int | None, size: int | None, limit: int
) -> None:
    rows = select(Download).where(Download.recipient_id == recipient_id)
    own = rows.where(Download.file_id.is_(None) if file_id is None else Download.file_id == file_id)
    done = db.scalar(
        select(func.count()).select_from(own.where(Download.completed_at.is_not(None)).subquery())
    )
    started = db.scalar(select(func.count()).select_from(own.subquery()))
    served = 0
    if size is not None:
        zips = rows.where(Download.file_id.is_(None), Download.completed_at.is_not(None))
        done = (done or 0) + (db.scalar(select(func.count()).select_from(zips.subquery())) or 0)
        served = (
            db.scalar(
                select(func.coalesce(func.sum(Download.bytes_sent), 0)).where(
                    Download.recipient_id == recipient_id, Download.file_id == file_id
                )
            )
            or 0
        )
    if (done or 0) >= limit or (started or 0) >= 20 * limit or (size and served >= limit * size):
        raise Forbidden(
            f"Nombre de téléchargements atteint ({limit}) : demandez à l'expéditeur de vous "
            "renvoyer le pli."
        )


def finish_download(
    db: Session, download_id: int, *, sent: int, complete: bool, now: datetime
) -> bool:
    """Record how a download ended; when the recipient now has every file, mark the pli
    downloaded and queue the receipt to the sender. Returns that."""
    row = db.get(Download, download_id)
    assert row is not None
    row.bytes_sent = sent
    rcpt = db.get(Recipient, row.recipient_id)
    assert rcpt is not None
    pli = db.get(Pli, rcpt.pli_id)
    assert pli is not None
    insee = _tenant(db, pli.tenant_id).insee
    if not complete or not _covered(db, row):
        return False
    row.completed_at = now
    record(
        db,
        EventType.PLI_DOWNLOADED,
        actor=f"recipient:{rcpt.id}",
        subject=f"pli:{pli.id}",
        tenant=insee,
        details={"recipient": rcpt.id, "file": row.file_id, "bytes": sent},
        now=now,
    )
    if rcpt.downloaded_at is not None:
        return False
    got = set(
        db.scalars(
            select(Download.file_id).where(
                Download.recipient_id == rcpt.id, Download.completed_at.is_not(None)
            )
        )
    )
    wanted = set(db.scalars(select(PliFile.id).where(PliFile.pli_id == pli.id)))
    if None not in got and not wanted <= got:
        return False
    rcpt.downloaded_at = now
    enqueue(
        db,
        RECEIPT_JOB,
        {"recipient": rcpt.id},
        tenant_id=pli.tenant_id,
        actor=f"recipient:{rcpt.id}",
        now=now,
    )
    return True


def _covered(db: Session, row: Download) -> bool:
    """Whether this recipient's downloads of the file, this one and the interrupted
    ones it resumes, together delivered every byte: a Range of the last byte alone
    is no download, and gives no receipt."""
    if row.file_id is None:
        return row.range_start == 0  # a zip is sent whole
    if row.encrypted:
        size = db.scalar(
            select(PgpCopy.size).where(
                PgpCopy.file_id == row.file_id, PgpCopy.recipient_id == row.recipient_id
            )
        )
    else:
        size = db.scalar(select(PliFile.size).where(PliFile.id == row.file_id))
    db.flush()
    spans = sorted(
        (d.range_start, d.range_start + d.bytes_sent)
        for d in db.scalars(
            select(Download).where(
                Download.recipient_id == row.recipient_id,
                Download.file_id == row.file_id,
                Download.encrypted == row.encrypted,
            )
        )
    )
    reach = 0
    for start, end in spans:
        if start > reach:
            break
        reach = max(reach, end)
    return reach >= (size or 0)


# --- the sender's actions ----------------------------------------------------------------


def revoke(db: Session, vault: Vault, pli: Pli, actor: Actor, *, now: datetime) -> list[str]:
    """Withdraw the pli at once: its files' keys are destroyed. Returns the objects
    whose blobs the caller removes after the commit."""
    if pli.status in (PliStatus.REVOKED, PliStatus.EXPIRED, PliStatus.BLOCKED):
        raise Gone("Ce pli n'est déjà plus disponible (ses fichiers sont détruits).")
    pli.status = PliStatus.REVOKED
    pli.revoked_at = now
    record(
        db,
        EventType.PLI_REVOKED,
        actor=str(actor),
        subject=f"pli:{pli.id}",
        tenant=_tenant(db, pli.tenant_id).insee,
        now=now,
    )
    return _shred(db, vault, pli, str(actor), now)


def _shred(db: Session, vault: Vault, pli: Pli, actor: str, now: datetime) -> list[str]:
    insee = _tenant(db, pli.tenant_id).insee
    objects = [f.object_id for f in files_of(db, pli)]
    objects += list(
        db.scalars(
            select(PgpCopy.object_id)
            .join(PliFile, PliFile.id == PgpCopy.file_id)
            .where(PliFile.pli_id == pli.id)
        )
    )
    for object_id in objects:
        with contextlib.suppress(NotFound):  # already shredded
            vault.shred(db, insee, object_id, now=now, actor=actor)
    with column_keys(db, vault.keyring, insee):
        content = json.loads(pli.content)
        content["message"] = ""  # the content goes with the files; the subject stays
        pli.content = json.dumps(content)
        for f in files_of(db, pli):  # names often name people: only their number stays
            meta = _meta(f)
            meta["name"] = f"fichier {f.position + 1} (détruit)"
            f.meta = json.dumps(meta)
        db.flush()
    for rcpt in recipients_of(db, pli):
        rcpt.access_hash = None
        rcpt.code_mac = None
    pli.purged_at = now
    return objects


def purge_expired(db: Session, vault: Vault, *, now: datetime) -> list[str]:
    """Plis past their expiry: keys destroyed, status expired. Returns the objects
    whose blobs go after the commit."""
    gone: list[str] = []
    rows = db.scalars(
        select(Pli).where(Pli.expires_at <= now, Pli.purged_at.is_(None)).limit(200)
    ).all()
    for pli in rows:
        if pli.status != PliStatus.REVOKED:
            pli.status = PliStatus.EXPIRED
        objects = _shred(db, vault, pli, "system:exchange", now)
        gone += objects
        record(
            db,
            EventType.PLI_PURGED,
            actor="system:exchange",
            subject=f"pli:{pli.id}",
            tenant=_tenant(db, pli.tenant_id).insee,
            details={"objects": len(objects)},
            now=now,
        )
    return gone


def unlock(db: Session, pli: Pli, recipient_id: int, actor: Actor, *, now: datetime) -> None:
    rcpt = db.get(Recipient, recipient_id)
    if rcpt is None or rcpt.pli_id != pli.id:
        raise NotFound("Destinataire introuvable.")
    rcpt.locked_at = None
    rcpt.tries = 0
    record(
        db,
        EventType.PLI_UNLOCKED,
        actor=str(actor),
        subject=f"pli:{pli.id}",
        tenant=_tenant(db, pli.tenant_id).insee,
        details={"recipient": rcpt.id},
        now=now,
    )


def due_reminders(db: Session, *, now: datetime, policy: ExchangePolicy) -> list[int]:
    """Recipients to remind: pli sent, expiring within `reminder_days`, not downloaded,
    not reminded yet."""
    return list(
        db.scalars(
            select(Recipient.id)
            .join(Pli, Pli.id == Recipient.pli_id)
            .where(
                Pli.direction == OUTGOING,
                Pli.status == PliStatus.SENT,
                Pli.expires_at > now,
                Pli.expires_at <= now + timedelta(days=policy.reminder_days),
                Recipient.downloaded_at.is_(None),
                Recipient.reminded_at.is_(None),
                Recipient.notified_at.is_not(None),
            )
        )
    )


# --- replies and deposits ---------------------------------------------------------------


def _incoming(
    db: Session,
    vault: Vault,
    tenant: Tenant,
    *,
    to: User,
    owner: str,
    from_name: str,
    from_email: str,
    subject: str,
    message: str,
    files: Sequence[FileInput],
    parent: Pli | None,
    reply_from: Recipient | None,
    deposit: Deposit | None,
    now: datetime,
    policy: ExchangePolicy,
) -> Pli:
    _check_text(subject, message)
    with column_keys(db, vault.keyring, tenant.insee):
        pli = Pli(
            tenant_id=tenant.id,
            direction=INCOMING,
            sender_user_id=None,
            reply_from_id=reply_from.id if reply_from else None,
            deposit_id=deposit.id if deposit else None,
            parent_id=parent.id if parent else None,
            content=json.dumps(
                {
                    "subject": subject.strip(),
                    "message": message,
                    "from_name": from_name,
                    "from_email": from_email,
                }
            ),
            status=PliStatus.PREPARING,
            verification=Verification.EMAIL,
            download_limit=policy.max_download_limit,
            created_at=now,
            expires_at=now + timedelta(days=policy.max_expiry_days),
            source="reply" if reply_from else "deposit",
        )
        db.add(pli)
        db.flush()
        _store_files(db, vault, tenant, owner, pli, files, policy, now)
        _add_recipient(db, pli, to.email, to, None)
        db.flush()
    record(
        db,
        EventType.PLI_CREATED,
        actor=owner,
        subject=f"pli:{pli.id}",
        tenant=tenant.insee,
        details={"files": len(files), "source": pli.source},
        now=now,
    )
    _start(db, pli, owner, now, policy)
    return pli


def reply(
    db: Session,
    vault: Vault,
    access: Access,
    *,
    message: str,
    files: Sequence[FileInput],
    now: datetime,
    policy: ExchangePolicy,
) -> Pli:
    """The recipient answers with files, in the same thread, to the sender."""
    _available(access.pli)
    if access.pli.direction != OUTGOING or access.pli.sender_user_id is None:
        raise Forbidden("On ne répond pas à ce pli.")
    sender = db.get(User, access.pli.sender_user_id)
    assert sender is not None
    tenant = _tenant(db, access.pli.tenant_id)
    with column_keys(db, vault.keyring, tenant.insee):
        subject = json.loads(access.pli.content)["subject"]
        email = access.recipient.email
    return _incoming(
        db,
        vault,
        tenant,
        to=sender,
        owner=f"recipient:{access.recipient.id}",
        from_name="",
        from_email=email,
        subject=f"Re : {subject}"[:MAX_SUBJECT],
        message=message,
        files=files,
        parent=access.pli,
        reply_from=access.recipient,
        deposit=None,
        now=now,
        policy=policy,
    )


def create_deposit(
    db: Session,
    vault: Vault,
    user: User,
    *,
    label: str,
    instructions: str,
    email: str,
    days: int | None,
    uses: int,
    now: datetime,
    policy: ExchangePolicy,
) -> tuple[Deposit, str]:
    """A deposit link for someone without an account; returns it and its token (shown
    once, sent by e-mail when an address is given)."""
    tenant = user.tenant
    if tenant is None:
        raise Forbidden("Seuls les agents d'une commune créent des liens de dépôt.")
    if not label.strip() or len(label) > MAX_SUBJECT or len(instructions) > MAX_MESSAGE:
        raise ValidationFailed(
            "Donnez un intitulé au lien de dépôt (200 caractères au plus).",
            errors=[{"field": "label", "message": "obligatoire"}],
        )
    email = _address(email)
    if email and not valid_address(email):
        raise ValidationFailed(
            "Adresse e-mail invalide.", errors=[{"field": "email", "message": "invalide"}]
        )
    if not 1 <= uses <= 20:
        raise ValidationFailed(
            "Un lien de dépôt sert de 1 à 20 fois.",
            errors=[{"field": "uses", "message": "hors limites"}],
        )
    days = policy.deposit_days if days is None else days
    if not 1 <= days <= policy.max_expiry_days:
        raise ValidationFailed(
            f"Un lien de dépôt vaut de 1 à {policy.max_expiry_days} jours.",
            errors=[{"field": "days", "message": "hors limites"}],
        )
    token = secrets.token_urlsafe(32)
    with column_keys(db, vault.keyring, tenant.insee):
        deposit = Deposit(
            tenant_id=tenant.id,
            created_by_id=user.id,
            token_hash=_digest(token),
            content=json.dumps(
                {"label": label.strip(), "instructions": instructions, "email": email}
            ),
            uses_left=uses,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        db.add(deposit)
        db.flush()
    record(
        db,
        EventType.DEPOSIT_CREATED,
        actor=str(Actor.for_user(user)),
        subject=f"deposit:{deposit.id}",
        tenant=tenant.insee,
        details={"uses": uses, "days": days},
        now=now,
    )
    return deposit, token


def deposit_by_token(db: Session, token: str, *, now: datetime, lock: bool = False) -> Deposit:
    deposit = _by_token(db, Deposit, Deposit.token_hash, token, lock)
    if deposit is None:
        raise NotFound("Ce lien de dépôt n'existe pas.")
    if deposit.revoked_at is not None or deposit.expires_at <= now or deposit.uses_left <= 0:
        raise Gone("Ce lien de dépôt n'est plus valable : demandez-en un nouveau à la mairie.")
    return deposit


def deposit_content(db: Session, vault: Vault, deposit: Deposit) -> dict[str, Any]:
    with column_keys(db, vault.keyring, _tenant(db, deposit.tenant_id).insee):
        content: dict[str, Any] = json.loads(deposit.content)
    tenant = _tenant(db, deposit.tenant_id)
    content.update(commune=tenant.name, expires_at=deposit.expires_at, uses_left=deposit.uses_left)
    return content


def use_deposit(
    db: Session,
    vault: Vault,
    token: str,
    *,
    name: str,
    email: str,
    message: str,
    files: Sequence[FileInput],
    now: datetime,
    policy: ExchangePolicy,
) -> Pli:
    """Someone sends files to the commune through a deposit link."""
    deposit = deposit_by_token(db, token, now=now, lock=True)
    email = _address(email)
    if not valid_address(email):
        raise ValidationFailed(
            "Indiquez votre adresse e-mail, pour que la mairie puisse vous répondre.",
            errors=[{"field": "email", "message": "invalide"}],
        )
    if not name.strip() or len(name) > 120:
        raise ValidationFailed(
            "Indiquez votre nom.", errors=[{"field": "name", "message": "obligatoire"}]
        )
    tenant = _tenant(db, deposit.tenant_id)
    agent = db.get(User, deposit.created_by_id)
    assert agent is not None
    label = deposit_content(db, vault, deposit)["label"]
    deposit.uses_left -= 1
    return _incoming(
        db,
        vault,
        tenant,
        to=agent,
        owner=f"deposit:{deposit.id}",
        from_name=name.strip(),
        from_email=email,
        subject=f"Dépôt : {label}"[:MAX_SUBJECT],
        message=message,
        files=files,
        parent=None,
        reply_from=None,
        deposit=deposit,
        now=now,
        policy=policy,
    )


def list_deposits(db: Session, vault: Vault, user: User) -> list[dict[str, Any]]:
    assert user.tenant_id is not None
    rows = db.scalars(
        select(Deposit).where(Deposit.tenant_id == user.tenant_id).order_by(Deposit.id.desc())
    )
    out = []
    for deposit in rows:
        content = deposit_content(db, vault, deposit)
        content.update(id=deposit.id, revoked_at=deposit.revoked_at, created_at=deposit.created_at)
        out.append(content)
    return out


def revoke_deposit(db: Session, user: User, deposit_id: int, *, now: datetime) -> None:
    deposit = db.get(Deposit, deposit_id)
    if deposit is None or deposit.tenant_id != user.tenant_id:
        raise NotFound("Lien de dépôt introuvable.")
    deposit.revoked_at = now
    record(
        db,
        EventType.DEPOSIT_REVOKED,
        actor=str(Actor.for_user(user)),
        subject=f"deposit:{deposit.id}",
        tenant=_tenant(db, deposit.tenant_id).insee,
        now=now,
    )


# --- OpenPGP keys ---------------------------------------------------------------------------


def register_key(
    db: Session, vault: Vault, user: User, email: str, key: Any, armored: str, *, now: datetime
) -> PgpKey:
    """Register an external recipient's public key (already inspected) for the commune."""
    tenant = user.tenant
    if tenant is None:
        raise Forbidden("Seuls les agents d'une commune enregistrent des clés.")
    email = _address(email)
    if not valid_address(email):
        raise ValidationFailed(
            "Adresse e-mail invalide.", errors=[{"field": "email", "message": "invalide"}]
        )
    index = BlindIndexer(db, vault.keyring, tenant.insee).mac("pgp.email", email.encode())
    with column_keys(db, vault.keyring, tenant.insee):
        row = PgpKey(
            tenant_id=tenant.id,
            email_index=index,
            email=email,
            armored=armored,
            fingerprint=key.fingerprint,
            expires_at=key.expires,
            created_by=str(Actor.for_user(user)),
            created_at=now,
        )
        db.add(row)
        db.flush()
    record(
        db,
        EventType.PGP_KEY_REGISTERED,
        actor=str(Actor.for_user(user)),
        subject=f"pgp-key:{row.id}",
        tenant=tenant.insee,
        details={"key": row.id},
        now=now,
    )
    return row


def list_keys(db: Session, vault: Vault, user: User) -> list[dict[str, Any]]:
    assert user.tenant is not None
    with column_keys(db, vault.keyring, user.tenant.insee):
        return [
            {"id": k.id, "email": k.email, "fingerprint": k.fingerprint, "expires_at": k.expires_at}
            for k in db.scalars(
                select(PgpKey).where(PgpKey.tenant_id == user.tenant_id).order_by(PgpKey.id.desc())
            )
        ]


def staff_can_send(user: User) -> bool:
    return user.tenant_id is not None and user.role_enum in (Role.AGENT, Role.OFFICER, Role.ADMIN)


def iter_object(vault: Vault, db: Session, s: Servable, start: int = 0) -> Iterator[bytes]:
    return vault.reader(db, s.tenant, s.object_id, start=start)
