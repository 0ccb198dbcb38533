"""Resumable uploads written straight into the vault: one object built over several requests
(tus PATCHes), possibly in different processes, interrupted anywhere and resumed at the exact
byte, with the plaintext never on disk and memory bounded by two segments.

This module owns the state an upload carries between requests (:class:`UploadState`, kept
by the caller in its own row), the sealing of the incomplete segment inside that state (the
*tail*), and the rules for writing sealed segments into a *part* blob so that, once
complete, the part is byte for byte an ``SXV1`` object. The format of the tail and the crash
rules are in docs/vault-format.md ("Resumable uploads"). Keys and database rows are the
business of :class:`~securex.vault.store.Vault` (``begin_upload`` and its siblings), which
calls the functions here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, BinaryIO, NamedTuple

from cryptography.exceptions import InvalidTag

from securex.vault.blobs import BlobStore
from securex.vault.errors import IntegrityError
from securex.vault.stream import (
    INFO_PREFIX,
    TAG_SIZE,
    Header,
    SegmentCipher,
    _fill,
    _object_cipher,
    _reader,
    _write_all,
    ciphertext_size,
    read_header,
    segment_count,
)

TAIL_INFO = INFO_PREFIX + b"/upload-tail"
TAIL_NONCE_SIZE = 12
DEFAULT_CHECKPOINT_BYTES = 64 * 1024 * 1024
_OBJECT_ID = re.compile(r"[0-9a-f]{32}")

Checkpoint = Callable[["UploadState"], None]


class UploadTooLong(ValueError):
    """The client sent more bytes than the upload's declared length. Nothing of the chunk
    that went over was written; ``state`` is the durable state reached before it."""

    def __init__(self, state: UploadState) -> None:
        super().__init__("upload longer than its declared length")
        self.state = state


class UploadConflict(ValueError):
    """A resumed upload sent, for a segment that an earlier attempt had already sealed into
    the part (its checkpoint was lost in a crash), different bytes than that attempt.
    Sealing them would use the segment's nonce for a second plaintext, so they are refused:
    abort the upload and start a new one (new object, new key)."""

    def __init__(self) -> None:
        super().__init__("resumed upload differs from the bytes already sealed at this offset")


@dataclass(frozen=True)
class UploadState:
    """What the caller keeps between requests (one row per upload, one column per field, or
    the text of :meth:`to_json`). Every field is a plain ``str``, ``int``, ``bytes`` or
    ``None``. Nothing in it is secret: the data key is wrapped, and the plaintext of the
    incomplete segment (``tail``) is sealed under a key derived from the data key.

    ``offset`` is the number of plaintext bytes accepted (tus's ``Upload-Offset``);
    ``stored`` the number of bytes of the part blob that are durable and belong to this
    state. A state is only ever replaced by a newer one returned by the vault; an older
    one (from an earlier checkpoint) stays valid for resuming from its offset.
    """

    object_id: str
    tenant: str
    length: int
    offset: int
    key_version: int
    wrapped_key: bytes
    header: bytes
    stored: int
    tail: bytes | None

    def __post_init__(self) -> None:
        if not isinstance(self.object_id, str) or not _OBJECT_ID.fullmatch(self.object_id):
            raise ValueError("object_id must be 32 lowercase hex digits")
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ValueError("tenant must be a non-empty string")
        for name in ("length", "offset", "key_version", "stored"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        if self.offset > self.length:
            raise ValueError("offset must not exceed length")
        for name in ("wrapped_key", "header"):
            if not isinstance(getattr(self, name), bytes):
                raise ValueError(f"{name} must be bytes")
        if self.tail is not None and not isinstance(self.tail, bytes):
            raise ValueError("tail must be bytes or None")

    @property
    def complete(self) -> bool:
        return self.offset == self.length

    def to_json(self) -> str:
        """One JSON object; ``bytes`` fields in standard base64."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            out[field.name] = (
                base64.b64encode(value).decode() if isinstance(value, bytes) else value
            )
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> UploadState:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        try:
            raw = json.loads(text)
            tail = raw["tail"]
            return cls(
                object_id=raw["object_id"],
                tenant=raw["tenant"],
                length=raw["length"],
                offset=raw["offset"],
                key_version=raw["key_version"],
                wrapped_key=base64.b64decode(raw["wrapped_key"], validate=True),
                header=base64.b64decode(raw["header"], validate=True),
                stored=raw["stored"],
                tail=None if tail is None else base64.b64decode(tail, validate=True),
            )
        except (KeyError, TypeError) as exc:  # JSON and base64 errors are ValueErrors already
            raise ValueError("not an upload state") from exc


class Appended(NamedTuple):
    """The outcome of one append: the durable state to persist, and the exception that cut
    the chunk stream short (a client disconnect, a socket error), if one did. A pair, so
    ``state, interruption = vault.append_upload(...)`` works too."""

    state: UploadState
    interruption: Exception | None = None

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None


def state_header(state: UploadState) -> Header:
    """The object's header, parsed from the state. The header is authenticated by every
    segment's tag (and the tail's key), so damage surfaces there at the latest."""
    src = io.BytesIO(state.header)
    header = read_header(src)
    if src.tell() != len(state.header):
        raise IntegrityError()
    return header


def begin(
    blobs: BlobStore,
    *,
    tenant: str,
    object_id: str,
    length: int,
    key_version: int,
    wrapped_key: bytes,
    dek: bytes,
    header: Header,
) -> UploadState:
    """Create the part (the header; for an empty object, also its one empty final segment,
    so that every state with ``offset == length`` has a complete object in the part)."""
    ciphertext_size(length, header)  # ValueError past 2**32 segments, before any write
    head = bytearray(header.to_bytes())
    if length == 0:
        cipher = SegmentCipher(dek=dek, header=header, tenant=tenant, object_id=object_id)
        empty = memoryview(bytearray(TAG_SIZE))
        cipher.seal_into(0, True, memoryview(b""), empty)
        head += empty
    blobs.create_part(object_id, bytes(head))
    return UploadState(
        object_id=object_id,
        tenant=tenant,
        length=length,
        offset=0,
        key_version=key_version,
        wrapped_key=wrapped_key,
        header=header.to_bytes(),
        stored=len(head),
        tail=None,
    )


def append(
    blobs: BlobStore,
    state: UploadState,
    chunks: Iterable[bytes],
    *,
    dek: bytes,
    checkpoint: Checkpoint | None = None,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
) -> Appended:
    """See :meth:`Vault.append_upload <securex.vault.store.Vault.append_upload>`."""
    if checkpoint_bytes < 1:
        raise ValueError("checkpoint_bytes must be >= 1")
    return _Appender(blobs, state, dek).run(chunks, checkpoint, checkpoint_bytes)


def finish(blobs: BlobStore, state: UploadState) -> None:
    """Promote a complete part to the object's blob."""
    if not state.complete:
        raise ValueError("upload incomplete: offset is below length")
    header = state_header(state)
    if state.tail is not None or state.stored != ciphertext_size(state.length, header):
        raise IntegrityError()
    blobs.finish_part(state.object_id, state.stored)


# --- internals -----------------------------------------------------------------------------


class _Appender:
    """One append: the part open, the segment being filled in ``plain`` and its sealed form
    in ``sealed`` (the only two buffers, whatever the chunk sizes)."""

    def __init__(self, blobs: BlobStore, state: UploadState, dek: bytes) -> None:
        self.blobs = blobs
        self.state = state
        header = state_header(state)
        self.cipher = SegmentCipher(
            dek=dek, header=header, tenant=state.tenant, object_id=state.object_id
        )
        # The tail's key: the object key's derivation under its own label, so the two keys
        # are independent and the tail's random nonces never meet the segments' nonces.
        self.tail_cipher = _object_cipher(
            dek, header, state.header, state.tenant, state.object_id, TAIL_INFO
        )
        self.seg = header.segment_size
        self.segments = segment_count(state.length, self.seg)
        self.head_size = len(state.header)
        self.plain = memoryview(bytearray(self.seg))
        self.sealed = memoryview(bytearray(self.seg + TAG_SIZE))
        self.offset = state.offset
        # Segments before `index` are sealed in the part; `filled` bytes of segment `index`
        # are in `plain`. Once the last segment is sealed, index == segments.
        self.index = self.segments if state.complete else state.offset // self.seg
        self.filled = 0 if state.complete else state.offset % self.seg
        self.stored = state.stored
        if self.stored != self._stored_at(self.index) or (state.tail is None) != (self.filled == 0):
            raise IntegrityError()  # the state was altered or mixed with another one
        self.written: dict[int, bytes] = {}

    def run(
        self, chunks: Iterable[bytes], checkpoint: Checkpoint | None, checkpoint_bytes: int
    ) -> Appended:
        fh = self.blobs.open_part(self.state.object_id, self.stored)
        try:
            fh.seek(0)
            if fh.read(self.head_size) != self.state.header:
                raise IntegrityError()  # sealing under another header's key: unreadable
            self._scan_leftover(fh)
            self._open_tail()
            interruption: Exception | None = None
            checkpointed = self.offset
            iterator = iter(chunks)
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:  # the client's stream only: our errors propagate
                    interruption = exc
                    break
                view = memoryview(chunk).cast("B")
                if len(view) > self.state.length - self.offset:
                    raise UploadTooLong(self._durable(fh))
                while view:
                    take = min(self._segment_size(self.index) - self.filled, len(view))
                    self.plain[self.filled : self.filled + take] = view[:take]
                    view = view[take:]
                    self.filled += take
                    self.offset += take
                    if self.filled == self._segment_size(self.index):
                        self._seal(fh)
                        if (
                            checkpoint is not None
                            and self.offset - checkpointed >= checkpoint_bytes
                        ):
                            checkpoint(self._durable(fh))
                            checkpointed = self.offset
            return Appended(self._durable(fh), interruption)
        finally:
            fh.close()

    def _segment_size(self, index: int) -> int:
        """Plaintext size of segment ``index``: known in advance because the length is."""
        if index < self.segments - 1:
            return self.seg
        return self.state.length - (self.segments - 1) * self.seg

    def _stored_at(self, index: int) -> int:
        """Part size once the segments before ``index`` are sealed."""
        if index >= self.segments:
            return self.head_size + self.state.length + self.segments * TAG_SIZE
        return self.head_size + index * (self.seg + TAG_SIZE)

    def _scan_leftover(self, fh: BinaryIO) -> None:
        """Remember, by a hash of their plaintext, the segments that an attempt whose
        checkpoint was lost sealed beyond ``stored``. GCM being deterministic, sealing the
        same plaintext again rewrites the same bytes; sealing another one would reuse the
        nonce, which `_seal` refuses. Bytes that do not verify (torn writes, foreign data)
        hold no sealing of ours and are simply overwritten."""
        end = fh.seek(0, io.SEEK_END)
        fh.seek(self.stored)
        readinto = _reader(fh)
        position = self.stored
        for index in range(self.index, self.segments):
            size = self._segment_size(index) + TAG_SIZE
            if position + size > end or _fill(readinto, self.sealed[:size]) < size:
                break
            try:
                n = self.cipher.open_into(
                    index, index == self.segments - 1, self.sealed[:size], self.plain
                )
            except IntegrityError:
                pass
            else:
                self.written[index] = hashlib.sha256(self.plain[:n]).digest()
            position += size
        fh.seek(self.stored)

    def _seal(self, fh: BinaryIO) -> None:
        plain = self.plain[: self.filled]
        earlier = self.written.get(self.index)
        if earlier is not None and hashlib.sha256(plain).digest() != earlier:
            raise UploadConflict()
        n = self.cipher.seal_into(self.index, self.index == self.segments - 1, plain, self.sealed)
        _write_all(fh, self.sealed[:n])
        self.stored += n
        self.index += 1
        self.filled = 0

    def _durable(self, fh: BinaryIO) -> UploadState:
        """Sync the part and describe it, the incomplete segment sealed into the tail."""
        self.blobs.sync_part(fh)
        tail = None
        if self.filled:
            nonce = os.urandom(TAIL_NONCE_SIZE)
            tail = nonce + self.tail_cipher.encrypt(
                nonce, self.plain[: self.filled], self._tail_aad(self.offset)
            )
        state = self.state
        return UploadState(
            object_id=state.object_id,
            tenant=state.tenant,
            length=state.length,
            offset=self.offset,
            key_version=state.key_version,
            wrapped_key=state.wrapped_key,
            header=state.header,
            stored=self.stored,
            tail=tail,
        )

    def _open_tail(self) -> None:
        tail = self.state.tail
        if tail is None:
            return
        n = len(tail) - TAIL_NONCE_SIZE - TAG_SIZE
        if n != self.filled:
            raise IntegrityError()
        out = self.plain[:n]
        try:
            self.tail_cipher.decrypt_into(
                tail[:TAIL_NONCE_SIZE],
                tail[TAIL_NONCE_SIZE:],
                self._tail_aad(self.state.offset),
                out,
            )
        except InvalidTag:
            out[:] = bytes(n)  # OpenSSL wrote the unverified plaintext already
            raise IntegrityError() from None

    def _tail_aad(self, offset: int) -> bytes:
        object_id = self.state.object_id.encode()
        return b"".join(
            (
                TAIL_INFO,
                len(object_id).to_bytes(4, "big"),
                object_id,
                self.state.length.to_bytes(8, "big"),
                offset.to_bytes(8, "big"),
            )
        )
