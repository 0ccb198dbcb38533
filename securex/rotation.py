"""Rotation of a commune's key from its administrator's page: a background job, since
every data key of the commune is rewrapped (tens of thousands of rows for a large
commune), which a web request should not hold. The CLI (`securex keys rotate-tenant`)
does the same work in the foreground."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.accounts.models import Tenant
from securex.db import transaction
from securex.errors import Conflict
from securex.jobs.models import Job
from securex.jobs.service import Runtime, enqueue, handler

KIND = "vault.rotate_tenant"


def running(db: Session, tenant: Tenant) -> Job | None:
    """The commune's rotation still queued or running, if any."""
    return db.scalar(
        select(Job)
        .where(Job.kind == KIND, Job.tenant_id == tenant.id, Job.status.in_(("queued", "running")))
        .order_by(Job.id)
        .limit(1)
    )


def last(db: Session, tenant: Tenant) -> Job | None:
    return db.scalar(
        select(Job).where(Job.kind == KIND, Job.tenant_id == tenant.id).order_by(Job.id.desc())
    )


def request_rotation(db: Session, tenant: Tenant, *, actor: str, now: datetime) -> int:
    if running(db, tenant) is not None:
        raise Conflict("Une rotation de la clé de la commune est déjà en cours.")
    return enqueue(db, KIND, {"tenant": tenant.insee}, tenant_id=tenant.id, actor=actor, now=now)


@handler(KIND, max_attempts=3)
def rotate(rt: Runtime, job_id: int) -> None:
    with rt.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        insee, actor = json.loads(job.payload)["tenant"], job.created_by
    # One transaction, as the CLI: the new version and every rewrapped key commit
    # together, or nothing does (a retry after a crash starts from the old version).
    with transaction(rt.sessions) as db:
        rt.vault.keyring.rotate_tenant(db, insee, now=rt.clock(), actor=actor)
