"""The vault as the rest of securex sees it: store, read, shred and verify encrypted
objects; export and import standalone encrypted files; collect orphans.

Plain text only ever exists in memory, one segment at a time: `put` encrypts while it
reads, `reader` yields segments whose tag has been checked, `decrypt_file` writes to a
temporary name and renames only once the whole file has verified.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.audit import EventType, record
from securex.errors import NotFound
from securex.vault.blobs import BlobStore
from securex.vault.errors import IntegrityError
from securex.vault.keyring import Keyring
from securex.vault.models import Shred, VaultObject
from securex.vault.stream import (
    decrypt_stream,
    encrypt_stream,
    iter_decrypt,
    new_header,
    read_header,
)

EXPORT_OBJECT_ID = "export"  # standalone files carry their own wrapped key
Progress = Callable[[int], None]


def key_id(tenant: str) -> str:
    return f"tenant:{tenant}"


@dataclass(frozen=True)
class Damaged:
    object_id: str
    tenant: str


class Vault:
    def __init__(self, keyring: Keyring, blobs: BlobStore, ledger: Path) -> None:
        self.keyring = keyring
        self.blobs = blobs
        self.ledger = ledger

    # --- objects -----------------------------------------------------------------

    def put(self, db: Session, tenant: str, src: BinaryIO, *, now: datetime) -> VaultObject:
        """Encrypt `src` into a new object of `tenant`. The row is added to the caller's
        transaction; the blob is complete on disk before the row can be committed."""
        object_id = uuid.uuid4().hex
        version, dek, wrapped = self.keyring.new_data_key(db, tenant, object_id)
        header = new_header(key_id=key_id(tenant), key_version=version)
        with self.blobs.writer(object_id) as fh:
            size = encrypt_stream(
                src, fh, dek=dek, header=header, tenant=tenant, object_id=object_id
            )
            stored = fh.tell()
        obj = VaultObject(
            id=object_id,
            tenant=tenant,
            key_version=version,
            wrapped_key=wrapped,
            size=size,
            stored_size=stored,
            created_at=now,
        )
        db.add(obj)
        db.flush()
        return obj

    def _live(self, db: Session, tenant: str, object_id: str) -> VaultObject:
        obj = db.get(VaultObject, object_id)
        # Another tenant's object answers exactly like a missing one.
        if obj is None or obj.tenant != tenant or obj.wrapped_key is None:
            raise NotFound("Document introuvable.")
        return obj

    def reader(self, db: Session, tenant: str, object_id: str) -> Iterator[bytes]:
        """Verified plaintext, segment by segment; IntegrityError on any damage."""
        obj = self._live(db, tenant, object_id)
        assert obj.wrapped_key is not None and obj.key_version is not None
        dek = self.keyring.open_data_key(db, tenant, obj.id, obj.key_version, obj.wrapped_key)
        return self._segments(obj.id, tenant, dek)

    def _segments(self, object_id: str, tenant: str, dek: bytes) -> Iterator[bytes]:
        with self.blobs.open(object_id) as fh:
            header = read_header(fh)
            if header.key_id != key_id(tenant):
                raise IntegrityError()
            yield from iter_decrypt(fh, dek=dek, header=header, tenant=tenant, object_id=object_id)

    def read_all(self, db: Session, tenant: str, object_id: str) -> bytes:
        """For small objects only (a form, a signature): the whole plaintext in memory."""
        return b"".join(self.reader(db, tenant, object_id))

    def shred(self, db: Session, tenant: str, object_id: str, *, now: datetime, actor: str) -> None:
        """Destroy the object's wrapped key: its ciphertext can never be opened again.
        The ledger line is written before the commit, so a restore replays it."""
        obj = self._live(db, tenant, object_id)
        obj.wrapped_key = None
        obj.key_version = None
        obj.shredded_at = now
        db.add(Shred(object_id=object_id, tenant=tenant, shredded_at=now))
        record(
            db,
            EventType.VAULT_OBJECT_SHREDDED,
            actor=actor,
            subject=f"object:{object_id}",
            tenant=tenant,
            now=now,
        )
        db.flush()
        self._append_ledger({"object": object_id, "tenant": tenant, "at": now.isoformat()})

    def _append_ledger(self, entry: dict[str, str]) -> None:
        self.ledger.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def replay_shreds(self, db: Session, *, now: datetime) -> int:
        """After a restore: shred again every object the ledger file names whose key came
        back with an older database."""
        if not self.ledger.exists():
            return 0
        count = 0
        for line in self.ledger.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            obj = db.get(VaultObject, entry["object"])
            if obj is not None and obj.wrapped_key is not None:
                obj.wrapped_key = None
                obj.key_version = None
                obj.shredded_at = datetime.fromisoformat(entry["at"])
                if db.get(Shred, obj.id) is None:
                    db.add(Shred(object_id=obj.id, tenant=obj.tenant, shredded_at=obj.shredded_at))
                count += 1
        db.flush()
        return count

    # --- maintenance -------------------------------------------------------------

    def verify(
        self, db: Session, progress: Progress | None = None, batch: int = 1000
    ) -> list[Damaged]:
        """Decrypt every live object (discarding the plaintext); list those that fail.
        Keys are read a batch at a time, then the session's transaction is ended before
        decrypting, so a long check never holds the database (SQLite's write lock)."""
        damaged: list[Damaged] = []
        after = ""
        while True:
            rows = db.execute(
                select(
                    VaultObject.id,
                    VaultObject.tenant,
                    VaultObject.stored_size,
                    VaultObject.key_version,
                    VaultObject.wrapped_key,
                )
                .where(VaultObject.wrapped_key.is_not(None), VaultObject.id > after)
                .order_by(VaultObject.id)
                .limit(batch)
            ).all()
            if not rows:
                db.rollback()
                return damaged
            keys: list[tuple[str, str, int, bytes | None]] = []
            for object_id, tenant, stored, version, wrapped in rows:
                dek: bytes | None = None
                if version is not None and wrapped is not None:
                    with contextlib.suppress(IntegrityError):
                        dek = self.keyring.open_data_key(db, tenant, object_id, version, wrapped)
                keys.append((object_id, tenant, stored, dek))
            db.rollback()
            for object_id, tenant, stored, dek in keys:
                try:
                    if dek is None:
                        raise IntegrityError()
                    for _ in self._segments(object_id, tenant, dek):
                        pass
                except IntegrityError:
                    damaged.append(Damaged(object_id, tenant))
                if progress:
                    progress(stored)
            after = rows[-1][0]

    def gc(self, db: Session, *, grace_seconds: float = 3600) -> tuple[int, int]:
        """Remove blobs that no live row references (crashes between the blob and the
        commit, shredded objects) and stale temporary files. Returns (blobs, temps)."""
        import time

        live = set(db.scalars(select(VaultObject.id).where(VaultObject.wrapped_key.is_not(None))))
        limit = time.time() - grace_seconds
        removed = 0
        for name, mtime in list(self.blobs.names()):
            if name not in live and mtime < limit:
                self.blobs.delete(name)
                removed += 1
        return removed, self.blobs.collect_temporaries(grace_seconds)

    # --- standalone files ----------------------------------------------------------

    def encrypt_file(self, db: Session, tenant: str, src: BinaryIO, dst: BinaryIO) -> int:
        """An export file: the format with the wrapped data key in its header, readable
        later by `decrypt_file` with the tenant's key."""
        version, dek, wrapped = self.keyring.new_data_key(db, tenant, EXPORT_OBJECT_ID)
        header = new_header(key_id=key_id(tenant), key_version=version, wrapped_key=wrapped)
        return encrypt_stream(
            src, dst, dek=dek, header=header, tenant=tenant, object_id=EXPORT_OBJECT_ID
        )

    def decrypt_file(self, db: Session, tenant: str, src: BinaryIO, out: Path) -> int:
        """Decrypt an export file into `out`, which appears only if everything verified."""
        header = read_header(src)
        if header.key_id != key_id(tenant) or header.wrapped_key is None:
            raise IntegrityError()
        dek = self.keyring.open_data_key(
            db, tenant, EXPORT_OBJECT_ID, header.key_version, header.wrapped_key
        )
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
        try:
            with open(tmp, "xb") as fh:
                size = decrypt_stream(
                    src, fh, dek=dek, header=header, tenant=tenant, object_id=EXPORT_OBJECT_ID
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)  # whatever was written before a failure goes
        return size
