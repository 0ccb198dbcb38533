"""The vault with its database and blob store: objects, tenants, rotation, shredding,
garbage collection, crash safety, and the three master key providers."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from securex.audit import verify_chain
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.errors import NotFound
from securex.vault import IntegrityError, Keyring, KeyUnavailable, Vault
from securex.vault.master import (
    MasterKeySource,
    Pkcs11Token,
    create_passphrase_key,
    read_passphrase_key,
)
from securex.vault.models import TenantKey, VaultObject
from securex.vault.stream import DEFAULT_SEGMENT_SIZE
from tests import softhsm

SIZES = [
    0,
    1,
    DEFAULT_SEGMENT_SIZE - 1,
    DEFAULT_SEGMENT_SIZE,
    DEFAULT_SEGMENT_SIZE + 1,
    3 * DEFAULT_SEGMENT_SIZE + 17,
]


def put(make, vault: Vault, data: bytes, tenant: str = "40192") -> str:
    with transaction(make.factory) as db:
        return vault.put(db, tenant, io.BytesIO(data), now=make.clock()).id


def get(make, vault: Vault, object_id: str, tenant: str = "40192") -> bytes:
    with make.session() as db:
        return vault.read_all(db, tenant, object_id)


@pytest.fixture
def two(make):
    make.tenant("40192", "Mont-de-Marsan")
    make.tenant("40088", "Dax")
    return make


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_through_the_store(two, vault, size):
    data = os.urandom(size)
    object_id = put(two, vault, data)
    assert get(two, vault, object_id) == data
    with two.session() as db:
        obj = db.get(VaultObject, object_id)
        assert obj.size == size and obj.key_version == 1
    blob = next(Path(vault.blobs.root).glob(f"??/??/{object_id}"))  # type: ignore[attr-defined]
    assert blob.stat().st_size == obj.stored_size
    if size >= 64:
        assert data[:64] not in blob.read_bytes()


def test_other_tenant_sees_nothing(two, vault):
    object_id = put(two, vault, b"acte de naissance")
    with pytest.raises(NotFound):
        get(two, vault, object_id, tenant="40088")
    with pytest.raises(NotFound):
        get(two, vault, "0" * 32)


def test_swapped_or_damaged_blobs_fail_integrity(two, vault):
    a = put(two, vault, b"A" * 5000)
    b = put(two, vault, b"B" * 5000)
    path_a = next(Path(vault.blobs.root).glob(f"??/??/{a}"))
    path_b = next(Path(vault.blobs.root).glob(f"??/??/{b}"))
    original = path_a.read_bytes()
    path_a.write_bytes(path_b.read_bytes())  # another object's ciphertext under a's name
    with pytest.raises(IntegrityError):
        get(two, vault, a)
    path_a.write_bytes(original[:-1])  # truncated
    with pytest.raises(IntegrityError):
        get(two, vault, a)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x40
    path_a.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError) as raised:
        get(two, vault, a)
    assert str(raised.value) == str(IntegrityError())  # the same opaque message
    with two.session() as db:
        assert [d.object_id for d in vault.verify(db)] == [a]


def test_wrapped_key_moved_to_another_row_does_not_open(two, vault):
    a = put(two, vault, b"secret a")
    b = put(two, vault, b"secret b")
    with transaction(two.factory) as db:
        key_b = db.get(VaultObject, b).wrapped_key
        db.execute(update(VaultObject).where(VaultObject.id == a).values(wrapped_key=key_b))
    with pytest.raises(IntegrityError):
        get(two, vault, a)


def test_tenant_rotation_rewraps_keys_only(two, vault, settings):
    objects = {put(two, vault, os.urandom(3000)): None for _ in range(5)}
    for object_id in objects:
        objects[object_id] = get(two, vault, object_id)
    blobs_before = {p.name: p.read_bytes() for p in Path(vault.blobs.root).glob("??/??/*")}
    seen = []
    with transaction(two.factory) as db:
        version = vault.keyring.rotate_tenant(
            db, "40192", now=two.clock(), actor="test", progress=seen.append
        )
    assert version == 2 and sum(seen) == 5
    assert {
        p.name: p.read_bytes() for p in Path(vault.blobs.root).glob("??/??/*")
    } == blobs_before  # no document re-encrypted
    # A fresh process (fresh keyring) reads everything under the new version.
    from securex.vault import master_key_source, open_vault

    fresh = open_vault(master_key_source(settings, {}), settings.instance)
    for object_id, data in objects.items():
        assert get(two, fresh, object_id) == data
    with two.session() as db:
        rows = {(k.tenant, k.version): k.retired_at for k in db.scalars(select(TenantKey))}
        assert rows[("40192", 1)] is not None and rows[("40192", 2)] is None
        assert rows[("40088", 1)] is None  # other tenants untouched
        assert {o.key_version for o in db.scalars(select(VaultObject))} == {2}
        status = {(s.tenant, s.version): s.objects for s in fresh.keyring.status(db)}
        assert status[("40192", 2)] == 5 and status[("40192", 1)] == 0
        assert verify_chain(db).ok
        actions = list(db.scalars(select(AuditEvent.action)))
        assert "vault:tenant-key:rotated" in actions


def test_master_rotation_file_provider(two, vault, settings):
    from securex.vault import master_key_source, open_vault

    object_id = put(two, vault, b"registre 2026")
    source = master_key_source(settings, {})
    old = source.load()
    old_bytes = source.key_file.read_bytes()
    new = source.begin_rotation()
    with transaction(two.factory) as db:
        assert vault.keyring.rewrap_tenant_keys(db, new, now=two.clock(), actor="t") == 2
    source.finish_rotation(new, old)
    assert source.key_file.read_bytes() != old_bytes
    assert not source.key_file.with_name("master.key.new").exists()
    fresh = open_vault(master_key_source(settings, {}), settings.instance)
    assert fresh.keyring.current.key_id == new.key_id
    assert get(two, fresh, object_id) == b"registre 2026"


def test_interrupted_master_rotation_still_opens(two, vault, settings):
    """Crash after the commit, before the rename: both keys are loaded."""
    from securex.vault import master_key_source, open_vault

    object_id = put(two, vault, b"registre")
    source = master_key_source(settings, {})
    new = source.begin_rotation()
    with transaction(two.factory) as db:
        vault.keyring.rewrap_tenant_keys(db, new, now=two.clock(), actor="t")
    fresh = open_vault(master_key_source(settings, {}), settings.instance)
    assert get(two, fresh, object_id) == b"registre"


def test_crypto_shredding_and_its_replay(two, vault):
    object_id = put(two, vault, b"pli confidentiel")
    with two.session() as db:
        saved = db.get(VaultObject, object_id)
        wrapped, version = saved.wrapped_key, saved.key_version
    with transaction(two.factory) as db:
        vault.shred(db, "40192", object_id, now=two.clock(), actor="user:1")
    with pytest.raises(NotFound):
        get(two, vault, object_id)
    assert object_id in vault.ledger.read_text()
    # A restore of an older database brings the wrapped key back...
    with transaction(two.factory) as db:
        db.execute(
            update(VaultObject)
            .where(VaultObject.id == object_id)
            .values(wrapped_key=wrapped, key_version=version, shredded_at=None)
        )
    assert get(two, vault, object_id) == b"pli confidentiel"
    # ...and replaying the ledger shreds it again.
    with transaction(two.factory) as db:
        assert vault.replay_shreds(db, now=two.clock()) == 1
    with pytest.raises(NotFound):
        get(two, vault, object_id)


def test_gc_removes_orphans_and_keeps_live_blobs(two, vault):
    live = put(two, vault, b"live")
    with pytest.raises(RuntimeError), transaction(two.factory) as db:
        orphan = vault.put(db, "40192", io.BytesIO(b"never committed"), now=two.clock()).id
        raise RuntimeError("crash before commit")
    shredded = put(two, vault, b"gone")
    with transaction(two.factory) as db:
        vault.shred(db, "40192", shredded, now=two.clock(), actor="t")
    names = {n for n, _ in vault.blobs.names()}
    assert {live, orphan, shredded} <= names
    with two.session() as db:
        assert vault.gc(db, grace_seconds=3600) == (0, 0)  # too young: may be in flight
        assert vault.gc(db, grace_seconds=0)[0] == 2
    assert {n for n, _ in vault.blobs.names()} == {live}
    assert get(two, vault, live) == b"live"


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from securex.config import load_settings
    from securex.db import make_engine, make_sessionmaker, transaction
    from securex.vault import master_key_source, open_vault

    class Slow:
        def __init__(self):
            self.sent = 0
        def readinto(self, buf):
            if self.sent > 4 << 20:
                sys.stdout.write("writing\\n"); sys.stdout.flush()
                time.sleep(60)
            n = len(buf)
            buf[:n] = b"x" * n
            self.sent += n
            return n
        def read(self, n=-1):
            b = bytearray(n if n > 0 else 65536)
            return bytes(b[: self.readinto(memoryview(b))])

    settings = load_settings()
    vault = open_vault(master_key_source(settings, {}), settings.instance)
    factory = make_sessionmaker(make_engine(settings.database_url))
    from securex.db import utcnow
    with transaction(factory) as db:
        vault.put(db, "40192", Slow(), now=utcnow())
""")


def test_kill_9_during_a_write_leaves_no_referenced_partial_object(two, vault, settings):
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(settings.instance),
        "SECUREX_DATABASE_URL": settings.database_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"writing\n", proc.stderr.read() if proc.stderr else b""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    with two.session() as db:
        assert db.scalar(select(VaultObject.id)) is None  # no row, so nothing to read
        assert list(vault.blobs.names()) == []  # no committed blob either
        assert vault.gc(db, grace_seconds=0) == (0, 1)  # the temporary file is collected
    assert not any(p.is_file() for p in Path(vault.blobs.root).rglob("*"))


def test_export_files_survive_rotations(two, vault, tmp_path):
    data = os.urandom(70_000)
    with transaction(two.factory) as db, open(tmp_path / "x.sxv", "wb") as out:
        vault.encrypt_file(db, "40192", io.BytesIO(data), out)
    with transaction(two.factory) as db:
        vault.keyring.rotate_tenant(db, "40192", now=two.clock(), actor="t")
    with two.session() as db, open(tmp_path / "x.sxv", "rb") as src:
        assert vault.decrypt_file(db, "40192", src, tmp_path / "x.out") == len(data)
    assert (tmp_path / "x.out").read_bytes() == data
    with two.session() as db, open(tmp_path / "x.sxv", "rb") as src, pytest.raises(IntegrityError):
        vault.decrypt_file(db, "40088", src, tmp_path / "y.out")
    assert not (tmp_path / "y.out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# --- master key providers ------------------------------------------------------------


def test_passphrase_provider(tmp_path):
    params = tmp_path / "master.json"
    key = create_passphrase_key(params, "correct horse battery staple")
    wrapped = key.wrap(b"k" * 32, b"ctx")
    again = read_passphrase_key(params, "correct horse battery staple")
    assert again.key_id == key.key_id and again.unwrap(wrapped, b"ctx") == b"k" * 32
    with pytest.raises(KeyUnavailable, match="incorrecte"):
        read_passphrase_key(params, "wrong horse battery staple!")
    with pytest.raises(IntegrityError):
        again.unwrap(wrapped, b"other context")
    with pytest.raises(KeyUnavailable, match="16 caractères"):
        create_passphrase_key(tmp_path / "short.json", "short")
    assert b"correct horse" not in params.read_bytes()


def test_passphrase_rotation_to_a_new_passphrase(tmp_path):
    phrase = {"value": "first passphrase of the syndicate"}
    source = MasterKeySource(
        "passphrase",
        tmp_path / "unused",
        tmp_path / "master.json",
        passphrase=lambda: phrase["value"],
    )
    first = source.create()
    keyring = Keyring(source.load())
    wrapped = first.wrap(b"t" * 32, b"c")
    new = source.begin_rotation("second passphrase of the syndicate")
    # Before the switch, the old passphrase still opens (the pending file does not).
    assert [k.key_id for k in source.load()] == [first.key_id]
    source.finish_rotation(new, [first])
    phrase["value"] = "second passphrase of the syndicate"
    (loaded,) = source.load()
    assert loaded.key_id == new.key_id and loaded.key_id != first.key_id
    assert keyring.current.unwrap(wrapped, b"c") == b"t" * 32


@pytest.fixture(scope="session")
def hsm_token(softhsm_token) -> Pkcs11Token:
    token = Pkcs11Token(softhsm.MODULE, softhsm_token, softhsm.PIN)
    yield token
    token.close()


def test_pkcs11_provider_on_softhsm(hsm_token, tmp_path, request):
    label = f"master-{request.node.name[-8:]}-{os.getpid()}"
    source = MasterKeySource(
        "pkcs11", tmp_path / "x", tmp_path / "y", token=hsm_token, key_label=label
    )
    first = source.create()
    assert first.key_id == f"pkcs11:securex-test/{label}-1"
    wrapped = first.wrap(b"\x07" * 32, b"securex/tenant-key/40192/1")
    (loaded,) = source.load()
    assert loaded.unwrap(wrapped, b"securex/tenant-key/40192/1") == b"\x07" * 32
    with pytest.raises(IntegrityError):
        loaded.unwrap(wrapped, b"securex/tenant-key/40088/1")
    # The key never leaves the token.
    import pkcs11

    key = hsm_token.session().get_key(label=f"{label}-1")
    assert key[pkcs11.Attribute.EXTRACTABLE] is False
    assert key[pkcs11.Attribute.SENSITIVE] is True
    # Rotation: a second key on the token, the first destroyed once rewrapping is done.
    keyring = Keyring(source.load())
    new = source.begin_rotation()
    rewrapped = new.wrap(
        keyring.current.unwrap(wrapped, b"securex/tenant-key/40192/1"),
        b"securex/tenant-key/40192/1",
    )
    source.finish_rotation(new, [first])
    assert [k.key_id for k in source.load()] == [new.key_id]
    assert new.unwrap(rewrapped, b"securex/tenant-key/40192/1") == b"\x07" * 32


def test_vault_on_the_hsm_end_to_end(hsm_token, make, tmp_path, request):
    from securex.vault import FilesystemBlobStore

    label = f"vault-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    source = MasterKeySource(
        "pkcs11", tmp_path / "x", tmp_path / "y", token=hsm_token, key_label=label
    )
    source.create()
    hsm_vault = Vault(
        Keyring(source.load()), FilesystemBlobStore(tmp_path / "blobs"), ledger=tmp_path / "ledger"
    )
    make.vault = hsm_vault
    make.tenant()
    data = os.urandom(200_000)
    object_id = put(make, hsm_vault, data)
    reopened = Vault(
        Keyring(source.load()), FilesystemBlobStore(tmp_path / "blobs"), ledger=tmp_path / "ledger"
    )
    assert get(make, reopened, object_id) == data
    with make.session() as db:
        assert db.scalar(select(TenantKey.master_key_id)) == f"pkcs11:securex-test/{label}-1"


def test_missing_master_key_file_is_a_clear_error(settings, tmp_path):
    from securex.vault import master_key_source, open_vault

    source = master_key_source(settings, {})
    source.key_file.rename(tmp_path / "elsewhere.key")
    with pytest.raises(KeyUnavailable, match="SECUREX_MASTER_KEY_FILE"):
        open_vault(source, settings.instance)
