"""Webhooks to requesters, in the Standard Webhooks scheme (https://www.standardwebhooks.com/,
specified for receivers in docs/api.md#webhooks): the one endpoint an API client
registers, its signing secret, and the signed POST of an event.

No secret is stored. An endpoint's key is HMAC-SHA256(the platform secret
"webhooks", "webhook:<endpoint id>:<nonce>"): a database without the vault's keys
gives no key, and registering again draws a new nonce, which rotates it. The client
is shown the key once, as `whsec_` + base64(key).

A delivery is one attempt of a job (`comedec.webhook`, see `comedec/jobs.py`): it
runs outside any database transaction, so a slow receiver holds no lock, and raises
`DeliveryFailed` so that the job is retried; the message id is derived from the job,
so every attempt of one event carries the same `webhook-id`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from securex import __version__
from securex.accounts.models import ApiClient
from securex.audit.events import EventType
from securex.audit.log import record
from securex.comedec.models import WebhookEndpoint
from securex.db import transaction
from securex.errors import NotFound, ValidationFailed
from securex.vault.keyring import Keyring

PURPOSE = "webhooks"  # the platform secret keys derive from
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix Standard Webhooks gives secrets)
MAX_URL = 500
TIMEOUT = 10.0  # seconds, per connection and per read
DEADLINE = 30.0  # seconds for a whole delivery: a receiver trickling bytes is cut off
# Plain http only to a receiver on this machine (tests, a local relay).
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class DeliveryFailed(Exception):
    """An attempt that got no 2xx answer: `status` is the HTTP status received (a
    redirect counts, it is not followed), or `error` the class of the failure
    (`ConnectionRefusedError`, `TimeoutError`, `SSLCertVerificationError`…)."""

    def __init__(self, *, status: int | None = None, error: str | None = None) -> None:
        super().__init__(f"HTTP {status}" if status is not None else error)
        self.status = status
        self.error = error

    @property
    def details(self) -> dict[str, Any]:
        return {"status": self.status} if self.status is not None else {"error": self.error}


# --- the endpoint --------------------------------------------------------------------


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": "url", "message": message}])


def check_url(url: str) -> str:
    """The URL a receiver may have: HTTPS, or plain HTTP to this machine's loopback;
    printable ASCII (internationalised names in punycode), no credentials, at most
    `MAX_URL` characters."""
    if len(url) > MAX_URL:
        raise _refuse(f"L'URL du webhook fait au plus {MAX_URL} caractères.")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise _refuse(
            "L'URL du webhook ne peut contenir que des caractères ASCII visibles : encodez "
            "les autres (punycode pour le nom de domaine, %XX pour le chemin)."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port raises ValueError when it is invalid)
    except ValueError:
        raise _refuse("L'URL du webhook est mal formée.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise _refuse("L'URL du webhook doit être une adresse https://… complète.")
    if parts.scheme == "http" and host not in LOOPBACK:
        raise _refuse(
            "L'URL du webhook doit être en HTTPS : http:// n'est accepté que vers cette "
            "machine (127.0.0.1, localhost ou [::1])."
        )
    if parts.username is not None or parts.password is not None:
        raise _refuse(
            "L'URL du webhook ne doit pas contenir d'identifiants (utilisateur@) : les "
            "messages sont signés, vérifiez leur signature."
        )
    return url


def register(
    db: Session, client: ApiClient, url: str, *, now: datetime, keyring: Keyring
) -> tuple[WebhookEndpoint, str]:
    """Set the client's endpoint (replacing its URL, enabling it again) with a new
    secret; returns the endpoint and the secret (`whsec_…`), shown this once."""
    url = check_url(url)
    endpoint = db.scalar(select(WebhookEndpoint).where(WebhookEndpoint.client_id == client.id))
    if endpoint is None:
        endpoint = WebhookEndpoint(client_id=client.id)
        db.add(endpoint)
    endpoint.url = url
    endpoint.nonce = secrets.token_hex(16)
    endpoint.created_at = now
    endpoint.disabled_at = None
    db.flush()
    record(
        db,
        EventType.WEBHOOK_REGISTERED,
        actor=f"client:{client.id}",
        subject=f"webhook:{endpoint.id}",
        details={"host": urlsplit(url).hostname or ""},
        now=now,
    )
    return endpoint, secret_for(db, endpoint, keyring, now)


def get(db: Session, client: ApiClient) -> WebhookEndpoint:
    endpoint = db.scalar(select(WebhookEndpoint).where(WebhookEndpoint.client_id == client.id))
    if endpoint is None:
        raise NotFound("Aucun webhook enregistré : enregistrez-en un (PUT /api/v1/webhook).")
    return endpoint


def disable(db: Session, client: ApiClient, *, now: datetime) -> None:
    """Stop the deliveries, including the events already waiting (idempotent)."""
    endpoint = db.scalar(select(WebhookEndpoint).where(WebhookEndpoint.client_id == client.id))
    if endpoint is not None and endpoint.disabled_at is None:
        endpoint.disabled_at = now
        record(
            db,
            EventType.WEBHOOK_DISABLED,
            actor=f"client:{client.id}",
            subject=f"webhook:{endpoint.id}",
            now=now,
        )


# --- keys and signatures ---------------------------------------------------------------


def _platform(db: Session, keyring: Keyring, now: datetime) -> bytes:
    return keyring.platform_secret(db, PURPOSE, now=now, actor="system")


def key_for(db: Session, endpoint: WebhookEndpoint, keyring: Keyring, now: datetime) -> bytes:
    label = f"webhook:{endpoint.id}:{endpoint.nonce}".encode()
    return hmac.digest(_platform(db, keyring, now), label, hashlib.sha256)


def secret_for(db: Session, endpoint: WebhookEndpoint, keyring: Keyring, now: datetime) -> str:
    """The endpoint's secret as the client holds it: `whsec_` + base64(key)."""
    return SECRET_PREFIX + base64.b64encode(key_for(db, endpoint, keyring, now)).decode()


def message_id(db: Session, job_id: int, keyring: Keyring, now: datetime) -> str:
    """The `webhook-id` of the job's event: the same on every attempt, so receivers
    can drop duplicates, and opaque (a job number would tell how busy the platform
    is)."""
    tag = hmac.digest(_platform(db, keyring, now), f"message:{job_id}".encode(), hashlib.sha256)
    return "msg_" + base64.urlsafe_b64encode(tag[:18]).decode()


def sign(secret_key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` + base64(HMAC-SHA256(key,
    "<id>.<timestamp>.<body>"))."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(secret_key, content, hashlib.sha256)).decode()


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


# --- delivery ----------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any non-2xx one: following it would send the
    signed event where the client did not register."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Watch:
    """The sockets of one delivery, shut down when its deadline passes: a blocked read
    then returns at once, however slowly the receiver sends (the per-read timeout
    alone lets a byte every few seconds hold a delivery for ever)."""

    def __init__(self) -> None:
        self.expired = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired.is_set():
                _shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired.set()
            for sock in self.sockets:
                _shut(sock)

    def connection(self, base: type[http.client.HTTPConnection]) -> Any:
        watch = self

        class Watched(base):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                watch.add(self.sock)

        return Watched


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.watch.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            self.watch.connection(http.client.HTTPSConnection),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    # HTTP and HTTPS only (no file:, ftp:, data:), whatever the stored URL says; no
    # proxy from the environment: a proxy would resolve the name itself, after the
    # address check below.
    opener = urllib.request.OpenerDirector()
    for h in (
        urllib.request.ProxyHandler({}),
        urllib.request.UnknownHandler(),
        _HTTPHandler(watch),
        _HTTPSHandler(watch),
        urllib.request.HTTPDefaultErrorHandler(),
        _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(h)
    return opener


def _public(url: str) -> bool:
    """Whether every address the URL's host resolves to is a public one: an API client
    must not make the platform call its own loopback or the hosting network (SSRF).
    The check happens at delivery time, on what the name resolves to then."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for info in infos:
        if not _global(ipaddress.ip_address(info[4][0])):
            return False
    return bool(infos)


# IPv6 ranges that carry (or may reach) an IPv4 address, which `is_global` lets pass
# on some Python versions: NAT64, IPv4-compatible, site-local.
_EMBEDDING = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "fec0::/10")]


def _global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
        )
        if inner is not None:
            return _global(inner)
        if any(address in net for net in _EMBEDDING):
            return False
    return address.is_global


def _post(
    url: str, headers: Mapping[str, str], body: bytes, timeout: float, deadline: float
) -> int:
    """The HTTP status received within `deadline` seconds; DeliveryFailed when none was
    (`TimeoutError` when a read or the whole delivery took too long)."""
    # The opener handles http: and https: only (S310's concern).
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    watch = _Watch()
    timer = threading.Timer(deadline, watch.expire)
    timer.daemon = True
    timer.start()
    try:
        with _opener(watch).open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        status = exc.code
    except urllib.error.URLError as exc:
        cause = exc.reason if isinstance(exc.reason, BaseException) else exc
        error = "TimeoutError" if watch.expired.is_set() else type(cause).__name__
        raise DeliveryFailed(error=error) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = "TimeoutError" if watch.expired.is_set() else type(exc).__name__
        raise DeliveryFailed(error=error) from exc
    finally:
        timer.cancel()
    if watch.expired.is_set():  # what was read up to the cut is no answer
        raise DeliveryFailed(error="TimeoutError")
    return status


def deliver(
    db_factory: sessionmaker[Session],
    endpoint_id: int,
    event: Mapping[str, Any],
    *,
    job_id: int,
    keyring: Keyring,
    clock: Callable[[], datetime],
    tenant: str | None = None,
    timeout: float = TIMEOUT,
    deadline: float = DEADLINE,
    allow_private: bool = False,
) -> bool:
    """POST `event` (JSON) to the endpoint, signed. True when delivered (any 2xx),
    False when there is nothing to do any more (endpoint removed or disabled, client
    revoked); raises `DeliveryFailed` otherwise. Each attempt is audited
    (`comedec:webhook:delivered` or `:failed`, with the status or the error class
    only, and `tenant`, the commune of the request the event is about)."""
    with transaction(db_factory) as db:
        endpoint = db.get(WebhookEndpoint, endpoint_id)
        client = db.get(ApiClient, endpoint.client_id) if endpoint else None
        if endpoint is None or endpoint.disabled_at is not None:
            return False
        if client is None or client.revoked_at is not None:
            return False
        url = endpoint.url
        key = key_for(db, endpoint, keyring, clock())
        msg_id = message_id(db, job_id, keyring, clock())
    body = encode(event)
    timestamp = int(clock().timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"securex-webhooks/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }
    try:
        if not allow_private and not _public(url):
            raise DeliveryFailed(error="NonPublicAddress")
        status = _post(url, headers, body, timeout, deadline)
        failure = None if 200 <= status < 300 else DeliveryFailed(status=status)
    except DeliveryFailed as exc:
        failure = exc
    with transaction(db_factory) as db:
        record(
            db,
            EventType.WEBHOOK_FAILED if failure else EventType.WEBHOOK_DELIVERED,
            actor="system",
            subject=f"webhook:{endpoint_id}",
            tenant=tenant,
            details=failure.details if failure else {"status": status},
            now=clock(),
        )
    if failure:
        raise failure
    return True
