"""The key hierarchy: master key -> tenant key versions -> per-object data keys and the
tenant's long-lived subkeys (encrypted columns, blind indexes).

Unwrapped keys live only in this process's memory. Wrapping is AES-256-GCM whose
associated data names what the key is for (tenant, version, object), so a wrapped key
moved to another row, tenant or object does not unwrap.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from securex.audit import EventType, record
from securex.vault.errors import IntegrityError, KeyUnavailable
from securex.vault.master import MasterKey
from securex.vault.models import TenantKey, TenantSubkey, VaultObject

NONCE = 12
SUBKEY_PURPOSES = ("columns", "index")
PLATFORM = "*"  # pseudo-tenant holding the platform's own secrets
PROBE_CONTEXT = b"securex/readiness-probe"
Progress = Callable[[int], None]


def _wrap(kek: bytes, key: bytes, context: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(kek).encrypt(nonce, key, context)


def _unwrap(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE], wrapped[NONCE:], context)
    except (InvalidTag, ValueError):
        raise IntegrityError() from None


def tenant_context(tenant: str, version: int) -> bytes:
    return f"securex/tenant-key/{tenant}/{version}".encode()


def data_key_context(tenant: str, object_id: str, version: int) -> bytes:
    return f"securex/data-key/{tenant}/{object_id}/{version}".encode()


def subkey_context(tenant: str, purpose: str, version: int) -> bytes:
    return f"securex/subkey/{tenant}/{purpose}/{version}".encode()


@dataclass(frozen=True)
class KeyStatus:
    tenant: str
    version: int
    master_key_id: str
    objects: int
    created_at: datetime
    retired_at: datetime | None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None


class Keyring:
    def __init__(self, masters: Sequence[MasterKey]) -> None:
        if not masters:
            raise KeyUnavailable("Aucune clé maîtresse disponible.")
        self._masters = {m.key_id: m for m in masters}
        self.current = masters[-1]
        self._tenant_keys: dict[tuple[str, int], bytes] = {}
        self._subkeys: dict[tuple[str, str], bytes] = {}

    # --- tenant keys -------------------------------------------------------------

    def _master(self, key_id: str) -> MasterKey:
        try:
            return self._masters[key_id]
        except KeyError:
            raise KeyUnavailable(
                f"La clé maîtresse {key_id} n'est pas disponible : vérifiez la configuration "
                "du fournisseur (fichier, phrase de passe ou jeton)."
            ) from None

    def ensure_tenant(self, db: Session, tenant: str, *, now: datetime, actor: str) -> None:
        """Give a tenant its first key and subkeys (idempotent)."""
        if db.scalar(select(TenantKey.id).where(TenantKey.tenant == tenant).limit(1)):
            return
        kek = secrets.token_bytes(32)
        db.add(
            TenantKey(
                tenant=tenant,
                version=1,
                created_at=now,
                master_key_id=self.current.key_id,
                wrapped=self.current.wrap(kek, tenant_context(tenant, 1)),
            )
        )
        for purpose in SUBKEY_PURPOSES:
            db.add(
                TenantSubkey(
                    tenant=tenant,
                    purpose=purpose,
                    key_version=1,
                    wrapped=_wrap(kek, secrets.token_bytes(32), subkey_context(tenant, purpose, 1)),
                )
            )
        db.flush()
        self._tenant_keys[(tenant, 1)] = kek
        record(
            db,
            EventType.VAULT_TENANT_KEY_CREATED,
            actor=actor,
            subject=f"tenant-key:{tenant}",
            tenant=tenant,
            details={"version": 1},
            now=now,
        )

    def current_version(self, db: Session, tenant: str) -> int:
        version = db.scalar(
            select(func.max(TenantKey.version)).where(
                TenantKey.tenant == tenant, TenantKey.retired_at.is_(None)
            )
        )
        if version is None:
            raise KeyUnavailable(f"La commune {tenant} n'a pas encore de clé dans le coffre.")
        return int(version)

    def tenant_key(self, db: Session, tenant: str, version: int) -> bytes:
        cached = self._tenant_keys.get((tenant, version))
        if cached is not None:
            return cached
        row = db.scalar(
            select(TenantKey).where(TenantKey.tenant == tenant, TenantKey.version == version)
        )
        if row is None:
            raise IntegrityError()
        kek = self._master(row.master_key_id).unwrap(row.wrapped, tenant_context(tenant, version))
        self._tenant_keys[(tenant, version)] = kek
        return kek

    # --- data keys ---------------------------------------------------------------

    def new_data_key(self, db: Session, tenant: str, object_id: str) -> tuple[int, bytes, bytes]:
        """A fresh data key: (tenant key version, key, wrapped key)."""
        dek = secrets.token_bytes(32)
        version, wrapped = self.wrap_data_key(db, tenant, object_id, dek)
        return version, dek, wrapped

    def wrap_data_key(
        self, db: Session, tenant: str, object_id: str, dek: bytes
    ) -> tuple[int, bytes]:
        """`dek` wrapped under the tenant's current key version: (version, wrapped)."""
        version = self.current_version(db, tenant)
        wrapped = _wrap(
            self.tenant_key(db, tenant, version), dek, data_key_context(tenant, object_id, version)
        )
        return version, wrapped

    def open_data_key(
        self, db: Session, tenant: str, object_id: str, version: int, wrapped: bytes
    ) -> bytes:
        return _unwrap(
            self.tenant_key(db, tenant, version),
            wrapped,
            data_key_context(tenant, object_id, version),
        )

    def subkey(self, db: Session, tenant: str, purpose: str) -> bytes:
        cached = self._subkeys.get((tenant, purpose))
        if cached is not None:
            return cached
        row = db.scalar(
            select(TenantSubkey).where(
                TenantSubkey.tenant == tenant, TenantSubkey.purpose == purpose
            )
        )
        if row is None:
            raise KeyUnavailable(f"La commune {tenant} n'a pas encore de clé dans le coffre.")
        key = _unwrap(
            self.tenant_key(db, tenant, row.key_version),
            row.wrapped,
            subkey_context(tenant, purpose, row.key_version),
        )
        self._subkeys[(tenant, purpose)] = key
        return key

    def platform_secret(self, db: Session, purpose: str, *, now: datetime, actor: str) -> bytes:
        """A 32-byte secret of the platform itself (not of a commune), e.g. the seed of
        the audit log's seal key: kept like a tenant subkey of the pseudo-tenant
        `PLATFORM`, so it follows rotations and never leaves the vault unwrapped."""
        self.ensure_tenant(db, PLATFORM, now=now, actor=actor)
        exists = db.scalar(
            select(TenantSubkey.id).where(
                TenantSubkey.tenant == PLATFORM, TenantSubkey.purpose == purpose
            )
        )
        if exists is None:
            version = self.current_version(db, PLATFORM)
            db.add(
                TenantSubkey(
                    tenant=PLATFORM,
                    purpose=purpose,
                    key_version=version,
                    wrapped=_wrap(
                        self.tenant_key(db, PLATFORM, version),
                        secrets.token_bytes(32),
                        subkey_context(PLATFORM, purpose, version),
                    ),
                )
            )
            db.flush()
        return self.subkey(db, PLATFORM, purpose)

    # --- rotation ----------------------------------------------------------------

    def rotate_tenant(
        self,
        db: Session,
        tenant: str,
        *,
        now: datetime,
        actor: str,
        progress: Progress | None = None,
        batch: int = 500,
    ) -> int:
        """New tenant key version; rewrap every data key and subkey under it (no object
        is re-encrypted); retire versions nothing refers to any more. Returns the new
        version."""
        old_version = self.current_version(db, tenant)
        new_version = (
            int(
                db.scalar(select(func.max(TenantKey.version)).where(TenantKey.tenant == tenant))
                or 0
            )
            + 1
        )
        kek = secrets.token_bytes(32)
        db.add(
            TenantKey(
                tenant=tenant,
                version=new_version,
                created_at=now,
                master_key_id=self.current.key_id,
                wrapped=self.current.wrap(kek, tenant_context(tenant, new_version)),
            )
        )
        # Not cached here: the cache is the process's, and this transaction may yet roll
        # back (another node rotating at once); `tenant_key` reads the version once it
        # is committed.
        db.flush()
        for sub in db.scalars(select(TenantSubkey).where(TenantSubkey.tenant == tenant)):
            key = self.subkey(db, tenant, sub.purpose)
            sub.wrapped = _wrap(kek, key, subkey_context(tenant, sub.purpose, new_version))
            sub.key_version = new_version
        rewrapped = 0
        while True:
            rows = list(
                db.scalars(
                    select(VaultObject)
                    .where(
                        VaultObject.tenant == tenant,
                        VaultObject.key_version != new_version,
                        VaultObject.wrapped_key.is_not(None),
                    )
                    .order_by(VaultObject.id)
                    .limit(batch)
                )
            )
            if not rows:
                break
            for obj in rows:
                assert obj.wrapped_key is not None and obj.key_version is not None
                dek = self.open_data_key(db, tenant, obj.id, obj.key_version, obj.wrapped_key)
                obj.wrapped_key = _wrap(kek, dek, data_key_context(tenant, obj.id, new_version))
                obj.key_version = new_version
            db.flush()
            rewrapped += len(rows)
            if progress:
                progress(len(rows))
        retired = self.retire_unused(db, tenant, now=now)
        record(
            db,
            EventType.VAULT_TENANT_KEY_ROTATED,
            actor=actor,
            subject=f"tenant-key:{tenant}",
            tenant=tenant,
            details={
                "from": old_version,
                "to": new_version,
                "rewrapped": rewrapped,
                "retired": retired,
            },
            now=now,
        )
        return new_version

    def retire_unused(self, db: Session, tenant: str, *, now: datetime) -> list[int]:
        current = self.current_version(db, tenant)
        used = set(
            db.scalars(
                select(VaultObject.key_version)
                .where(VaultObject.tenant == tenant, VaultObject.wrapped_key.is_not(None))
                .distinct()
            )
        )
        used |= set(
            db.scalars(select(TenantSubkey.key_version).where(TenantSubkey.tenant == tenant))
        )
        retired = []
        for row in db.scalars(
            select(TenantKey).where(TenantKey.tenant == tenant, TenantKey.retired_at.is_(None))
        ):
            if row.version != current and row.version not in used:
                # Retired: never wraps again and no stored object needs it. It still opens
                # export files made under it (`securex vault encrypt`), as a transit
                # engine's older key versions do, and follows master key rotations.
                row.retired_at = now
                retired.append(row.version)
        return sorted(retired)

    def rewrap_tenant_keys(
        self,
        db: Session,
        new: MasterKey,
        *,
        now: datetime,
        actor: str,
        progress: Progress | None = None,
    ) -> int:
        """Master key rotation: every tenant key version wrapped anew under `new`."""
        count = 0
        rows = list(db.scalars(select(TenantKey)))
        for row in rows:
            context = tenant_context(row.tenant, row.version)
            kek = self._master(row.master_key_id).unwrap(row.wrapped, context)
            row.wrapped = new.wrap(kek, context)
            row.master_key_id = new.key_id
            count += 1
            if progress:
                progress(1)
        db.flush()
        self._masters[new.key_id] = new
        self.current = new
        record(
            db,
            EventType.VAULT_MASTER_KEY_ROTATED,
            actor=actor,
            subject="master-key",
            details={"master_key_id": new.key_id, "rewrapped": count},
            now=now,
        )
        return count

    # --- readiness ---------------------------------------------------------------

    def check(self, db: Session) -> None:
        """The readiness check (`/readyz`): a random key wrapped and unwrapped by the
        current master key (a token whose session was lost, or that stopped answering,
        fails here), then, for each master key that wraps a stored tenant key, one of
        those opened (a process started with another key file, or not restarted after a
        rotation of the master key, fails here). Raises `KeyUnavailable` or
        `IntegrityError`; keeps, returns and logs nothing."""
        probe = secrets.token_bytes(32)
        wrapped = self.current.wrap(probe, PROBE_CONTEXT)
        if not hmac.compare_digest(self.current.unwrap(wrapped, PROBE_CONTEXT), probe):
            raise IntegrityError()
        newest = db.execute(
            select(TenantKey.master_key_id, func.max(TenantKey.id)).group_by(
                TenantKey.master_key_id
            )
        ).all()
        for master_key_id, row_id in newest:
            row = db.get(TenantKey, row_id)
            assert row is not None
            self._master(master_key_id).unwrap(row.wrapped, tenant_context(row.tenant, row.version))

    def status(self, db: Session, tenant: str | None = None) -> list[KeyStatus]:
        """Every key version (of `tenant` only, if given), oldest first, with the number
        of objects each still wraps."""
        counted = (
            select(VaultObject.tenant, VaultObject.key_version, func.count())
            .where(VaultObject.wrapped_key.is_not(None))
            .group_by(VaultObject.tenant, VaultObject.key_version)
        )
        versions = select(TenantKey).order_by(TenantKey.tenant, TenantKey.version)
        if tenant is not None:
            counted = counted.where(VaultObject.tenant == tenant)
            versions = versions.where(TenantKey.tenant == tenant)
        counts = {(t, version): int(n) for t, version, n in db.execute(counted)}
        return [
            KeyStatus(
                row.tenant,
                row.version,
                row.master_key_id,
                counts.get((row.tenant, row.version), 0),
                row.created_at,
                row.retired_at,
            )
            for row in db.scalars(versions)
        ]
