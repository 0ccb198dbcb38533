"""Two `securex serve` nodes behind an imaginary load balancer: two server processes
(each with its gunicorn workers and their in-process job threads) on one PostgreSQL
database and one instance folder (keys, blobs, demo PKI), on two ports. What a client
does on one node, the other node sees: a login and a logout, failed logins counted
toward the same limits, an act request and its idempotency key, a resumable upload
whose PATCHes go to both nodes, a pli and its preparation. And the job threads of
both nodes poll the same queue, yet each job runs once.

Always on PostgreSQL, which is what several nodes need: the run's server and template
in the `SECUREX_TEST_DB=postgresql` run (a database of the module's own, made like the
`database_url` fixture's, since the nodes are started once for the module), a server
of the module's own (tests/postgres.py) in the SQLite run.

The nodes trust one proxy (`server.trusted_proxies = 1`), as behind a real load
balancer, so that each test gives its own client address in X-Forwarded-For: the
per-address login limit (lowered to 8 attempts here) then counts one test's attempts
only."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ENGINE, csrf_token

SECUREX = str(Path(sys.executable).with_name("securex"))
ADDRESS_LIMIT = 8  # security.login_attempts_per_address, lowered for the test
LOCKOUT = 5  # security.lockout_threshold, the default
BURST = 6  # requests submitted at once to see each job run once
BODY = {
    "commune": "40192",  # Mont-de-Marsan issues clean requests automatically (demo)
    "act_kind": "naissance",
    "delivery": "copie_integrale",
    "capacity": "notaire",
    "person": {
        "nom": "Dupont-Martin",
        "prenoms": "Léa Marie",
        "sexe": "F",
        "date": "1995-03-02",
        "lieu": "Mont-de-Marsan",
    },
    "parents": [{"nom": "Dupont", "prenoms": "Jean"}, {"nom": "Martin", "prenoms": "Sophie"}],
    "purpose": "Succession Dupont",
}


# --- HTTP ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Node:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()


@dataclass
class Browser:
    """One person's browser, from `address` (given to the nodes in X-Forwarded-For, as
    the load balancer would), keeping the cookies whichever node set them."""

    address: str
    cookies: dict[str, str] = field(default_factory=dict)

    def call(
        self, node: Node, method: str, path: str, form: dict[str, str] | None = None
    ) -> Answer:
        headers = {"X-Forwarded-For": self.address}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        answer = node.call(method, path, body, headers)
        for header in answer.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return answer

    def get(self, node: Node, path: str) -> Answer:
        return self.call(node, "GET", path)

    def post(self, node: Node, path: str, form: dict[str, str]) -> Answer:
        return self.call(node, "POST", path, form)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The server and its gunicorn workers: the process group the fixture started."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _securex(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([SECUREX, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"securex {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _wait_for(what: str, probe: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.1)


def serve(name: str, env: dict[str, str], port: int, log: Path, *options: str) -> Node:
    """`securex serve` on `port`, in its own process group (stopped or killed as one),
    its output added to `log`: the node once `/readyz` answers 200. A server that stops
    or is not ready within 60 s fails the test with its log."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [SECUREX, "serve", "--port", str(port), *options],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = Node(name, port, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"securex serve ({name}) stopped: " + log.read_text(errors="replace"))
        try:
            return node.call("GET", "/readyz").status == 200
        except (OSError, http.client.HTTPException):
            return False

    try:
        _wait_for(f"securex serve ({name}) ready", ready)
    except BaseException:
        _stop(proc)
        raise
    return node


# --- the cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty PostgreSQL database for the module's two nodes."""
    if ENGINE == "postgresql":
        # The run's server and its migrated template, as `database_url` uses them; a
        # module-scoped copy, since the nodes serve every test of the module.
        admin = request.getfixturevalue("_template")
        name = f"securex_two_nodes_{os.getpid()}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE securex_template"))
        try:
            yield re.sub(r"/[^/]*$", f"/{name}", admin.url.render_as_string(hide_password=False))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        return
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE securex"))
        admin.dispose()
        yield server.url("securex")  # `securex init` migrates it
    finally:
        server.stop()


@dataclass
class Cluster:
    a: Node
    b: Node
    creds: dict[str, Any]
    agent_token: str  # a personal token (sxp_) of Mont-de-Marsan's demo agent
    database_url: str
    smtp: Any

    def user(self, email_prefix: str) -> dict[str, str]:
        found: dict[str, str] = next(
            u for u in self.creds["users"] if u["email"].startswith(email_prefix)
        )
        return found

    @property
    def notary(self) -> str:
        token: str = next(
            c["token"] for c in self.creds["api_clients"] if c["category"] == "notaire"
        )
        return token

    def rows(self, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()

    def job(self, kind: str, **payload: Any) -> Any:
        """The job of `kind` with that payload (jobs.payload is JSON with sorted keys)."""
        (row,) = self.rows(
            "SELECT status, attempts FROM jobs WHERE kind = :kind AND payload = :payload",
            kind=kind,
            payload=json.dumps(payload, sort_keys=True),
        )
        return row


@pytest.fixture(scope="module")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.smtp import SmtpServer

    folder = tmp_path_factory.mktemp("two-nodes")
    smtp = SmtpServer().start()
    nodes: list[Node] = []
    try:
        env = {
            **os.environ,
            "SECUREX_INSTANCE": str(folder / "inst"),
            "SECUREX_DATABASE_URL": postgres_url,
            "SECUREX_SERVER_TRUSTED_PROXIES": "1",
            "SECUREX_SECURITY_LOGIN_ATTEMPTS_PER_ADDRESS": str(ADDRESS_LIMIT),
            "SECUREX_MAIL_HOST": smtp.host,
            "SECUREX_MAIL_PORT": str(smtp.port),
            "SECUREX_MAIL_STARTTLS": "false",
        }
        _securex(env, "init", "--demo")
        creds = json.loads((folder / "inst" / "demo-credentials.json").read_text())
        agent = next(u for u in creds["users"] if u["email"].startswith("agent.mont-de-marsan"))
        out = _securex(env, "token", "add", agent["email"], "--name", "two nodes")
        token = next(word for word in out.split() if word.startswith("sxp_"))
        for name in ("A", "B"):
            nodes.append(serve(name, env, _free_port(), folder / f"node-{name}.log"))
        yield Cluster(nodes[0], nodes[1], creds, token, postgres_url, smtp)
    finally:
        for node in nodes:
            _stop(node.proc)
        smtp.stop()


# --- sessions -----------------------------------------------------------------------


def _log_in(browser: Browser, password_on: Node, code_on: Node, user: dict[str, str]) -> None:
    form = browser.get(password_on, "/login")
    assert form.status == 200
    token = csrf_token(form.text)
    answer = browser.post(
        password_on,
        "/login",
        {"csrf_token": token, "email": user["email"], "password": user["password"]},
    )
    assert answer.status == 302 and answer.headers["Location"].endswith("/login/totp")
    page = browser.get(code_on, "/login/totp")
    assert page.status == 200
    code = pyotp.TOTP(user["totp_secret"]).now()
    answer = browser.post(
        code_on, "/login/totp", {"csrf_token": csrf_token(page.text), "code": code}
    )
    assert answer.status == 302, answer.text


def test_a_login_on_one_node_opens_the_session_on_the_other(cluster: Cluster) -> None:
    officer = cluster.user("officier.mont-de-marsan")
    browser = Browser("192.0.2.1")
    _log_in(browser, cluster.a, cluster.a, officer)

    home = browser.get(cluster.b, "/")
    assert home.status == 200
    assert "Signer les actes" in home.text and "Mont-de-Marsan" in home.text

    # Logged out on B: the same cookie no longer opens anything on A.
    cookie = dict(browser.cookies)
    answer = browser.post(cluster.b, "/logout", {"csrf_token": csrf_token(home.text)})
    assert answer.status == 302 and answer.headers["Location"].endswith("/login")
    assert "securex_session" not in browser.cookies
    stale = Browser("192.0.2.1", cookie)
    for node in (cluster.a, cluster.b):
        answer = stale.get(node, "/")
        assert answer.status == 302 and "/login" in answer.headers["Location"]


def test_the_two_steps_of_a_login_may_reach_different_nodes(cluster: Cluster) -> None:
    """No sticky sessions: the password given to A, the code to B."""
    officer = cluster.user("officier.dax")
    browser = Browser("192.0.2.2")
    _log_in(browser, cluster.a, cluster.b, officer)
    for node in (cluster.a, cluster.b):
        home = browser.get(node, "/")
        assert home.status == 200 and "Dax" in home.text


# --- rate limits --------------------------------------------------------------------


def _try_password(browser: Browser, node: Node, email: str, password: str) -> int:
    form = browser.get(node, "/login")
    token = csrf_token(form.text)
    answer = browser.post(
        node, "/login", {"csrf_token": token, "email": email, "password": password}
    )
    return answer.status


def test_failures_on_both_nodes_lock_the_account_as_on_one(cluster: Cluster) -> None:
    admin = cluster.user("admin.dax")
    browser = Browser("192.0.2.10")
    nodes = [cluster.a, cluster.b]
    statuses = [
        _try_password(browser, nodes[n % 2], admin["email"], "not the password at all")
        for n in range(LOCKOUT)
    ]
    # Alone, each node would have seen 3 and 2 failures: neither would lock.
    assert statuses == [401] * (LOCKOUT - 1) + [423]
    for node in nodes:  # the right password no longer opens it, on either node
        assert _try_password(browser, node, admin["email"], admin["password"]) == 423


def test_attempts_from_one_address_on_both_nodes_count_together(cluster: Cluster) -> None:
    browser = Browser("192.0.2.20")
    nodes = [cluster.a, cluster.b]
    statuses = [
        _try_password(browser, nodes[n % 2], f"personne{n}@example.org", "mauvais mot de passe")
        for n in range(ADDRESS_LIMIT + 2)
    ]
    # Each node saw 5 attempts, under its limit of 8 if it counted alone.
    assert statuses == [401] * ADDRESS_LIMIT + [429, 429]
    # Another address is not held back.
    other = Browser("192.0.2.21")
    assert _try_password(other, cluster.b, "personne@example.org", "mauvais mot de passe") == 401


# --- requests for acts --------------------------------------------------------------


def _submit(node: Node, token: str, key: str, reference: str) -> Answer:
    return node.call(
        "POST",
        "/api/v1/act-requests",
        json.dumps({**BODY, "reference": reference}).encode(),
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )


def _issued(node: Node, token: str, request_id: int) -> Callable[[], bool]:
    def probe() -> bool:
        answer = node.call(
            "GET", f"/api/v1/act-requests/{request_id}", None, {"Authorization": f"Bearer {token}"}
        )
        assert answer.status == 200
        status = answer.json()["status"]
        assert status in ("received", "issued"), answer.json()
        return bool(status == "issued")

    return probe


def test_an_act_request_made_on_one_node_is_the_same_on_the_other(cluster: Cluster) -> None:
    token = cluster.notary
    first = _submit(cluster.a, token, "two-nodes-1", "DOSSIER-2N-1")
    assert first.status == 201, first.text
    request_id = first.json()["id"]

    again = _submit(cluster.b, token, "two-nodes-1", "DOSSIER-2N-1")
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == request_id
    (count,) = cluster.rows(
        "SELECT COUNT(*) FROM act_requests WHERE idempotency_key = 'two-nodes-1'"
    )
    assert count[0] == 1
    # The same key with another body is a conflict on B too.
    assert _submit(cluster.b, token, "two-nodes-1", "DOSSIER-AUTRE").status == 409

    _wait_for("the request issued", _issued(cluster.b, token, request_id))
    document = cluster.b.call(
        "GET",
        f"/api/v1/act-requests/{request_id}/document",
        None,
        {"Authorization": f"Bearer {token}"},
    )
    assert document.status == 200
    assert document.headers["Content-Type"] == "application/pdf"
    assert document.body.startswith(b"%PDF-")
    job = cluster.job("comedec.issue", request=request_id)
    assert (job.status, job.attempts) == ("done", 1)


def test_each_job_runs_once_while_both_nodes_poll(cluster: Cluster) -> None:
    """A burst of requests, half through each node: each issue job is claimed once
    (`FOR UPDATE SKIP LOCKED`), by one of the four job threads."""
    token = cluster.notary
    ids = []
    for n in range(BURST):
        node = (cluster.a, cluster.b)[n % 2]
        answer = _submit(node, token, f"burst-{n}", f"BURST-{n}")
        assert answer.status == 201, answer.text
        ids.append(answer.json()["id"])
    for request_id in ids:
        _wait_for(f"request {request_id} issued", _issued(cluster.a, token, request_id))
    for request_id in ids:
        job = cluster.job("comedec.issue", request=request_id)
        assert (job.status, job.attempts) == ("done", 1)
    (deliveries,) = cluster.rows(
        "SELECT COUNT(DISTINCT delivery_id), COUNT(*) FROM act_requests WHERE id = ANY(:ids)",
        ids=ids,
    )
    assert tuple(deliveries) == (BURST, BURST)  # one signed copy each, none signed twice


# --- confidential sends -------------------------------------------------------------


def test_a_send_uploaded_through_both_nodes_is_sent_once(cluster: Cluster) -> None:
    auth = {"Authorization": f"Bearer {cluster.agent_token}", "Tus-Resumable": "1.0.0"}
    content = os.urandom(3 * 2**20 + 12345)
    name = base64.b64encode(b"succession.pdf").decode()
    created = cluster.a.call(
        "POST",
        "/api/v1/uploads",
        None,
        {**auth, "Upload-Length": str(len(content)), "Upload-Metadata": f"filename {name}"},
    )
    assert created.status == 201, created.text
    location = created.headers["Location"]

    # Started on A, cut in the middle of a 1 MiB segment (its tail is kept sealed in the
    # upload's state, in the database), resumed on B from where B says it stands.
    cut = 3 * 2**19 + 7
    patch = {**auth, "Content-Type": "application/offset+octet-stream"}
    answer = cluster.a.call("PATCH", location, content[:cut], {**patch, "Upload-Offset": "0"})
    assert answer.status == 204 and answer.headers["Upload-Offset"] == str(cut)
    head = cluster.b.call("HEAD", location, None, auth)
    assert head.status == 200 and head.headers["Upload-Offset"] == str(cut)
    answer = cluster.b.call("PATCH", location, content[cut:], {**patch, "Upload-Offset": str(cut)})
    assert answer.status == 204 and answer.headers["Upload-Offset"] == str(len(content))

    recipient = "etude.lafitte@notaires.example.org"
    sent = cluster.a.call(
        "POST",
        "/api/v1/sends",
        json.dumps(
            {
                "recipients": [recipient],
                "subject": "Succession Dupont",
                "files": [{"upload": location.rsplit("/", 1)[1]}],
            }
        ).encode(),
        {"Authorization": auth["Authorization"], "Content-Type": "application/json"},
    )
    assert sent.status == 201, sent.text
    send_id = sent.json()["id"]

    def prepared() -> Any:
        answer = cluster.b.call(
            "GET", f"/api/v1/sends/{send_id}", None, {"Authorization": auth["Authorization"]}
        )
        assert answer.status == 200
        view = answer.json()
        return view if view["status"] == "sent" and view["recipients"][0]["notified_at"] else None

    view = _wait_for("the pli prepared and sent", prepared)
    assert view["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    assert view["files"][0]["size"] == len(content)
    job = cluster.job("exchange.prepare", pli=send_id)
    assert (job.status, job.attempts) == ("done", 1)
    notices = [m for m in cluster.smtp.messages if recipient in m.recipients]
    assert len(notices) == 1  # notified once, by one node
