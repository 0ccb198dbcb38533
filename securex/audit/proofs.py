"""Checkpoints, proofs and their offline verification.

A checkpoint is made only after checking that it is consistent with the previous one;
it is signed with the platform's seal key (Ed25519, a C2SP signed note) and its text is
timestamped by the TSA (RFC 3161). A proof bundle holds an event's canonical encoding,
its inclusion proof and the checkpoint it is proved against: someone with nothing but
the bundle and the platform's verifier key can check it (`check_proof`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import cms, x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyhanko.sign.timestamps.api import TimeStamper
from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.audit.checkpoint import Checkpoint, open_note, sign_note, verifier_key
from securex.audit.log import canonical_encoding
from securex.audit.merkle import (
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from securex.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from securex.audit.tree import consistency_proof_at, frontier_root, inclusion_proof_at

PROOF_FORMAT = "securex-audit-proof/1"


@dataclass
class Sealer:
    """What signs checkpoints: the log's origin (also the key name), the seal key, and
    the TSA that timestamps them (None: not timestamped)."""

    origin: str
    private_key: Ed25519PrivateKey
    timestamper: TimeStamper | None

    @classmethod
    def from_seed(cls, origin: str, seed: bytes, timestamper: TimeStamper | None) -> Sealer:
        return cls(origin, Ed25519PrivateKey.from_private_bytes(seed), timestamper)

    @property
    def verifier(self) -> str:
        return verifier_key(self.origin, self.private_key.public_key())


def _timestamp(timestamper: TimeStamper, text: str) -> bytes:
    digest = hashlib.sha256(text.encode()).digest()
    token: cms.ContentInfo = asyncio.run(timestamper.async_timestamp(digest, "sha256"))
    return bytes(token.dump())


def latest_checkpoint(db: Session) -> AuditCheckpoint | None:
    return db.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1))


def checkpoint_due(db: Session, *, every_events: int, every_minutes: int, now: datetime) -> bool:
    head = db.get(AuditHead, 1, populate_existing=True)
    if head is None or head.size == 0:
        return False
    last = latest_checkpoint(db)
    if last is not None and head.size == last.size:
        return False
    since = (
        last.created_at
        if last is not None
        else db.scalar(select(AuditEvent.recorded_at).where(AuditEvent.id == 1))
    )
    done = last.size if last is not None else 0
    late = since is not None and now - since >= timedelta(minutes=every_minutes)
    return head.size - done >= every_events or late


def create_checkpoint(db: Session, sealer: Sealer, *, now: datetime) -> AuditCheckpoint | None:
    """Sign the current tree head, after checking it extends the last checkpoint. None
    when nothing was appended since. Raises ProofError if the log was rewritten."""
    head = db.get(AuditHead, 1, with_for_update=True, populate_existing=True)
    if head is None or head.size == 0:
        return None
    last = latest_checkpoint(db)
    if last is not None and last.size == head.size:
        return None
    root = frontier_root(head.size, head.frontier)
    if last is not None:
        # Against what was signed, not the row's columns, which the database owner holds.
        previous = open_note(last.note, sealer.verifier)
        verify_consistency(
            previous.size,
            head.size,
            previous.root,
            root,
            consistency_proof_at(db, previous.size, head.size),
        )
    note = sign_note(Checkpoint(sealer.origin, head.size, root), sealer.origin, sealer.private_key)
    token = (
        _timestamp(sealer.timestamper, Checkpoint(sealer.origin, head.size, root).text())
        if sealer.timestamper
        else None
    )
    row = AuditCheckpoint(
        size=head.size, root=root, note=note, timestamp_token=token, created_at=now
    )
    db.add(row)
    db.flush()
    return row


def checkpoint_covering(db: Session, size: int) -> AuditCheckpoint | None:
    """The earliest checkpoint whose tree holds at least `size` leaves."""
    return db.scalar(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.size >= size)
        .order_by(AuditCheckpoint.size)
        .limit(1)
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def checkpoint_json(row: AuditCheckpoint, verifier: str) -> dict[str, Any]:
    return {
        "size": row.size,
        "root": _b64(row.root),
        "note": row.note,
        "timestamp_token": _b64(row.timestamp_token),
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "verifier_key": verifier,
    }


def event_proof(
    db: Session, event_id: int, checkpoint: AuditCheckpoint, verifier: str
) -> dict[str, Any]:
    """The proof bundle of one event against `checkpoint` (which must cover it)."""
    event = db.get(AuditEvent, event_id)
    if event is None or event_id > checkpoint.size:
        raise LookupError(event_id)
    data = canonical_encoding(event)
    proof = inclusion_proof_at(db, event.id - 1, checkpoint.size)
    return {
        "format": PROOF_FORMAT,
        "event": data.decode(),
        "leaf_index": event.id - 1,
        "tree_size": checkpoint.size,
        "inclusion": [p.hex() for p in proof],
        "checkpoint": checkpoint_json(checkpoint, verifier),
    }


def consistency_json(
    db: Session, old: AuditCheckpoint, new: AuditCheckpoint, verifier: str
) -> dict[str, Any]:
    return {
        "format": "securex-audit-consistency/1",
        "from": checkpoint_json(old, verifier),
        "to": checkpoint_json(new, verifier),
        "proof": [p.hex() for p in consistency_proof_at(db, old.size, new.size)],
    }


def check_proof(
    bundle: dict[str, Any], verifier: str, tsa_roots: Sequence[x509.Certificate] = ()
) -> Checkpoint:
    """Verify a proof bundle offline. Returns the checkpoint it was proved against;
    raises ProofError for every way it can be wrong. With `tsa_roots`, the checkpoint's
    RFC 3161 timestamp must also verify and match the note."""
    try:
        if bundle.get("format") != PROOF_FORMAT:
            raise ProofError("format de preuve inconnu")
        checkpoint = open_note(bundle["checkpoint"]["note"], verifier)
        index, size = int(bundle["leaf_index"]), int(bundle["tree_size"])
        proof = [bytes.fromhex(p) for p in bundle["inclusion"]]
        data = str(bundle["event"]).encode()
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProofError("preuve mal formée") from None
    if checkpoint.size != size:
        raise ProofError("la preuve ne correspond pas au point de contrôle")
    try:
        claimed_id = json.loads(data)["id"]
    except (ValueError, KeyError, TypeError):
        raise ProofError("événement illisible") from None
    if claimed_id != index + 1:
        raise ProofError("le numéro de l'événement ne correspond pas à sa place dans l'arbre")
    verify_inclusion(index, size, leaf_hash(data), proof, checkpoint.root)
    if tsa_roots:
        check_timestamp(bundle["checkpoint"].get("timestamp_token"), checkpoint, tsa_roots)
    return checkpoint


def check_timestamp(
    token_b64: str | None,
    checkpoint: Checkpoint,
    tsa_roots: Sequence[x509.Certificate],
    context: Any = None,
) -> datetime:
    """The time at which the TSA saw this checkpoint; ProofError unless its token is
    intact, signed by a TSA chaining to `tsa_roots`, and over this checkpoint's text.
    A `context` (pyhanko_certvalidator ValidationContext) shared across calls keeps the
    TSA's validated path, which is most of the cost."""
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko_certvalidator import ValidationContext

    if not token_b64:
        raise ProofError("point de contrôle non horodaté")
    try:
        token = cms.ContentInfo.load(base64.b64decode(token_b64, validate=True))
        signed = token["content"]
        expected = hashlib.sha256(checkpoint.text().encode()).digest()
        context = context or ValidationContext(
            trust_roots=list(tsa_roots), allow_fetching=False, revocation_mode="soft-fail"
        )
        status = asyncio.run(validate_tst_signed_data(signed, context, lambda _algo: expected))
    except ProofError:
        raise
    except Exception:  # a malformed token can fail in many ways; all mean "not proved"
        raise ProofError("horodatage du point de contrôle invalide") from None
    if not (
        status.get("intact") and status.get("valid") and status.get("trust_problem_indic") is None
    ):
        raise ProofError("horodatage du point de contrôle invalide")
    when: datetime = status["timestamp"]
    return when


def check_timestamps(
    items: Sequence[tuple[int, str, str | None]], verifier: str, tsa_roots_der: Sequence[bytes]
) -> list[str]:
    """Check the RFC 3161 timestamps of many checkpoints, given as (size, note, token in
    base64): made to run in a second process while the chain is scanned."""
    roots = [x509.Certificate.load(der) for der in tsa_roots_der]
    from pyhanko_certvalidator import ValidationContext

    context = ValidationContext(
        trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail"
    )
    problems = []
    for size, note, token in items:
        try:
            check_timestamp(token, open_note(note, verifier), roots, context)
        except ProofError as exc:
            problems.append(f"point de contrôle {size} : {exc}")
    return problems


def verify_checkpoints(
    db: Session,
    verifier: str,
    roots: dict[int, bytes],
    tsa_roots: Sequence[x509.Certificate] = (),
    log_size: int | None = None,
) -> list[str]:
    """Check every stored checkpoint: its signature, its root against the one
    recomputed from the events (`roots`, from verify_chain), its consistency with the
    previous one and, with `tsa_roots`, its timestamp."""
    from pyhanko_certvalidator import ValidationContext

    problems = []
    previous: Checkpoint | None = None
    shared = (
        ValidationContext(
            trust_roots=list(tsa_roots), allow_fetching=False, revocation_mode="soft-fail"
        )
        if tsa_roots
        else None
    )
    for row in db.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)):
        label = f"point de contrôle {row.size}"
        try:
            cp = open_note(row.note, verifier)
        except ProofError as exc:
            problems.append(f"{label} : {exc}")
            continue
        if cp.size != row.size or cp.root != row.root:
            problems.append(f"{label} : ne correspond pas à sa note signée")
        if log_size is not None and cp.size > log_size:
            problems.append(
                f"{label} : au-delà de la fin du journal ({log_size} événements) "
                "— événements supprimés ?"
            )
        if row.size in roots and roots[row.size] != cp.root:
            problems.append(f"{label} : la racine signée ne correspond plus aux événements")
        recomputed = previous is not None and previous.size in roots and cp.size in roots
        if previous is not None and not recomputed:
            # (When both roots were recomputed from the events and match, the earlier
            # tree is a prefix of the later one by construction.)
            try:
                verify_consistency(
                    previous.size,
                    cp.size,
                    previous.root,
                    cp.root,
                    consistency_proof_at(db, previous.size, cp.size),
                )
            except (ProofError, LookupError):
                problems.append(f"{label} : incohérent avec le point de contrôle précédent")
        if tsa_roots:
            try:
                check_timestamp(_b64(row.timestamp_token), cp, tsa_roots, shared)
            except ProofError as exc:
                problems.append(f"{label} : {exc}")
        previous = cp
    return problems
