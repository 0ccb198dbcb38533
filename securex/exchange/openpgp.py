"""OpenPGP delivery: the recipients' public keys and encryption to one of them, streamed.

A recipient who registers an OpenPGP public key gets the files sent to them encrypted to
that key, so they stay protected on their own disk. This module owns what a key must be to
be registered (:meth:`OpenPgp.inspect`), the instance's GnuPG home where registered keys
live (:meth:`OpenPgp.import_key`), and the streaming of a file through ``gpg --encrypt``
(:meth:`OpenPgp.encrypt`). GnuPG does all the OpenPGP, driven through python-gnupg.

The plaintext is only ever in memory, a chunk at a time: it goes to gpg's stdin through a
pipe and never touches a disk, and at most a few chunks of plaintext and of ciphertext are
held at once, whatever the size of the file.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg

from securex.db import utcnow
from securex.errors import ConfigError, NotFound, SecurexError, ValidationFailed

# A public key with a few user IDs and subkeys is a few KiB; photo IDs make it larger.
MAX_KEY_SIZE = 1024 * 1024
# RSA, DSA and Elgamal below this are refused (ANSSI RGS B1: 2048 bits until 2030).
MIN_FACTORING_BITS = 2048
# One literal data packet's file name is at most 255 octets (RFC 4880, 5.9).
MAX_LITERAL_NAME = 255

# Bytes read from gpg's stdout at a time. Throughput is flat from 16 KiB up (gpg is the
# bottleneck); 64 KiB keeps the number of hand-overs between threads low.
READ_SIZE = 64 * 1024
# Chunks waiting on either side of gpg. Memory held by one encryption is at most
# PLAINTEXT_DEPTH of the caller's chunks plus CIPHERTEXT_DEPTH * READ_SIZE, plus the
# kernel's pipe buffers.
PLAINTEXT_DEPTH = 2
CIPHERTEXT_DEPTH = 8

# Never start gpg-agent or dirmngr: public-key work needs neither, and a daemon started by
# one request would outlive it. A secret key reaching gpg then cannot be stored either.
_BASE_OPTIONS = ("--no-autostart",)
# Registering a key is the trust decision; the web of trust plays no part, and with this
# model gpg never rewrites the trustdb that processes sharing the home would contend for.
_HOME_OPTIONS = (*_BASE_OPTIONS, "--trust-model", "always")
_ENCRYPT_OPTIONS = (
    "--no-encrypt-to",  # to that key only, whatever a gpg.conf might add
    # Exchanged files are mostly PDFs, images and archives, already compressed: zlib would
    # cost 8x the throughput (43 against 340 MiB/s) for nothing.
    "--compress-algo",
    "none",
)

Chunk = bytes | bytearray | memoryview  # a buffer may be reused once the next one is asked for

_FINGERPRINT = re.compile(r"[0-9A-F]{40}")
_ALGORITHMS = {
    1: "RSA",
    2: "RSA",
    3: "RSA",
    16: "Elgamal",
    17: "DSA",
    18: "ECDH",
    19: "ECDSA",
    22: "EdDSA",
}
_FACTORING = {1, 2, 3, 16, 17}
_UNUSABLE = {"e", "r", "i", "d"}  # GnuPG validity: expired, revoked, invalid, disabled
_SECRET_ARMOR = (b"-----BEGIN PGP PRIVATE KEY BLOCK-----", b"-----BEGIN PGP SECRET KEY BLOCK-----")


class KeyRefused(ValidationFailed):
    """A key that cannot be registered or can no longer be used. `reason` names the rule
    (machine-readable, also in `errors`); the detail says it in French."""

    slug = "openpgp-key-refused"
    title = "Clé OpenPGP refusée"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, errors=[{"field": "key", "type": reason, "message": detail}])
        self.reason = reason


class GnupgFailed(SecurexError):
    """gpg failed where it should not have (a keyring it cannot write, a crash)."""

    status = 500
    slug = "openpgp-failed"
    title = "Échec de GnuPG"
    exit_code = 70  # EX_SOFTWARE


class EncryptionFailed(GnupgFailed):
    """gpg did not finish the message: nothing that was yielded is a complete ciphertext."""

    slug = "openpgp-encryption-failed"
    title = "Chiffrement OpenPGP impossible"


@dataclass(frozen=True)
class PublicKey:
    """A public key as GnuPG reads it: enough to show it to its owner and to find it again."""

    fingerprint: str  # 40 hexadecimal digits, upper case (OpenPGP v4)
    user_ids: tuple[str, ...]  # the valid ones, in the key's order
    created: datetime  # UTC
    expires: datetime | None  # UTC; None: never
    algorithm: str  # of the primary key: "RSA", "EdDSA", …
    length: int  # bits
    curve: str | None  # for elliptic-curve keys: "ed25519", …


def encrypted_name(filename: str) -> str:
    """The name to offer for the encrypted copy of `filename`."""
    return f"{filename}.gpg"


class OpenPgp:
    """The instance's GnuPG home (e.g. ``<instance>/gnupg``) and what is done with it.

    Safe to share between threads, and several processes may use the same home: each call
    runs its own gpg, which locks the keyring while it writes to it.
    """

    def __init__(
        self, home: Path | str, *, gpgbinary: str = "gpg", clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)  # gpg warns about, and we want no, readable homes
        self._binary = gpgbinary
        self._clock = clock
        self._gpg = self._gnupg(self.home, _HOME_OPTIONS)

    # --- keys ------------------------------------------------------------------------

    def inspect(self, key: bytes | str) -> PublicKey:
        """Read a public key someone pasted or uploaded (armored or binary) and say whether
        it can be registered; :class:`KeyRefused` if not. Nothing is stored: a private key
        pasted by mistake goes through a pipe to a gpg that cannot store it."""
        data = _key_bytes(key)
        if any(marker in data for marker in _SECRET_ARMOR):
            raise _secret_key()
        # A scratch home, with GnuPG's default trust model: `--dry-run` imports of expired
        # keys abort ("can't open trustdb.gpg") under `--trust-model always` when the home
        # has no trustdb yet. The scratch home only ever gets an empty keyring and trustdb.
        with tempfile.TemporaryDirectory(prefix="securex-gnupg-") as scratch:
            found = self._gnupg(Path(scratch), _BASE_OPTIONS).scan_keys_mem(data)
        if any(record["type"] == "sec" for record in found):
            raise _secret_key()
        # An error anywhere (a truncated block, trailing bytes) would fail the real import.
        if not found or found.returncode != 0:
            raise KeyRefused(
                "not-a-key",
                "Ce texte n'est pas une clé publique OpenPGP lisible. Déposez le fichier .asc "
                "exporté, ou collez le bloc entier, de « -----BEGIN PGP PUBLIC KEY BLOCK----- » "
                "à « -----END PGP PUBLIC KEY BLOCK----- ».",
            )
        if len(found) > 1:
            raise KeyRefused(
                "several-keys",
                f"Ce bloc contient {len(found)} clés : déposez une seule clé publique, "
                "celle du destinataire.",
            )
        return self._judge(found[0], found.uid_map)

    def import_key(self, key: bytes | str) -> PublicKey:
        """Inspect `key`, then add it to the instance's keyring (again is harmless: GnuPG
        merges, so a key re-sent with a later expiry date updates the registered one)."""
        data = _key_bytes(key)
        public = self.inspect(data)
        # import-minimal keeps only the latest self-signatures: third-party signatures are
        # of no use here, and a key flooded with them would slow every later gpg call.
        result = self._gpg.import_keys(data, extra_args=["--import-options", "import-minimal"])
        if result.returncode != 0 or public.fingerprint not in result.fingerprints:
            raise GnupgFailed(
                "La clé OpenPGP n'a pas pu être ajoutée au trousseau de l'instance.",
                gpg_returncode=result.returncode,
            )
        return public

    # --- encryption --------------------------------------------------------------------

    def encrypt(
        self, fingerprint: str, chunks: Iterable[Chunk], *, filename: str | None = None
    ) -> Generator[bytes, None, None]:
        """The binary OpenPGP message of `chunks` encrypted to the registered key
        `fingerprint`, and to it alone, as an iterator of byte strings.

        The key is looked up now (:class:`~securex.errors.NotFound`, :class:`KeyRefused` if
        it expired or was revoked since); gpg starts at the first ``next()``. `chunks` are
        iterated in the consumer's thread, as the output is consumed. The last bytes are
        only yielded once gpg has exited with success; if it fails,
        :class:`EncryptionFailed` is raised instead, and an exception from `chunks`
        propagates: either way what was yielded is not a complete message. Closing the
        iterator early stops gpg (it is sent end-of-input and exits) and returns once gpg
        and the threads serving it are gone; `filename`, if given, is stored in the message
        (the name `gpg --decrypt --use-embedded-filename` would write to).
        """
        fpr = _fingerprint(fingerprint)
        self._check_usable(fpr)
        options = list(_ENCRYPT_OPTIONS)
        if filename is not None and (name := _literal_name(filename)):
            options += ["--set-filename", name]
        return self._stream(fpr, chunks, options)

    def _check_usable(self, fpr: str) -> None:
        # A fingerprint pattern also matches subkeys: only a primary fingerprint is taken.
        listed = [k for k in self._gpg.list_keys(keys=[fpr]) if k["fingerprint"] == fpr]
        if not listed:
            raise NotFound(f"Aucune clé OpenPGP n'est enregistrée sous l'empreinte {fpr}.")
        key = listed[0]
        expires = _timestamp(key["expires"])
        if key["trust"] == "r":
            raise KeyRefused(
                "revoked",
                "La clé OpenPGP du destinataire a été révoquée : il doit en enregistrer une "
                "nouvelle.",
            )
        if key["trust"] == "e" or (expires is not None and expires <= self._clock()):
            raise KeyRefused(
                "expired",
                "La clé OpenPGP du destinataire a expiré : il doit la prolonger ou en "
                "enregistrer une nouvelle.",
            )
        if key["trust"] in _UNUSABLE or "E" not in key["cap"]:
            raise KeyRefused(
                "no-encryption-key",
                "La clé OpenPGP du destinataire n'a plus de sous-clé de chiffrement valide.",
            )

    def _stream(
        self, fpr: str, chunks: Iterable[Chunk], options: list[str]
    ) -> Generator[bytes, None, None]:
        relay = _Relay()
        gpg = self._gnupg(self.home, _HOME_OPTIONS)  # its own: `on_data` is per instance
        gpg.buffer_size = READ_SIZE
        gpg.on_data = relay.on_data
        # The status object is made before the call, to be ours whatever happens: when gpg
        # exits without reading its input (it refuses the key), python-gnupg raises the
        # copier's BrokenPipeError instead of returning it, and gpg's reason would be lost.
        status = gpg.result_map["crypt"](gpg)
        gpg.result_map = {**gpg.result_map, "crypt": lambda _gpg: status}

        def run() -> None:
            error = None
            try:
                gpg.encrypt_file(relay, [fpr], armor=False, extra_args=options)
            except Exception as e:  # handed to the consumer's thread
                error = e
            finally:
                relay.finish(status, error)

        source = iter(chunks)
        worker = threading.Thread(target=run, name=f"gpg-encrypt-{fpr[-16:]}", daemon=True)
        worker.start()
        try:
            held: bytes | None = None  # the latest output, kept until gpg's verdict
            while True:
                step = relay.next_step()
                if step is _FEED:
                    relay.feed(next(source, _END))
                elif step is _DONE:
                    break
                else:
                    if held is not None:
                        yield held
                    held = step
            _verdict(relay.result, relay.error)
            if held is not None:
                yield held
        finally:
            relay.abandon()
            worker.join()
            relay.join_copier()

    # --- helpers -----------------------------------------------------------------------

    def _gnupg(self, home: Path, options: tuple[str, ...]) -> Any:
        try:
            return gnupg.GPG(gpgbinary=self._binary, gnupghome=str(home), options=list(options))
        except (OSError, ValueError) as e:
            raise ConfigError(f"GnuPG ({self._binary}) ne peut pas être lancé : {e}") from e

    def _judge(self, record: dict[str, Any], uid_map: dict[str, dict[str, str]]) -> PublicKey:
        now = self._clock()
        fpr = record.get("fingerprint") or ""
        if not _FINGERPRINT.fullmatch(fpr):
            raise KeyRefused(
                "unsupported-version", "Seules les clés OpenPGP de version 4 sont acceptées."
            )
        if record["trust"] == "r":
            raise KeyRefused(
                "revoked", "Cette clé a été révoquée par son titulaire : elle ne peut plus servir."
            )
        expires = _timestamp(record["expires"])
        if record["trust"] == "e" or (expires is not None and expires <= now):
            when = f" le {expires:%d/%m/%Y}" if expires is not None else ""
            raise KeyRefused(
                "expired",
                f"Cette clé a expiré{when} : prolongez-la (gpg --quick-set-expire) ou "
                "déposez-en une autre.",
            )
        if record["trust"] in _UNUSABLE:
            raise KeyRefused("invalid", "Cette clé est invalide : GnuPG ne peut pas s'en servir.")
        user_ids = tuple(
            _utf8(uid) for uid in record["uids"] if uid_map.get(uid, {}).get("trust") != "r"
        )
        if not user_ids:
            raise KeyRefused("no-user-id", "Cette clé n'a plus aucune identité valide.")
        # The primary key's own capabilities are in lower case, the whole key's usable ones
        # (as GnuPG computes them, with the subkeys) in upper case.
        caps = record["cap"]
        encrypting = [record] if "e" in caps else []
        for sub in record.get("subkey_info", {}).values():
            sub_expires = _timestamp(sub["expires"])
            if (
                "e" in sub["cap"]
                and sub["trust"] not in _UNUSABLE
                and (sub_expires is None or sub_expires > now)
            ):
                encrypting.append(sub)
        if "E" not in caps or not encrypting:
            raise KeyRefused(
                "no-encryption-key",
                "Cette clé ne permet pas de chiffrer (aucune sous-clé de chiffrement valide) : "
                "elle ne sert sans doute qu'à signer. Déposez une clé qui a une sous-clé de "
                "chiffrement.",
            )
        for part in (record, *encrypting):
            if int(part["algo"]) in _FACTORING and int(part["length"]) < MIN_FACTORING_BITS:
                raise KeyRefused(
                    "weak-key",
                    f"Cette clé est trop faible : une clé RSA, DSA ou Elgamal doit compter au "
                    f"moins {MIN_FACTORING_BITS} bits ({part['length']} ici).",
                )
        created = _timestamp(record["date"])
        assert created is not None  # GnuPG lists no key without a creation date
        algo = int(record["algo"])
        return PublicKey(
            fingerprint=fpr,
            user_ids=user_ids,
            created=created,
            expires=expires,
            algorithm=_ALGORITHMS.get(algo, f"algorithme {algo}"),
            length=int(record["length"]),
            curve=record.get("curve") or None,
        )


# --- the relay between the consumer's thread and python-gnupg's threads -------------------

_FEED = object()  # the consumer should hand over one more chunk of plaintext
_DONE = object()  # gpg has exited and all its output was taken
_END = object()  # the caller's chunks ran out


class _Relay:
    """What the consumer's thread and python-gnupg's threads hand each other, under one lock.

    python-gnupg's ``encrypt_file`` (run on a worker thread) copies a file object to gpg's
    stdin on a thread of its own, and hands gpg's stdout to ``GPG.on_data`` on another.
    This relay is that file object and that callback. Both sides are bounded, so memory is;
    the caller's chunks are pulled in the consumer's thread, only when gpg can take them.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.plaintext: deque[bytes] = deque()
        self.ciphertext: deque[bytes] = deque()
        self.eof = False  # no more plaintext: the chunks ran out, or the consumer left
        self.abandoned = False  # the consumer left: what gpg still writes is dropped
        self.done = False
        self.result: Any = None
        self.error: Exception | None = None
        self.copier: threading.Thread | None = None

    # python-gnupg's copier thread: the input file object
    def read(self, size: int = -1) -> bytes:
        with self.lock:
            if self.copier is None:
                self.copier = threading.current_thread()
            self.lock.wait_for(lambda: self.plaintext or self.eof)
            if not self.plaintext:
                return b""  # end of input: gpg finishes the message and exits
            chunk = self.plaintext.popleft()
            self.lock.notify_all()
            return chunk

    # python-gnupg's stdout reader thread: GPG.on_data
    def on_data(self, data: bytes) -> bool:
        if data:
            with self.lock:
                self.lock.wait_for(
                    lambda: len(self.ciphertext) < CIPHERTEXT_DEPTH or self.abandoned
                )
                if not self.abandoned:
                    self.ciphertext.append(data)
                    self.lock.notify_all()
        return False  # python-gnupg keeps no copy of the output

    # the worker thread, once gpg has exited and its output has all been handed over
    def finish(self, result: Any, error: Exception | None) -> None:
        with self.lock:
            self.result, self.error, self.done = result, error, True
            self.lock.notify_all()

    # the consumer's thread
    def next_step(self) -> Any:
        """Ciphertext to yield, else _FEED if gpg can take more plaintext, else _DONE."""
        with self.lock:
            self.lock.wait_for(
                lambda: (
                    self.ciphertext
                    or self.done
                    or (not self.eof and len(self.plaintext) < PLAINTEXT_DEPTH)
                )
            )
            if self.ciphertext:
                data = self.ciphertext.popleft()
                self.lock.notify_all()
                return data
            return _DONE if self.done else _FEED

    def feed(self, chunk: object) -> None:
        """One chunk of the caller's plaintext, or _END."""
        if chunk is _END:
            with self.lock:
                self.eof = True
                self.lock.notify_all()
            return
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"chunks must be bytes, not {type(chunk).__name__}")
        if not chunk:
            return  # an empty read would be taken for the end of input
        data = bytes(chunk)  # the caller may reuse its buffer
        with self.lock:
            self.plaintext.append(data)
            self.lock.notify_all()

    def abandon(self) -> None:
        with self.lock:
            self.eof = self.abandoned = True
            self.plaintext.clear()
            self.ciphertext.clear()
            self.lock.notify_all()

    def join_copier(self) -> None:
        # Once the worker is done, the copier has read the end of input or failed to write
        # to a gpg that has exited: it is finishing. (If gpg failed before the copier's
        # first read, that read returns the end of input at once; it touches nothing of ours.)
        with self.lock:
            copier = self.copier
        if copier is not None:
            copier.join()


def _verdict(result: Any, error: Exception | None) -> None:
    """Return if gpg finished the message (END_ENCRYPTION, exit status 0), else raise."""
    returncode = getattr(result, "returncode", None)
    if error is None and returncode == 0 and result.ok:
        return
    status = f"{result.status} {result.status_detail}"
    reason = "erreur de GnuPG"
    for words, french in (
        ("not found", "clé du destinataire introuvable"),
        ("expired", "clé du destinataire expirée"),
        ("revoked", "clé du destinataire révoquée"),
        ("wrong key usage", "clé du destinataire inapte au chiffrement"),
    ):
        if words in status:
            reason = french
            break
    raise EncryptionFailed(
        f"Le chiffrement OpenPGP a échoué ({reason}) : le fichier n'a pas été remis.",
        gpg_status=result.status or None,
        gpg_returncode=returncode,
    ) from error


def _secret_key() -> KeyRefused:
    return KeyRefused(
        "secret-key",
        "Ceci est une clé privée OpenPGP : elle ne doit être confiée à personne, et elle n'a "
        "pas été enregistrée. Déposez la clé publique (gpg --export --armor votre@adresse). "
        "Si d'autres ont pu voir la clé privée, révoquez-la et créez-en une nouvelle.",
    )


def _key_bytes(key: bytes | str) -> bytes:
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(data) > MAX_KEY_SIZE:
        raise KeyRefused("too-large", f"Clé trop volumineuse : au plus {MAX_KEY_SIZE // 1024} Kio.")
    if not data.strip():
        raise KeyRefused("not-a-key", "Aucune clé n'a été fournie.")
    return data


def _fingerprint(value: str) -> str:
    fpr = value.replace(" ", "").upper()
    if not _FINGERPRINT.fullmatch(fpr):
        raise ValueError("an OpenPGP v4 fingerprint is 40 hexadecimal digits")
    return fpr


def _timestamp(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _utf8(text: str) -> str:
    # python-gnupg reads gpg's output as Latin-1, byte for byte; user IDs are UTF-8.
    return text.encode("latin-1").decode("utf-8", "replace")


def _literal_name(filename: str) -> str:
    """The name stored in the message: no folders, no control characters, at most
    MAX_LITERAL_NAME octets of UTF-8."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return name.encode("utf-8")[:MAX_LITERAL_NAME].decode("utf-8", "ignore")
