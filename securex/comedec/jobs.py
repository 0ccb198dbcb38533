"""Background work of the exchange: issuing a clean request with the commune's seal."""

from __future__ import annotations

import json
from datetime import timedelta

from securex.accounts.models import Tenant
from securex.comedec import service
from securex.db import transaction
from securex.errors import SecurexError
from securex.jobs.models import Job
from securex.jobs.service import Runtime, handler, periodic
from securex.registry.batch import seal_signing


@handler(service.ISSUE_JOB)
def issue(rt: Runtime, job_id: int) -> None:
    with rt.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        request_id = json.loads(job.payload)["request"]
    now = rt.clock()
    try:
        with transaction(rt.sessions) as db:

            def signing_for(tenant: Tenant) -> object:
                return seal_signing(rt, tenant, now)

            service.issue_automatically(
                db, request_id, signing_for=signing_for, now=now, vault=rt.vault
            )
    except SecurexError as exc:
        with transaction(rt.sessions) as db:
            service.fall_back_to_queue(db, request_id, exc.detail, now=now)


@periodic("comedec.purge", timedelta(hours=1))
def purge(rt: Runtime) -> None:
    """Requests past their year (décret 2017-890 art. 29) go, with their sealed data."""
    with transaction(rt.sessions) as db:
        service.purge(db, now=rt.clock(), vault=rt.vault)
