"""Batch signing by the officier: select many waiting items, confirm once with a fresh
TOTP code, and a background job signs them one by one. Each item is signed (and
audited) or fails in its own transaction; the job's result says which and why."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from securex.accounts.models import Role, Tenant, User
from securex.accounts.service import AccountKeys, Actor, SecurityPolicy, confirm_totp
from securex.audit.events import EventType
from securex.audit.log import record
from securex.db import transaction
from securex.errors import Forbidden, SecurexError, ValidationFailed
from securex.jobs.models import Job
from securex.jobs.service import Runtime, enqueue, handler, progress
from securex.registry.service import OfficerSigning, parse_ref, sign_item

KIND = "registry.batch_sign"
MAX_ITEMS = 500


def start_batch(
    db: Session,
    keys: AccountKeys,
    policy: SecurityPolicy,
    officer: User,
    refs: list[str],
    *,
    totp_code: str,
    now: datetime,
) -> int:
    """Queue the signature of `refs` after checking a fresh TOTP code (never the step
    already used to log in, so a code seen over the shoulder at login does not sign)."""
    if officer.role != Role.OFFICER or officer.tenant is None:
        raise Forbidden("Seul un officier de l'état civil signe.")
    wanted = list(dict.fromkeys(refs))
    if not wanted:
        raise ValidationFailed("Sélectionnez au moins un élément à signer.")
    if len(wanted) > MAX_ITEMS:
        raise ValidationFailed(f"Au plus {MAX_ITEMS} éléments par lot.")
    for ref in wanted:
        parse_ref(ref)
    confirm_totp(db, keys, officer, totp_code, now=now, policy=policy)
    job_id = enqueue(
        db,
        KIND,
        {"officer": officer.id, "items": wanted},
        tenant_id=officer.tenant_id,
        actor=str(Actor.for_user(officer)),
        now=now,
        total=len(wanted),
    )
    record(
        db,
        EventType.BATCH_REQUESTED,
        actor=str(Actor.for_user(officer)),
        subject=f"job:{job_id}",
        tenant=officer.tenant.insee,
        details={"items": len(wanted)},
        now=now,
    )
    return job_id


def officer_signing(rt: Runtime, officer: User, now: datetime) -> OfficerSigning:
    from securex.signing.pades import Level, check_signer
    from securex.signing.setup import appearance_for, signing_setup

    assert officer.tenant is not None
    setup = signing_setup(
        rt.settings,
        pki=rt.pki,
        email=officer.email,
        level=Level.parse(rt.settings["signing.level"]),
        now=now,
        environ=rt.environ,
    )
    # An expired or revoked certificate is refused before anything is signed (pyHanko
    # itself checks revocation only when it embeds validation data, from B-LT on).
    check_signer(setup, now)
    appearance = appearance_for(rt.settings, officer=officer.name, commune=officer.tenant.name)
    return OfficerSigning(officer, setup, appearance, verify_base=rt.settings["base_url"])


SEAL_QUALITY = "Cachet de la commune (délivrance automatique)"


def seal_email(settings: Any, insee: str) -> str:
    return str(settings["registry.seal_email"]).format(insee=insee)


def seal_signing(rt: Runtime, tenant: Tenant, now: datetime) -> OfficerSigning:
    """The commune's seal, for copies issued automatically: with the demo PKI a
    certificate is issued to it on first use; on PKCS#11 the key labelled with its
    e-mail (registry.seal_email) must be on the token."""
    from securex.signing.pades import Level, check_signer
    from securex.signing.pki import OfficerIdentity
    from securex.signing.setup import appearance_for, signing_setup

    email = seal_email(rt.settings, tenant.insee)
    name = f"Mairie de {tenant.name} — cachet"
    if rt.settings["signing.backend"] == "pkcs12" and rt.pki is not None:
        try:
            rt.pki.officer_cert(email)
        except SecurexError:
            who = OfficerIdentity(email=email, name=name, commune=tenant.name, insee=tenant.insee)
            rt.pki.issue_officer(who, key_type="ecdsa-p256", now=now)
    setup = signing_setup(
        rt.settings,
        pki=rt.pki,
        email=email,
        level=Level.parse(rt.settings["signing.level"]),
        now=now,
        environ=rt.environ,
    )
    check_signer(setup, now)
    appearance = appearance_for(rt.settings, officer=name, commune=tenant.name)
    return OfficerSigning(
        None,
        setup,
        appearance,
        verify_base=rt.settings["base_url"],
        quality=SEAL_QUALITY,
        seal_of=tenant.insee,
        seal_name=name,
    )


def _done_refs(job: Job) -> set[str]:
    return {line["ref"] for line in json.loads(job.result)}


@handler(KIND)
def run_batch(rt: Runtime, job_id: int) -> None:
    with rt.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        payload: dict[str, Any] = json.loads(job.payload)
        done = _done_refs(job)  # a retried job skips what a previous run finished
        officer = db.get(User, payload["officer"])
    signing: OfficerSigning | None = None
    failure: str | None = None
    if officer is None or not officer.active:
        failure = "Le compte de l'officier est désactivé."
    else:
        try:
            signing = officer_signing(rt, officer, rt.clock())
        except SecurexError as exc:
            failure = exc.detail
    for ref in payload["items"]:
        if ref in done:
            continue
        if signing is None:
            progress(rt, job_id, {"ref": ref, "ok": False, "message": failure}, ok=False)
            continue
        try:
            with transaction(rt.sessions) as db:
                message = sign_item(db, ref, signing=signing, now=rt.clock(), vault=rt.vault)
                progress(rt, job_id, {"ref": ref, "ok": True, "message": message}, ok=True, db=db)
        except SecurexError as exc:
            with transaction(rt.sessions) as db:
                record(
                    db,
                    EventType.SIGNATURE_FAILED,
                    actor=f"user:{payload['officer']}",
                    subject=ref,
                    tenant=officer.tenant.insee if officer and officer.tenant else None,
                    details={"job": job_id, "reason": exc.slug},
                    now=rt.clock(),
                )
                progress(
                    rt, job_id, {"ref": ref, "ok": False, "message": exc.detail}, ok=False, db=db
                )
