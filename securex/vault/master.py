"""Master key providers. The master key only wraps and unwraps tenant keys; it never
enters the database, and with the PKCS#11 provider it never leaves the token.

- `file`: 32 random bytes in a 0600 file (`<instance>/keys/master.key`, or the path in
  SECUREX_MASTER_KEY_FILE, which production should put outside the instance folder).
- `passphrase`: a key derived with Argon2id from SECUREX_MASTER_PASSPHRASE (or a
  prompt); salt, parameters and a check value live in `<instance>/keys/master.json`.
- `pkcs11`: an AES-256 key on a token (an HSM; SoftHSM2 in tests), used through
  CKM_AES_GCM on the token itself.

Each provider may hold several master keys during a rotation; every wrapped tenant key
records the id of the master key that wrapped it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from securex.vault.errors import IntegrityError, KeyUnavailable

NONCE = 12


class MasterKey(Protocol):
    key_id: str

    def wrap(self, key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class AesGcmKey:
    """A master key held in memory (file and passphrase providers)."""

    def __init__(self, key: bytes, kind: str) -> None:
        if len(key) != 32:
            raise KeyUnavailable("Clé maîtresse invalide (32 octets attendus).")
        self._aead = AESGCM(key)
        fingerprint = hmac.new(key, b"securex/master-key-id", hashlib.sha256).hexdigest()[:16]
        self.key_id = f"{kind}:{fingerprint}"

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], context)
        except (InvalidTag, ValueError):
            raise IntegrityError() from None


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` (0600) atomically: temp name, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- file --------------------------------------------------------------------------


def create_key_file(path: Path) -> AesGcmKey:
    if path.exists():
        raise KeyUnavailable(f"{path} existe déjà : une clé maîtresse n'est jamais écrasée.")
    key = secrets.token_bytes(32)
    write_secret_file(path, key)
    return AesGcmKey(key, "file")


def read_key_file(path: Path) -> AesGcmKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyUnavailable(
            f"Clé maîtresse introuvable : {path}. Vérifiez SECUREX_MASTER_KEY_FILE."
        ) from None
    except PermissionError:
        raise KeyUnavailable(f"Clé maîtresse illisible (droits) : {path}.") from None
    return AesGcmKey(data, "file")


# --- passphrase --------------------------------------------------------------------

ARGON2 = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4}
CHECK_CONTEXT = b"securex/master-passphrase-check"


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hash_secret_raw(passphrase.encode(), salt, hash_len=32, type=Type.ID, **params)


def create_passphrase_key(path: Path, passphrase: str) -> AesGcmKey:
    if len(passphrase) < 16:
        raise KeyUnavailable("La phrase de passe maîtresse doit compter au moins 16 caractères.")
    salt = secrets.token_bytes(16)
    key = AesGcmKey(_derive(passphrase, salt, ARGON2), "passphrase")
    check = key.wrap(bytes(32), CHECK_CONTEXT)
    record = {"kdf": "argon2id", "salt": salt.hex(), **ARGON2, "check": check.hex()}
    write_secret_file(path, json.dumps(record).encode())
    return key


def read_passphrase_key(path: Path, passphrase: str) -> AesGcmKey:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        params = {k: int(record[k]) for k in ARGON2}
        salt, check = bytes.fromhex(record["salt"]), bytes.fromhex(record["check"])
    except FileNotFoundError:
        raise KeyUnavailable(f"Paramètres de la phrase de passe introuvables : {path}.") from None
    except (ValueError, KeyError, TypeError):
        raise KeyUnavailable(f"Paramètres de la phrase de passe illisibles : {path}.") from None
    key = AesGcmKey(_derive(passphrase, salt, params), "passphrase")
    try:
        key.unwrap(check, CHECK_CONTEXT)
    except IntegrityError:
        raise KeyUnavailable("Phrase de passe maîtresse incorrecte.") from None
    return key


# --- PKCS#11 -----------------------------------------------------------------------


class Pkcs11Key:
    """An AES-256 key on a PKCS#11 token; wrapping runs on the token (CKM_AES_GCM)."""

    def __init__(self, session: Any, key: Any, label: str, token_label: str) -> None:
        self._session = session
        self._key = key
        self.label = label
        self.key_id = f"pkcs11:{token_label}/{label}"

    def wrap(self, key: bytes, context: bytes) -> bytes:
        import pkcs11

        nonce = secrets.token_bytes(NONCE)
        params = pkcs11.GCMParams(nonce, context, 128)
        sealed: bytes = self._key.encrypt(
            key, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
        )
        return nonce + sealed

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        import pkcs11

        try:
            params = pkcs11.GCMParams(wrapped[:NONCE], context, 128)
            plain: bytes = self._key.decrypt(
                wrapped[NONCE:], mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
            )
        except pkcs11.PKCS11Error:
            raise IntegrityError() from None
        return plain

    def destroy(self) -> None:
        self._key.destroy()


@dataclass
class Pkcs11Token:
    """An open session on the token that holds the master keys."""

    module: str
    token_label: str
    pin: str
    _session: Any = field(default=None, repr=False)

    def session(self) -> Any:
        if self._session is None:
            import pkcs11

            try:
                lib = pkcs11.lib(self.module)
                token = lib.get_token(token_label=self.token_label)
                try:
                    self._session = token.open(user_pin=self.pin, rw=True)
                except pkcs11.UserAlreadyLoggedIn:
                    # PKCS#11 logins are per process: another session (the signer on
                    # the same token) already logged this process in.
                    self._session = token.open(rw=True)
            except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
                raise KeyUnavailable(
                    f"Jeton PKCS#11 « {self.token_label} » inaccessible "
                    f"({exc.__class__.__name__}) : vérifiez le module, le libellé du jeton "
                    "et le code PIN."
                ) from None
        return self._session

    def key(self, label: str) -> Pkcs11Key:
        import pkcs11

        try:
            key = self.session().get_key(
                label=label, key_type=pkcs11.KeyType.AES, object_class=pkcs11.ObjectClass.SECRET_KEY
            )
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
            raise KeyUnavailable(
                f"Clé « {label} » absente (ou en double) sur le jeton {self.token_label}."
            ) from None
        return Pkcs11Key(self.session(), key, label, self.token_label)

    def labels(self, prefix: str) -> list[str]:
        """Labels `<prefix>-<n>` exactly (not another instance's `<prefix>-x-<n>`),
        oldest first by number."""
        import pkcs11

        found = self.session().get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY})
        numbered = []
        for obj in found:
            label = str(obj.label)
            head, _, number = label.rpartition("-")
            if head == prefix and number.isdigit():
                numbered.append((int(number), label))
        return [label for _, label in sorted(numbered)]

    def generate(self, label: str) -> Pkcs11Key:
        import pkcs11

        key = self.session().generate_key(
            pkcs11.KeyType.AES,
            256,
            label=label,
            store=True,
            template={
                pkcs11.Attribute.SENSITIVE: True,
                pkcs11.Attribute.EXTRACTABLE: False,
                pkcs11.Attribute.ENCRYPT: True,
                pkcs11.Attribute.DECRYPT: True,
            },
        )
        return Pkcs11Key(self.session(), key, label, self.token_label)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


# --- choosing the provider ---------------------------------------------------------

PROVIDERS = ("file", "passphrase", "pkcs11")


@dataclass
class MasterKeySource:
    """Where the master keys come from, as the configuration says."""

    provider: str
    key_file: Path
    params_file: Path
    passphrase: Callable[[], str] | None = None
    token: Pkcs11Token | None = None
    key_label: str = "securex-master"

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise KeyUnavailable(
                f"Fournisseur de clé maîtresse inconnu : {self.provider!r} "
                f"(attendu : {', '.join(PROVIDERS)})."
            )

    def _passphrase(self) -> str:
        if self.passphrase is None:
            raise KeyUnavailable(
                "Phrase de passe maîtresse absente : définissez SECUREX_MASTER_PASSPHRASE."
            )
        return self.passphrase()

    def _pending(self, path: Path) -> Path:
        return path.with_name(path.name + ".new")

    def create(self) -> MasterKey:
        """The first master key of a new instance."""
        if self.provider == "file":
            return create_key_file(self.key_file)
        if self.provider == "passphrase":
            return create_passphrase_key(self.params_file, self._passphrase())
        assert self.token is not None
        if self.token.labels(self.key_label):
            raise KeyUnavailable(f"Le jeton porte déjà une clé « {self.key_label}… ».")
        return self.token.generate(f"{self.key_label}-1")

    def load(self) -> list[MasterKey]:
        """Every master key available: the current one, plus the pending one when a
        rotation was interrupted (wrapped keys say which one they need)."""
        if self.provider == "file":
            keys: list[MasterKey] = [read_key_file(self.key_file)]
            if self._pending(self.key_file).exists():
                keys.append(read_key_file(self._pending(self.key_file)))
            return keys
        if self.provider == "passphrase":
            # After an interrupted rotation to a new passphrase, only one of the two
            # parameter files opens with the passphrase given: keep what opens.
            phrase = self._passphrase()
            keys = []
            for path in (self.params_file, self._pending(self.params_file)):
                if path.exists() or path == self.params_file:
                    try:
                        keys.append(read_passphrase_key(path, phrase))
                    except KeyUnavailable:
                        if path == self.params_file and not self._pending(path).exists():
                            raise
            if not keys:
                raise KeyUnavailable("Phrase de passe maîtresse incorrecte.")
            return keys
        assert self.token is not None
        labels = self.token.labels(self.key_label)
        if not labels:
            raise KeyUnavailable(f"Aucune clé « {self.key_label}-N » sur le jeton.")
        return [self.token.key(label) for label in labels]

    def discard(self, key: MasterKey) -> None:
        """Undo `create` when the instance it was made for failed to initialise."""
        if self.provider == "file":
            self.key_file.unlink(missing_ok=True)
        elif self.provider == "passphrase":
            self.params_file.unlink(missing_ok=True)
        elif isinstance(key, Pkcs11Key):
            key.destroy()

    def begin_rotation(self, new_passphrase: str | None = None) -> MasterKey:
        """Make the next master key, kept beside the current one until `finish_rotation`."""
        # A pending key left by an interrupted rotation may already wrap tenant keys:
        # it is reused, never replaced.
        if self.provider == "file":
            pending = self._pending(self.key_file)
            if pending.exists():
                return read_key_file(pending)
            return create_key_file(pending)
        if self.provider == "passphrase":
            pending = self._pending(self.params_file)
            if pending.exists():
                return read_passphrase_key(pending, new_passphrase or self._passphrase())
            return create_passphrase_key(pending, new_passphrase or self._passphrase())
        assert self.token is not None
        labels = self.token.labels(self.key_label)
        last = int(labels[-1].rpartition("-")[2]) if labels else 0
        return self.token.generate(f"{self.key_label}-{last + 1}")

    def finish_rotation(self, new: MasterKey, old: list[MasterKey]) -> None:
        """Once every tenant key is rewrapped and committed: retire the old keys."""
        if self.provider == "file":
            os.replace(self._pending(self.key_file), self.key_file)
        elif self.provider == "passphrase":
            os.replace(self._pending(self.params_file), self.params_file)
        else:
            for key in old:
                if isinstance(key, Pkcs11Key) and key.key_id != new.key_id:
                    key.destroy()
