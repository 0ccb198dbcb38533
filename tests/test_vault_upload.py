"""Range reads and resumable uploads: an object written over several appends, each in a fresh
process (vault), cut anywhere, crashed anywhere, comes out byte for byte the object the
format's reference encoder makes; the incomplete segment kept between requests is sealed;
segment nonces are never used for two plaintexts."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.exceptions import ClientDisconnected

from securex.db import transaction
from securex.errors import NotFound
from securex.vault import (
    Appended,
    IntegrityError,
    UploadConflict,
    UploadState,
    UploadTooLong,
    Vault,
    master_key_source,
    open_vault,
)
from securex.vault.models import VaultObject
from securex.vault.stream import (
    MIN_SEGMENT_SIZE,
    TAG_SIZE,
    ciphertext_size,
    iter_decrypt,
    read_header,
)
from tests.test_vault_stream import reference_seal

SEG = MIN_SEGMENT_SIZE  # 4 KiB: many segments from little data
TENANT = "40192"
LENGTHS = [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17]


def data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - reproducible test data, not keys


@pytest.fixture
def env(make: Any) -> Any:
    make.tenant(TENANT, "Mont-de-Marsan")
    make.tenant("40088", "Dax")
    return make


def fresh(settings: Any) -> Vault:
    """Another process: its own keyring (no cached keys) and blob store object."""
    return open_vault(master_key_source(settings, {}), settings.instance)


def begin(env: Any, vault: Vault, length: int, seg: int = SEG) -> UploadState:
    with env.session() as db:
        return vault.begin_upload(db, TENANT, length, segment_size=seg)


def append(env: Any, vault: Vault, state: UploadState, chunks: Iterable[bytes], **kw: Any) -> Any:
    with env.session() as db:
        return vault.append_upload(db, state, chunks, **kw)


def finish(env: Any, vault: Vault, state: UploadState) -> str:
    with transaction(env.factory) as db:
        return vault.finish_upload(db, state, now=env.clock()).id


def read(env: Any, vault: Vault, object_id: str, start: int = 0, tenant: str = TENANT) -> bytes:
    with env.session() as db:
        return b"".join(vault.reader(db, tenant, object_id, start))


def part(vault: Vault, object_id: str) -> Path:
    return Path(vault.blobs.root) / "parts" / object_id  # type: ignore[attr-defined]


def blob(vault: Vault, object_id: str) -> Path:
    root = Path(vault.blobs.root)  # type: ignore[attr-defined]
    return root / object_id[:2] / object_id[2:4] / object_id


def dek_of(env: Any, vault: Vault, state: UploadState) -> bytes:
    with env.session() as db:
        return vault.keyring.open_data_key(
            db, TENANT, state.object_id, state.key_version, state.wrapped_key
        )


def pieces(payload: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    at = 0
    for size in sizes:
        yield payload[at : at + size]
        at += size
    assert at == len(payload)


def random_chunks(payload: bytes, rng: random.Random, largest: int) -> list[bytes]:
    out, at = [], 0
    while at < len(payload):
        n = rng.randint(0, largest)  # empty chunks included
        out.append(payload[at : at + n])
        at += n
    return out


def assert_valid_object(env: Any, vault: Vault, state: UploadState, payload: bytes) -> None:
    """The finished blob is exactly what the format's independent encoder makes from the
    same header and key, the existing decoder reads it, and the row matches."""
    raw = blob(vault, state.object_id).read_bytes()
    dek = dek_of(env, vault, state)
    assert raw == reference_seal(payload, state.header, dek, TENANT, state.object_id)
    src = io.BytesIO(raw)
    hdr = read_header(src)
    plain = iter_decrypt(src, dek=dek, header=hdr, tenant=TENANT, object_id=state.object_id)
    assert b"".join(plain) == payload
    assert len(raw) == ciphertext_size(len(payload), hdr) == state.stored
    with env.session() as db:
        obj = db.get(VaultObject, state.object_id)
        assert obj is not None
        assert (obj.size, obj.stored_size, obj.tenant) == (len(payload), len(raw), TENANT)
        assert (obj.key_version, obj.wrapped_key) == (state.key_version, state.wrapped_key)
    assert read(env, vault, state.object_id) == payload
    assert not part(vault, state.object_id).exists()


def upload(
    env: Any, settings: Any, payload: bytes, appends: list[list[bytes]], seg: int = SEG
) -> UploadState:
    """Begin, append each list of chunks in a fresh vault, finish in another."""
    state = begin(env, fresh(settings), len(payload), seg)
    sent = 0
    for chunks in appends:
        result = append(env, fresh(settings), state, chunks)
        assert isinstance(result, Appended) and not result.interrupted
        state = result.state
        sent += sum(map(len, chunks))
        assert state.offset == sent
    assert state.complete and state.tail is None
    finish(env, fresh(settings), state)
    return state


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [*LENGTHS, 5 * SEG + SEG // 2])
@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip_across_processes(env: Any, settings: Any, length: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + length)  # noqa: S311
    payload = data(length, seed)
    chunks = random_chunks(payload, rng, largest=SEG + 300)
    cuts = sorted(rng.sample(range(len(chunks) + 1), k=min(3, len(chunks) + 1)))
    appends = [chunks[a:b] for a, b in zip([0, *cuts], [*cuts, len(chunks)], strict=True)]
    state = upload(env, settings, payload, appends)
    assert_valid_object(env, env.vault, state, payload)


def test_one_byte_at_a_time_and_one_huge_chunk(env: Any, settings: Any) -> None:
    payload = data(2 * SEG + 3)
    state = upload(env, settings, payload, [[payload[i : i + 1] for i in range(len(payload))]])
    assert_valid_object(env, env.vault, state, payload)
    state = upload(env, settings, payload, [[payload]])
    assert_valid_object(env, env.vault, state, payload)


def test_empty_object_and_empty_appends(env: Any, settings: Any) -> None:
    state = begin(env, env.vault, 0)
    assert state.complete and state.tail is None
    state = append(env, fresh(settings), state, [b"", b""]).state
    state = append(env, fresh(settings), state, []).state
    finish(env, fresh(settings), state)
    assert_valid_object(env, env.vault, state, b"")


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(draw=st.data())
def test_any_split_gives_the_same_object(env: Any, settings: Any, draw: Any) -> None:
    length = draw.draw(st.integers(min_value=0, max_value=6 * SEG + 100), label="length")
    seg = draw.draw(st.sampled_from([SEG, SEG + 1, 2 * SEG - 7]), label="segment_size")
    cuts = sorted(draw.draw(st.lists(st.integers(0, length), max_size=12), label="cuts"))
    bounds = [0, *cuts, length]
    payload = data(length, seed=length)
    chunks = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    breaks = sorted(draw.draw(st.sets(st.integers(0, len(chunks)), max_size=4), label="appends"))
    edges = [0, *breaks, len(chunks)]
    appends = [chunks[a:b] for a, b in itertools.pairwise(edges)]
    state = upload(env, settings, payload, appends, seg)
    assert_valid_object(env, env.vault, state, payload)


# --- checkpoints and crashes -------------------------------------------------------------


def test_checkpoints_fall_on_segment_boundaries_and_are_resumable(env: Any, settings: Any) -> None:
    payload = data(7 * SEG + 123)
    state = begin(env, env.vault, len(payload))
    saved: list[UploadState] = []
    chunks = random_chunks(payload, random.Random(7), largest=1000)  # noqa: S311
    result = append(
        env, fresh(settings), state, chunks, checkpoint=saved.append, checkpoint_bytes=2 * SEG
    )
    assert [s.offset for s in saved] == [2 * SEG, 4 * SEG, 6 * SEG]
    assert all(s.tail is None for s in saved)  # a boundary: nothing to carry over
    assert result.state.complete
    # A crash right after the second checkpoint: the caller only has that state, and the
    # part holds (beyond its `stored`) everything sealed afterwards. Same bytes again: fine.
    earlier = saved[1]
    assert part(env.vault, state.object_id).stat().st_size > earlier.stored
    result = append(
        env, fresh(settings), earlier, pieces(payload[earlier.offset :], [SEG + 5] * 5 + [4 * SEG])
    )
    finish(env, fresh(settings), result.state)
    assert_valid_object(env, env.vault, result.state, payload)


@pytest.mark.parametrize("garbage", [1, TAG_SIZE, SEG + TAG_SIZE, 3 * SEG + 1])
def test_bytes_after_stored_are_overwritten(env: Any, settings: Any, garbage: int) -> None:
    payload = data(4 * SEG + 10)
    state = begin(env, env.vault, len(payload))
    state = append(env, fresh(settings), state, [payload[: SEG + 100]]).state
    with open(part(env.vault, state.object_id), "ab") as fh:
        fh.write(os.urandom(garbage))  # a write cut by a crash before the state was saved
    state = append(env, fresh(settings), state, [payload[SEG + 100 :]]).state
    finish(env, fresh(settings), state)
    assert_valid_object(env, env.vault, state, payload)


def test_state_reused_after_a_later_append_resumes(env: Any, settings: Any) -> None:
    """The caller's commit of the newer state was lost: the older one still works, and the
    client sends the bytes from its offset again."""
    payload = data(5 * SEG + 77)
    s0 = begin(env, env.vault, len(payload))
    s1 = append(env, fresh(settings), s0, [payload[:1000]]).state  # tail only
    s2 = append(env, fresh(settings), s1, [payload[1000 : 3 * SEG + 5]]).state
    append(env, fresh(settings), s2, [payload[3 * SEG + 5 : 4 * SEG + 9]])  # lost
    for older in (s2, s1, s0):
        done = append(env, fresh(settings), older, [payload[older.offset :]]).state
        assert done.complete
    finish(env, fresh(settings), done)
    assert_valid_object(env, env.vault, done, payload)


def test_resuming_with_other_bytes_than_those_sealed_is_refused(env: Any, settings: Any) -> None:
    """After a lost checkpoint, sealing different plaintext at an index already sealed would
    reuse its nonce: refused, and nothing of the original sealing is overwritten."""
    payload = data(4 * SEG)
    state = begin(env, env.vault, len(payload))
    saved: list[UploadState] = []
    append(env, fresh(settings), state, [payload], checkpoint=saved.append, checkpoint_bytes=SEG)
    first = saved[0]  # offset SEG; segments 1..3 are sealed beyond its `stored`
    before = part(env.vault, state.object_id).read_bytes()
    other = bytearray(payload[first.offset :])
    other[SEG + 10] ^= 1  # segment 2 differs by one bit
    with pytest.raises(UploadConflict):
        append(env, fresh(settings), first, [bytes(other)])
    after = part(env.vault, state.object_id).read_bytes()
    assert after[: first.stored + SEG + TAG_SIZE] == before[: first.stored + SEG + TAG_SIZE]
    assert after[first.stored + SEG + TAG_SIZE :] == before[first.stored + SEG + TAG_SIZE :]
    # The genuine bytes still complete it.
    done = append(env, fresh(settings), first, [payload[first.offset :]]).state
    finish(env, fresh(settings), done)
    assert_valid_object(env, env.vault, done, payload)


def test_part_shorter_than_stored_or_missing_is_damage(env: Any, settings: Any) -> None:
    payload = data(3 * SEG)
    state = begin(env, env.vault, len(payload))
    state = append(env, fresh(settings), state, [payload[: 2 * SEG]]).state
    path = part(env.vault, state.object_id)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        append(env, fresh(settings), state, [payload[2 * SEG :]])
    path.unlink()
    with pytest.raises(IntegrityError):
        append(env, fresh(settings), state, [payload[2 * SEG :]])


# --- interruptions -----------------------------------------------------------------------


def cut_after(chunks: Iterable[bytes], count: int, exc: Exception) -> Iterator[bytes]:
    for i, chunk in enumerate(chunks):
        if i == count:
            raise exc
        yield chunk


@pytest.mark.parametrize(
    "exc",
    [ClientDisconnected(), OSError("connection reset"), TimeoutError()],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("count", [0, 3, 7])
def test_interrupted_stream_keeps_what_arrived(
    env: Any, settings: Any, exc: Exception, count: int
) -> None:
    payload = data(3 * SEG + 500)
    chunks = list(pieces(payload, [1000] * 12 + [len(payload) - 12000]))
    state = begin(env, env.vault, len(payload))
    result = append(env, fresh(settings), state, cut_after(chunks, count, exc))
    state, interruption = result  # a pair, too
    assert result.interrupted and interruption is exc
    assert state.offset == 1000 * count
    assert (state.tail is None) == (state.offset % SEG == 0)
    assert part(env.vault, state.object_id).stat().st_size == state.stored
    state = append(env, fresh(settings), state, [payload[state.offset :]]).state
    finish(env, fresh(settings), state)
    assert_valid_object(env, env.vault, state, payload)


def test_errors_of_our_own_side_are_not_swallowed(env: Any, settings: Any) -> None:
    payload = data(3 * SEG)
    state = begin(env, env.vault, len(payload))

    def failing_checkpoint(_: UploadState) -> None:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        append(
            env,
            fresh(settings),
            state,
            [payload],
            checkpoint=failing_checkpoint,
            checkpoint_bytes=1,
        )
    with pytest.raises(TypeError):
        append(env, fresh(settings), state, ["not bytes"])  # type: ignore[list-item]
    # The last durable state is still good.
    state = append(env, fresh(settings), state, [payload]).state
    finish(env, fresh(settings), state)
    assert_valid_object(env, env.vault, state, payload)


# --- too long, too short, abort ------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 10, SEG, 2 * SEG + 1])
def test_more_than_length_is_refused_and_never_written(
    env: Any, settings: Any, length: int
) -> None:
    payload = data(length)
    state = begin(env, env.vault, length)
    half = length // 2
    with pytest.raises(UploadTooLong) as raised:
        append(env, fresh(settings), state, [payload[:half], payload[half:] + b"!"])
    assert isinstance(raised.value, ValueError)
    reached = raised.value.state
    assert reached.offset == half
    path = part(env.vault, state.object_id)
    assert (
        path.stat().st_size
        == reached.stored
        <= ciphertext_size(length, read_header(io.BytesIO(state.header)))
    )
    done = append(env, fresh(settings), reached, [payload[half:]]).state
    with pytest.raises(UploadTooLong) as raised:
        append(env, fresh(settings), done, [b"x"])
    assert raised.value.state == done
    assert path.stat().st_size == done.stored
    finish(env, fresh(settings), done)
    assert_valid_object(env, env.vault, done, payload)


def test_finish_before_complete_is_refused(env: Any, settings: Any) -> None:
    state = begin(env, env.vault, SEG + 1)
    state = append(env, fresh(settings), state, [b"a" * SEG]).state
    with pytest.raises(ValueError, match="incomplete"):
        finish(env, fresh(settings), state)
    with env.session() as db:
        assert db.scalar(select(VaultObject.id)) is None
    assert part(env.vault, state.object_id).exists()


def test_finish_again_after_a_failed_commit(env: Any, settings: Any) -> None:
    payload = data(SEG + 9)
    state = upload_until_complete(env, settings, payload)
    with pytest.raises(RuntimeError), transaction(env.factory) as db:
        fresh(settings).finish_upload(db, state, now=env.clock())
        raise RuntimeError("commit failed")
    with env.session() as db:
        assert db.get(VaultObject, state.object_id) is None
    finish(env, fresh(settings), state)
    assert_valid_object(env, env.vault, state, payload)


def upload_until_complete(env: Any, settings: Any, payload: bytes) -> UploadState:
    state = begin(env, env.vault, len(payload))
    return append(env, fresh(settings), state, [payload]).state


def test_abort_removes_the_part(env: Any, settings: Any) -> None:
    state = begin(env, env.vault, 3 * SEG)
    state = append(env, fresh(settings), state, [data(SEG + 5)]).state
    assert part(env.vault, state.object_id).exists()
    env.vault.abort_upload(state)
    env.vault.abort_upload(state)  # idempotent
    assert not part(env.vault, state.object_id).exists()
    with pytest.raises(IntegrityError):
        append(env, fresh(settings), state, [b"x"])
    with pytest.raises(IntegrityError):
        finish(env, fresh(settings), replace(state, offset=state.length))


def test_gc_of_abandoned_parts(env: Any, settings: Any) -> None:
    old = begin(env, env.vault, 2 * SEG)
    old = append(env, fresh(settings), old, [data(100)]).state
    young = begin(env, env.vault, 2 * SEG)
    then = time.time() - 3 * 86400
    os.utime(part(env.vault, old.object_id), (then, then))
    with env.session() as db:
        assert env.vault.gc(db, grace_seconds=0) == (0, 0)  # blobs' gc never sees parts
    assert list(env.vault.blobs.names()) == []
    assert env.vault.gc_uploads(grace_seconds=2 * 86400) == 1
    assert not part(env.vault, old.object_id).exists()
    assert part(env.vault, young.object_id).exists()
    assert env.vault.gc_uploads(grace_seconds=0) == 1
    assert env.vault.gc_uploads(grace_seconds=0) == 0


def test_finished_blob_is_fresh_for_gc(env: Any, settings: Any) -> None:
    """A long upload's part is old by the time it is finished; the blob it becomes must not
    look like an old orphan to `gc` before the row is committed."""
    state = upload_until_complete(env, settings, data(SEG))
    then = time.time() - 86400
    os.utime(part(env.vault, state.object_id), (then, then))
    with pytest.raises(RuntimeError), transaction(env.factory) as db:
        env.vault.finish_upload(db, state, now=env.clock())
        raise RuntimeError("not committed yet")
    with env.session() as db:
        assert env.vault.gc(db, grace_seconds=3600) == (0, 0)
    finish(env, fresh(settings), state)
    assert read(env, env.vault, state.object_id) == data(SEG)


# --- the tail and the state -------------------------------------------------------------


def test_tail_holds_no_plaintext_and_is_authenticated(env: Any, settings: Any) -> None:
    payload = data(3 * SEG, seed=5)
    state = begin(env, env.vault, len(payload))
    s1 = append(env, fresh(settings), state, [payload[: SEG + 1500]]).state
    assert s1.tail is not None and len(s1.tail) == 1500 + 12 + TAG_SIZE
    tail_plain = payload[SEG : SEG + 1500]
    stored = s1.to_json().encode() + s1.tail + part(env.vault, s1.object_id).read_bytes()
    for at in range(0, len(tail_plain) - 16, 16):
        assert tail_plain[at : at + 16] not in stored
    for position in (0, 11, 12, len(s1.tail) // 2, len(s1.tail) - 1):
        bad = bytearray(s1.tail)
        bad[position] ^= 0x80
        with pytest.raises(IntegrityError):
            append(env, fresh(settings), replace(s1, tail=bytes(bad)), [b""])
    for tail in (None, b"", s1.tail[:-1], s1.tail + b"\x00"):
        with pytest.raises(IntegrityError):
            append(env, fresh(settings), replace(s1, tail=tail), [b""])
    # The same offset in the segment, later in the file: the old tail does not fit there.
    s2 = append(env, fresh(settings), s1, [payload[SEG + 1500 : 2 * SEG + 1500]]).state
    assert s2.tail is not None and len(s2.tail) == len(s1.tail) and s2.tail != s1.tail
    with pytest.raises(IntegrityError):
        append(env, fresh(settings), replace(s2, tail=s1.tail), [b""])
    # Another upload's tail at the same offset: another key.
    other = begin(env, env.vault, len(payload))
    other = append(env, fresh(settings), other, [payload[: SEG + 1500]]).state
    assert other.tail is not None
    with pytest.raises(IntegrityError):
        append(env, fresh(settings), replace(s1, tail=other.tail), [b""])
    # Every seal of the same tail is fresh (random nonce).
    again = append(env, fresh(settings), s1, [b""]).state
    assert again.tail != s1.tail and again.offset == s1.offset
    done = append(env, fresh(settings), again, [payload[again.offset :]]).state
    finish(env, fresh(settings), done)
    assert_valid_object(env, env.vault, done, payload)


def test_tail_follows_the_format_doc(env: Any, settings: Any) -> None:
    """An independent opener of the tail, written from docs/vault-format.md."""
    payload = data(2 * SEG, seed=9)
    state = begin(env, env.vault, len(payload))
    state = append(env, fresh(settings), state, [payload[: SEG + 777]]).state
    assert state.tail is not None
    label = b"securex/vault/v1/upload-tail"
    t, o = TENANT.encode(), state.object_id.encode()
    info = label + len(t).to_bytes(4, "big") + t + len(o).to_bytes(4, "big") + o
    info += hashlib.sha256(state.header).digest()
    salt = read_header(io.BytesIO(state.header)).salt
    dek = dek_of(env, env.vault, state)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(dek)
    aad = label + len(o).to_bytes(4, "big") + o
    aad += state.length.to_bytes(8, "big") + state.offset.to_bytes(8, "big")
    opened = AESGCM(key).decrypt(state.tail[:12], state.tail[12:], aad)
    assert opened == payload[SEG : SEG + 777]


def test_altered_states_are_refused(env: Any, settings: Any) -> None:
    payload = data(3 * SEG)
    state = begin(env, env.vault, len(payload))
    state = append(env, fresh(settings), state, [payload[: 2 * SEG]]).state
    other = begin(env, env.vault, len(payload))
    vault = fresh(settings)
    for bad in (
        replace(state, stored=state.stored - 1),
        replace(state, offset=SEG),  # stored no longer matches
        replace(state, wrapped_key=other.wrapped_key),
        replace(state, header=other.header),
        replace(state, header=state.header + b"\x00"),
        replace(state, tenant="40088"),
    ):
        with pytest.raises(IntegrityError):
            append(env, vault, bad, [payload[2 * SEG :]])
    done = append(env, vault, state, [payload[2 * SEG :]]).state
    with pytest.raises(IntegrityError):
        finish(env, vault, replace(done, wrapped_key=other.wrapped_key))
    with pytest.raises(IntegrityError):
        finish(env, vault, replace(done, stored=done.stored + 1))
    finish(env, vault, done)
    assert_valid_object(env, env.vault, done, payload)


def test_state_json_round_trip_and_validation(env: Any, settings: Any) -> None:
    state = begin(env, env.vault, 2 * SEG)
    state = append(env, fresh(settings), state, [data(SEG + 3)]).state
    assert UploadState.from_json(state.to_json()) == state
    assert UploadState.from_json(replace(state, tail=None).to_json()).tail is None
    for text in ("", "[]", "{}", state.to_json().replace('"offset": ', '"offset": "')):
        with pytest.raises(ValueError):
            UploadState.from_json(text)
    for bad in (
        {"object_id": "../../etc"},
        {"object_id": "A" * 32},
        {"offset": state.length + 1},
        {"stored": -1},
        {"length": True},
        {"tenant": ""},
        {"tail": "text"},
    ):
        with pytest.raises(ValueError):
            replace(state, **bad)


def test_length_and_segment_size_are_checked(env: Any) -> None:
    with pytest.raises(ValueError):
        begin(env, env.vault, -1)
    with pytest.raises(ValueError):
        begin(env, env.vault, 10, seg=SEG - 1)
    with pytest.raises(ValueError):
        begin(env, env.vault, SEG * 2**32 + 1)
    assert not (Path(env.vault.blobs.root) / "parts").exists() or not any(
        (Path(env.vault.blobs.root) / "parts").iterdir()
    )


def test_memory_is_bounded_by_segments_not_chunks(env: Any, settings: Any) -> None:
    seg = 256 * 1024
    payload = data(24 * seg + 5)
    vault = fresh(settings)
    state = begin(env, vault, len(payload), seg)
    state = append(env, vault, state, [payload[:10]]).state  # warm the caches
    rest = memoryview(payload)[10:]
    chunks = [rest[: 12 * seg], rest[12 * seg : 12 * seg + 7], rest[12 * seg + 7 :]]
    tracemalloc.start()
    try:
        result = append(env, vault, state, chunks, checkpoint=lambda s: None, checkpoint_bytes=seg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * seg, peak  # the two segment buffers, whatever the chunks
    finish(env, vault, result.state)
    assert read(env, vault, state.object_id) == payload


# --- range reads ---------------------------------------------------------------------------


def put(env: Any, payload: bytes) -> str:
    with transaction(env.factory) as db:
        return env.vault.put(db, TENANT, io.BytesIO(payload), now=env.clock(), segment_size=SEG).id


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 17])
def test_range_reads_from_every_boundary(env: Any, size: int) -> None:
    payload = data(size, seed=size)
    object_id = put(env, payload)
    starts = {0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, size - 1, size}
    for start in sorted(s for s in starts if 0 <= s <= size):
        with env.session() as db:
            chunks = list(env.vault.reader(db, TENANT, object_id, start))
        assert b"".join(chunks) == payload[start:], start
        if 0 < start < size:
            assert all(chunks)  # no empty pieces, one per segment from start's
            assert len(chunks) == len(range(start // SEG, -(-size // SEG)))
        elif start == size and size:
            assert chunks == []


def test_range_read_checks_what_it_reads_and_skips_the_rest(env: Any) -> None:
    payload = data(5 * SEG + 100)
    object_id = put(env, payload)
    path = blob(env.vault, object_id)
    original = path.read_bytes()
    head = len(read_header(io.BytesIO(original)).to_bytes())

    def at(index: int) -> int:
        return head + index * (SEG + TAG_SIZE)

    # Damage in segment 4: any read that reaches it fails, from the start or from anywhere.
    damaged = bytearray(original)
    damaged[at(4) + 50] ^= 1
    path.write_bytes(bytes(damaged))
    for start in (0, 1, 2 * SEG + 3, 4 * SEG, 5 * SEG - 1):
        with pytest.raises(IntegrityError):
            read(env, env.vault, object_id, start)
    for start in (5 * SEG, 5 * SEG + 99, len(payload)):
        assert read(env, env.vault, object_id, start) == payload[start:]
    # Damage in segment 0 only: a read from segment 2 never touches it (it seeks).
    damaged = bytearray(original)
    damaged[at(0) + 50] ^= 1
    path.write_bytes(bytes(damaged))
    assert read(env, env.vault, object_id, 2 * SEG + 1) == payload[2 * SEG + 1 :]
    with pytest.raises(IntegrityError):
        read(env, env.vault, object_id, SEG - 1)
    # Cut at a segment boundary: the new last segment is not final, from any start.
    path.write_bytes(original[: at(3)])
    for start in (0, SEG + 1, 2 * SEG, len(payload)):
        with pytest.raises(IntegrityError):
            read(env, env.vault, object_id, start)
    # Trailing data is caught as well.
    path.write_bytes(original + b"\x00")
    with pytest.raises(IntegrityError):
        read(env, env.vault, object_id, 3 * SEG)
    path.write_bytes(original)
    assert read(env, env.vault, object_id, 3 * SEG) == payload[3 * SEG :]


def test_range_read_bounds(env: Any) -> None:
    object_id = put(env, data(100))
    for start in (-1, 101, 10**12):
        with env.session() as db, pytest.raises(ValueError):
            env.vault.reader(db, TENANT, object_id, start)
    with pytest.raises(NotFound):
        read(env, env.vault, object_id, 1, tenant="40088")
    assert read(env, env.vault, object_id, 100) == b""
    empty = put(env, b"")
    assert read(env, env.vault, empty, 0) == b""
    with env.session() as db, pytest.raises(ValueError):
        env.vault.reader(db, TENANT, empty, 1)


def test_an_upload_begun_before_a_rotation_is_born_under_the_new_version(
    env: Any, settings: Any
) -> None:
    """A rotation rewraps stored objects, not uploads in progress: the object an upload
    becomes is wrapped under the commune's version current when it is finished, so the
    rotation's old version protects nothing any more (and stays retired)."""
    payload = data(3 * SEG + 5)
    state = begin(env, fresh(settings), len(payload))
    result = append(env, fresh(settings), state, [payload])
    assert isinstance(result, Appended)
    with transaction(env.factory) as db:
        assert fresh(settings).keyring.rotate_tenant(db, TENANT, now=env.clock(), actor="t") == 2
    object_id = finish(env, fresh(settings), result.state)
    with env.session() as db:
        obj = db.get(VaultObject, object_id)
        assert obj is not None and (state.key_version, obj.key_version) == (1, 2)
        assert [s.retired for s in fresh(settings).keyring.status(db) if s.tenant == TENANT] == [
            True,
            False,
        ]
    assert read(env, fresh(settings), object_id) == payload
