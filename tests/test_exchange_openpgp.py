"""OpenPGP delivery: which keys are registered (and every way a key is refused), round
trips decrypted by the recipient's own GnuPG, bounded memory on 200 MiB, and gpg and its
threads gone whenever the consumer stops, whatever the reason.

The recipient's keys live in a separate GnuPG home, with its own gpg-agent (key generation
and decryption need one); the instance's home never gets an agent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gnupg
import pytest

from securex.errors import NotFound, ValidationFailed
from securex.exchange import openpgp
from securex.exchange.openpgp import (
    EncryptionFailed,
    KeyRefused,
    OpenPgp,
    PublicKey,
    encrypted_name,
)

RENEE = "Renée Lefèvre <renee.lefevre@mairie-exemple.fr>"
MiB = 2**20
EMPTY_ARMOR = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n"


# --- the recipient's side ------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Public keys as a recipient would export them (armored unless said otherwise)."""

    gpg: Any  # the recipient's GnuPG: it decrypts
    alice: str  # ECC (ed25519 + cv25519), expires in 2 years
    alice_fpr: str
    alice_binary: bytes
    alice_secret: str
    alice_secret_binary: bytes
    bob: str  # RSA 2048
    bob_fpr: str
    carol: str  # valid when exported, revoked since
    carol_fpr: str
    carol_revoked: str
    expired: str
    signing_only: str
    expired_subkey: str  # a valid primary key whose only encryption subkey expired
    weak: str  # RSA 1024


def _ecc(gpg: Any, name: str, email: str, **extra: Any) -> str:
    key = gpg.gen_key(
        gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            name_real=name,
            name_email=email,
            no_protection=True,
            **extra,
        )
    )
    assert key.fingerprint, key.stderr
    return str(key.fingerprint)


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    # A short path: gpg-agent's socket lives in the home, and socket paths are short.
    home = tempfile.mkdtemp(prefix="sx-gpg-")
    try:
        gpg = gnupg.GPG(gnupghome=home, encoding="utf-8")
        # Keys made in 2015, valid one year: long expired today.
        past = gnupg.GPG(
            gnupghome=home,
            encoding="utf-8",
            options=[
                "--faked-system-time",
                "20150101T000000!",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ],
        )
        alice = _ecc(gpg, "Renée Lefèvre", "renee.lefevre@mairie-exemple.fr", expire_date="2y")
        bob = gpg.gen_key(
            gpg.gen_key_input(
                key_type="RSA",
                key_length=2048,
                subkey_type="RSA",
                subkey_length=2048,
                name_real="Bob",
                name_email="bob@example.fr",
                no_protection=True,
            )
        ).fingerprint
        carol = _ecc(gpg, "Carol", "carol@example.fr")
        carol_valid = gpg.export_keys(carol)
        revocation = (Path(home) / "openpgp-revocs.d" / f"{carol}.rev").read_text()
        # gpg stores the certificate with its armor line defused by a colon.
        assert gpg.import_keys(revocation.replace(":-----BEGIN", "-----BEGIN")).returncode == 0
        expired = _ecc(past, "Old", "old@example.fr", expire_date="1y")
        signing_only = gpg.gen_key(
            gpg.gen_key_input(
                key_type="EDDSA",
                key_curve="ed25519",
                key_usage="sign",
                name_real="Sign",
                name_email="sign@example.fr",
                no_protection=True,
            )
        ).fingerprint
        old_subkey = past.gen_key(
            past.gen_key_input(
                key_type="EDDSA",
                key_curve="ed25519",
                key_usage="sign",
                name_real="Sub",
                name_email="sub@example.fr",
                no_protection=True,
            )
        ).fingerprint
        added = past.add_subkey(old_subkey, algorithm="cv25519", usage="encrypt", expire="1y")
        assert added.returncode == 0, added.stderr
        weak = gpg.gen_key(
            gpg.gen_key_input(
                key_type="RSA",
                key_length=1024,
                subkey_type="RSA",
                subkey_length=1024,
                name_real="Weak",
                name_email="weak@example.fr",
                no_protection=True,
            )
        ).fingerprint
        yield Keys(
            gpg=gpg,
            alice=gpg.export_keys(alice),
            alice_fpr=alice,
            alice_binary=gpg.export_keys(alice, armor=False),
            alice_secret=gpg.export_keys(alice, secret=True, expect_passphrase=False),
            alice_secret_binary=gpg.export_keys(
                alice, secret=True, expect_passphrase=False, armor=False
            ),
            bob=gpg.export_keys(bob),
            bob_fpr=bob,
            carol=carol_valid,
            carol_fpr=carol,
            carol_revoked=gpg.export_keys(carol),
            expired=gpg.export_keys(expired),
            signing_only=gpg.export_keys(signing_only),
            expired_subkey=gpg.export_keys(old_subkey),
            weak=gpg.export_keys(weak),
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def decrypt(keys: Keys, message: bytes) -> Any:
    result = keys.gpg.decrypt(message)
    assert result.ok, result.stderr
    return result


# --- the instance's side -------------------------------------------------------------------


def agent_socket(home: Path) -> Path:
    listed = subprocess.run(
        ["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(listed.stdout.strip())


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The instance's GnuPG home, checked at the end never to have had an agent."""
    home = tmp_path / "instance" / "gnupg"
    yield home
    started = agent_socket(home).exists()
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert not started, "a gpg-agent was started in the instance's home"


def instance_gpg(home: Path, *options: str) -> Any:
    """The instance's home, as another process would touch it (without an agent either)."""
    return gnupg.GPG(gnupghome=str(home), options=["--no-autostart", *options])


@pytest.fixture
def pgp(home: Path) -> OpenPgp:
    return OpenPgp(home)


@pytest.fixture
def registered(pgp: OpenPgp, keys: Keys) -> OpenPgp:
    pgp.import_key(keys.alice)
    return pgp


def keyring(home: Path, secret: bool = False) -> list[str]:
    return [k["fingerprint"] for k in instance_gpg(home).list_keys(secret=secret)]


def gpg_children() -> list[int]:
    """This process's gpg child processes, zombies included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if comm == "gpg" and int(rest.split()[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def odd_chunks(data: bytes) -> Iterator[bytes | bytearray | memoryview]:
    """Chunks of sizes from 1 byte to ~100 KiB, as bytes, bytearray and memoryview."""
    sizes = [1, 7919, 0, 65536, 65537, 3, 104729, 65535, 12]
    kinds = [bytes, bytearray, memoryview]
    offset, i = 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        yield kinds[i % 3](data[offset : offset + size])
        offset += size
        i += 1


# --- inspect -------------------------------------------------------------------------------


def test_home_is_created_private(home: Path) -> None:
    OpenPgp(home)
    assert home.is_dir()
    assert home.stat().st_mode & 0o777 == 0o700


def test_inspect_reads_the_key(pgp: OpenPgp, home: Path, keys: Keys) -> None:
    key = pgp.inspect(keys.alice)
    assert key.fingerprint == keys.alice_fpr
    assert re.fullmatch(r"[0-9A-F]{40}", key.fingerprint)
    assert key.user_ids == (RENEE,)
    assert (key.algorithm, key.length, key.curve) == ("EdDSA", 255, "ed25519")
    assert key.created.tzinfo is UTC
    assert key.expires is not None and key.expires.tzinfo is UTC
    assert timedelta(days=700) < key.expires - key.created < timedelta(days=740)
    # Nothing was stored: inspecting is not registering.
    assert keyring(home) == []


def test_inspect_binary_and_bytes(pgp: OpenPgp, keys: Keys) -> None:
    assert pgp.inspect(keys.alice_binary) == pgp.inspect(keys.alice.encode())


def test_inspect_key_pasted_with_its_email(pgp: OpenPgp, keys: Keys) -> None:
    mail = f"Bonjour,\n\nvoici ma clé :\n\n{keys.alice}\n-- \nRenée\n"
    assert pgp.inspect(mail).fingerprint == keys.alice_fpr


def test_inspect_rsa(pgp: OpenPgp, keys: Keys) -> None:
    key = pgp.inspect(keys.bob)
    assert (key.fingerprint, key.user_ids) == (keys.bob_fpr, ("Bob <bob@example.fr>",))
    assert (key.algorithm, key.length, key.curve, key.expires) == ("RSA", 2048, None, None)


def test_public_key_is_frozen(pgp: OpenPgp, keys: Keys) -> None:
    key = pgp.inspect(keys.alice)
    with pytest.raises(AttributeError):
        key.fingerprint = "0" * 40  # type: ignore[misc]
    assert hash(key) == hash(pgp.inspect(keys.alice))


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("alice_secret", "secret-key"),
        ("alice_secret_binary", "secret-key"),
        ("garbage", "not-a-key"),
        ("empty", "not-a-key"),
        ("armor_only", "not-a-key"),
        ("truncated", "not-a-key"),
        ("trailing_bytes", "not-a-key"),
        ("two_keys", "several-keys"),
        ("expired", "expired"),
        ("carol_revoked", "revoked"),
        ("signing_only", "no-encryption-key"),
        ("expired_subkey", "no-encryption-key"),
        ("weak", "weak-key"),
        ("too_large", "too-large"),
    ],
)
def test_refused(pgp: OpenPgp, home: Path, keys: Keys, which: str, reason: str) -> None:
    samples: dict[str, str | bytes] = {
        "garbage": "bonjour, voici ma clé",
        "empty": "  \n",
        "armor_only": EMPTY_ARMOR,
        "two_keys": keys.alice + keys.bob,
        "truncated": keys.alice_binary[:-10],
        "trailing_bytes": keys.alice_binary + b"\x00\x01",
        "too_large": b"\x99" * (openpgp.MAX_KEY_SIZE + 1),
    }
    key = samples.get(which) or getattr(keys, which)
    with pytest.raises(KeyRefused) as caught:
        pgp.inspect(key)
    error = caught.value
    assert error.reason == reason
    assert isinstance(error, ValidationFailed)
    assert (error.status, error.slug) == (422, "openpgp-key-refused")
    assert error.title == "Clé OpenPGP refusée"
    assert error.extra["errors"] == [{"field": "key", "type": reason, "message": error.detail}]
    assert error.detail and error.detail[0].isupper()  # a French sentence, for the person
    with pytest.raises(KeyRefused):
        pgp.import_key(key)
    assert keyring(home) == []


def test_secret_key_message_is_clear_and_nothing_is_kept(
    pgp: OpenPgp, home: Path, keys: Keys
) -> None:
    with pytest.raises(KeyRefused) as caught:
        pgp.import_key(keys.alice_secret_binary)
    assert "clé privée" in caught.value.detail
    assert "clé publique" in caught.value.detail
    assert keyring(home) == [] and keyring(home, secret=True) == []
    private = home / "private-keys-v1.d"
    assert not private.exists() or not any(private.iterdir())
    assert not any(home.glob("S.gpg-agent*"))


def test_expired_is_judged_by_the_clock(home: Path, keys: Keys) -> None:
    expires = OpenPgp(home).inspect(keys.alice).expires
    assert expires is not None
    later = OpenPgp(home, clock=lambda: expires + timedelta(seconds=1))
    with pytest.raises(KeyRefused) as caught:
        later.inspect(keys.alice)
    assert caught.value.reason == "expired"
    assert expires.strftime("%d/%m/%Y") in caught.value.detail


def test_revoked_user_ids_are_not_shown(pgp: OpenPgp, keys: Keys) -> None:
    home = tempfile.mkdtemp(prefix="sx-gpg-")
    try:
        gpg = gnupg.GPG(gnupghome=home, encoding="utf-8")
        fpr = _ecc(gpg, "Ancien Nom", "ancien@example.fr")
        for args in (
            ["--quick-add-uid", fpr, "Nouveau Nom <nouveau@example.fr>"],
            ["--quick-revoke-uid", fpr, "Ancien Nom <ancien@example.fr>"],
        ):
            subprocess.run(
                ["gpg", "--homedir", home, "--batch", *args], check=True, capture_output=True
            )
        key = pgp.inspect(gpg.export_keys(fpr))
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
    assert key.user_ids == ("Nouveau Nom <nouveau@example.fr>",)


# --- import_key ----------------------------------------------------------------------------


def test_import_key_is_idempotent(pgp: OpenPgp, home: Path, keys: Keys) -> None:
    first = pgp.import_key(keys.alice)
    assert first == pgp.inspect(keys.alice)
    assert pgp.import_key(keys.alice_binary) == first
    pgp.import_key(keys.bob)
    assert sorted(keyring(home)) == sorted([keys.alice_fpr, keys.bob_fpr])


def test_same_home_from_two_instances(home: Path, keys: Keys) -> None:
    """Two processes of the same instance share the home."""
    OpenPgp(home).import_key(keys.alice)
    message = b"".join(OpenPgp(home).encrypt(keys.alice_fpr, [b"bonjour"]))
    assert decrypt(keys, message).data == b"bonjour"


# --- encrypt -------------------------------------------------------------------------------


def test_round_trip_in_odd_chunks(registered: OpenPgp, keys: Keys) -> None:
    data = os.urandom(3 * MiB + 12345)
    message = b"".join(
        registered.encrypt(keys.alice_fpr, odd_chunks(data), filename="acte-naissance-é.pdf")
    )
    assert message[0] & 0x80 and not message.startswith(b"-----")  # binary, not armored
    assert data[:4096] not in message
    result = decrypt(keys, message)
    assert result.data == data
    # The name is in the literal data packet, where `gpg --use-embedded-filename` finds it.
    plaintext = re.search(r"\[GNUPG:\] PLAINTEXT \S+ \S+ (\S+)", result.stderr)
    assert plaintext and plaintext.group(1) == "acte-naissance-é.pdf"
    # Encrypted to that key alone: one public-key packet, to Alice's encryption subkey.
    subkeys = keys.gpg.list_keys(keys=[keys.alice_fpr])[0]["subkeys"]
    assert keys.gpg.get_recipients(message) == [subkeys[0][0]]


@pytest.mark.parametrize(
    "size", [0, 1, openpgp.READ_SIZE - 1, openpgp.READ_SIZE, openpgp.READ_SIZE + 1]
)
def test_round_trip_at_boundaries(registered: OpenPgp, keys: Keys, size: int) -> None:
    data = os.urandom(size)
    message = b"".join(registered.encrypt(keys.alice_fpr, iter([data])))
    assert decrypt(keys, message).data == data


def test_rsa_recipient(pgp: OpenPgp, keys: Keys) -> None:
    pgp.import_key(keys.bob)
    message = b"".join(pgp.encrypt(keys.bob_fpr, [b"a", b"", b"b"]))
    assert decrypt(keys, message).data == b"ab"


def test_filename_is_reduced_to_a_name(registered: OpenPgp, keys: Keys) -> None:
    long = "../../etc/" + "é" * 200 + "\n.pdf"
    message = b"".join(registered.encrypt(keys.alice_fpr, [b"x"], filename=long))
    stored = re.search(r"PLAINTEXT \S+ \S+ (\S+)", decrypt(keys, message).stderr)
    assert stored is not None
    assert stored.group(1) == "é" * 127  # 254 octets: the 128th é would not fit in 255


def test_memory_is_bounded(registered: OpenPgp, keys: Keys) -> None:
    size = 200 * MiB
    block = os.urandom(MiB)

    def source() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    received = 0
    tracemalloc.start()
    try:
        started = time.perf_counter()
        for chunk in registered.encrypt(keys.alice_fpr, source()):
            received += len(chunk)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size < received < size * 1.001  # uncompressed: packet headers only
    # The queues hold at most 8 reads of 64 KiB and 2 chunks; the payload is 200 MiB.
    assert peak < 4 * MiB, peak
    print(f"\n200 MiB encrypted in {elapsed:.2f} s: {size / MiB / elapsed:.0f} MiB/s")


def test_closing_early_stops_gpg_and_its_threads(registered: OpenPgp, keys: Keys) -> None:
    threads_before = set(threading.enumerate())
    assert gpg_children() == []
    block = os.urandom(MiB)
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield block

    source = endless()
    stream = registered.encrypt(keys.alice_fpr, source)
    for _ in range(3):
        next(stream)
    assert len(gpg_children()) == 1
    stream.close()
    assert gpg_children() == []  # gpg exited and was reaped: no zombie
    assert set(threading.enumerate()) == threads_before
    # No thread of ours is inside the caller's generator any more: the caller may go on.
    before = pulled
    next(source)
    assert pulled == before + 1


def test_dropping_the_iterator_stops_gpg(registered: OpenPgp, keys: Keys) -> None:
    stream = registered.encrypt(keys.alice_fpr, iter(lambda: b"x" * 65536, None))
    next(stream)
    del stream  # CPython closes a generator as it is collected
    assert gpg_children() == []


def test_nothing_starts_before_iteration(registered: OpenPgp, keys: Keys) -> None:
    registered.encrypt(keys.alice_fpr, [b"x"])
    assert gpg_children() == []


def test_unknown_fingerprint(registered: OpenPgp, keys: Keys) -> None:
    with pytest.raises(NotFound) as caught:
        registered.encrypt(keys.bob_fpr, [b"x"])  # Bob is not registered here
    assert keys.bob_fpr in caught.value.detail
    assert caught.value.status == 404


def test_a_subkey_fingerprint_is_not_a_recipient(registered: OpenPgp, keys: Keys) -> None:
    subkey = keys.gpg.list_keys(keys=[keys.alice_fpr])[0]["subkeys"][0][2]
    with pytest.raises(NotFound):
        registered.encrypt(subkey, [b"x"])


@pytest.mark.parametrize("fingerprint", ["", "ABCD", "Z" * 40, "0" * 64])
def test_malformed_fingerprint(registered: OpenPgp, fingerprint: str) -> None:
    with pytest.raises(ValueError, match="40 hexadecimal"):
        registered.encrypt(fingerprint, [b"x"])


def test_fingerprint_spelling_is_forgiven(registered: OpenPgp, keys: Keys) -> None:
    spaced = " ".join(keys.alice_fpr.lower()[i : i + 4] for i in range(0, 40, 4))
    assert decrypt(keys, b"".join(registered.encrypt(spaced, [b"ok"]))).data == b"ok"


def test_expired_since_registration(home: Path, keys: Keys) -> None:
    OpenPgp(home).import_key(keys.alice)
    expires = OpenPgp(home).inspect(keys.alice).expires
    assert expires is not None
    later = OpenPgp(home, clock=lambda: expires + timedelta(days=1))
    with pytest.raises(KeyRefused) as caught:
        later.encrypt(keys.alice_fpr, [b"x"])
    assert caught.value.reason == "expired"


def test_revoked_since_registration(pgp: OpenPgp, home: Path, keys: Keys) -> None:
    pgp.import_key(keys.carol)
    # The revocation reaches the keyring (a refresh, another process): sending stops.
    assert instance_gpg(home).import_keys(keys.carol_revoked).returncode == 0
    with pytest.raises(KeyRefused) as caught:
        pgp.encrypt(keys.carol_fpr, [b"x"])
    assert caught.value.reason == "revoked"


def test_gpg_failure_is_raised_not_a_truncated_message(
    registered: OpenPgp, home: Path, keys: Keys
) -> None:
    stream = registered.encrypt(keys.alice_fpr, iter([os.urandom(MiB)]))
    # The key disappears between the check and the start of gpg.
    deleted = instance_gpg(home, "--yes").delete_keys(keys.alice_fpr)
    assert str(deleted) == "ok"
    received = []
    with pytest.raises(EncryptionFailed) as caught:
        for chunk in stream:
            received.append(chunk)
    assert received == []
    assert caught.value.status == 500
    assert caught.value.detail == (
        "Le chiffrement OpenPGP a échoué (clé du destinataire introuvable) : le fichier n'a "
        "pas été remis."
    )
    assert caught.value.extra["gpg_status"] == "invalid recipient"
    assert caught.value.extra["gpg_returncode"] == 2
    assert gpg_children() == []


def test_last_bytes_wait_for_gpg_verdict(
    registered: OpenPgp, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything but the last read is passed on as it comes; the last read waits for the
    verdict, so a failing gpg leaves the consumer with an error, never a whole message."""
    data = os.urandom(2 * MiB)
    whole = b"".join(registered.encrypt(keys.alice_fpr, [data]))
    monkeypatch.setattr(openpgp, "_verdict", lambda result, error: _fail())
    received = []
    with pytest.raises(EncryptionFailed):
        for chunk in registered.encrypt(keys.alice_fpr, [data]):
            received.append(chunk)
    assert received and len(b"".join(received)) < len(whole)
    assert not keys.gpg.decrypt(b"".join(received)).ok
    assert gpg_children() == []


def _fail() -> None:
    raise EncryptionFailed("Le chiffrement OpenPGP a échoué : le fichier n'a pas été remis.")


def test_error_in_the_source_propagates(registered: OpenPgp, keys: Keys) -> None:
    class Broken(Exception):
        pass

    def source() -> Iterator[bytes]:
        yield os.urandom(MiB)
        raise Broken("the vault said no")

    received = []
    with pytest.raises(Broken):
        for chunk in registered.encrypt(keys.alice_fpr, source()):
            received.append(chunk)
    assert not keys.gpg.decrypt(b"".join(received)).ok
    assert gpg_children() == []


def test_chunks_must_be_bytes(registered: OpenPgp, keys: Keys) -> None:
    with pytest.raises(TypeError, match="bytes, not str"):
        b"".join(registered.encrypt(keys.alice_fpr, ["texte"]))  # type: ignore[list-item]
    assert gpg_children() == []


def test_chunks_are_pulled_in_the_consumer_thread(registered: OpenPgp, keys: Keys) -> None:
    """The source may rely on thread-local state (a session, an application context)."""
    consumer = threading.current_thread()

    def source() -> Iterator[bytes]:
        for _ in range(20):
            assert threading.current_thread() is consumer
            yield b"z" * 100_000

    assert decrypt(keys, b"".join(registered.encrypt(keys.alice_fpr, source()))).data == (
        b"z" * 2_000_000
    )


def test_concurrent_encryptions(pgp: OpenPgp, keys: Keys) -> None:
    pgp.import_key(keys.alice)
    pgp.import_key(keys.bob)
    jobs = {keys.alice_fpr: os.urandom(MiB), keys.bob_fpr: os.urandom(MiB + 1)}
    messages: dict[str, bytes] = {}

    def send(fpr: str) -> None:
        messages[fpr] = b"".join(pgp.encrypt(fpr, odd_chunks(jobs[fpr])))

    threads = [threading.Thread(target=send, args=(fpr,)) for fpr in jobs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for fpr, data in jobs.items():
        assert decrypt(keys, messages[fpr]).data == data


def test_no_agent_is_ever_started(registered: OpenPgp, home: Path, keys: Keys) -> None:
    b"".join(registered.encrypt(keys.alice_fpr, [b"x"]))
    with pytest.raises(KeyRefused):
        registered.inspect(keys.alice_secret)
    assert not agent_socket(home).exists()  # (and every test's teardown checks it too)


def test_encrypted_name() -> None:
    assert encrypted_name("acte-naissance.pdf") == "acte-naissance.pdf.gpg"


def test_public_key_type() -> None:
    key = PublicKey("A" * 40, ("x",), datetime.now(UTC), None, "RSA", 3072, None)
    assert key.user_ids == ("x",)
