"""Resumable uploads (tus 1.0: core, creation, termination) written straight into the
vault: each PATCH's bytes are sealed as they arrive, and the offset is committed every
`CHECKPOINT_BYTES` and at the end, so an upload cut at 80 % resumes at 80 %, on any node.

A PATCH holds a lease on its upload (a short transaction sets it, progress renews it):
a second PATCH on the same upload meanwhile gets 423, as tusd answers, and a lease whose
holder died expires after `exchange.upload_lease_seconds` (5 minutes). No transaction
stays open while bytes flow, so a long upload never holds SQLite's write lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from securex.accounts.models import Tenant
from securex.db import reading, transaction
from securex.errors import (
    Conflict,
    Gone,
    InsufficientStorage,
    Locked,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from securex.exchange.models import Upload
from securex.vault import IntegrityError, Vault
from securex.vault.columns import column_keys
from securex.vault.upload import UploadConflict, UploadState, UploadTooLong

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
CHECKPOINT_BYTES = 8 * 2**20
MAX_NAME = 255
# Unfinished or unattached uploads one uploader may have (a deposit link's holder too).
MAX_PENDING = 100
# … and their bytes, in largest files: what a deposit link's holder can fill on disk.
PENDING_FILES = 2
FULL = (
    "Espace de stockage insuffisant sur le serveur : le téléversement est annulé et rien "
    "n'en a été gardé. Recommencez l'envoi du fichier plus tard ; si cela se reproduit, "
    "prévenez l'administrateur de la plateforme."
)


@dataclass(frozen=True)
class UploadView:
    id: str
    length: int
    offset: int
    name: str
    media_type: str
    complete: bool


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64value` pairs (tus 1.0)."""
    values: dict[str, str] = {}
    for pair in (header or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValidationFailed(
                "En-tête Upload-Metadata invalide : chaque valeur doit être en base64 (UTF-8)."
            ) from None
    return values


def clean_name(name: str) -> str:
    """A file name safe to show and to offer in Content-Disposition: no folders, no
    control characters, not empty."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().strip(".")
    return name[:MAX_NAME] or "fichier"


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[\w.+-]{1,127}", re.ASCII)


def clean_media_type(value: str) -> str:
    """A media type fit for a Content-Type header (ASCII `type/subtype`), else the
    generic one: what a client claims is never trusted further than that."""
    value = (value or "").split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


def _view(row: Upload) -> UploadView:
    meta = json.loads(row.meta)
    return UploadView(
        row.id, row.length, row.offset, meta["name"], meta["type"], row.completed_at is not None
    )


def create(
    db: Session,
    vault: Vault,
    tenant: Tenant,
    owner: str,
    *,
    length: int,
    metadata: dict[str, str],
    max_bytes: int,
    ttl: timedelta,
    now: datetime,
) -> UploadView:
    if length < 0:
        raise ValidationFailed("Upload-Length doit être un entier positif.")
    if length > max_bytes:
        raise PayloadTooLarge(
            f"Fichier trop volumineux : {length} octets, au plus {max_bytes} sur cette plateforme."
        )
    pending, pending_bytes = db.execute(
        select(func.count(Upload.id), func.coalesce(func.sum(Upload.length), 0)).where(
            Upload.owner == owner, Upload.used_at.is_(None)
        )
    ).one()
    if pending >= MAX_PENDING or pending_bytes + length > PENDING_FILES * max_bytes:
        raise RateLimited(
            "Trop de téléversements en attente (en nombre ou en taille) : envoyez-les ou "
            "attendez qu'ils expirent avant d'en commencer d'autres."
        )
    name = clean_name(metadata.get("filename") or metadata.get("name") or "")
    media_type = clean_media_type(metadata.get("filetype") or metadata.get("type") or "")
    state = vault.begin_upload(db, tenant.insee, length)
    with column_keys(db, vault.keyring, tenant.insee):
        row = Upload(
            id=state.object_id,
            tenant_id=tenant.id,
            owner=owner,
            meta=json.dumps({"name": name, "type": media_type}),
            length=length,
            offset=0,
            state=state.to_json().encode(),
            created_at=now,
            expires_at=now + ttl,
        )
        db.add(row)
        db.flush()
        return _view(row)


def _row(db: Session, upload_id: str, owner: str, now: datetime) -> Upload:
    row = db.get(Upload, upload_id) if len(upload_id) == 32 else None
    if row is None or not secrets.compare_digest(row.owner, owner):
        raise NotFound("Téléversement introuvable.")
    if row.used_at is not None or (row.completed_at is None and row.expires_at <= now):
        raise Gone("Ce téléversement n'existe plus : recommencez l'envoi du fichier.")
    return row


def status(db: Session, vault: Vault, upload_id: str, owner: str, *, now: datetime) -> UploadView:
    row = _row(db, upload_id, owner, now)
    insee = _insee(db, row)
    with column_keys(db, vault.keyring, insee):
        return _view(row)


def _insee(db: Session, row: Upload) -> str:
    tenant = db.get(Tenant, row.tenant_id)
    assert tenant is not None
    return tenant.insee


def append(
    sessions: sessionmaker[Session],
    vault: Vault,
    upload_id: str,
    owner: str,
    *,
    offset: int,
    chunks: Iterable[bytes],
    clock: Callable[[], datetime],
    lease_for: timedelta,
) -> UploadView:
    """Write the PATCH body at `offset` (which must be the upload's offset: 409
    otherwise). Whatever arrived before a disconnection is kept. The upload is held
    for `lease_for`, renewed at each checkpoint."""
    lease = secrets.token_hex(16)
    with transaction(sessions) as db:
        now = clock()
        row = _row(db, upload_id, owner, now)
        if row.completed_at is not None:
            raise Conflict("Ce fichier est déjà entièrement téléversé.", offset=row.offset)
        if offset != row.offset:
            raise Conflict(
                f"Upload-Offset {offset} ne correspond pas au décalage du serveur "
                f"({row.offset}) : reprenez à {row.offset}.",
                offset=row.offset,
            )
        taken = db.execute(
            update(Upload)
            .where(
                Upload.id == upload_id,
                Upload.offset == offset,  # as read above: nobody wrote in between
                Upload.completed_at.is_(None),
                or_(Upload.lease.is_(None), Upload.lease_until < now),
            )
            .values(lease=lease, lease_until=now + lease_for)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            current = db.scalar(select(Upload.offset).where(Upload.id == upload_id))
            if current != offset:
                raise Conflict(
                    f"Le fichier a avancé entre-temps : reprenez à {current}.", offset=current
                )
            raise Locked(
                "Ce fichier est en cours de téléversement par une autre connexion : "
                "réessayez dans un instant."
            )
        # The state as the lease holder sees it (not as read before taking the lease).
        raw = db.scalar(select(Upload.state).where(Upload.id == upload_id))
        assert raw is not None
        state = UploadState.from_json(raw.decode())
        insee = _insee(db, row)

    def save(new: UploadState, *, final: bool) -> None:
        with transaction(sessions) as db:
            values: dict[str, Any] = {"offset": new.offset, "state": new.to_json().encode()}
            values.update(lease=None, lease_until=None) if final else values.update(
                lease_until=clock() + lease_for
            )
            done = db.execute(
                update(Upload).where(Upload.id == upload_id, Upload.lease == lease).values(**values)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise Locked("Le téléversement a été repris par une autre connexion.")

    def released(chunks: Iterable[bytes]) -> Iterator[bytes]:
        keydb.close()  # the data key is unwrapped: no transaction while bytes flow
        yield from chunks

    def cancel(state: UploadState) -> None:
        """The upload can no longer go on: its row and its part go (not even a
        checkpoint's worth of bytes stays on a full disk)."""
        with transaction(sessions) as db:
            db.execute(delete(Upload).where(Upload.id == upload_id))
        vault.abort_upload(state)

    with sessions() as keydb:
        reading(keydb)
        try:
            appended = vault.append_upload(
                keydb,
                state,
                released(chunks),
                checkpoint=lambda new: save(new, final=False),
                checkpoint_bytes=CHECKPOINT_BYTES,
            )
            state = appended.state
        except UploadTooLong as too_long:
            save(too_long.state, final=True)
            raise PayloadTooLarge(
                "Le corps dépasse la taille annoncée du fichier (Upload-Length) : rien "
                "au-delà n'a été gardé."
            ) from None
        except UploadConflict:
            cancel(state)
            raise Conflict(
                "Les octets renvoyés diffèrent de ceux déjà reçus : le téléversement est "
                "annulé, recommencez l'envoi du fichier."
            ) from None
        except InsufficientStorage:
            cancel(state)
            raise InsufficientStorage(FULL) from None
    save(state, final=True)
    try:
        with transaction(sessions) as db:
            _complete(db, vault, upload_id, state, clock())
            done = db.get(Upload, upload_id)
            assert done is not None
            with column_keys(db, vault.keyring, insee):
                return _view(done)
    except InsufficientStorage:
        cancel(state)
        raise InsufficientStorage(FULL) from None


def _complete(db: Session, vault: Vault, upload_id: str, state: UploadState, now: datetime) -> None:
    """Make a whole upload, held by no PATCH, its vault object, once: the conditional
    UPDATE claims it, so that a PATCH's end and a send finishing the same upload at
    once (two processes) make one object, not two rows of the same id."""
    claimed = db.execute(
        update(Upload)
        .where(
            Upload.id == upload_id,
            Upload.completed_at.is_(None),
            Upload.offset == Upload.length,
            or_(Upload.lease.is_(None), Upload.lease_until <= now),
        )
        .values(completed_at=now)
    )
    if claimed.rowcount == 1:  # type: ignore[attr-defined]
        vault.finish_upload(db, state, now=now)


def terminate(db: Session, vault: Vault, upload_id: str, owner: str, *, now: datetime) -> None:
    row = _row(db, upload_id, owner, now)
    if row.lease is not None and row.lease_until and row.lease_until > now:
        raise Locked("Ce fichier est en cours de téléversement : réessayez dans un instant.")
    state = UploadState.from_json(row.state.decode())
    db.delete(row)
    if row.completed_at is None:
        vault.abort_upload(state)
    else:
        vault.shred(db, _insee(db, row), row.id, now=now, actor=owner)


def take(db: Session, vault: Vault, upload_id: str, owner: str, *, now: datetime) -> Upload:
    """A finished upload, to attach to a pli (once)."""
    row = _row(db, upload_id, owner, now)
    if row.completed_at is None:
        # Every byte may have arrived while the process died between the PATCH's last
        # commit and the one that completes it: the part (or the blob it had already
        # become) holds the whole object, so complete it now.
        try:
            _complete(db, vault, upload_id, UploadState.from_json(row.state.decode()), now)
        except IntegrityError:  # the part is gone (its blob collected meanwhile)
            raise Gone(
                f"Le fichier {upload_id} n'est plus disponible sur le serveur : "
                "téléversez-le de nouveau."
            ) from None
        db.refresh(row)
    if row.completed_at is None:
        raise ValidationFailed(
            f"Le fichier {upload_id} n'est pas entièrement téléversé "
            f"({row.offset} octets sur {row.length}).",
            errors=[{"field": "files", "message": "téléversement incomplet"}],
        )
    row.used_at = now
    # The state holds the file's wrapped key: once the file belongs to a pli, the vault
    # object's row is the only copy, so that shredding it destroys the key.
    row.state = b""
    return row


def expire(db: Session, vault: Vault, *, now: datetime) -> int:
    """Unfinished uploads past their time, and finished ones never attached, go."""
    rows = db.scalars(select(Upload).where(Upload.expires_at <= now, Upload.used_at.is_(None)))
    count = 0
    for row in rows:
        if row.lease is not None and row.lease_until and row.lease_until > now:
            continue
        state = UploadState.from_json(row.state.decode())
        if row.completed_at is None:
            vault.abort_upload(state)
        else:
            vault.shred(db, _insee(db, row), row.id, now=now, actor="system:exchange")
        db.delete(row)
        count += 1
    return count
