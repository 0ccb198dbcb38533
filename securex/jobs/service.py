"""Background jobs kept in the database, so that any web node can enqueue and any
worker (a thread of `make run`, or `securex worker` processes) can run them.

A job is claimed in its own transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL;
SQLite serialises writers), then run by the handler its kind names. A worker that
dies leaves its job `running` with a stale heartbeat; the next claim puts it back in
the queue, and handlers are written so that running an item twice is harmless (an
item already signed is skipped), so a crash loses nothing and signs nothing twice.

A handler that raises is retried with a doubling backoff (`30 * 2**attempts` seconds,
at most `MAX_BACKOFF`) until its kind's number of attempts is spent, then the job is
`failed`. That number is `MAX_ATTEMPTS` unless the kind's handler declares its own
(`@handler(kind, max_attempts=n)`, kept in `ATTEMPTS`): webhooks, whose receivers
may be down for a while, try 8 times over about two hours.

Each worker also keeps a row in `workers`, its own heartbeat, which `/readyz` and
`/metrics` read; lines logged while a job runs carry its id and kind (`securex.logs`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from securex import logs
from securex.db import reading, transaction
from securex.errors import NotFound
from securex.jobs.models import Job, Worker

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=5)
MAX_ATTEMPTS = 3
MAX_BACKOFF = timedelta(hours=1)
BEAT_EVERY = 15.0  # seconds between two heartbeats of a worker (its row in `workers`)
WORKERS_KEPT = timedelta(days=1)  # the row of a worker that died, kept for diagnosis


@dataclass
class Runtime:
    """What handlers need, whoever runs them (web process, CLI worker, tests)."""

    settings: Any
    sessions: sessionmaker[Session]
    vault: Any
    pki: Any
    clock: Callable[[], datetime]
    environ: Mapping[str, str]


Handler = Callable[[Runtime, int], None]
HANDLERS: dict[str, Handler] = {}
ATTEMPTS: dict[str, int] = {}  # each kind's number of attempts before `failed`
# Housekeeping run by every worker every `interval` (retention purges, …): idempotent
# work, so several workers running it is harmless.
PERIODIC: list[tuple[str, timedelta, Callable[[Runtime], None]]] = []


def periodic(name: str, interval: timedelta) -> Callable[[Callable[[Runtime], None]], Any]:
    def register(fn: Callable[[Runtime], None]) -> Callable[[Runtime], None]:
        PERIODIC.append((name, interval, fn))
        return fn

    return register


def run_periodic(rt: Runtime, last: dict[str, datetime]) -> None:
    """Run the housekeeping tasks that are due (`last` remembers when each ran)."""
    now = rt.clock()
    for name, interval, fn in PERIODIC:
        if name in last and now - last[name] < interval:
            continue
        last[name] = now
        try:
            fn(rt)
        except Exception:
            log.exception("periodic task %s failed", name)


def handler(kind: str, *, max_attempts: int = MAX_ATTEMPTS) -> Callable[[Handler], Handler]:
    """Register the handler of a kind of job, tried at most `max_attempts` times."""

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        ATTEMPTS[kind] = max_attempts
        return fn

    return register


def enqueue(
    db: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    tenant_id: int | None,
    actor: str,
    now: datetime,
    total: int = 0,
) -> int:
    job = Job(
        kind=kind,
        tenant_id=tenant_id,
        created_by=actor,
        payload=json.dumps(payload, sort_keys=True),
        status="queued",
        total=total,
        done=0,
        failed=0,
        result="[]",
        attempts=0,
        created_at=now,
        run_after=now,
    )
    db.add(job)
    db.flush()
    return job.id


def get_job(db: Session, job_id: int, *, tenant_id: int | None = None) -> Job:
    job = db.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound("Tâche introuvable.")
    return job


def stale_after(settings: Any) -> timedelta:
    """How long a running job may go without a heartbeat before it is taken back:
    `jobs.stale_seconds` (5 minutes by default)."""
    return timedelta(seconds=float(settings["jobs.stale_seconds"]))


def _requeue_stale(db: Session, now: datetime, stale: timedelta) -> None:
    db.execute(
        update(Job)
        .where(Job.status == "running", Job.heartbeat_at < now - stale)
        .values(status="queued", worker=None)
    )


def claim(db: Session, worker: str, now: datetime, stale: timedelta = STALE_AFTER) -> int | None:
    """Take the oldest job due, or None."""
    _requeue_stale(db, now, stale)
    job = db.scalar(
        select(Job)
        .where(Job.status == "queued", Job.run_after <= now)
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if job is None:
        return None
    job.status = "running"
    job.worker = worker
    job.attempts += 1
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    return job.id


def progress(
    rt: Runtime, job_id: int, item: Mapping[str, Any], *, ok: bool, db: Session | None = None
) -> None:
    """Count one item done (or failed) and keep its line of result; also the
    heartbeat. Pass `db` to do it in the caller's transaction (the item's own, so
    that the item and its count commit together)."""

    def apply(session: Session) -> None:
        job = session.get(Job, job_id)
        assert job is not None
        lines = json.loads(job.result)
        lines.append(dict(item))
        job.result = json.dumps(lines, ensure_ascii=False)
        job.done += 1
        job.failed += 0 if ok else 1
        job.heartbeat_at = rt.clock()

    if db is not None:
        apply(db)
    else:
        with transaction(rt.sessions) as session:
            apply(session)


def _anything_due(rt: Runtime) -> bool:
    """A look without the write lock, so that idle workers polling often cost the
    other writers nothing."""
    now = rt.clock()
    with rt.sessions() as db:
        reading(db)
        due = db.scalar(
            select(Job.id)
            .where(
                ((Job.status == "queued") & (Job.run_after <= now))
                | ((Job.status == "running") & (Job.heartbeat_at < now - stale_after(rt.settings)))
            )
            .limit(1)
        )
        db.rollback()
    return due is not None


def run_one(rt: Runtime, worker: str) -> bool:
    """Claim and run one job; False when there was none."""
    if not _anything_due(rt):
        return False
    with transaction(rt.sessions) as db:
        job_id = claim(db, worker, rt.clock(), stale_after(rt.settings))
        kind = db.get(Job, job_id).kind if job_id else None  # type: ignore[union-attr]
    if job_id is None or kind is None:
        return False
    with logs.context(job_id=job_id, job_kind=kind):  # on every line the job logs
        try:
            HANDLERS[kind](rt, job_id)
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, kind)
            with transaction(rt.sessions) as db:
                job = db.get(Job, job_id)
                assert job is not None
                if job.worker != worker or job.status != "running":
                    return True  # taken over meanwhile: the new owner decides
                if job.attempts < ATTEMPTS.get(kind, MAX_ATTEMPTS):
                    job.status = "queued"
                    backoff = timedelta(seconds=30 * 2**job.attempts)
                    job.run_after = rt.clock() + min(backoff, MAX_BACKOFF)
                else:
                    job.status = "failed"
                    job.finished_at = rt.clock()
                job.error = f"{exc.__class__.__name__}: {exc}"[:500]
            return True
    with transaction(rt.sessions) as db:
        job = db.get(Job, job_id)
        assert job is not None
        if job.worker == worker and job.status == "running":  # else taken over meanwhile
            job.status = "done"
            job.finished_at = rt.clock()
    return True


def run_pending(rt: Runtime, worker: str = "inline") -> int:
    """Run every job due now (tests, `securex worker --once`)."""
    count = 0
    while run_one(rt, worker):
        count += 1
    return count


def worker_name() -> str:
    """host:pid:thread, within the 80 characters of `jobs.worker` (a long host name is
    cut from the left: its distinguishing end stays)."""
    name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    return name[-80:]


# --- heartbeats ------------------------------------------------------------------------


def beat(rt: Runtime, name: str, started_at: datetime) -> None:
    """Write the worker's row, or renew its heartbeat: a short write of its own."""
    now = rt.clock()
    with transaction(rt.sessions) as db:
        row = db.get(Worker, name)
        if row is None:
            host, pid = socket.gethostname(), os.getpid()
            db.add(Worker(name=name, host=host, pid=pid, started_at=started_at, beat_at=now))
        else:
            row.beat_at = now
        # The jobs this worker runs are alive too, even one with a single long step (a
        # pli of several GiB to scan and encrypt) that reports no progress for minutes.
        db.execute(
            update(Job).where(Job.worker == name, Job.status == "running").values(heartbeat_at=now)
        )


def forget(rt: Runtime, name: str) -> None:
    """Remove the row of a worker that stops cleanly."""
    with transaction(rt.sessions) as db:
        db.execute(delete(Worker).where(Worker.name == name))


def newest_beat(db: Session) -> datetime | None:
    """When the last heartbeat of any worker was, or None when no worker ever beat."""
    newest: datetime | None = db.scalar(select(func.max(Worker.beat_at)))
    return newest


@periodic("jobs.workers", timedelta(hours=1))
def prune_workers(rt: Runtime) -> None:
    """Remove the rows of workers that died (killed, or their process gone) a day ago."""
    with transaction(rt.sessions) as db:
        db.execute(delete(Worker).where(Worker.beat_at < rt.clock() - WORKERS_KEPT))


class WorkerThread(threading.Thread):
    """A worker: the job thread of each web process (`jobs.in_process`, as `make run`
    does), or the one of `securex worker`. Its row in `workers` is written when it starts,
    renewed every `BEAT_EVERY` seconds by a companion thread (so that a job of several
    minutes, a batch of 500 acts, does not make it look dead) and deleted when it stops."""

    def __init__(self, rt: Runtime, poll_seconds: float = 1.0) -> None:
        super().__init__(name="securex-worker", daemon=True)
        self.rt = rt
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self._finished = threading.Event()

    def run(self) -> None:
        name = worker_name()
        started = self.rt.clock()
        self._beat(name, started)
        heart = threading.Thread(
            target=self._heartbeat, args=(name, started), name="securex-heartbeat", daemon=True
        )
        heart.start()
        last: dict[str, datetime] = {}
        try:
            while not self.stopping.is_set():
                run_periodic(self.rt, last)
                try:
                    busy = run_one(self.rt, name)
                except Exception:
                    log.exception("worker poll failed")
                    busy = False
                if not busy:
                    self.stopping.wait(self.poll_seconds)
        finally:
            self._finished.set()
            heart.join()
            try:
                forget(self.rt, name)
            except Exception as exc:  # the housekeeping removes it later
                log.warning("worker row not removed (%s)", exc.__class__.__name__)

    def _beat(self, name: str, started: datetime) -> None:
        try:
            beat(self.rt, name, started)
        except Exception as exc:  # the database is down: /readyz says so already
            log.warning("worker heartbeat failed (%s)", exc.__class__.__name__)

    def _heartbeat(self, name: str, started: datetime) -> None:
        while not self._finished.wait(BEAT_EVERY):
            self._beat(name, started)

    def stop(self) -> None:
        self.stopping.set()
