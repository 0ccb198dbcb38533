"""The vault's streaming object format (``SXV1``): a header, then the plaintext cut into
segments, each sealed with AES-256-GCM under a key derived for this one object.

This module owns the byte layout, the key derivation and the segmentation rules specified in
``docs/vault-format.md``; it does no I/O beyond the file objects it is given and knows nothing
of keys' storage. Design follows age's STREAM and Tink's streaming AEAD: the nonce carries
the segment counter and a "last segment" flag, so truncation, reordering, duplication and
splicing all surface as a failed tag. Every way a stream can be wrong raises the one opaque
:class:`~securex.vault.errors.IntegrityError`; no plaintext leaves a segment before its
tag has been checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securex.vault.errors import IntegrityError

MAGIC = b"SXV1"
VERSION = 1
FLAG_WRAPPED_KEY = 0x01
TAG_SIZE = 16
DEK_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
MIN_SEGMENT_SIZE = 4 * 1024
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
# 1 MiB: AES-GCM throughput is flat from 256 KiB up (the per-call and per-segment costs are
# amortised), while memory per open stream (two buffers) stays small. See the format doc.
DEFAULT_SEGMENT_SIZE = 1024 * 1024
MAX_KEY_ID_SIZE = 64
MAX_WRAPPED_KEY_SIZE = 1024
MAX_KEY_VERSION = 2**32 - 1
INFO_PREFIX = b"securex/vault/v1"

# The counter is 32 bits wide: a 2**32-th segment would reuse nonce 0. A module constant so
# that tests can lower it; never change it otherwise.
_MAX_SEGMENTS = 2**32

# magic(4) version(1) flags(1) segment_size(4) key_version(4) key_id_len(1)
_FIXED_SIZE = 15

_Reader = Callable[[memoryview], int]


@dataclass(frozen=True)
class Header:
    """The clear header of an object. Construction validates every field (``ValueError``)."""

    key_id: str
    key_version: int
    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    wrapped_key: bytes | None

    def __post_init__(self) -> None:
        key_id = self.key_id.encode("utf-8")  # UnicodeEncodeError is a ValueError
        if not 1 <= len(key_id) <= MAX_KEY_ID_SIZE:
            raise ValueError(f"key_id must be 1..{MAX_KEY_ID_SIZE} bytes of UTF-8")
        if not 0 <= self.key_version <= MAX_KEY_VERSION:
            raise ValueError("key_version must fit in 32 bits")
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes")
        if not isinstance(self.salt, bytes) or len(self.salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes")
        if not isinstance(self.nonce_prefix, bytes) or len(self.nonce_prefix) != NONCE_PREFIX_SIZE:
            raise ValueError(f"nonce_prefix must be {NONCE_PREFIX_SIZE} bytes")
        if self.wrapped_key is not None and (
            not isinstance(self.wrapped_key, bytes)
            or not 1 <= len(self.wrapped_key) <= MAX_WRAPPED_KEY_SIZE
        ):
            raise ValueError(f"wrapped_key must be 1..{MAX_WRAPPED_KEY_SIZE} bytes")

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("utf-8")
        flags = 0 if self.wrapped_key is None else FLAG_WRAPPED_KEY
        out = b"".join(
            (
                MAGIC,
                bytes((VERSION, flags)),
                self.segment_size.to_bytes(4, "big"),
                self.key_version.to_bytes(4, "big"),
                bytes((len(key_id),)),
                key_id,
                self.salt,
                self.nonce_prefix,
            )
        )
        if self.wrapped_key is not None:
            out += len(self.wrapped_key).to_bytes(2, "big") + self.wrapped_key
        return out


def new_header(
    *,
    key_id: str,
    key_version: int,
    wrapped_key: bytes | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> Header:
    """A header with a fresh random salt and nonce prefix: one per object, never reused."""
    return Header(
        key_id=key_id,
        key_version=key_version,
        segment_size=segment_size,
        salt=os.urandom(SALT_SIZE),
        nonce_prefix=os.urandom(NONCE_PREFIX_SIZE),
        wrapped_key=wrapped_key,
    )


def read_header(src: BinaryIO) -> Header:
    """Read exactly the header's bytes from ``src`` and parse them.

    Nothing in the header is authenticated yet (that happens with the first segment's tag);
    a header that cannot even be parsed is an :class:`IntegrityError` all the same.
    """
    fixed = _read_exact(src, _FIXED_SIZE)
    if fixed[:4] != MAGIC or fixed[4] != VERSION or fixed[5] & ~FLAG_WRAPPED_KEY:
        raise IntegrityError() from None
    key_id_len = fixed[14]
    rest = _read_exact(src, key_id_len + SALT_SIZE + NONCE_PREFIX_SIZE)
    wrapped_key = None
    if fixed[5] & FLAG_WRAPPED_KEY:
        wrapped_len = int.from_bytes(_read_exact(src, 2), "big")
        wrapped_key = _read_exact(src, wrapped_len)
    try:
        return Header(
            key_id=rest[:key_id_len].decode("utf-8"),
            key_version=int.from_bytes(fixed[10:14], "big"),
            segment_size=int.from_bytes(fixed[6:10], "big"),
            salt=rest[key_id_len : key_id_len + SALT_SIZE],
            nonce_prefix=rest[key_id_len + SALT_SIZE :],
            wrapped_key=wrapped_key,
        )
    except ValueError:  # out-of-range field or invalid UTF-8
        raise IntegrityError() from None


class SegmentCipher:
    """Seal and open single segments of one object, for writers that receive the plaintext
    in pieces over time (resumable uploads) rather than as one source for
    :func:`encrypt_stream`. The caller states each segment's index and whether it is the
    last: this class applies the nonce rule, not the segmentation rule, so the caller must
    follow the latter (full segments, then one final segment) for the result to be a valid
    object. Sealing the same index twice with different plaintext reuses a GCM nonce: a
    caller that may seal again after a crash must make sure the plaintext is the same.
    """

    def __init__(self, *, dek: bytes, header: Header, tenant: str, object_id: str) -> None:
        self.header = header
        self._header_bytes = header.to_bytes()
        self._aead = _object_cipher(dek, header, self._header_bytes, tenant, object_id)

    def seal_into(self, index: int, last: bool, plain: memoryview, out: memoryview) -> int:
        """Seal ``plain`` as segment ``index`` into ``out`` (at least ``len(plain) + 16``
        bytes); return the sealed size."""
        if not 0 <= index < _MAX_SEGMENTS:
            raise ValueError("plaintext too long for this segment size (2**32 segments)")
        if len(plain) > self.header.segment_size:
            raise ValueError("segment longer than segment_size")
        n = len(plain) + TAG_SIZE
        return self._aead.encrypt_into(
            _nonce(self.header.nonce_prefix, index, last), plain, self._header_bytes, out[:n]
        )

    def open_into(self, index: int, last: bool, sealed: memoryview, out: memoryview) -> int:
        """Verify and decrypt ``sealed`` as segment ``index`` into ``out``; return the
        plaintext size. :class:`IntegrityError` if it is not that segment of this object."""
        if len(sealed) < TAG_SIZE or not 0 <= index < _MAX_SEGMENTS:
            raise IntegrityError() from None
        n = len(sealed) - TAG_SIZE
        target = out[:n]
        try:
            self._aead.decrypt_into(
                _nonce(self.header.nonce_prefix, index, last), sealed, self._header_bytes, target
            )
        except InvalidTag:
            # OpenSSL has already written the unverified plaintext into the buffer.
            target[:] = bytes(n)
            raise IntegrityError() from None
        return n


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, *, dek: bytes, header: Header, tenant: str, object_id: str
) -> int:
    """Write ``header`` and then ``src``'s content, sealed, to ``dst``; return the number of
    plaintext bytes. Reads and writes one segment at a time, whatever the size.

    ``header`` comes from :func:`new_header` and serves one encryption only: its salt and
    nonce prefix are what make the object's key and nonces unique. ``dst.write`` is handed a
    view of a reused buffer and must copy it, as every file object does.
    """
    cipher = SegmentCipher(dek=dek, header=header, tenant=tenant, object_id=object_id)
    seg = header.segment_size
    plain = memoryview(bytearray(seg))
    sealed = memoryview(bytearray(seg + TAG_SIZE))
    readinto = _reader(src)
    _write_all(dst, header.to_bytes())
    total = 0
    index = 0
    filled = _fill(readinto, plain)
    while True:
        # A full segment is the last one only if the source ends right after it (age's rule:
        # no empty trailing segment), so peek one byte to know.
        lookahead = src.read(1) if filled == seg else b""
        last = not lookahead
        n = cipher.seal_into(index, last, plain[:filled], sealed)
        _write_all(dst, sealed[:n])
        total += filled
        if last:
            return total
        index += 1
        plain[0] = lookahead[0]
        filled = 1 + _fill(readinto, plain[1:])


class StreamWriter:
    """The push counterpart of :func:`encrypt_stream`, for producers that hand over the
    plaintext piece by piece (a tar archive being written): ``write`` seals every full
    segment once more data follows it, ``close`` seals the last one (possibly full, never
    an empty one after full ones). Writes the header first. Not thread-safe."""

    def __init__(
        self, dst: BinaryIO, *, dek: bytes, header: Header, tenant: str, object_id: str
    ) -> None:
        self._cipher = SegmentCipher(dek=dek, header=header, tenant=tenant, object_id=object_id)
        self._dst = dst
        self._seg = header.segment_size
        self._buf = bytearray()
        self._sealed = memoryview(bytearray(self._seg + TAG_SIZE))
        self._index = 0
        self.closed = False
        self.size = 0  # plaintext bytes written so far
        _write_all(dst, header.to_bytes())

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed StreamWriter")
        self._buf += data
        self.size += len(data)
        # A full segment stays until more data shows it is not the last one.
        while len(self._buf) > self._seg:
            self._seal(bytes(self._buf[: self._seg]), last=False)
            del self._buf[: self._seg]
        return len(data)

    def _seal(self, plain: bytes, *, last: bool) -> None:
        n = self._cipher.seal_into(self._index, last, memoryview(plain), self._sealed)
        _write_all(self._dst, self._sealed[:n])
        self._index += 1

    def close(self) -> None:
        """Seal the final segment. The destination is left open (the caller's)."""
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
            self.closed = True


def iter_decrypt(
    src: BinaryIO,
    *,
    dek: bytes,
    header: Header,
    tenant: str,
    object_id: str,
    first_segment: int = 0,
) -> Iterator[bytes]:
    """Yield the plaintext segment by segment, each only after its tag has been checked.

    ``src`` is positioned just after the header (see :func:`read_header`), or, to start
    further in, at ``segment_offset(header, first_segment)``: segments are numbered from
    ``first_segment`` and the last one is still the one followed by end of input, so the
    final flag is checked exactly as in a whole read. Raises :class:`IntegrityError` on the
    first segment that fails, having yielded nothing of it; a consumer must treat what it
    already received as void when that happens.
    """
    if first_segment < 0:
        raise ValueError("first_segment must be >= 0")
    header_bytes = header.to_bytes()
    aead = _object_cipher(dek, header, header_bytes, tenant, object_id)
    return _iter_decrypt(src, aead, header, header_bytes, first_segment)


def _iter_decrypt(
    src: BinaryIO, aead: AESGCM, header: Header, header_bytes: bytes, first: int
) -> Iterator[bytes]:
    for index, sealed, last in _sealed_segments(src, header, first):
        try:
            plain = aead.decrypt(_nonce(header.nonce_prefix, index, last), sealed, header_bytes)
        except InvalidTag:
            raise IntegrityError() from None
        yield plain


def decrypt_stream(
    src: BinaryIO, dst: BinaryIO, *, dek: bytes, header: Header, tenant: str, object_id: str
) -> int:
    """Write the verified plaintext of ``src`` (positioned after the header) to ``dst``; return
    its size. On :class:`IntegrityError`, ``dst`` holds a prefix of verified segments only and
    the caller must discard it."""
    cipher = SegmentCipher(dek=dek, header=header, tenant=tenant, object_id=object_id)
    plain = memoryview(bytearray(header.segment_size))
    total = 0
    for index, sealed, last in _sealed_segments(src, header):
        n = cipher.open_into(index, last, sealed, plain)
        _write_all(dst, plain[:n])
        total += n
    return total


def segment_count(plaintext_size: int, segment_size: int) -> int:
    """Number of segments of a plaintext: at least one (an empty plaintext has one empty
    segment), never an empty one after full ones."""
    if plaintext_size < 0:
        raise ValueError("plaintext_size must be >= 0")
    segments = max(1, -(-plaintext_size // segment_size))
    if segments > _MAX_SEGMENTS:
        raise ValueError("plaintext too long for this segment size (2**32 segments)")
    return segments


def segment_offset(header: Header, index: int) -> int:
    """Where sealed segment ``index`` starts in the file: every segment before it is full."""
    if index < 0:
        raise ValueError("index must be >= 0")
    return len(header.to_bytes()) + index * (header.segment_size + TAG_SIZE)


def ciphertext_size(plaintext_size: int, header: Header) -> int:
    """Size of the whole file (header included) for ``plaintext_size`` bytes of plaintext."""
    segments = segment_count(plaintext_size, header.segment_size)
    return len(header.to_bytes()) + plaintext_size + segments * TAG_SIZE


# --- internals -----------------------------------------------------------------------------


def _object_cipher(
    dek: bytes,
    header: Header,
    header_bytes: bytes,
    tenant: str,
    object_id: str,
    label: bytes = INFO_PREFIX,
) -> AESGCM:
    """The object key K of the format; with another ``label``, an independent key bound to
    the same object (the upload tail's, ``securex.vault.upload``)."""
    if not isinstance(dek, bytes) or len(dek) != DEK_SIZE:
        raise ValueError(f"dek must be {DEK_SIZE} bytes")
    tenant_b = tenant.encode("utf-8")
    object_b = object_id.encode("utf-8")
    info = b"".join(
        (
            label,
            len(tenant_b).to_bytes(4, "big"),
            tenant_b,
            len(object_b).to_bytes(4, "big"),
            object_b,
            hashlib.sha256(header_bytes).digest(),
        )
    )
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt, info=info).derive(dek)
    return AESGCM(key)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _sealed_segments(
    src: BinaryIO, header: Header, first: int = 0
) -> Iterator[tuple[int, memoryview, bool]]:
    """Cut ``src`` into sealed segments: (index, view, is_last), numbered from ``first``. The
    view is only valid until the next iteration (one buffer, reused). The last segment is the
    one followed by end of input, so trailing data makes a segment non-final and its tag
    fail."""
    size = header.segment_size + TAG_SIZE
    sealed = memoryview(bytearray(size))
    readinto = _reader(src)
    index = first
    filled = _fill(readinto, sealed)
    while True:
        lookahead = src.read(1) if filled == size else b""
        last = not lookahead
        if filled < TAG_SIZE or index >= _MAX_SEGMENTS:
            raise IntegrityError() from None
        if last and filled == TAG_SIZE and index > 0:
            # An empty segment is only the encoding of an empty plaintext.
            raise IntegrityError() from None
        yield index, sealed[:filled], last
        if last:
            return
        index += 1
        sealed[0] = lookahead[0]
        filled = 1 + _fill(readinto, sealed[1:])


def _reader(src: BinaryIO) -> _Reader:
    readinto: _Reader | None = getattr(src, "readinto", None)
    if readinto is not None:
        return readinto

    def read_copy(view: memoryview) -> int:
        data = src.read(len(view))
        view[: len(data)] = data
        return len(data)

    return read_copy


def _fill(readinto: _Reader, view: memoryview) -> int:
    """Read until ``view`` is full or the input ends (pipes and sockets return short reads)."""
    filled = 0
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    while len(data) < size:
        more = src.read(size - len(data))
        if not more:
            raise IntegrityError() from None
        data += more
    return data


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    # Buffered file objects write everything; a raw one may write less and say so.
    view = memoryview(data)
    while view:
        n = dst.write(view)
        if n is None or n >= len(view):
            return
        view = view[n:]
