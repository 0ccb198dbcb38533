"""What operators see of the web processes: a request id on every request and its log
lines, one access line per request, `/metrics` (Prometheus) and the health checks
`/healthz` and `/readyz`.

Nothing here records a path, a query, an address, a user agent or an e-mail: requests
are known by their route's template (`/plis/d/<token>`, never the token).

Metrics: under `securex serve`, gunicorn runs several processes, and `PROMETHEUS_
MULTIPROC_DIR` (set by `securex.cli.gunicorn_options`'s hooks) makes every process write
its counters to files there, which the process that answers a scrape adds up. Without it
(the test client, a single process), the process's own registry is served. Queue depths
and heartbeats are read from the database at each scrape, whichever process answers.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, abort, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from sqlalchemy import func, select, text

from securex import logs
from securex.comedec.models import ActRequest, RequestStatus
from securex.db import reading
from securex.errors import AuthenticationFailed
from securex.exchange.models import Pli, PliStatus
from securex.jobs.models import Job, Worker
from securex.jobs.service import HANDLERS, newest_beat
from securex.web.api import problem_from_error
from securex.web.audit import _QUIET_PATHS
from securex.web.context import AppState, state

log = logging.getLogger("securex.web")
access = logging.getLogger("securex.access")
bp = Blueprint("health", __name__)

REQUEST_ID = "X-Request-ID"
_GIVEN_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")  # nginx's $request_id: 32 hex digits
# No access line for these (health checks, scrapes, static files): their numbers are in
# /metrics.
QUIET_PATHS = _QUIET_PATHS
# A client may send any method; a label takes only these (others: "other").
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"

REQUESTS = Counter(
    "securex_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "securex_http_request_duration_seconds",
    "Time from the request's start to the response's last byte, by route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
EXCEPTIONS = Counter("securex_exceptions", "Unhandled exceptions (answered 500).")


# --- request ids and access lines -----------------------------------------------------


def _begin() -> None:
    """The request's id: the proxy's (`X-Request-ID`) when it looks like one, else a new
    one; on every line logged while the request is served."""
    given = request.headers.get(REQUEST_ID, "")
    g.request_id = given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()
    g.request_log = logs.bind(request_id=g.request_id)


def _end(_exc: BaseException | None = None) -> None:
    token = g.pop("request_log", None)
    if token is not None:
        # ValueError: bound in another context (never under gunicorn or Werkzeug).
        with contextlib.suppress(ValueError):
            logs.unbind(token)


def _finish(response: Response) -> Response:
    """Echo the id; count and log the request once its last byte is sent (a download
    may stream for minutes after this hook), outside the request's context by then."""
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID] = request_id
    started = g.get("request_started", time.perf_counter())
    method = request.method if request.method in METHODS else "other"
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    quiet = request.path.startswith(QUIET_PATHS)
    status = response.status_code
    # The headers, not the response: a closure holding the response would make a cycle,
    # and an unread streamed body would then be closed (its end recorded) only when the
    # garbage collector runs, at any moment, maybe inside another request's transaction.
    headers = response.headers

    def done() -> None:
        try:
            seconds = time.perf_counter() - started
            REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            DURATION.labels(method=method, route=route).observe(seconds)
            if not quiet:
                access.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                        "bytes": _length(headers.get("Content-Length")),
                    },
                )
        except Exception:  # the response is sent: never fail its closing
            log.exception("access line or metrics failed")

    response.call_on_close(done)
    return response


def _length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def count_exception() -> None:
    """An unhandled exception, answered 500 (`securex.web`'s last error handler)."""
    with contextlib.suppress(OSError):  # a metrics file that cannot be written: the 500 goes on
        EXCEPTIONS.inc()


def init_app(app: Flask) -> None:
    """Before every other hook: a request refused by one (CSRF) still has its id."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_finish)
    app.teardown_request(_end)
    app.register_blueprint(bp)


# --- /healthz, /readyz ------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


CHECK_SECONDS = 2.0  # a check that has not answered by then fails ("timeout")
# Checks run in these threads, so that one that hangs (a database or a token that no
# longer answers) is cut off by CHECK_SECONDS; hung ones hold a thread each, and once all
# are held the next checks time out too, which is the truth. Made after gunicorn's fork.
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_last: dict[str, str] = {}  # each check's last answer in this process, to log changes


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="securex-readyz")
        return _pool


def _check_database(st: AppState) -> None:
    with st.sessions() as db:
        reading(db)  # SQLite: no write lock, so a long write does not hold the check
        db.execute(text("SELECT 1"))
        db.rollback()


def _check_blobs(st: AppState) -> None:
    st.vault.blobs.probe()


def _check_keys(st: AppState) -> None:
    with st.sessions() as db:
        reading(db)
        st.vault.keyring.check(db)
        db.rollback()


class NoWorker(Exception):
    """No worker has renewed its heartbeat within `jobs.heartbeat_timeout`."""


def _check_worker(st: AppState) -> None:
    with st.sessions() as db:
        reading(db)
        newest = newest_beat(db)
        db.rollback()
    limit = timedelta(seconds=float(st.settings["jobs.heartbeat_timeout"]))
    if newest is None or st.clock() - newest > limit:
        raise NoWorker()


CHECKS: dict[str, Callable[[AppState], None]] = {
    "database": _check_database,
    "blobs": _check_blobs,
    "keys": _check_keys,
    "worker": _check_worker,
}


def readiness(st: AppState) -> dict[str, str]:
    """Each check's answer: "ok", "failed" or "timeout". A change of answer is logged
    once (with the cause's type), not at every poll of the load balancer."""
    futures: dict[str, Future[None]] = {
        name: _executor().submit(check, st) for name, check in CHECKS.items()
    }
    wait_for(futures.values(), timeout=CHECK_SECONDS)
    answers = {}
    for name, future in futures.items():
        cause = ""
        if not future.done():
            future.cancel()
            answer = "timeout"
        elif future.exception() is not None:
            answer, cause = "failed", type(future.exception()).__name__
        else:
            answer = "ok"
        answers[name] = answer
        if _last.get(name, "ok") != answer:
            if answer == "ok":
                log.info("readiness check %s: ok again", name, extra={"check": name})
            else:
                log.warning(
                    "readiness check %s: %s (%s)",
                    name,
                    answer,
                    cause or "no answer",
                    extra={"check": name, "cause": cause or answer},
                )
        _last[name] = answer
    return answers


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """200 when every check passes; 503 naming those that do not. No path, no address,
    no error message in the body: only the checks' names and answers."""
    st = state()
    checks = readiness(st)
    failing = sorted(name for name, answer in checks.items() if answer != "ok")
    if not st.settings["jobs.in_process"] and "worker" in failing:
        # The workers are other processes, shared by every node: their absence (an
        # upgrade stops them all) must not make the load balancer drop every node at
        # once. It is reported, and alerted on through /metrics.
        failing.remove("worker")
        if not failing:
            return {"status": "degraded", "checks": checks, "degraded": ["worker"]}, 200
    if failing:
        return {"status": "unavailable", "checks": checks, "failing": failing}, 503
    return {"status": "ok", "checks": checks}, 200


# --- /metrics -------------------------------------------------------------------------


class _ThisProcess:
    """The process's own registry (no multiprocess directory): counters, histograms, and
    the standard process and platform metrics."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class Queues:
    """Gauges read from the database at each scrape, so they are right whichever process
    answers: jobs by kind and status, how long the oldest job due has waited, requests
    for acts and plis not yet handled, workers alive and the age of the newest
    heartbeat. Counts and ages only: nothing about a person."""

    def __init__(self, st: AppState) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        st = self.st
        now = st.clock()
        limit = now - timedelta(seconds=float(st.settings["jobs.heartbeat_timeout"]))
        try:
            with st.sessions() as db:
                reading(db)
                jobs = db.execute(
                    select(Job.kind, Job.status, func.count())
                    .where(Job.status.in_(JOB_STATUSES))
                    .group_by(Job.kind, Job.status)
                ).all()
                oldest_due = db.scalar(
                    select(func.min(Job.run_after)).where(
                        Job.status == "queued", Job.run_after <= now
                    )
                )
                requests = db.execute(
                    select(ActRequest.status, func.count())
                    .where(ActRequest.status.in_(REQUEST_STATUSES))
                    .group_by(ActRequest.status)
                ).all()
                plis = db.execute(
                    select(Pli.status, func.count())
                    .where(Pli.status.in_(PLI_STATUSES))
                    .group_by(Pli.status)
                ).all()
                alive = db.scalar(
                    select(func.count()).select_from(Worker).where(Worker.beat_at >= limit)
                )
                newest = newest_beat(db)
                db.rollback()
        except Exception as exc:  # the scrape still gets the counters, and this
            log.warning("metrics: database unreachable (%s)", type(exc).__name__)
            yield GaugeMetricFamily("securex_database_up", DATABASE_UP, value=0)
            return
        yield GaugeMetricFamily("securex_database_up", DATABASE_UP, value=1)

        kinds = set(HANDLERS) | {kind for kind, _, _ in jobs}  # every status of each, 0 too
        by_job = {(kind, status): 0 for kind in kinds for status in JOB_STATUSES}
        by_job.update({(kind, status): int(n) for kind, status, n in jobs})
        family = GaugeMetricFamily(
            "securex_jobs",
            "Jobs by kind and status (queued, running, failed).",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(by_job.items()):
            family.add_metric([kind, status], n)
        yield family
        waited = (now - oldest_due).total_seconds() if oldest_due is not None else 0.0
        yield GaugeMetricFamily(
            "securex_jobs_due_age_seconds",
            "How long the oldest job due has waited for a worker (0: none waits).",
            value=max(0.0, waited),
        )
        yield _by_status(
            "securex_act_requests_pending",
            "Requests for acts not answered yet: received (being issued automatically), "
            "queued (waiting for an agent or the officier's signature).",
            REQUEST_STATUSES,
            requests,
        )
        yield _by_status(
            "securex_plis_pending",
            "Plis not offered to their recipients yet: scanning (antivirus), preparing "
            "(OpenPGP copies, notifications).",
            PLI_STATUSES,
            plis,
        )
        yield GaugeMetricFamily(
            "securex_workers_alive",
            "Workers whose heartbeat is within jobs.heartbeat_timeout.",
            value=int(alive or 0),
        )
        if newest is not None:
            yield GaugeMetricFamily(
                "securex_worker_heartbeat_age_seconds",
                "Seconds since the newest heartbeat of any worker (absent: none ever beat).",
                value=max(0.0, (now - newest).total_seconds()),
            )


DATABASE_UP = "1 when the database answered the scrape's queries, else 0."
JOB_STATUSES = ("queued", "running", "failed")
REQUEST_STATUSES = (RequestStatus.RECEIVED.value, RequestStatus.QUEUED.value)
PLI_STATUSES = (PliStatus.SCANNING.value, PliStatus.PREPARING.value)


def _by_status(name: str, doc: str, statuses: tuple[str, ...], rows: Any) -> GaugeMetricFamily:
    counts = dict.fromkeys(statuses, 0)
    counts.update({status: int(n) for status, n in rows})
    family = GaugeMetricFamily(name, doc, labels=["status"])
    for status, n in counts.items():
        family.add_metric([status], n)
    return family


def _registry(st: AppState) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(Queues(st))
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus' text format, for the bearer of `metrics.token`; 404 while the token
    is not set (the endpoint does not exist then)."""
    st = state()
    token = str(st.settings["metrics.token"])
    if not token:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return problem_from_error(
            AuthenticationFailed("Jeton de supervision absent ou incorrect (metrics.token).")
        )
    # The classic text format (0.0.4), which every Prometheus reads, whatever it asks.
    return Response(generate_latest(_registry(st)), content_type=CONTENT_TYPE_PLAIN_0_0_4)
