"""Observability: JSON log lines with the request's id or the job's, one access line per
request that names its route and never its path, /metrics (protected, Prometheus'
text format, added up across gunicorn's processes), /readyz and the workers'
heartbeats."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from securex import logs
from securex.app import create_app
from securex.config import load_settings
from securex.db import make_engine, make_sessionmaker, transaction, utcnow
from securex.errors import ConfigError
from securex.jobs.models import Worker
from securex.jobs.service import (
    HANDLERS,
    WORKERS_KEPT,
    WorkerThread,
    beat,
    enqueue,
    prune_workers,
    run_one,
)
from securex.web import observability
from tests.test_serve import SECUREX, free_port

TOKEN = "supervision-" + "s" * 32


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def lines():
    """securex's log lines as a web process writes them (JSON), parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("securex")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    read.raw = stream.getvalue
    yield read
    logger.removeHandler(handler)
    logger.setLevel(level)


def fetch(client: Any, path: str, **kwargs: Any) -> Any:
    """A request whose response is read and closed, as a WSGI server does: the access
    line and the metrics are written when the response closes."""
    response = client.get(path, **kwargs)
    response.get_data()
    response.close()
    return response


def access_lines(read: Any) -> list[dict[str, Any]]:
    return [line for line in read() if line["logger"] == "securex.access"]


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def scrape(client: Any) -> str:
    response = fetch(client, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return response.get_data(as_text=True)


def worker_beats(app: Any, name: str = "test-worker") -> None:
    st = app.extensions["securex"]
    beat(st.runtime(), name, st.clock())


@pytest.fixture
def ready(settings):
    """An instance whose blob folder exists, as `securex init` makes it."""
    (settings.instance / "blobs").mkdir(mode=0o700)
    return settings


# --- log lines -------------------------------------------------------------------------


def test_a_json_line_has_the_time_level_logger_pid_context_and_exception():
    try:
        raise ValueError("no personal data here")
    except ValueError:
        record = logging.LogRecord(
            "securex.test", logging.ERROR, __file__, 1, "failed %s", ("once",), sys.exc_info()
        )
    with logs.context(request_id="r" * 32), logs.context(job_id=7, job_kind="x.y"):
        line = json.loads(logs.JsonFormatter().format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "ERROR" and line["logger"] == "securex.test"
    assert line["message"] == "failed once" and line["pid"] == os.getpid()
    assert line["request_id"] == "r" * 32 and line["job_id"] == 7 and line["job_kind"] == "x.y"
    assert line["exc_type"] == "ValueError"
    assert (
        line["traceback"].startswith("Traceback") and "no personal data here" in line["traceback"]
    )
    # Outside the blocks, nothing is left of the context.
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record))


def test_the_format_is_a_setting_and_lines_go_to_the_instance(tmp_path):
    for fmt, environ in (("json", {}), ("text", {"SECUREX_LOGGING_FORMAT": "text"})):
        instance = tmp_path / fmt
        settings = load_settings(environ=environ, overrides={"instance": str(instance)})
        assert settings["logging.format"] == fmt
        with logs.installed(settings), logs.context(request_id="abcd1234"):
            logging.getLogger("securex.test").info("hello %s", "there")
        written = (instance / "logs" / "securex.log").read_text().splitlines()
        assert len(written) == 1
        if fmt == "json":
            line = json.loads(written[0])
            assert line["message"] == "hello there" and line["request_id"] == "abcd1234"
        else:
            assert written[0].endswith("INFO securex.test: hello there request_id=abcd1234")
    assert not any(
        getattr(h, "securex_instance", False) for h in logging.getLogger("securex").handlers
    )
    bad = load_settings(
        environ={"SECUREX_LOGGING_FORMAT": "xml"}, overrides={"instance": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match=r"logging\.format"):
        logs.install(bad)


def test_a_request_id_given_is_echoed_and_logged_a_bad_one_replaced(client, lines):
    given = "0123456789abcdef0123456789abcdef"  # nginx's $request_id
    response = fetch(client, "/login", headers={"X-Request-ID": given})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == given
    (line,) = access_lines(lines)
    assert line["request_id"] == given
    for bad in ("short", "with spaces in it", "a" * 65, "semi;colon;12345"):
        response = fetch(client, "/login", headers={"X-Request-ID": bad})
        replaced = response.headers["X-Request-ID"]
        assert replaced != bad and re.fullmatch(r"[0-9a-f]{32}", replaced)
        assert access_lines(lines)[-1]["request_id"] == replaced
    # Without one, a new one each time.
    first = fetch(client, "/login").headers["X-Request-ID"]
    assert first != fetch(client, "/login").headers["X-Request-ID"]


def test_the_access_line_names_the_route_never_the_path(client, lines):
    token = "Tk" + "x" * 41  # the shape of a recipient's link token
    response = fetch(
        client, f"/plis/d/{token}?email=jeanne.martin@example.fr", headers={"User-Agent": "UA/1"}
    )
    assert response.status_code == 404
    (line,) = access_lines(lines)
    assert line["route"] == "/plis/d/<token>" and line["method"] == "GET"
    assert line["status"] == 404 and line["duration_ms"] >= 0
    assert line["message"] == "GET /plis/d/<token> 404"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["bytes"] == response.content_length
    everything = lines.raw()
    for secret in (token, "jeanne", "example.fr", "127.0.0.1", "UA/1"):
        assert secret not in everything
    # No route: "<unmatched>"; health checks, scrapes and static files: no line.
    fetch(client, "/nulle/part")
    assert access_lines(lines)[-1]["route"] == "<unmatched>"
    count = len(access_lines(lines))
    for quiet in ("/healthz", "/readyz", "/metrics", "/static/app.css"):
        fetch(client, quiet)
    assert len(access_lines(lines)) == count


def test_an_unhandled_error_is_logged_with_its_request_id_and_counted(app, lines, settings):
    @app.get("/boom/<secret>")
    def boom(secret: str) -> str:
        raise RuntimeError("kaboom")

    client = app.test_client()
    settings.values["metrics"]["token"] = TOKEN
    before = sample(scrape(client), "securex_exceptions_total") or 0.0
    response = fetch(client, "/boom/s3cr3t-value")
    assert response.status_code == 500
    error = next(line for line in lines() if line["message"].startswith("unhandled error"))
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert error["exc_type"] == "RuntimeError" and "kaboom" in error["traceback"]
    assert "s3cr3t-value" not in lines.raw()
    assert sample(scrape(client), "securex_exceptions_total") == before + 1


def test_lines_logged_by_a_job_carry_its_id_and_kind(app, lines, monkeypatch):
    def failing(rt: Any, job_id: int) -> None:
        raise RuntimeError("the relay is down")

    monkeypatch.setitem(HANDLERS, "test.failing", failing)
    rt = app.extensions["securex"].runtime()
    with transaction(rt.sessions) as db:
        job_id = enqueue(db, "test.failing", {}, tenant_id=None, actor="test", now=rt.clock())
    assert run_one(rt, "test-worker")
    line = next(line for line in lines() if line["message"].startswith(f"job {job_id} "))
    assert line["job_id"] == job_id and line["job_kind"] == "test.failing"
    assert line["exc_type"] == "RuntimeError"
    logging.getLogger("securex.test").info("after the job")
    assert "job_id" not in lines()[-1]


def test_the_worker_command_logs_the_same_way(settings, monkeypatch, factory):
    def failing(rt: Any, job_id: int) -> None:
        raise RuntimeError("handler failed")

    monkeypatch.setitem(HANDLERS, "test.failing", failing)
    with transaction(factory) as db:  # the command runs on the real clock
        job_id = enqueue(db, "test.failing", {}, tenant_id=None, actor="test", now=utcnow())
    monkeypatch.setenv("SECUREX_INSTANCE", str(settings.instance))
    monkeypatch.setenv("SECUREX_DATABASE_URL", settings.database_url)
    from securex.cli import main

    result = CliRunner().invoke(main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    written = (settings.instance / "logs" / "securex.log").read_text().splitlines()
    failed = [json.loads(line) for line in written]
    assert any(
        line.get("job_id") == job_id and line["exc_type"] == "RuntimeError" for line in failed
    )


# --- /metrics ----------------------------------------------------------------------------


def test_metrics_is_off_without_a_token_and_refuses_a_wrong_one(client, settings):
    assert fetch(client, "/metrics").status_code == 404
    settings.values["metrics"]["token"] = TOKEN
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = fetch(client, "/metrics", headers=headers)
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "securex_http_requests" not in response.get_data(as_text=True)


def test_metrics_count_requests_and_read_the_queues(app, client, settings, clock):
    settings.values["metrics"]["token"] = TOKEN
    labels = {"method": "GET", "route": "/login", "status": "200"}
    before = sample(scrape(client), "securex_http_requests_total", **labels) or 0.0
    for _ in range(3):
        fetch(client, "/login")
    text = scrape(client)
    assert sample(text, "securex_http_requests_total", **labels) == before + 3
    assert sample(text, "securex_http_request_duration_seconds_count", method="GET", route="/login")
    assert sample(text, "securex_database_up") == 1
    assert sample(text, "securex_jobs", kind="test.kind", status="queued") is None
    assert sample(text, "securex_workers_alive") == 0
    assert sample(text, "securex_worker_heartbeat_age_seconds") is None

    rt = app.extensions["securex"].runtime()
    with transaction(rt.sessions) as db:
        for _ in range(2):
            enqueue(db, "test.kind", {}, tenant_id=None, actor="test", now=clock())
    clock.advance(seconds=45)
    worker_beats(app)
    clock.advance(seconds=5)
    text = scrape(client)
    assert sample(text, "securex_jobs", kind="test.kind", status="queued") == 2
    assert sample(text, "securex_jobs", kind="test.kind", status="failed") == 0
    assert sample(text, "securex_jobs_due_age_seconds") == 50
    assert sample(text, "securex_act_requests_pending", status="queued") == 0
    assert sample(text, "securex_plis_pending", status="scanning") == 0
    assert sample(text, "securex_workers_alive") == 1
    assert sample(text, "securex_worker_heartbeat_age_seconds") == 5
    # Unmatched routes share one label, whatever the path or the method.
    fetch(client, "/x/1")
    client.open("/x/2", method="BREW").close()
    text = scrape(client)
    assert sample(text, "securex_http_requests_total", route="<unmatched>", method="other")


def test_signatures_are_counted_by_level(tmp_path):
    from datetime import UTC, datetime

    from securex.signing import pades
    from securex.signing.pki import OfficerIdentity, init_pki
    from securex.signing.signers import LoadedKeySigner
    from tests.pdfs import one_page_pdf

    now = datetime.now(UTC)
    pki = init_pki(tmp_path / "pki", now=now - timedelta(days=1), password=b"pw")
    who = OfficerIdentity("o@mairie.fr", "Odile Officier", "Dax", "40088")
    pki.issue_officer(who, key_type="ecdsa-p256", now=now - timedelta(hours=1))
    cert, key = pki.officer(who.email)
    setup = pades.SigningSetup(
        signer=LoadedKeySigner(cert, key, pki.chain_for(cert)),
        certificate=cert,
        level=pades.Level.B_B,
        timestamper=pki.timestamper(),
        validation_context=lambda: None,  # not asked for at B-B
    )
    labels = {"level": "B-B"}
    before = REGISTRY.get_sample_value("securex_signatures_total", labels) or 0.0
    pades.sign(one_page_pdf(), setup, pades.Appearance(officer="O", commune="Dax"), now)
    assert REGISTRY.get_sample_value("securex_signatures_total", labels) == before + 1


# --- /readyz -----------------------------------------------------------------------------


def readyz(client: Any) -> tuple[int, dict[str, Any]]:
    response = fetch(client, "/readyz")
    body = response.get_json()
    text = response.get_data(as_text=True)
    assert "/" not in text.replace("\\/", ""), "no path in the body"
    return response.status_code, body


def test_readyz_needs_a_worker_heartbeat(app, client, ready, clock):
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["worker"]
    assert body["checks"] == {"database": "ok", "blobs": "ok", "keys": "ok", "worker": "failed"}
    worker_beats(app)
    assert readyz(client) == (
        200,
        {"status": "ok", "checks": dict.fromkeys(("database", "blobs", "keys", "worker"), "ok")},
    )
    clock.advance(seconds=120)
    assert readyz(client)[0] == 200
    clock.advance(seconds=1)  # jobs.heartbeat_timeout
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["worker"]


def test_with_separate_workers_a_missing_heartbeat_degrades_but_keeps_the_node(
    app, client, ready, clock
):
    """jobs.in_process = false: the workers are shared by every node, so their absence
    (all stopped for an upgrade) must not make a load balancer drop every node."""
    app.extensions["securex"].settings.values["jobs"]["in_process"] = False
    status, body = readyz(client)
    assert status == 200 and body["status"] == "degraded" and body["degraded"] == ["worker"]
    assert body["checks"]["worker"] == "failed"
    worker_beats(app)
    assert readyz(client)[1]["status"] == "ok"


def test_readyz_names_blobs_when_the_folder_cannot_take_a_file(app, client, ready):
    worker_beats(app)
    blobs = ready.instance / "blobs"
    assert readyz(client)[0] == 200
    assert list(blobs.iterdir()) == []  # the probe leaves nothing
    blobs.rmdir()  # a volume not mounted: the folder is not made again
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["blobs"]
    assert not blobs.exists()
    blobs.write_bytes(b"")  # root ignores permissions: a file where the folder should be
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["blobs"]


def test_readyz_names_keys_when_the_master_key_is_another(ready, make, clock):
    """A node started with another key file (or not restarted after a rotation of the
    master key elsewhere) holds a key that opens none of the commune keys."""
    make.tenant()
    (ready.instance / "keys" / "master.key").write_bytes(os.urandom(32))
    app = create_app({"TESTING": True}, settings=ready, clock=clock)
    try:
        worker_beats(app)
        status, body = readyz(app.test_client())
        assert status == 503 and body["failing"] == ["keys"]
    finally:
        app.extensions["securex"].engine.dispose()


def test_readyz_names_keys_when_the_token_session_is_lost(app, client, ready, make, softhsm_token):
    """The master key on an HSM (SoftHSM2): its session closed, as a restarted HSM or a
    cut network leaves it."""
    from securex.vault import FilesystemBlobStore, Keyring, Vault
    from securex.vault.master import MasterKeySource, Pkcs11Token
    from tests import softhsm

    token = Pkcs11Token(softhsm.MODULE, softhsm_token, softhsm.PIN)
    source = MasterKeySource(
        "pkcs11",
        Path("unused"),
        Path("unused"),
        token=token,
        key_label=f"ready-{uuid.uuid4().hex[:8]}",
    )
    source.create()
    vault = Vault(
        Keyring(source.load()),
        FilesystemBlobStore(ready.instance / "blobs"),
        ledger=ready.instance / "l",
    )
    make.vault = vault
    make.tenant()
    app.extensions["securex"].vault = vault
    worker_beats(app)
    assert readyz(client)[0] == 200
    token.close()
    try:
        status, body = readyz(client)
        assert status == 503 and body["failing"] == ["keys"]
    finally:
        # A check may have opened (and logged in) a new session: PKCS#11 logins are per
        # process, and the signing tests log in to the same token after this one.
        token.close()


def test_a_check_that_hangs_is_cut_off(app, client, ready, monkeypatch):
    worker_beats(app)
    release = threading.Event()
    monkeypatch.setitem(observability.CHECKS, "database", lambda st: release.wait(10))
    started = time.monotonic()
    try:
        status, body = readyz(client)
    finally:
        release.set()
    assert time.monotonic() - started < observability.CHECK_SECONDS + 1.5
    assert status == 503 and body["checks"]["database"] == "timeout"
    assert body["failing"] == ["database"]


# --- heartbeats ---------------------------------------------------------------------------


def count_workers(factory: Any) -> int:
    with factory() as db:
        return int(db.scalar(select(func.count()).select_from(Worker)) or 0)


def test_a_worker_thread_beats_while_it_runs_and_leaves_when_it_stops(app, factory):
    thread = WorkerThread(app.extensions["securex"].runtime(), poll_seconds=0.05)
    thread.start()
    deadline = time.monotonic() + 10
    while count_workers(factory) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    with factory() as db:
        (row,) = db.scalars(select(Worker))
        assert row.pid == os.getpid() and row.name.endswith(f":{thread.ident}")
    thread.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and count_workers(factory) == 0


def test_rows_of_dead_workers_are_pruned(app, factory, clock):
    worker_beats(app, "dead")
    clock.advance(seconds=WORKERS_KEPT.total_seconds() + 1)
    worker_beats(app, "alive")
    prune_workers(app.extensions["securex"].runtime())
    with factory() as db:
        assert list(db.scalars(select(Worker.name))) == ["alive"]


# --- several processes ---------------------------------------------------------------------


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_metrics_add_up_across_the_processes_of_securex_serve(tmp_path, database_url):
    instance = tmp_path / "inst"
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(instance),
        "SECUREX_DATABASE_URL": database_url,
        "SECUREX_METRICS_TOKEN": TOKEN,
    }
    subprocess.run([SECUREX, "init"], env=env, check=True, capture_output=True)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [SECUREX, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("securex serve not ready: " + log_path.read_text(errors="replace"))
            time.sleep(0.2)
        status, body = http(base + "/readyz")
        assert json.loads(body)["checks"]["worker"] == "ok"

        # Requests until both processes have answered some (each connection goes to
        # whichever process accepts it first).
        made, pids = 0, set()
        while len(pids) < 2 and made < 200:
            for _ in range(10):
                assert http(base + "/login")[0] == 200
                made += 1
            time.sleep(0.2)  # the access line is written as the response closes
            pids = {
                line["pid"]
                for line in json_lines(log_path)
                if line["logger"] == "securex.access" and line["route"] == "/login"
            }
        assert len(pids) == 2, f"one process answered all {made} requests"
        files = {p.name for p in (instance / "run" / "metrics" / str(port)).iterdir()}
        assert {f"counter_{pid}.db" for pid in pids} <= files

        status, body = http(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        text = body.decode()
        labels = {"method": "GET", "route": "/login", "status": "200"}
        assert sample(text, "securex_http_requests_total", **labels) == made
        assert sample(text, "securex_workers_alive") == 2  # a job thread per process
        assert http(base + "/metrics")[0] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A clean stop: each process's job thread removed its heartbeat.
    engine = make_engine(database_url)
    try:
        assert count_workers(make_sessionmaker(engine)) == 0
    finally:
        engine.dispose()
    access = [line for line in json_lines(log_path) if line["logger"] == "securex.access"]
    assert access and all(re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) for line in access)
