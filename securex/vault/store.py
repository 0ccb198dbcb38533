"""The vault as the rest of securex sees it: store, read, shred and verify encrypted
objects; export and import standalone encrypted files; collect orphans.

Plain text only ever exists in memory, one segment at a time: `put` encrypts while it
reads, `reader` yields segments whose tag has been checked (from any offset, jumping to
its segment), `decrypt_file` writes to a temporary name and renames only once the whole
file has verified, and resumable uploads (`begin_upload` … `finish_upload`) seal each
segment as its last byte arrives and keep the incomplete one sealed between requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.audit import EventType, record
from securex.errors import NotFound
from securex.vault import upload
from securex.vault.blobs import BlobStore, space_errors
from securex.vault.errors import IntegrityError
from securex.vault.keyring import Keyring
from securex.vault.models import Shred, VaultObject
from securex.vault.stream import (
    DEFAULT_SEGMENT_SIZE,
    decrypt_stream,
    encrypt_stream,
    iter_decrypt,
    new_header,
    read_header,
    segment_count,
    segment_offset,
)
from securex.vault.upload import (
    DEFAULT_CHECKPOINT_BYTES,
    Appended,
    Checkpoint,
    UploadState,
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

    def put(
        self,
        db: Session,
        tenant: str,
        src: BinaryIO,
        *,
        now: datetime,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> VaultObject:
        """Encrypt `src` into a new object of `tenant`. The row is added to the caller's
        transaction; the blob is complete on disk before the row can be committed."""
        obj = self.write(db, tenant, src, now=now, segment_size=segment_size)
        db.add(obj)
        db.flush()
        return obj

    def write(
        self,
        db: Session,
        tenant: str,
        src: BinaryIO,
        *,
        now: datetime,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> VaultObject:
        """The blob of a new object and its row, not added to any session: `db` only
        reads the tenant's key, so a long source (a file being encrypted elsewhere)
        holds no write transaction; the caller adds the row in a short one. Until
        then the blob is an orphan that `gc` removes after its grace period."""
        object_id = uuid.uuid4().hex
        version, dek, wrapped = self.keyring.new_data_key(db, tenant, object_id)
        header = new_header(key_id=key_id(tenant), key_version=version, segment_size=segment_size)
        with space_errors(), self.blobs.writer(object_id) as fh:
            size = encrypt_stream(
                src, fh, dek=dek, header=header, tenant=tenant, object_id=object_id
            )
            stored = fh.tell()
        return VaultObject(
            id=object_id,
            tenant=tenant,
            key_version=version,
            wrapped_key=wrapped,
            size=size,
            stored_size=stored,
            created_at=now,
        )

    def _live(self, db: Session, tenant: str, object_id: str) -> VaultObject:
        obj = db.get(VaultObject, object_id)
        # Another tenant's object answers exactly like a missing one.
        if obj is None or obj.tenant != tenant or obj.wrapped_key is None:
            raise NotFound("Document introuvable.")
        return obj

    def reader(self, db: Session, tenant: str, object_id: str, start: int = 0) -> Iterator[bytes]:
        """Verified plaintext from byte `start` (0 ≤ start ≤ size, else ValueError) to the
        end, segment by segment; IntegrityError on any damage in what is read. A range read
        jumps to the segment holding `start`: segments before it are neither read nor
        checked, those after it are, up to the end of the object and its final flag."""
        obj = self._live(db, tenant, object_id)
        if not 0 <= start <= obj.size:
            raise ValueError(f"start must be within 0..{obj.size}")
        assert obj.wrapped_key is not None and obj.key_version is not None
        dek = self.keyring.open_data_key(db, tenant, obj.id, obj.key_version, obj.wrapped_key)
        return self._segments(obj.id, tenant, dek, start, obj.size)

    def _segments(
        self, object_id: str, tenant: str, dek: bytes, start: int = 0, size: int = 0
    ) -> Iterator[bytes]:
        with self.blobs.open(object_id) as fh:
            header = read_header(fh)
            if header.key_id != key_id(tenant):
                raise IntegrityError()
            if not start:
                yield from iter_decrypt(
                    fh, dek=dek, header=header, tenant=tenant, object_id=object_id
                )
                return
            seg = header.segment_size
            # start == size still reads (and checks) the final segment, then yields nothing.
            first = min(start // seg, segment_count(size, seg) - 1)
            skip = start - first * seg
            fh.seek(segment_offset(header, first))
            for plain in iter_decrypt(
                fh, dek=dek, header=header, tenant=tenant, object_id=object_id, first_segment=first
            ):
                if skip:
                    plain, skip = plain[skip:], 0
                if plain:
                    yield plain

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

    # --- resumable uploads -------------------------------------------------------

    def begin_upload(
        self, db: Session, tenant: str, length: int, *, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> UploadState:
        """Start an object of `length` plaintext bytes that will arrive over several
        requests: a new object id and data key, the header written (and synced) into a new
        part blob. Nothing is added to `db` (used only to wrap the key); the caller keeps
        the returned state in its own row."""
        if length < 0:
            raise ValueError("length must be >= 0")
        object_id = uuid.uuid4().hex
        version, dek, wrapped = self.keyring.new_data_key(db, tenant, object_id)
        header = new_header(key_id=key_id(tenant), key_version=version, segment_size=segment_size)
        with space_errors():
            return upload.begin(
                self.blobs,
                tenant=tenant,
                object_id=object_id,
                length=length,
                key_version=version,
                wrapped_key=wrapped,
                dek=dek,
                header=header,
            )

    def append_upload(
        self,
        db: Session,
        state: UploadState,
        chunks: Iterable[bytes],
        *,
        checkpoint: Checkpoint | None = None,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    ) -> Appended:
        """Add `chunks` (any sizes) at `state.offset`. Each segment is sealed and written to
        the part as soon as its last byte arrives; at the first segment boundary after every
        `checkpoint_bytes` of progress, the part is synced and `checkpoint(state)` called so
        the caller can commit that offset. When `chunks` ends, or raises (a client gone:
        any Exception from the iterator, returned in `Appended.interruption`, never
        raised), the incomplete segment is sealed into the state's tail, the part synced,
        and the state returned: commit it.

        Raises UploadTooLong (with `.state`, durable) for a chunk that would go past
        `length`, writing none of it; UploadConflict if, after a crash, the client sends
        other bytes than those an earlier attempt sealed; IntegrityError if the state or
        the part was damaged; InsufficientStorage on a full disk (the part is left as it
        is: abort the upload to free it). `db` serves only to unwrap the data key, before the first
        chunk is read. Appends to one upload must not run concurrently (lock its row)."""
        header = upload.state_header(state)
        if header.key_id != key_id(state.tenant):
            raise IntegrityError()
        dek = self.keyring.open_data_key(
            db, state.tenant, state.object_id, state.key_version, state.wrapped_key
        )
        with space_errors():
            return upload.append(
                self.blobs,
                state,
                chunks,
                dek=dek,
                checkpoint=checkpoint,
                checkpoint_bytes=checkpoint_bytes,
            )

    def finish_upload(self, db: Session, state: UploadState, *, now: datetime) -> VaultObject:
        """Make a complete upload (offset == length, else ValueError) an object: the part
        becomes its blob, and its row is added to the caller's transaction. If that
        transaction fails, calling this again with the same state succeeds (the blob stays
        until then, like any uncommitted blob, for `gc`'s grace period)."""
        if not state.complete:
            raise ValueError("upload incomplete: offset is below length")
        if upload.state_header(state).key_id != key_id(state.tenant):
            raise IntegrityError()
        # Only a key genuinely wrapped for this object may make it live.
        dek = self.keyring.open_data_key(
            db, state.tenant, state.object_id, state.key_version, state.wrapped_key
        )
        # The commune's key may have been rotated since the upload began: the object
        # is born under the current version, as the rotation would have left it.
        version, wrapped = state.key_version, state.wrapped_key
        if version != self.keyring.current_version(db, state.tenant):
            version, wrapped = self.keyring.wrap_data_key(db, state.tenant, state.object_id, dek)
        with space_errors():
            upload.finish(self.blobs, state)
        obj = VaultObject(
            id=state.object_id,
            tenant=state.tenant,
            key_version=version,
            wrapped_key=wrapped,
            size=state.length,
            stored_size=state.stored,
            created_at=now,
        )
        db.add(obj)
        db.flush()
        return obj

    def abort_upload(self, state: UploadState) -> None:
        """Forget an upload: its part is deleted (idempotent)."""
        self.blobs.delete_part(state.object_id)

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

    def gc_uploads(self, *, grace_seconds: float = 7 * 24 * 3600) -> int:
        """Remove the parts of uploads not written to for `grace_seconds` (abandoned by
        their clients); return how many. Kept apart from `gc`, whose short grace would
        take a paused upload for debris: choose a grace longer than the uploads' expiry,
        after which the caller refuses to resume them anyway."""
        return self.blobs.collect_parts(grace_seconds)

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
