"""Encrypted columns and blind indexes for personal data.

`Sealed(field)` is a SQLAlchemy column type: the Python value is `str`, the stored
value is `0x01 | len(tenant) | tenant | nonce | AES-256-GCM(text)`, with the tenant and
the field name as associated data (a value copied to another field or tenant does not
open). Values are sealed with the tenant's `columns` subkey, which must be loaded
beforehand with `column_keys(...)`: a flush outside that block fails loudly instead of
writing clear text.

Blind indexes make an exact search possible without storing the searched value:
HMAC-SHA256 under a per-tenant, per-field key over a normalised form (case, accents,
punctuation and spaces folded). Leakage: equal values have equal indexes within a
tenant and field, so the database reveals how often a value repeats (a common surname
stands out) but not the value; indexes of two tenants or two fields never match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from securex.vault.errors import IntegrityError
from securex.vault.keyring import Keyring

FORMAT = 1
NONCE = 12
INDEX_BYTES = 16


def _aad(tenant: str, name: str) -> bytes:
    return f"securex/column/v1/{tenant}/{name}".encode()


@dataclass
class ColumnKeys:
    """The column keys loaded for this unit of work, and the tenant new values go to."""

    write_tenant: str | None
    keys: dict[str, AESGCM] = field(default_factory=dict)

    def seal(self, name: str, text: str) -> bytes:
        if self.write_tenant is None or self.write_tenant not in self.keys:
            raise RuntimeError("no tenant to seal personal data for: use column_keys()")
        tenant = self.write_tenant.encode()
        nonce = secrets.token_bytes(NONCE)
        sealed = self.keys[self.write_tenant].encrypt(
            nonce, text.encode(), _aad(self.write_tenant, name)
        )
        return bytes([FORMAT, len(tenant)]) + tenant + nonce + sealed

    def open(self, name: str, blob: bytes) -> str:
        try:
            if blob[0] != FORMAT:
                raise IntegrityError()
            end = 2 + blob[1]
            tenant = blob[2:end].decode()
            aead = self.keys.get(tenant)
            if aead is None:
                raise RuntimeError(f"column key of tenant {tenant} not loaded: use column_keys()")
            plain = aead.decrypt(blob[end : end + NONCE], blob[end + NONCE :], _aad(tenant, name))
        except (InvalidTag, IndexError, UnicodeDecodeError, ValueError):
            raise IntegrityError() from None
        return plain.decode()


_active: ContextVar[ColumnKeys | None] = ContextVar("securex_column_keys", default=None)


@contextmanager
def column_keys(
    db: Session, keyring: Keyring, tenant: str, *also_read: str
) -> Iterator[ColumnKeys]:
    """Load `tenant`'s column key (and read-only keys of `also_read` tenants) for the
    block; values written in the block are sealed for `tenant`."""
    keys = ColumnKeys(tenant)
    for name in (tenant, *also_read):
        keys.keys[name] = AESGCM(keyring.subkey(db, name, "columns"))
    token = _active.set(keys)
    try:
        yield keys
    finally:
        _active.reset(token)


def _current() -> ColumnKeys:
    keys = _active.get()
    if keys is None:
        raise RuntimeError("personal data read or written outside column_keys()")
    return keys


class Sealed(TypeDecorator[str]):
    """A text column whose values are encrypted for their tenant."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else _current().seal(self.name, value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else _current().open(self.name, bytes(value))


# --- blind indexes -----------------------------------------------------------------

_SEPARATORS = re.compile(r"[\s\-'’‐‑_.,;:/]+")


def normalise(text: str) -> str:
    """Case, accents, apostrophes, hyphens and runs of spaces folded: "Jean-Noël  D'Arc"
    and "jean noel d arc" index alike."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", bare.casefold()).strip()


class BlindIndexer:
    def __init__(self, db: Session, keyring: Keyring, tenant: str) -> None:
        self.tenant = tenant
        self._root = keyring.subkey(db, tenant, "index")
        self._keys: dict[str, bytes] = {}

    def _key(self, name: str) -> bytes:
        if name not in self._keys:
            self._keys[name] = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=f"securex/blind-index/{name}".encode(),
            ).derive(self._root)
        return self._keys[name]

    def mac(self, name: str, data: bytes) -> str:
        """A keyed digest of `data` as given (no folding): to recognise a value seen
        before (an idempotent retry) without storing a hash anyone could confirm a
        guess against."""
        return hmac.new(self._key(name), data, hashlib.sha256).hexdigest()

    def index(self, name: str, *parts: str) -> str:
        """The index of one or several values (e.g. nom, prénoms, date) for `name`."""
        message = "\x1f".join(normalise(p) for p in parts).encode()
        digest = hmac.new(self._key(name), message, hashlib.sha256).digest()
        return digest[:INDEX_BYTES].hex()
