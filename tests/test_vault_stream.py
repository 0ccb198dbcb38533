"""The vault's streaming format (``SXV1``): round trips at every boundary, conformance to
docs/vault-format.md (an independent encoder and the published vectors), and every way of
tampering with a file, each answered by the same opaque IntegrityError."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from securex.vault import stream
from securex.vault.errors import IntegrityError
from securex.vault.stream import (
    DEFAULT_SEGMENT_SIZE,
    TAG_SIZE,
    Header,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    iter_decrypt,
    new_header,
    read_header,
)

SEG = 4096
DEK = bytes(range(32))
OTHER_DEK = bytes(range(1, 33))
TENANT = "40192"
OBJECT = "acte:2026-000123"
OPAQUE = IntegrityError().detail
DOC = Path(__file__).resolve().parent.parent / "docs" / "vault-format.md"


def data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - reproducible test data, not keys


def header(segment_size: int = SEG, wrapped_key: bytes | None = None) -> Header:
    return new_header(
        key_id="tenant:40192", key_version=1, segment_size=segment_size, wrapped_key=wrapped_key
    )


def seal(
    plaintext: bytes,
    hdr: Header | None = None,
    *,
    dek: bytes = DEK,
    tenant: str = TENANT,
    object_id: str = OBJECT,
) -> bytes:
    out = io.BytesIO()
    n = encrypt_stream(
        io.BytesIO(plaintext),
        out,
        dek=dek,
        header=hdr or header(),
        tenant=tenant,
        object_id=object_id,
    )
    assert n == len(plaintext)
    return out.getvalue()


def unseal(
    blob: bytes, *, dek: bytes = DEK, tenant: str = TENANT, object_id: str = OBJECT
) -> bytes:
    """Both decryption paths, which must agree."""
    src = io.BytesIO(blob)
    hdr = read_header(src)
    out = io.BytesIO()
    n = decrypt_stream(src, out, dek=dek, header=hdr, tenant=tenant, object_id=object_id)
    src = io.BytesIO(blob)
    hdr = read_header(src)
    chunks = list(iter_decrypt(src, dek=dek, header=hdr, tenant=tenant, object_id=object_id))
    assert b"".join(chunks) == out.getvalue()
    assert n == len(out.getvalue())
    return out.getvalue()


def assert_rejected(blob: bytes, **kwargs: Any) -> None:
    """Both paths refuse, with the one opaque message and no chained cause."""
    for path in ("stream", "iter"):
        with pytest.raises(IntegrityError) as info:
            src = io.BytesIO(blob)
            hdr = read_header(src)
            common: dict[str, Any] = {
                "dek": DEK,
                "tenant": TENANT,
                "object_id": OBJECT,
                "header": hdr,
            } | kwargs
            if path == "stream":
                decrypt_stream(src, io.BytesIO(), **common)
            else:
                for _ in iter_decrypt(src, **common):
                    pass
        assert str(info.value) == OPAQUE
        assert info.value.detail == OPAQUE
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__


def segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a file into its header and sealed segments."""
    src = io.BytesIO(blob)
    hdr = read_header(src)
    size = hdr.segment_size + TAG_SIZE
    body = blob[src.tell() :]
    return blob[: src.tell()], [body[i : i + size] for i in range(0, len(body), size)]


# --- an independent encoder, written from docs/vault-format.md ------------------------------


def object_key(dek: bytes, header_bytes: bytes, tenant: str, object_id: str) -> bytes:
    t, o = tenant.encode(), object_id.encode()
    info = (
        b"securex/vault/v1"
        + len(t).to_bytes(4, "big")
        + t
        + len(o).to_bytes(4, "big")
        + o
        + hashlib.sha256(header_bytes).digest()
    )
    salt = header_bytes[15 + header_bytes[14] :][:32]
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(dek)


def reference_seal(
    plaintext: bytes, header_bytes: bytes, dek: bytes, tenant: str, object_id: str
) -> bytes:
    seg = int.from_bytes(header_bytes[6:10], "big")
    prefix = header_bytes[15 + header_bytes[14] + 32 :][:7]
    aead = AESGCM(object_key(dek, header_bytes, tenant, object_id))
    pieces = [plaintext[i : i + seg] for i in range(0, len(plaintext), seg)] or [b""]
    out = [header_bytes]
    for i, piece in enumerate(pieces):
        last = b"\x01" if i == len(pieces) - 1 else b"\x00"
        out.append(aead.encrypt(prefix + i.to_bytes(4, "big") + last, piece, header_bytes))
    return b"".join(out)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG - 1, 2 * SEG, 2 * SEG + 1, 3 * SEG, 5 * 2**20 + 123],
)
def test_round_trip_at_boundaries(size: int) -> None:
    plaintext = data(size, seed=size)
    hdr = header()
    blob = seal(plaintext, hdr)
    assert len(blob) == ciphertext_size(size, hdr)
    assert unseal(blob) == plaintext
    head, segs = segments(blob)
    assert head == hdr.to_bytes()
    # Full segments, then one final segment of 1..SEG bytes (0 only for an empty plaintext).
    assert len(segs) == max(1, -(-size // SEG))
    assert all(len(s) == SEG + TAG_SIZE for s in segs[:-1])
    assert TAG_SIZE + (1 if size else 0) <= len(segs[-1]) <= SEG + TAG_SIZE
    chunks = list(
        iter_decrypt(
            io.BytesIO(blob[len(head) :]), dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT
        )
    )
    assert [len(c) for c in chunks] == [len(s) - TAG_SIZE for s in segs]


def test_round_trip_default_segment_size() -> None:
    hdr = new_header(key_id="tenant:40192", key_version=7)
    assert hdr.segment_size == DEFAULT_SEGMENT_SIZE
    plaintext = data(2 * DEFAULT_SEGMENT_SIZE + 5)
    blob = seal(plaintext, hdr)
    assert len(blob) == ciphertext_size(len(plaintext), hdr)
    assert len(segments(blob)[1]) == 3
    assert unseal(blob) == plaintext


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=40_000),
    segment_size=st.integers(min_value=SEG, max_value=3 * SEG),
    wrapped=st.none() | st.binary(min_size=1, max_size=80),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_round_trip_random_sizes(
    size: int, segment_size: int, wrapped: bytes | None, seed: int
) -> None:
    plaintext = data(size, seed)
    hdr = header(segment_size, wrapped)
    blob = seal(plaintext, hdr)
    assert blob == reference_seal(plaintext, hdr.to_bytes(), DEK, TENANT, OBJECT)
    assert len(blob) == ciphertext_size(size, hdr)
    assert unseal(blob) == plaintext


class Trickle(io.RawIOBase):
    """A pipe-like source: short reads of at most 1000 bytes; optionally no readinto."""

    def __init__(self, payload: bytes) -> None:
        self.src = io.BytesIO(payload)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        return self.src.readinto(memoryview(buf)[:1000])


class ReadOnly:
    """A source that only has ``read`` (no ``readinto``), returning short reads."""

    def __init__(self, payload: bytes) -> None:
        self.src = io.BytesIO(payload)

    def read(self, n: int = -1) -> bytes:
        return self.src.read(min(n, 777) if n >= 0 else 777)


class Sluggish(io.RawIOBase):
    """A raw sink that accepts at most 1000 bytes per write and says so."""

    def __init__(self) -> None:
        self.out = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        chunk = bytes(memoryview(b)[:1000])
        self.out += chunk
        return len(chunk)


@pytest.mark.parametrize("source", [Trickle, ReadOnly])
def test_short_reads_and_short_writes(source: type[Any]) -> None:
    plaintext = data(3 * SEG + 17)
    hdr = header()
    sink = Sluggish()
    n = encrypt_stream(
        cast(BinaryIO, source(plaintext)),
        cast(BinaryIO, sink),
        dek=DEK,
        header=hdr,
        tenant=TENANT,
        object_id=OBJECT,
    )
    assert n == len(plaintext)
    blob = bytes(sink.out)
    assert blob == seal(plaintext, hdr)
    src = cast(BinaryIO, source(blob))
    back = Sluggish()
    hdr2 = read_header(src)
    assert hdr2 == hdr
    decrypt_stream(src, cast(BinaryIO, back), dek=DEK, header=hdr2, tenant=TENANT, object_id=OBJECT)
    assert bytes(back.out) == plaintext


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)
        n = min(len(view), self.left)
        view[:n] = bytes(n)
        self.left -= n
        return n


class Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return len(memoryview(b))


def test_memory_stays_flat() -> None:
    seg = 64 * 1024
    size = 16 * 2**20
    hdr = header(seg)
    blob = io.BytesIO()
    encrypt_stream(
        cast(BinaryIO, Zeros(size)), blob, dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT
    )
    blob.seek(0)
    read_header(blob)
    body = blob.getvalue()[blob.tell() :]
    for run in ("encrypt", "decrypt", "iter"):
        src = io.BytesIO(body)
        tracemalloc.start()
        try:
            if run == "encrypt":
                n = encrypt_stream(
                    cast(BinaryIO, Zeros(size)),
                    cast(BinaryIO, Discard()),
                    dek=DEK,
                    header=hdr,
                    tenant=TENANT,
                    object_id=OBJECT,
                )
            elif run == "decrypt":
                n = decrypt_stream(
                    src,
                    cast(BinaryIO, Discard()),
                    dek=DEK,
                    header=hdr,
                    tenant=TENANT,
                    object_id=OBJECT,
                )
            else:
                n = sum(
                    len(c)
                    for c in iter_decrypt(src, dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT)
                )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert n == size
        assert peak < 4 * seg, (run, peak)


# --- header --------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [None, b"\x01", b"w" * 1024])
def test_header_round_trip(wrapped: bytes | None) -> None:
    hdr = new_header(key_id="tenant:40192", key_version=2**32 - 1, wrapped_key=wrapped)
    raw = hdr.to_bytes()
    assert raw[:4] == b"SXV1"
    assert raw[4] == 1
    assert raw[5] == (0 if wrapped is None else 1)
    assert len(raw) == 15 + 12 + 32 + 7 + (0 if wrapped is None else 2 + len(wrapped))
    src = io.BytesIO(raw + b"rest")
    assert read_header(src) == hdr
    assert src.read() == b"rest"  # exactly the header was consumed


def test_embedded_wrapped_key_round_trips_through_a_file() -> None:
    wrapped = data(60, seed=9)
    plaintext = data(2 * SEG + 3)
    blob = seal(plaintext, header(wrapped_key=wrapped))
    hdr = read_header(io.BytesIO(blob))
    assert hdr.wrapped_key == wrapped
    assert unseal(blob) == plaintext


def test_new_header_is_random() -> None:
    a, b = header(), header()
    assert a.salt != b.salt
    assert a.nonce_prefix != b.nonce_prefix


GOOD: dict[str, Any] = {
    "key_id": "tenant:40192",
    "key_version": 1,
    "segment_size": SEG,
    "salt": bytes(32),
    "nonce_prefix": bytes(7),
    "wrapped_key": None,
}


@pytest.mark.parametrize(
    "field,value",
    [
        ("segment_size", 0),
        ("segment_size", SEG - 1),
        ("segment_size", 16 * 2**20 + 1),
        ("key_id", ""),
        ("key_id", "k" * 65),
        ("key_id", "é" * 33),  # 66 bytes of UTF-8
        ("key_id", "\udc80"),  # not encodable
        ("key_version", -1),
        ("key_version", 2**32),
        ("salt", bytes(31)),
        ("nonce_prefix", bytes(8)),
        ("wrapped_key", b""),
        ("wrapped_key", bytes(1025)),
    ],
)
def test_invalid_parameters_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError):
        Header(**(GOOD | {field: value}))
    if field in {"segment_size", "key_id", "key_version", "wrapped_key"}:
        kwargs = {k: GOOD[k] for k in ("key_id", "key_version", "segment_size")}
        with pytest.raises(ValueError):
            new_header(**(kwargs | {field: value}))


def test_limits_are_accepted() -> None:
    Header(**(GOOD | {"segment_size": 16 * 2**20, "key_id": "é" * 32}))
    Header(**(GOOD | {"key_id": "k", "key_version": 0, "wrapped_key": bytes(1024)}))


@pytest.mark.parametrize("dek", [b"", bytes(16), bytes(33)])
def test_wrong_dek_size_is_a_programming_error(dek: bytes) -> None:
    hdr = header()
    with pytest.raises(ValueError):
        encrypt_stream(
            io.BytesIO(b"x"), io.BytesIO(), dek=dek, header=hdr, tenant=TENANT, object_id=OBJECT
        )
    with pytest.raises(ValueError):  # eagerly, not at the first next()
        iter_decrypt(io.BytesIO(), dek=dek, header=hdr, tenant=TENANT, object_id=OBJECT)
    with pytest.raises(ValueError):
        decrypt_stream(
            io.BytesIO(), io.BytesIO(), dek=dek, header=hdr, tenant=TENANT, object_id=OBJECT
        )


def test_ciphertext_size() -> None:
    hdr = header()
    h = len(hdr.to_bytes())
    assert ciphertext_size(0, hdr) == h + TAG_SIZE
    assert ciphertext_size(SEG, hdr) == h + SEG + TAG_SIZE
    assert ciphertext_size(SEG + 1, hdr) == h + SEG + 1 + 2 * TAG_SIZE
    with pytest.raises(ValueError):
        ciphertext_size(-1, hdr)
    with pytest.raises(ValueError):
        ciphertext_size(SEG * 2**32 + 1, hdr)
    assert ciphertext_size(SEG * 2**32, hdr) == h + SEG * 2**32 + 2**32 * TAG_SIZE


def test_counter_overflow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    hdr = header()
    four = seal(data(3 * SEG + 1), hdr)
    monkeypatch.setattr(stream, "_MAX_SEGMENTS", 3)
    assert unseal(seal(data(3 * SEG), hdr)) == data(3 * SEG)
    with pytest.raises(ValueError):
        seal(data(3 * SEG + 1), hdr)
    with pytest.raises(ValueError):
        ciphertext_size(3 * SEG + 1, hdr)
    assert_rejected(four)


# --- the published vectors -------------------------------------------------------------------

VECTOR_HEADER = Header(
    key_id="tenant:40192",
    key_version=3,
    segment_size=SEG,
    salt=bytes(range(0x40, 0x60)),
    nonce_prefix=bytes(range(0xA0, 0xA7)),
    wrapped_key=None,
)
VECTOR_1 = (
    "53585631010000001000000000030c74656e616e743a3430313932"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "a0a1a2a3a4a5a6"
)
VECTOR_WRAPPED = Header(
    key_id="tenant:40192",
    key_version=3,
    segment_size=SEG,
    salt=bytes(range(0x40, 0x60)),
    nonce_prefix=bytes(range(0xA0, 0xA7)),
    wrapped_key=bytes(range(0xC0, 0xE8)),
)


def doc_text() -> str:
    return re.sub(r"\s+", "", DOC.read_text(encoding="utf-8"))


def vector_values() -> dict[str, str]:
    """The vectors as computed by this code; the doc must publish the same values."""
    empty = seal(b"", VECTOR_HEADER)
    short = seal(b"Acte de naissance - Mont-de-Marsan", VECTOR_HEADER)
    long_plain = bytes(i % 251 for i in range(10_000))
    long = seal(long_plain, VECTOR_WRAPPED)
    head, segs = segments(long)
    return {
        "header_1": VECTOR_HEADER.to_bytes().hex(),
        "key_1": object_key(DEK, VECTOR_HEADER.to_bytes(), TENANT, OBJECT).hex(),
        "empty": empty.hex(),
        "short": short.hex(),
        "header_2": head.hex(),
        "key_2": object_key(DEK, head, TENANT, OBJECT).hex(),
        "tags_2": " ".join(s[-TAG_SIZE:].hex() for s in segs),
        "sha256_2": hashlib.sha256(long).hexdigest(),
        "size_2": str(len(long)),
    }


def test_vectors_match_the_doc() -> None:
    values = vector_values()
    assert values["header_1"] == VECTOR_1
    doc = doc_text()
    for name, value in values.items():
        for part in value.split():
            assert part in doc, name


@pytest.mark.parametrize(
    "name,plaintext", [("empty", b""), ("short", b"Acte de naissance - Mont-de-Marsan")]
)
def test_published_vectors_decrypt(name: str, plaintext: bytes) -> None:
    doc = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- vector:{name} -->\s*```\s*([0-9a-f\s]+?)```", doc)
    assert found is not None
    blob = bytes.fromhex(re.sub(r"\s+", "", found.group(1)))
    assert read_header(io.BytesIO(blob)) == VECTOR_HEADER
    assert unseal(blob) == plaintext


def print_vectors() -> None:  # pragma: no cover - run by hand to regenerate the doc
    for name, value in vector_values().items():
        print(name, value)


# --- tampering -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim() -> tuple[bytes, bytes]:
    """Three full segments and a short fourth, with an embedded wrapped key so that every
    header field is present."""
    plaintext = data(3 * SEG + 100, seed=1)
    return plaintext, seal(plaintext, header(wrapped_key=data(40, seed=2)))


def flip(blob: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(blob)
    out[index] ^= 1 << bit
    return bytes(out)


def test_every_header_bit_is_authenticated(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    head, _ = segments(blob)
    for index in range(len(head)):
        for bit in range(8):
            assert_rejected(flip(blob, index, bit))


@pytest.mark.parametrize(
    "field,raw",
    [
        ("magic", b"SXV2"),
        ("version", b"SXV1\x02"),
        ("flags", b"SXV1\x01\x02"),
        ("flags", b"SXV1\x01\x80"),
        ("segment size too small", b"SXV1\x01\x00\x00\x00\x0f\xff"),
        ("segment size too big", b"SXV1\x01\x00\x01\x00\x00\x01"),
        ("key id empty", b"SXV1\x01\x00\x00\x00\x10\x00\x00\x00\x00\x01\x00"),
        ("key id too long", b"SXV1\x01\x00\x00\x00\x10\x00\x00\x00\x00\x01\x41" + b"k" * 65),
        ("key id not UTF-8", b"SXV1\x01\x00\x00\x00\x10\x00\x00\x00\x00\x01\x01\xff"),
    ],
)
def test_malformed_headers(field: str, raw: bytes) -> None:
    padded = raw + bytes(200)
    with pytest.raises(IntegrityError) as info:
        read_header(io.BytesIO(padded))
    assert str(info.value) == OPAQUE


def test_wrapped_key_length_zero_or_too_long() -> None:
    base = header(wrapped_key=b"k").to_bytes()
    for length in (0, 1025):
        raw = base[:-3] + length.to_bytes(2, "big") + bytes(length + 100)
        with pytest.raises(IntegrityError):
            read_header(io.BytesIO(raw))


def test_every_short_header_is_refused(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    head, _ = segments(blob)
    for cut in range(len(head)):
        with pytest.raises(IntegrityError) as info:
            read_header(io.BytesIO(blob[:cut]))
        assert str(info.value) == OPAQUE


def test_bit_flips_in_bodies_and_tags(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    head, segs = segments(blob)
    start = len(head)
    for seg in segs:
        body = len(seg) - TAG_SIZE
        for offset in (0, body // 2, body - 1, body, body + TAG_SIZE - 1):
            for bit in (0, 7):
                assert_rejected(flip(blob, start + offset, bit))
        start += len(seg)


def test_truncation_anywhere(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    head, segs = segments(blob)
    cuts = {0, len(blob) - 1}
    boundary = len(head)
    for seg in segs:
        cuts |= {boundary + d for d in (-1, 0, 1, TAG_SIZE - 1, TAG_SIZE, len(seg) // 2)}
        boundary += len(seg)
    cuts |= set(range(len(head), len(blob), 97))
    for cut in sorted(c for c in cuts if 0 <= c < len(blob)):
        assert_rejected(blob[:cut])


@pytest.mark.parametrize("full_segments", [1, 2, 3])
def test_truncation_at_a_boundary_of_full_segments(full_segments: int) -> None:
    # The remainder looks like a shorter, well-formed file: only the final flag betrays it.
    blob = seal(data(4 * SEG))
    head, segs = segments(blob)
    assert_rejected(head + b"".join(segs[:full_segments]))


def test_drop_duplicate_reorder(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    head, s = segments(blob)
    for body in (
        [s[0], s[2], s[3]],  # dropped
        [s[1], s[2], s[3]],  # dropped first
        [s[0], s[1], s[2]],  # dropped last
        [s[0], s[0], s[1], s[2], s[3]],  # duplicated
        [s[0], s[1], s[2], s[3], s[3]],  # duplicated last
        [s[1], s[0], s[2], s[3]],  # swapped
        [s[0], s[2], s[1], s[3]],
        [s[0], s[1], s[3], s[2]],  # final moved
        [s[3]],
    ):
        assert_rejected(head + b"".join(body))


@pytest.mark.parametrize("same_dek", [True, False])
def test_splicing_from_another_object(victim: tuple[bytes, bytes], same_dek: bool) -> None:
    plaintext, blob = victim
    head, s = segments(blob)
    dek = DEK if same_dek else OTHER_DEK
    hdr = read_header(io.BytesIO(blob))
    others = [
        seal(plaintext, header(wrapped_key=hdr.wrapped_key), dek=dek),  # fresh header
        seal(plaintext, hdr, dek=dek, object_id="acte:2026-000124"),  # same header, other id
        seal(plaintext, hdr, dek=dek, tenant="64102"),  # same header, other tenant
    ]
    if not same_dek:
        others.append(seal(plaintext, hdr, dek=dek))  # everything equal but the key
    for other in others:
        other_head, o = segments(other)
        assert len(o) == len(s)
        for i in range(len(s)):
            assert_rejected(head + b"".join([*s[:i], o[i], *s[i + 1 :]]))
        if other_head != head:
            assert_rejected(other_head + b"".join(s))  # swapped headers
        assert_rejected(head + b"".join(o))


def test_headers_swapped_between_files(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    other = seal(data(3 * SEG + 100, seed=1), header(wrapped_key=data(40, seed=2)))
    (h1, s1), (h2, s2) = segments(blob), segments(other)
    assert_rejected(h2 + b"".join(s1))
    assert_rejected(h1 + b"".join(s2))


@pytest.mark.parametrize("size", [0, 100, SEG, 2 * SEG])
@pytest.mark.parametrize("extra", [b"\x00", bytes(TAG_SIZE), bytes(SEG + TAG_SIZE), "last"])
def test_trailing_data(size: int, extra: bytes | str) -> None:
    blob = seal(data(size))
    if extra == "last":
        extra = segments(blob)[1][-1]
    assert isinstance(extra, bytes)
    assert_rejected(blob + extra)


def test_wrong_context(victim: tuple[bytes, bytes]) -> None:
    _, blob = victim
    assert_rejected(blob, tenant="64102")
    assert_rejected(blob, object_id="acte:2026-000124")
    assert_rejected(blob, dek=OTHER_DEK)
    assert_rejected(blob, tenant=TENANT + OBJECT[:1], object_id=OBJECT[1:])  # lengths count


def test_empty_plaintext_tampering() -> None:
    blob = seal(b"")
    head, _ = segments(blob)
    assert_rejected(head)  # the empty segment dropped
    assert_rejected(blob[:-1])
    assert_rejected(flip(blob, len(blob) - 1))


def test_only_canonical_segmentation_is_accepted() -> None:
    """A correctly sealed file that breaks the segmentation rules is still refused: an empty
    final segment after full ones must not exist (age's rule)."""
    hdr = header()
    raw = hdr.to_bytes()
    aead = AESGCM(object_key(DEK, raw, TENANT, OBJECT))
    p = hdr.nonce_prefix
    full = aead.encrypt(p + bytes(4) + b"\x00", data(SEG), raw)
    empty_final = aead.encrypt(p + (1).to_bytes(4, "big") + b"\x01", b"", raw)
    assert_rejected(raw + full + empty_final)
    # The same content, canonically encoded, is accepted.
    canonical = aead.encrypt(p + bytes(4) + b"\x01", data(SEG), raw)
    assert unseal(raw + canonical) == data(SEG)


def test_nothing_is_released_from_a_bad_segment(victim: tuple[bytes, bytes]) -> None:
    plaintext, blob = victim
    head, _ = segments(blob)
    bad = flip(blob, len(head) + 2 * (SEG + TAG_SIZE) + 5)  # in the third segment
    src = io.BytesIO(bad)
    hdr = read_header(src)
    got: list[bytes] = []
    with pytest.raises(IntegrityError):
        for chunk in iter_decrypt(src, dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT):
            got.append(chunk)
    assert got == [plaintext[:SEG], plaintext[SEG : 2 * SEG]]
    src = io.BytesIO(bad)
    read_header(src)
    out = io.BytesIO()
    with pytest.raises(IntegrityError):
        decrypt_stream(src, out, dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT)
    assert out.getvalue() == plaintext[: 2 * SEG]


def test_iter_decrypt_is_lazy_and_streams() -> None:
    plaintext = data(3 * SEG)
    blob = seal(plaintext)

    class Counting(io.BytesIO):
        def __init__(self, payload: bytes) -> None:
            super().__init__(payload)
            self.high = 0

        def readinto(self, buf: Any) -> int:
            n = super().readinto(buf)
            self.high = max(self.high, self.tell())
            return n

    src = Counting(blob)
    hdr = read_header(src)
    it: Iterator[bytes] = iter_decrypt(src, dek=DEK, header=hdr, tenant=TENANT, object_id=OBJECT)
    assert next(it) == plaintext[:SEG]
    assert src.high <= len(hdr.to_bytes()) + 2 * (SEG + TAG_SIZE)  # one segment + lookahead


@given(
    size=st.sampled_from([0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 7]),
    pieces=st.lists(st.integers(1, 3 * SEG), min_size=1, max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_stream_writer_writes_what_encrypt_stream_writes(size: int, pieces: list[int]) -> None:
    """Pushed in pieces of any size, the plaintext becomes the very bytes encrypt_stream
    makes of it (same key and header), so the reader and the format doc cover both."""
    plaintext = (bytes(range(251)) * (size // 251 + 1))[:size]
    dek = bytes(range(32))
    header = stream.new_header(key_id="backup", key_version=0, segment_size=SEG)
    expected = io.BytesIO()
    stream.encrypt_stream(
        io.BytesIO(plaintext), expected, dek=dek, header=header, tenant="t", object_id="o"
    )
    out = io.BytesIO()
    writer = stream.StreamWriter(out, dek=dek, header=header, tenant="t", object_id="o")
    at, i = 0, 0
    while at < size:
        step = pieces[i % len(pieces)]
        writer.write(plaintext[at : at + step])
        at, i = at + step, i + 1
    writer.close()
    writer.close()  # idempotent
    assert out.getvalue() == expected.getvalue()
    assert writer.size == size
    with pytest.raises(ValueError):
        writer.write(b"x")
