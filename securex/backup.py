"""Backups of a whole instance: `securex backup create | verify | restore`.

One file holds a consistent snapshot of the database (every table's rows as JSON
lines, read in one snapshot transaction), the blob of every live vault object, and
the instance's own files (the instance secret, the demo PKI, the crypto-shredding
ledger), as a tar archive encrypted in the vault's SXV1 format under a fresh key
wrapped by the master key. A manifest closes the archive: the size and SHA-256 of
every member, the latest audit checkpoint, signed by the audit log's seal key.

The master key is never in it: whoever restores takes it from its provider (key
file, passphrase, HSM). With the passphrase provider, the Argon2 parameters
(`keys/master.json`, no key in it) ride in the clear preamble, so the passphrase
alone opens the backup.

Byte layout and members: docs/backup-format.md. Composes the vault, the audit log
and the database, so it lives in the shell (no Flask).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, MetaData, Table, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from securex import __version__
from securex.audit.checkpoint import open_note, parse_verifier_key, verifier_key
from securex.audit.merkle import ProofError
from securex.audit.models import AuditHead
from securex.audit.proofs import checkpoint_json, latest_checkpoint
from securex.db import make_engine, reading, transaction, upgrade
from securex.errors import ConfigError, SecurexError
from securex.vault import IntegrityError, MasterKeySource, Vault
from securex.vault.master import MasterKey
from securex.vault.models import Shred, VaultObject
from securex.vault.stream import StreamWriter, iter_decrypt, new_header, read_header

MAGIC = b"SXBACKUP1\n"
FORMAT = 1
MAX_PREAMBLE = 64 * 1024
SEGMENT_SIZE = 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024  # rows of one table per member, at most about this much JSON
INSERT_BATCH = 500
AAD_TENANT = "backup"  # the SXV1 "tenant" of a backup stream (binds its key to this use)
WRAP_CONTEXT = b"securex/backup/v1/"
LEDGER = "keys/shred-ledger.jsonl"
# What a restore accepts to find in the target folder: the master key's own files.
KEY_FILES = {"keys/master.key", "keys/master.key.new", "keys/master.json", "keys/master.json.new"}
_MEMBER = re.compile(r"^[A-Za-z0-9@._+-]+(/[A-Za-z0-9@._+-]+)*$")


class BackupError(SecurexError):
    """A backup that cannot be written, read or restored; the message says why and what
    to do. Every way the file itself can be wrong says so in the same words."""

    exit_code = 65  # EX_DATAERR

    @classmethod
    def damaged(cls) -> BackupError:
        return cls(
            "Sauvegarde illisible ou altérée (fichier tronqué, modifié, ou clé maîtresse "
            "différente de celle de l'instance sauvegardée). Rien n'a été restauré."
        )


class Bars(Protocol):
    """Progress reporting (the CLI gives click progress bars): a context manager per
    phase whose value has `update(n)`."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Any]: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass


def no_bars(label: str, total: int) -> AbstractContextManager[Any]:
    return nullcontext(_NoBar())


@dataclass
class Summary:
    backup_id: str
    created_at: str
    revision: str
    rows: int
    tables: int
    objects: int
    object_bytes: int
    checkpoint_size: int | None
    checkpoint_note: str | None
    verifier: str
    shredded: int = 0  # objects shredded again from the ledger at restore
    problems: list[str] = field(default_factory=list)


# --- values ------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """A column value as JSON: tagged when JSON has no such type."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, dict | list):
        return {"j": value}
    return value


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((tag, raw),) = value.items()
    if tag == "b":
        return base64.b64decode(raw)
    if tag == "t":
        return datetime.fromisoformat(raw)
    if tag == "d":
        return date.fromisoformat(raw)
    if tag == "n":
        return Decimal(raw)
    if tag == "j":
        return raw
    raise ValueError(f"unknown value tag {tag!r}")


# --- the container -----------------------------------------------------------------


def _binding(preamble: bytes) -> str:
    """The stream's object id: the backup's clear preamble is bound to its ciphertext,
    so changing one field of it makes the first segment fail."""
    return hashlib.sha256(preamble).hexdigest()


class _Hashing:
    """A source read through, counting and hashing what passes (tarfile reads blobs)."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


class _Writer:
    """The tar archive inside the encrypted stream, each member hashed on the way."""

    def __init__(self, stream: StreamWriter) -> None:
        # Closed by close(); the stream stays open for its final segment.
        self.tar = tarfile.open(  # noqa: SIM115
            fileobj=cast(Any, stream),
            mode="w|",
            format=tarfile.PAX_FORMAT,
        )
        self.members: list[list[Any]] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.members.append([name, len(data), hashlib.sha256(data).hexdigest()])

    def add_stream(self, name: str, src: BinaryIO, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o600
        hashing = _Hashing(src)
        self.tar.addfile(info, hashing)
        self.members.append([name, size, hashing.sha.hexdigest()])

    def close(self) -> None:
        self.tar.close()


class _Plaintext(io.RawIOBase):
    """The decrypted stream as a file for tarfile, counting ciphertext read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class _Counting:
    """The backup file, reporting bytes read to a progress bar."""

    def __init__(self, src: BinaryIO, bar: Any) -> None:
        self.src = src
        self.bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.bar.update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self.src.readinto(buffer)  # type: ignore[attr-defined]
        self.bar.update(n or 0)
        return n or 0


def _read_preamble(src: BinaryIO) -> tuple[bytes, dict[str, Any]]:
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupError("Ce fichier n'est pas une sauvegarde securex.")
    size = int.from_bytes(src.read(4) or b"\0", "big")
    if not 0 < size <= MAX_PREAMBLE:
        raise BackupError.damaged()
    raw = src.read(size)
    try:
        preamble = json.loads(raw)
        if preamble["format"] != FORMAT:
            raise BackupError(
                f"Format de sauvegarde {preamble['format']} inconnu de cette version de "
                "securex : restaurez avec la version qui l'a créée."
            )
    except (ValueError, KeyError, TypeError):
        raise BackupError.damaged() from None
    return raw, preamble


def _check_params(params: Any) -> None:
    """Argon2 parameters from the clear preamble are unauthenticated until the key opens
    the stream: bounded, so that an altered file cannot ask for terabytes of memory."""
    try:
        bounded = (
            int(params["time_cost"]) <= 16
            and int(params["memory_cost"]) <= 4 * 1024 * 1024
            and int(params["parallelism"]) <= 64
        )
    except (KeyError, TypeError, ValueError):
        bounded = False
    if not bounded:
        raise BackupError.damaged()


def _masters(source: MasterKeySource, preamble: dict[str, Any]) -> list[MasterKey]:
    """The provider's keys. A passphrase instance's Argon2 parameters come from the
    preamble when the folder has none (an off-site machine verifying a backup)."""
    params = preamble.get("passphrase_params")
    if source.provider != "passphrase" or not params or source.params_file.exists():
        return source.load()
    _check_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "master.json"
        path.write_text(json.dumps(params))
        return dataclasses.replace(source, params_file=path).load()


def _open_stream(src: BinaryIO, raw: bytes, masters: list[MasterKey]) -> Iterator[bytes]:
    header = read_header(src)
    if header.key_id != AAD_TENANT or header.wrapped_key is None:
        raise IntegrityError()
    binding = _binding(raw)
    context = WRAP_CONTEXT + binding.encode()
    for master in masters:
        try:
            dek = master.unwrap(header.wrapped_key, context)
        except IntegrityError:
            continue
        return iter_decrypt(src, dek=dek, header=header, tenant=AAD_TENANT, object_id=binding)
    raise BackupError(
        "La clé maîtresse fournie n'ouvre pas cette sauvegarde : donnez celle de l'instance "
        "sauvegardée (SECUREX_MASTER_KEY_FILE, la phrase de passe ou le jeton HSM), ou "
        "l'ancienne si la clé a été changée depuis."
    )


# --- create ------------------------------------------------------------------------


def _seal_key(
    settings: Any, sessions: sessionmaker[Session], vault: Vault, now: datetime
) -> Ed25519PrivateKey:
    from securex.seal import SEAL_PURPOSE

    with transaction(sessions) as db:
        seed = vault.keyring.platform_secret(db, SEAL_PURPOSE, now=now, actor="system")
    return Ed25519PrivateKey.from_private_bytes(seed)


# The instance's own files that a backup carries (besides the ledger, taken last):
# the instance secret, the demo PKI and the demo's credentials. Never the master
# key's files, the blobs (taken from the database's list), the logs, the SQLite
# database (dumped as rows), nor anything else someone left in the folder.
INSTANCE_FILES = ("keys/instance.key", "demo-credentials.json")
INSTANCE_FOLDERS = ("pki",)


def _instance_files(settings: Any) -> Iterator[tuple[str, Path]]:
    root: Path = settings.instance
    found = [root / name for name in INSTANCE_FILES if (root / name).is_file()]
    for folder in INSTANCE_FOLDERS:
        found += sorted(p for p in (root / folder).rglob("*") if p.is_file())
    for path in found:
        name = path.relative_to(root).as_posix()
        if path.is_symlink() or name.endswith(".lock"):
            continue
        if not _MEMBER.match(name):
            raise BackupError(
                f"Nom de fichier inattendu dans l'instance : {name!r} (lettres, chiffres et "
                "« @._+- » seulement) : renommez-le ou retirez-le, puis recommencez."
            )
        yield name, path


def _snapshot(session: Session) -> None:
    """One consistent view of every table for the whole dump."""
    if session.get_bind().dialect.name == "sqlite":
        reading(session)  # WAL: BEGIN DEFERRED, a snapshot from the first read on
    else:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        session.execute(text("SET TRANSACTION READ ONLY"))


def create(
    out: BinaryIO,
    *,
    settings: Any,
    sessions: sessionmaker[Session],
    vault: Vault,
    now: datetime,
    bars: Bars = no_bars,
) -> Summary:
    """Write a backup of the instance to `out` (the caller makes it durable and names
    it). The service may keep running: the database is read in one snapshot
    transaction, blobs are immutable once written."""
    from securex.seal import origin

    try:
        seal = _seal_key(settings, sessions, vault, now)
    except DBAPIError as exc:
        raise ConfigError(
            f"Base de données injoignable ({exc.orig.__class__.__name__}) : vérifiez "
            "SECUREX_DATABASE_URL."
        ) from None
    verifier = verifier_key(origin(settings), seal.public_key())
    backup_id = uuid.uuid4().hex
    master = vault.keyring.current
    preamble: dict[str, Any] = {
        "format": FORMAT,
        "backup_id": backup_id,
        "created_at": now.isoformat(),
        "securex": __version__,
        "master_key_provider": settings["master_key_provider"],
        "master_key_id": master.key_id,
        "passphrase_params": None,
    }
    if settings["master_key_provider"] == "passphrase":
        preamble["passphrase_params"] = json.loads(
            (settings.instance / "keys" / "master.json").read_text()
        )
    raw = json.dumps(preamble, sort_keys=True).encode()
    out.write(MAGIC + len(raw).to_bytes(4, "big") + raw)
    dek = os.urandom(32)
    header = new_header(
        key_id=AAD_TENANT,
        key_version=0,
        wrapped_key=master.wrap(dek, WRAP_CONTEXT + _binding(raw).encode()),
        segment_size=SEGMENT_SIZE,
    )
    stream = StreamWriter(out, dek=dek, header=header, tenant=AAD_TENANT, object_id=_binding(raw))
    archive = _Writer(stream)

    with sessions() as snap:
        _snapshot(snap)
        conn = snap.connection()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        meta = MetaData()
        meta.reflect(bind=conn)
        tables = [t for t in meta.sorted_tables if t.name != "alembic_version"]
        counts = {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in tables
        }
        objects = [
            (oid, int(stored))
            for oid, stored in conn.execute(
                select(VaultObject.id, VaultObject.stored_size)
                .where(VaultObject.wrapped_key.is_not(None))
                .order_by(VaultObject.id)
            )
        ]
        checkpoint = latest_checkpoint(snap)
        head = snap.get(AuditHead, 1)
        info = {
            "format": FORMAT,
            "backup_id": backup_id,
            "created_at": now.isoformat(),
            "revision": revision,
            "engine": snap.get_bind().dialect.name,
            "tables": counts,
            "objects": len(objects),
            "object_bytes": sum(size for _, size in objects),
            "audit_size": head.size if head is not None else 0,
        }
        archive.add_bytes("backup.json", json.dumps(info, sort_keys=True).encode())
        for name, path in _instance_files(settings):
            archive.add_bytes(f"instance/{name}", path.read_bytes())
        with bars("Base de données", sum(counts.values())) as bar:
            for number, table in enumerate(tables):
                _dump_table(conn, table, f"database/{number:03d}-{table.name}", archive, bar)
        cp = checkpoint_json(checkpoint, verifier) if checkpoint is not None else None
        snap.rollback()  # the snapshot ends here: blobs are read without it

    skipped = _copy_blobs(vault, objects, archive, bars)
    ledger = settings.instance / LEDGER
    ledger_text = ledger.read_bytes() if ledger.exists() else b""
    # Shreddings made meanwhile, by any node: in the table; this node's ledger file only
    # has its own. They join the ledger member, which a restore replays.
    with sessions() as db:
        reading(db)
        meanwhile = db.execute(
            select(Shred.object_id, Shred.tenant, Shred.shredded_at).where(Shred.shredded_at >= now)
        ).all()
        db.rollback()
    known = {json.loads(line)["object"] for line in ledger_text.splitlines() if line.strip()}
    extra = [
        json.dumps({"object": oid, "tenant": tenant, "at": at.isoformat()}, sort_keys=True)
        for oid, tenant, at in meanwhile
        if oid not in known
    ]
    ledger_text += "".join(f"{line}\n" for line in extra).encode()
    shredded_since = known | {oid for oid, _, _ in meanwhile}
    if set(skipped) - shredded_since:
        raise BackupError(
            f"{len(set(skipped) - shredded_since)} document(s) du coffre sont introuvables "
            "dans le stockage : lancez « securex vault verify », puis recommencez."
        )
    archive.add_bytes(f"instance/{LEDGER}", ledger_text)
    manifest = {
        "format": FORMAT,
        "backup_id": backup_id,
        "created_at": now.isoformat(),
        "revision": revision,
        "members": archive.members,
        "checkpoint": cp,
        "audit_size": info["audit_size"],
        "verifier": verifier,
        "shredded_during_backup": sorted(skipped),
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    archive.add_bytes("manifest.json", body)
    _add_signature(archive, seal.sign(body))
    archive.close()
    stream.close()
    return _summary(info, manifest)


def _add_signature(archive: _Writer, signature: bytes) -> None:
    info = tarfile.TarInfo("manifest.sig")
    info.size = len(signature)
    info.mode = 0o600
    archive.tar.addfile(info, io.BytesIO(signature))


def _dump_table(conn: Any, table: Table, prefix: str, archive: _Writer, bar: Any) -> None:
    columns = [c.name for c in table.columns]
    order = list(table.primary_key.columns) or list(table.columns)
    head = json.dumps({"table": table.name, "columns": columns}).encode() + b"\n"
    lines: list[bytes] = []
    size, part = 0, 0

    def flush() -> None:
        nonlocal lines, size, part
        archive.add_bytes(f"{prefix}/{part:06d}.jsonl", head + b"".join(lines))
        bar.update(len(lines))
        lines, size, part = [], 0, part + 1

    result = conn.execution_options(yield_per=1000).execute(select(table).order_by(*order))
    for row in result:
        line = json.dumps([_encode(v) for v in row], ensure_ascii=False).encode() + b"\n"
        lines.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            flush()
    if lines or part == 0:
        flush()


def _copy_blobs(
    vault: Vault, objects: list[tuple[str, int]], archive: _Writer, bars: Bars
) -> list[str]:
    """Copy every live object's blob; a blob gone since the snapshot is listed (it must
    have been shredded meanwhile, which the ledger then shows)."""
    skipped = []
    with bars("Documents", sum(size for _, size in objects)) as bar:
        for object_id, size in objects:
            try:
                fh = vault.blobs.open(object_id)
            except IntegrityError:
                skipped.append(object_id)
                continue
            try:
                with fh:
                    archive.add_stream(f"blobs/{object_id}", fh, size)
                    if fh.read(1):
                        raise OSError("longer than recorded")
            except OSError:  # tarfile: "unexpected end of data", or longer
                raise BackupError(
                    f"Le document {object_id} est abîmé dans le stockage (taille inattendue) : "
                    "lancez « securex vault verify »."
                ) from None
            bar.update(size)
    return skipped


# --- read (verify and restore) -----------------------------------------------------


Consumer = Callable[[str, dict[str, Any], BinaryIO], None]


def _walk(
    src: BinaryIO, source: MasterKeySource, bars: Bars, total: int, consume: Consumer | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Decrypt and read every member in order, hashing each; hand members to `consume`
    (restore) as they come. Returns (preamble, backup info, manifest) once the manifest
    and its signature check. Every damage is a BackupError."""
    raw, preamble = _read_preamble(src)
    masters = _masters(source, preamble)
    seen: list[list[Any]] = []
    info: dict[str, Any] | None = None
    manifest_raw: bytes | None = None
    signature: bytes | None = None
    with bars("Lecture", total) as bar:
        try:
            chunks = _open_stream(_Counting(src, bar), raw, masters)  # type: ignore[arg-type]
            plain = _Plaintext(chunks)
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                for member in tar:
                    name = member.name
                    if not member.isfile() or not _MEMBER.match(name) or ".." in name.split("/"):
                        raise BackupError.damaged()
                    fh = tar.extractfile(member)
                    assert fh is not None
                    if signature is not None:
                        raise BackupError.damaged()  # nothing may follow the signature
                    if name == "manifest.sig":
                        signature = fh.read()
                        continue
                    if manifest_raw is not None:
                        raise BackupError.damaged()
                    if name == "manifest.json":
                        manifest_raw = fh.read()
                        continue
                    hashing = _Hashing(fh)  # type: ignore[arg-type]
                    if name == "backup.json" and info is None:
                        info = json.loads(hashing.read(MAX_PREAMBLE))
                        if not isinstance(info, dict):
                            raise BackupError.damaged()
                    elif info is None:
                        raise BackupError.damaged()
                    elif consume is not None:
                        _consume(consume, name, info, hashing)
                    while hashing.read(1024 * 1024):
                        pass
                    seen.append([name, hashing.size, hashing.sha.hexdigest()])
            # Past tar's end marker: the rest of the stream is still read, so that its
            # last segments (and the final flag) are checked too.
            while plain.read(1024 * 1024):
                pass
        except (IntegrityError, tarfile.TarError, EOFError, ValueError, KeyError, TypeError):
            raise BackupError.damaged() from None
    if info is None or manifest_raw is None or signature is None:
        raise BackupError.damaged()
    try:
        manifest = json.loads(manifest_raw)
        _, _, public_key = parse_verifier_key(manifest["verifier"])
        public_key.verify(signature, manifest_raw)
        if manifest["members"] != seen or manifest["backup_id"] != preamble["backup_id"]:
            raise BackupError.damaged()
        if manifest["checkpoint"] is not None:
            checkpoint = open_note(manifest["checkpoint"]["note"], manifest["verifier"])
            if checkpoint.size != manifest["checkpoint"]["size"]:
                raise BackupError.damaged()
    except (ProofError, InvalidSignature, KeyError, TypeError, ValueError):
        raise BackupError.damaged() from None
    return preamble, info, manifest


def _consume(consume: Consumer, name: str, info: dict[str, Any], src: _Hashing) -> None:
    """A member written into the target; what fails there is said for what it is."""
    try:
        consume(name, info, src)  # type: ignore[arg-type]
    except OSError as exc:
        raise BackupError(
            f"Écriture impossible dans l'instance cible ({exc.strerror or type(exc).__name__}"
            " : disque plein ?). Rien n'a été restauré."
        ) from None
    except (DBAPIError, StatementError) as exc:
        raise BackupError(
            "La base cible a refusé une écriture "
            f"({type(getattr(exc, 'orig', exc)).__name__}) : sauvegarde altérée, ou base "
            "inaccessible. Rien n'a été restauré."
        ) from None


def _summary(info: dict[str, Any], manifest: dict[str, Any]) -> Summary:
    cp = manifest["checkpoint"]
    return Summary(
        backup_id=info["backup_id"],
        created_at=info["created_at"],
        revision=info["revision"],
        rows=sum(info["tables"].values()),
        tables=len(info["tables"]),
        objects=info["objects"] - len(manifest["shredded_during_backup"]),
        object_bytes=info["object_bytes"],
        checkpoint_size=cp["size"] if cp else None,
        checkpoint_note=cp["note"] if cp else None,
        verifier=manifest["verifier"],
    )


def verify(
    path: Path, source: MasterKeySource, *, verifier: str | None = None, bars: Bars = no_bars
) -> Summary:
    """Check a backup without restoring it: it decrypts with the master key, every
    member is whole and as the signed manifest says, the checkpoint is signed by the
    same key. With `verifier` (the instance's `securex audit public-key`), the manifest
    must be signed by that key."""
    with path.open("rb") as src:
        _, info, manifest = _walk(src, source, bars, path.stat().st_size, None)
    summary = _summary(info, manifest)
    if verifier is not None and verifier.strip() != manifest["verifier"]:
        raise _not_signed_by(restoring=False)
    return summary


def _not_signed_by(*, restoring: bool) -> BackupError:
    return BackupError(
        "La sauvegarde n'est pas signée par la clé de journal attendue : elle ne vient "
        "pas de cette instance, ou a été refaite par quelqu'un d'autre."
        + (" Rien n'a été restauré." if restoring else "")
    )


# --- restore -----------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _table_names(url: str) -> list[str]:
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        return []  # connecting would create the file
    engine = make_engine(url)
    try:
        return inspect(engine).get_table_names()
    except Exception as exc:  # any driver error: the database cannot be reached
        raise ConfigError(
            f"Base de données cible injoignable ({exc.__class__.__name__}) : vérifiez "
            "SECUREX_DATABASE_URL."
        ) from None
    finally:
        engine.dispose()


def check_target(settings: Any) -> None:
    """The instance folder holds nothing but the master key's files (and an empty SQLite
    database a failed attempt may have left), and the database has no table."""
    names = _table_names(settings.database_url)
    if names:
        raise ConfigError(
            f"La base de données cible contient déjà {len(names)} table(s) : restaurez dans "
            "une base vide (créez-la, puis relancez)."
        )
    root: Path = settings.instance
    database = _sqlite_path(settings.database_url)
    if root.exists():
        extra = [
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file()
            and p.relative_to(root).as_posix() not in KEY_FILES
            and not (database is not None and str(p).startswith(str(database)))
        ]
        if extra:
            raise ConfigError(
                f"Le dossier d'instance {root} n'est pas vide ({len(extra)} fichier(s), dont "
                f"{extra[0]}) : restaurez dans un dossier vide (SECUREX_INSTANCE), seule la "
                "clé maîtresse peut s'y trouver."
            )


def _known_revision(revision: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from securex.db import alembic_config

    try:
        found = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise BackupError(
            f"Cette sauvegarde vient d'une version plus récente de securex (schéma "
            f"{revision!r}) : restaurez-la avec cette version-là ou une plus récente."
        )


class _Restorer:
    """Writes the members of a backup into the empty target as they are read."""

    def __init__(self, settings: Any, engine: Engine, vault_blobs: Any) -> None:
        self.settings = settings
        self.engine = engine
        self.blobs = vault_blobs
        self.conn: Any = None
        self.meta = MetaData()

    def __call__(self, name: str, info: dict[str, Any], src: BinaryIO) -> None:
        if self.conn is None:
            # The schema of the backup's own version first; the rows then fit it.
            _known_revision(info["revision"])
            upgrade(self.settings.database_url, info["revision"])
            self.conn = self.engine.connect()
            self.conn.begin()
            self.meta.reflect(bind=self.conn)
        kind, _, rest = name.partition("/")
        if kind == "instance":
            self._file(rest, src)
        elif kind == "database":
            self._rows(src)
        elif kind == "blobs":
            with self.blobs.writer(rest) as fh:
                shutil.copyfileobj(src, fh, 1024 * 1024)
        else:
            raise BackupError.damaged()

    def _file(self, rel: str, src: BinaryIO) -> None:
        # Only what `create` writes: never the master key's files or the database.
        if rel not in (*INSTANCE_FILES, LEDGER) and rel.split("/")[0] not in INSTANCE_FOLDERS:
            raise BackupError.damaged()
        target = self.settings.instance / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_name(f".{target.name}.restore")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(src, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def _rows(self, src: BinaryIO) -> None:
        lines = iter(src.read().splitlines())  # one member is at most about CHUNK_BYTES
        head = json.loads(next(lines))
        table = self.meta.tables[head["table"]]
        columns = head["columns"]
        batch: list[dict[str, Any]] = []
        for line in lines:
            batch.append(dict(zip(columns, (_decode(v) for v in json.loads(line)), strict=True)))
            if len(batch) >= INSERT_BATCH:
                self.conn.execute(table.insert(), batch)
                batch = []
        if batch:
            self.conn.execute(table.insert(), batch)

    def finish(self) -> None:
        if self.conn.dialect.name == "postgresql":
            # Rows came with their ids: move each id sequence past them.
            for table in self.meta.sorted_tables:
                pk = list(table.primary_key.columns)
                if len(pk) != 1 or not _is_int(pk[0].type):
                    continue
                # setval is strict: a column without a sequence gives NULL, no error.
                col = pk[0]
                self.conn.execute(
                    select(
                        func.setval(
                            func.pg_get_serial_sequence(table.name, col.name), func.max(col)
                        )
                    )
                    .select_from(table)
                    .having(func.max(col).is_not(None))
                )
        self.conn.commit()
        self.conn.close()

    def abandon(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()


def _is_int(kind: Any) -> bool:
    try:
        return kind.python_type is int
    except NotImplementedError:
        return False


def _wipe(settings: Any, kept: set[Path]) -> None:
    """Undo a failed restore: the target goes back to what it was (empty, but for the
    master key's files and the folders that were there)."""
    try:
        database = _sqlite_path(settings.database_url)
        if database is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
        else:
            engine = make_engine(settings.database_url)
            try:
                meta = MetaData()
                meta.reflect(bind=engine)
                meta.drop_all(bind=engine)
                with engine.begin() as conn:
                    # The one object of the migrations that is not a table (0001).
                    conn.execute(text("DROP FUNCTION IF EXISTS audit_append_only() CASCADE"))
            finally:
                engine.dispose()
    finally:  # the files go even when the database cannot be reached
        root: Path = settings.instance
        for path in sorted(root.rglob("*"), reverse=True):
            if path in kept:
                continue
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)


def _read_ledgers(paths: list[Path]) -> list[str]:
    """The lines of later ledgers (the lost instance's nodes', kept off-site), checked
    before anything is restored."""
    lines = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"Registre de destruction illisible : {path}.") from None
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry["object"], str) or not isinstance(entry["tenant"], str):
                    raise TypeError
                datetime.fromisoformat(entry["at"])
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path} n'est pas un registre de destruction securex.") from None
            lines.append(line)
    return lines


def _merge_ledgers(instance: Path, lines: list[str]) -> None:
    """Append to the restored ledger the lines it does not have yet."""
    ledger = instance / LEDGER
    known = set(ledger.read_text().splitlines()) if ledger.exists() else set()
    new = [line for line in dict.fromkeys(lines) if line not in known]
    if new:
        with ledger.open("a") as fh:
            fh.write("".join(f"{line}\n" for line in new))
            fh.flush()
            os.fsync(fh.fileno())


@contextmanager
def _undo_on_failure(settings: Any, kept: set[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        _wipe(settings, kept)
        raise


def restore(
    path: Path,
    *,
    settings: Any,
    source: MasterKeySource,
    ledgers: list[Path],
    now: datetime,
    verifier: str | None = None,
    bars: Bars = no_bars,
) -> tuple[Summary, Vault]:
    """Rebuild an instance from a backup into an empty folder and database, then replay
    the shred ledgers (the backup's, then `ledgers`). On any error the target is left
    as it was found. Returns the summary and the restored instance's vault; the caller
    then checks integrity (`check_restored`)."""
    from securex.exchange.models import Upload
    from securex.vault import open_vault
    from securex.vault.blobs import FilesystemBlobStore

    later = _read_ledgers(ledgers)
    check_target(settings)
    root: Path = settings.instance
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = set(root.rglob("*"))
    with path.open("rb") as src:
        _, preamble = _read_preamble(src)
    with _undo_on_failure(settings, kept):
        params = root / "keys" / "master.json"
        if preamble.get("passphrase_params") and not params.exists():
            _check_params(preamble["passphrase_params"])
            params.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            from securex.vault.master import write_secret_file

            write_secret_file(params, json.dumps(preamble["passphrase_params"]).encode())
        engine = make_engine(settings.database_url)
        restorer = _Restorer(settings, engine, FilesystemBlobStore(root / "blobs"))
        try:
            with path.open("rb") as src:
                _, info, manifest = _walk(src, source, bars, path.stat().st_size, restorer)
            if restorer.conn is None:
                raise BackupError.damaged()
            if verifier is not None and verifier.strip() != manifest["verifier"]:
                raise _not_signed_by(restoring=True)
            try:
                restorer.finish()
            except DBAPIError as exc:
                raise BackupError(
                    f"La base cible a refusé l'enregistrement ({type(exc.orig).__name__}). "
                    "Rien n'a été restauré."
                ) from None
        except BaseException:
            restorer.abandon()
            raise
        finally:
            engine.dispose()
        upgrade(settings.database_url, "head")
        _merge_ledgers(root, later)
        vault = open_vault(source, root)
        summary = _summary(info, manifest)
        engine = make_engine(settings.database_url)
        try:
            with transaction(sessionmaker(engine)) as db:
                summary.shredded = vault.replay_shreds(db, now=now)
                # Resumable uploads in progress had no finished blob to back up: they
                # are over, and their senders start again.
                db.execute(
                    update(Upload)
                    .where(Upload.completed_at.is_(None), Upload.expires_at > now)
                    .values(expires_at=now)
                )
        finally:
            engine.dispose()
    return summary, vault
