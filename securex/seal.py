"""The audit log's seal: the platform's Ed25519 checkpoint key (a platform secret kept
in the vault) and the TSA that timestamps checkpoints (the configured one, or the demo
PKI's). Composes three core libraries, so it lives in the shell."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from asn1crypto import x509 as asn1_x509
from sqlalchemy.orm import Session

from securex.audit.proofs import Sealer, checkpoint_due, create_checkpoint
from securex.db import transaction
from securex.errors import ConfigError
from securex.jobs.service import Runtime, periodic
from securex.vault import Keyring

SEAL_PURPOSE = "audit-seal"


def origin(settings: Any) -> str:
    """The log's name in its checkpoints. It must not change once a checkpoint is
    signed: earlier checkpoints are signed under it (see docs/operations.md)."""
    configured = str(settings["audit.origin"])
    name = configured or f"{urlsplit(settings['base_url']).netloc}/securex-audit"
    if not name or any(c in name for c in "+ \n\t\u2014"):
        raise ConfigError(f"audit.origin invalide : {name!r} (ni espace ni « + »).")
    return name


def sealer(settings: Any, db: Session, keyring: Keyring, pki: Any, now: datetime) -> Sealer:
    from securex.signing.setup import timestamper

    seed = keyring.platform_secret(db, SEAL_PURPOSE, now=now, actor="system")
    stamper = (
        timestamper(settings, pki) if (pki is not None or settings["signing.tsa_url"]) else None
    )
    return Sealer.from_seed(origin(settings), seed, stamper)


def tsa_roots(settings: Any, pki: Any) -> list[asn1_x509.Certificate]:
    """The anchors a checkpoint's timestamp must chain to (the signing trust anchors)."""
    from securex.signing.setup import _trust_anchors
    from securex.signing.signers import to_asn1

    if pki is None and not settings["signing.trust_anchors"]:
        return []
    return [to_asn1(c) for c in _trust_anchors(settings, pki)]


def checkpoint_if_due(
    settings: Any, db: Session, keyring: Keyring, pki: Any, now: datetime
) -> bool:
    """Make a checkpoint when enough events or minutes have passed (caller commits)."""
    if not checkpoint_due(
        db,
        every_events=int(settings["audit.checkpoint_every_events"]),
        every_minutes=int(settings["audit.checkpoint_every_minutes"]),
        now=now,
    ):
        return False
    return create_checkpoint(db, sealer(settings, db, keyring, pki, now), now=now) is not None


@periodic("audit.checkpoint", timedelta(minutes=1))
def checkpoint_periodically(rt: Runtime) -> None:
    """The workers make the checkpoints that are due even when no web request comes
    (a night of batch signing, a worker-only host)."""
    with transaction(rt.sessions) as db:
        checkpoint_if_due(rt.settings, db, rt.vault.keyring, rt.pki, rt.clock())
