"""Webhooks to requesters, against a real HTTP receiver: every delivery verifies with
the secret the client was given, exactly as the documented scheme (Standard Webhooks)
says and as a client would check it; retries keep the message id and back off; the
last attempt fails the job; rotation, deletion and another client's events; URLs
refused; the published test vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from securex.accounts import service as accounts
from securex.accounts.service import Actor
from securex.audit.events import EventType
from securex.audit.models import AuditEvent
from securex.comedec import webhooks
from securex.comedec.models import WebhookEndpoint
from securex.db import transaction
from securex.jobs.models import Job
from securex.jobs.service import run_pending
from securex.registry import service as registry
from tests.test_comedec import BIRTH, MDM, auto_issue, bearer, submit

TOLERANCE = 300  # seconds: what the docs advise receivers to accept

# Standard Webhooks' published vector (the reference libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class BadSignature(Exception):
    pass


def verify(secret: str, headers: dict[str, str], body: bytes, now: datetime) -> dict[str, Any]:
    """What a receiver does, from the documented scheme alone (no securex code)."""
    try:
        msg_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        signatures = headers["webhook-signature"]
    except KeyError:
        raise BadSignature("missing header") from None
    if abs(now.timestamp() - int(timestamp)) > TOLERANCE:
        raise BadSignature("timestamp out of tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            parsed: dict[str, Any] = json.loads(body)
            return parsed
    raise BadSignature("no valid v1 signature")


class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is sent and answers the
    statuses it is told (then 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, str]] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append((headers, body, self.path))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", receiver.url + "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/securex"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self, secret: str, now: datetime) -> list[dict[str, Any]]:
        return [verify(secret, headers, body, now) for headers, body, _ in self.received]


def _receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.thread.join()
        receiver.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _receiver()


@pytest.fixture
def second_receiver() -> Iterator[Receiver]:
    yield from _receiver()


@pytest.fixture
def world(demo_pki, runtime, app, make, clock, factory, vault, settings):
    """Mont-de-Marsan with one imported birth act and two notaries; the receivers of
    these tests listen on loopback, which production refuses."""
    settings.values["comedec"]["webhook_allow_private"] = True
    make.tenant()
    with transaction(factory) as db:
        registry.import_act(
            db,
            Actor("test"),
            insee=MDM,
            kind="naissance",
            year=1990,
            number=77,
            drawn_at=clock() - timedelta(days=365 * 36),
            officer_name="R. Lacoste",
            content=BIRTH,
            now=clock(),
            vault=vault,
        )
    notary_id, notary = make.client("notaire", (MDM,))
    _, other = make.client("notaire", (MDM,))
    return {"notary": notary, "notary_id": notary_id, "other": other}


def register(client, token: str, url: str) -> Any:
    return client.put("/api/v1/webhook", json={"url": url}, headers=bearer(token))


def webhook_jobs(factory) -> list[Job]:
    with factory() as db:
        jobs = list(db.scalars(select(Job).where(Job.kind == "comedec.webhook").order_by(Job.id)))
        db.expunge_all()
        return jobs


def audit(factory, action: EventType) -> list[AuditEvent]:
    with factory() as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.expunge_all()
        return rows


# --- the scheme ----------------------------------------------------------------------


def test_signatures_reproduce_the_standard_webhooks_test_vector():
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    assert webhooks.sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    # The test's own receiver accepts the vector, so it checks what the spec says.
    at = datetime.fromtimestamp(VECTOR_TIMESTAMP).astimezone()
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": "v1,bm9wZQ== " + VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, at) == {"test": 2432232314}
    for changed in (
        {**headers, "webhook-id": "msg_other"},
        {**headers, "webhook-timestamp": str(VECTOR_TIMESTAMP + 1)},
        {**headers, "webhook-signature": "v2," + VECTOR_SIGNATURE[3:]},
    ):
        with pytest.raises(BadSignature):
            verify(VECTOR_SECRET, changed, VECTOR_BODY, at)
    with pytest.raises(BadSignature):
        verify(VECTOR_SECRET, headers, VECTOR_BODY.replace(b"2", b"3"), at)
    with pytest.raises(BadSignature):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, at + timedelta(seconds=TOLERANCE + 1))


# --- deliveries ------------------------------------------------------------------------


def test_a_status_change_reaches_the_endpoint_signed_with_the_given_secret(
    world, client, receiver, runtime, factory, clock
):
    registered = register(client, world["notary"], receiver.url)
    assert registered.status_code == 200, registered.json
    secret = registered.json["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert registered.json["url"] == receiver.url
    assert registered.headers["Cache-Control"] == "no-store"
    shown = client.get("/api/v1/webhook", headers=bearer(world["notary"])).json
    assert shown == {
        "url": receiver.url,
        "created_at": registered.json["created_at"],
        "enabled": True,
    }

    request_id = submit(client, world["notary"]).json["id"]
    assert receiver.received == []  # sent by the worker, not during the API call
    assert run_pending(runtime) == 1
    ((headers, body, path),) = receiver.received
    assert path == "/hooks/securex" and headers["content-type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_")
    assert int(headers["webhook-timestamp"]) == int(clock().timestamp())
    event = verify(secret, headers, body, clock())
    assert event["type"] == "act_request.status_changed"
    assert event["data"]["id"] == request_id and event["data"]["status"] == "queued"
    # Nothing personal travels: the request's id and status only.
    assert b"Dupont" not in body and b"DOSSIER" not in body
    (job,) = webhook_jobs(factory)
    assert job.status == "done" and job.attempts == 1
    (delivered,) = audit(factory, EventType.WEBHOOK_DELIVERED)
    assert json.loads(delivered.details) == {"status": 200} and delivered.tenant == MDM
    # The secret is not stored: it is derived again from the vault.
    with transaction(factory) as db:
        endpoint = db.scalar(select(WebhookEndpoint))
        assert secret[6:] not in repr(vars(endpoint))
        assert webhooks.secret_for(db, endpoint, runtime.vault.keyring, clock()) == secret


def test_each_status_of_an_automatic_issue_is_notified_in_order(
    world, client, receiver, runtime, factory, clock
):
    secret = register(client, world["notary"], receiver.url).json["secret"]
    auto_issue(factory)
    request_id = submit(client, world["notary"]).json["id"]
    run_pending(runtime)  # the issue job, then the two webhooks
    events = receiver.events(secret, clock())
    assert [(e["data"]["id"], e["data"]["status"]) for e in events] == [
        (request_id, "received"),
        (request_id, "issued"),
    ]
    ids = [headers["webhook-id"] for headers, _, _ in receiver.received]
    assert len(set(ids)) == 2  # two events, two message ids


def test_a_failing_receiver_is_retried_later_with_the_same_message_id(
    world, client, receiver, runtime, factory, clock
):
    secret = register(client, world["notary"], receiver.url).json["secret"]
    receiver.answers = [500]
    submit(client, world["notary"])
    run_pending(runtime)
    assert len(receiver.received) == 1
    (job,) = webhook_jobs(factory)
    assert job.status == "queued" and job.attempts == 1 and job.error == "DeliveryFailed: HTTP 500"
    assert job.run_after == clock() + timedelta(seconds=60)
    assert run_pending(runtime) == 0  # not before its time
    clock.advance(seconds=61)
    assert run_pending(runtime) == 1
    (first, body1, _), (second, body2, _) = receiver.received
    assert first["webhook-id"] == second["webhook-id"] and body1 == body2
    assert int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 61
    assert first["webhook-signature"] != second["webhook-signature"]
    verify(secret, second, body2, clock())
    (job,) = webhook_jobs(factory)
    assert job.status == "done" and job.attempts == 2
    (failed,) = audit(factory, EventType.WEBHOOK_FAILED)
    assert json.loads(failed.details) == {"status": 500}
    assert len(audit(factory, EventType.WEBHOOK_DELIVERED)) == 1


def test_after_the_last_attempt_the_job_is_failed_and_audited(
    world, client, receiver, runtime, factory, clock
):
    register(client, world["notary"], receiver.url)
    receiver.answers = [503] * 20
    submit(client, world["notary"])
    waits = []
    for _ in range(20):
        run_pending(runtime)
        (job,) = webhook_jobs(factory)
        if job.status != "queued":
            break
        waits.append((job.run_after - clock()).total_seconds())
        clock.advance(seconds=waits[-1])
    assert job.status == "failed" and job.attempts == 8 and job.finished_at == clock()
    # Doubling from a minute, at most an hour between two attempts (about two hours).
    assert waits == [60, 120, 240, 480, 960, 1920, 3600]
    assert len(receiver.received) == 8
    assert len({headers["webhook-id"] for headers, _, _ in receiver.received}) == 1
    failures = audit(factory, EventType.WEBHOOK_FAILED)
    assert len(failures) == 8 and all(json.loads(f.details) == {"status": 503} for f in failures)
    clock.advance(hours=2)
    assert run_pending(runtime) == 0 and len(receiver.received) == 8


def test_a_redirect_is_not_followed(world, client, receiver, runtime, factory):
    register(client, world["notary"], receiver.url)
    receiver.answers = [302]
    submit(client, world["notary"])
    run_pending(runtime)
    assert [path for _, _, path in receiver.received] == ["/hooks/securex"]
    (job,) = webhook_jobs(factory)
    assert job.status == "queued"
    (failed,) = audit(factory, EventType.WEBHOOK_FAILED)
    assert json.loads(failed.details) == {"status": 302}


def test_an_unreachable_receiver_is_audited_by_error_class(world, client, runtime, factory):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    register(client, world["notary"], f"http://127.0.0.1:{port}/hook")
    submit(client, world["notary"])
    run_pending(runtime)
    (job,) = webhook_jobs(factory)
    assert job.status == "queued" and job.error == "DeliveryFailed: ConnectionRefusedError"
    (failed,) = audit(factory, EventType.WEBHOOK_FAILED)
    assert json.loads(failed.details) == {"error": "ConnectionRefusedError"}


# --- the endpoint's life ------------------------------------------------------------------


def test_registering_again_rotates_the_secret(world, client, receiver, runtime, clock):
    old = register(client, world["notary"], receiver.url).json["secret"]
    submit(client, world["notary"])
    run_pending(runtime)
    clock.advance(minutes=1)
    new = register(client, world["notary"], receiver.url).json
    assert new["secret"] != old and new["created_at"] == clock().isoformat().replace("+00:00", "Z")
    submit(client, world["notary"])
    run_pending(runtime)
    (h1, b1, _), (h2, b2, _) = receiver.received
    verify(old, h1, b1, clock())
    verify(new["secret"], h2, b2, clock())
    with pytest.raises(BadSignature):
        verify(old, h2, b2, clock())


def test_another_clients_events_never_reach_this_endpoint(
    world, client, receiver, second_receiver, runtime, factory, clock
):
    secret = register(client, world["notary"], receiver.url).json["secret"]
    assert client.get("/api/v1/webhook", headers=bearer(world["other"])).status_code == 404
    submit(client, world["other"])  # no endpoint: nothing queued
    assert webhook_jobs(factory) == []
    other_secret = register(client, world["other"], second_receiver.url).json["secret"]
    theirs = submit(client, world["other"]).json["id"]
    mine = submit(client, world["notary"]).json["id"]
    run_pending(runtime)
    assert [e["data"]["id"] for e in receiver.events(secret, clock())] == [mine]
    assert [e["data"]["id"] for e in second_receiver.events(other_secret, clock())] == [theirs]
    with pytest.raises(BadSignature):
        second_receiver.events(secret, clock())


def test_delete_stops_deliveries_even_those_waiting(
    world, client, receiver, runtime, factory, clock
):
    register(client, world["notary"], receiver.url)
    submit(client, world["notary"])  # queued before the deletion
    deleted = client.delete("/api/v1/webhook", headers=bearer(world["notary"]))
    assert deleted.status_code == 204 and deleted.data == b""
    assert client.delete("/api/v1/webhook", headers=bearer(world["notary"])).status_code == 204
    assert client.get("/api/v1/webhook", headers=bearer(world["notary"])).json["enabled"] is False
    submit(client, world["notary"])  # after: not even queued
    run_pending(runtime)
    assert receiver.received == []
    assert [j.status for j in webhook_jobs(factory)] == ["done"]
    assert audit(factory, EventType.WEBHOOK_DELIVERED) == []
    # Registering again enables it, with a new secret.
    secret = register(client, world["notary"], receiver.url).json["secret"]
    submit(client, world["notary"])
    run_pending(runtime)
    assert len(receiver.events(secret, clock())) == 1


def test_a_revoked_clients_events_are_dropped(world, client, receiver, runtime, factory, clock):
    register(client, world["notary"], receiver.url)
    submit(client, world["notary"])
    with transaction(factory) as db:
        accounts.revoke_client(db, Actor("test"), world["notary_id"], now=clock())
    run_pending(runtime)
    assert receiver.received == []
    assert [j.status for j in webhook_jobs(factory)] == ["done"]


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # plain HTTP off this machine
        "http://127.0.0.2/hook",
        "http://10.0.0.1/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https://",
        "example.com/hook",
        "https://user:pass@example.com/hook",
        "https://exämple.fr/hook",
        "https://example.com/a hook",
        "https://example.com:99999/hook",
        "https://example.com/" + "a" * 481,  # 501 characters
    ],
)
def test_bad_urls_are_refused_in_french(world, client, url):
    response = register(client, world["notary"], url)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["detail"].startswith("L'URL du webhook")
    assert [e["field"] for e in response.json["errors"]] == ["url"]
    assert client.get("/api/v1/webhook", headers=bearer(world["notary"])).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.notaires.example.fr/securex?x=1",
        "HTTPS://EXAMPLE.COM/HOOK",
        "http://localhost:8080/hook",
        "http://[::1]:8080/hook",
        "https://example.com/" + "a" * 480,  # 500 characters
    ],
)
def test_good_urls_are_accepted(world, client, url):
    response = register(client, world["notary"], url)
    assert response.status_code == 200, response.json
    assert response.json["url"] == url


def test_the_webhook_needs_a_client_token_and_a_strict_body(world, client):
    assert client.get("/api/v1/webhook").status_code == 401
    assert client.put("/api/v1/webhook", json={"url": "https://example.com/"}).status_code == 401
    assert client.delete("/api/v1/webhook").status_code == 401
    extra = client.put(
        "/api/v1/webhook",
        json={"url": "https://example.com/", "secret": "mine"},
        headers=bearer(world["notary"]),
    )
    assert extra.status_code == 422
    doc = client.get("/api/v1/openapi.json").json
    assert set(doc["paths"]["/api/v1/webhook"]) >= {"get", "put", "delete"}


def test_production_refuses_to_call_loopback_or_private_addresses(
    world, client, receiver, runtime, factory, settings
):
    settings.values["comedec"]["webhook_allow_private"] = False
    put = client.put("/api/v1/webhook", json={"url": receiver.url}, headers=bearer(world["notary"]))
    assert put.status_code == 200
    submit(client, world["notary"])
    run_pending(runtime)
    assert receiver.received == []
    with factory() as db:
        failed = list(
            db.scalars(
                select(AuditEvent.details).where(AuditEvent.action == "comedec:webhook:failed")
            )
        )
    assert failed and "NonPublicAddress" in failed[0]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("::127.0.0.1", False),
        ("2002:7f00:1::1", False),
        ("fec0::1", False),
        ("fd00::1", False),
    ],
)
def test_only_public_addresses_count_as_public(address, public):
    import ipaddress

    assert webhooks._global(ipaddress.ip_address(address)) is public
