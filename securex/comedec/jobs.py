"""Background work of the exchange: issuing a clean request with the commune's seal,
webhooks to requesters, and the one-year purge."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from securex.accounts.models import Tenant
from securex.comedec import service, webhooks
from securex.db import transaction
from securex.jobs.models import Job
from securex.jobs.service import Runtime, handler, periodic
from securex.registry.batch import seal_signing

log = logging.getLogger(__name__)


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
    except Exception as exc:
        log.warning("automatic issue of request %s failed: %s", request_id, type(exc).__name__)
        with transaction(rt.sessions) as db:
            service.fall_back_to_queue(db, request_id, now=now)


@periodic("comedec.purge", timedelta(hours=1))
def purge(rt: Runtime) -> None:
    """Requests past their year (décret 2017-890 art. 29) go, with their sealed data."""
    with transaction(rt.sessions) as db:
        service.purge(db, now=rt.clock(), vault=rt.vault)


# With the jobs' backoff, a webhook is retried after 1, 2, 4 … 32 min, then 1 h: over
# about two hours, long enough for a receiver's restart or deployment.
WEBHOOK_ATTEMPTS = 8


@handler(service.WEBHOOK_JOB, max_attempts=WEBHOOK_ATTEMPTS)
def webhook(rt: Runtime, job_id: int) -> None:
    """Tell a requester of a status change (Standard Webhooks). A failed attempt
    raises, so the job is retried; a removed endpoint ends it quietly."""
    with rt.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        payload = json.loads(job.payload)
        tenant = db.get(Tenant, job.tenant_id) if job.tenant_id else None
        insee = tenant.insee if tenant else None
    webhooks.deliver(
        rt.sessions,
        payload["endpoint"],
        payload["event"],
        job_id=job_id,
        keyring=rt.vault.keyring,
        clock=rt.clock,
        tenant=insee,
        allow_private=bool(rt.settings["comedec.webhook_allow_private"]),
    )
