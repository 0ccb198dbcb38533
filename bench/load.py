"""Two securex nodes on one PostgreSQL database under a mixed load, for a minute.

Notaries' request submissions, status polls and downloads of issued copies, and staff
logins, with the resident memory of every server process after the warm-up and at the
end.

    .venv/bin/python bench/load.py [--seconds 60] [--warmup 10] [--clients 8]
                                   [--workers 2] [--users 100] [--no-issue]

Builds everything it measures in the temporary folder, and removes it at the end (on
errors too):
- a PostgreSQL server of its own (tests/postgres.py: initdb on a free loopback port,
  with that module's settings for tests: fsync, synchronous_commit and
  full_page_writes off) and a database `securex`;
- a demo instance (`securex init --demo`, the `file` master key), whose notary's API
  token submits the requests, and whose Mont-de-Marsan issues clean requests
  automatically with its seal (Dax leaves them to its agents);
- --users agents (half of each commune), each with a password and an enrolled TOTP
  secret, made in this process through `securex.accounts.service` as `init --demo`
  makes the demo's (`create_user`, `set_totp_secret`): the CLI's `user add` enrols no
  second factor, and a process per user would take minutes;
- two nodes as a production deployment runs them: `securex serve --workers N` twice,
  on two ports, sharing the instance folder (keys, blobs, PKI) and the database, with
  `jobs.in_process = false` and `server.trusted_proxies = 1` (behind a load balancer,
  which gives each person's address in X-Forwarded-For); and one `securex worker`
  process that runs the background jobs (here: issuing copies with the seal).

Before the load, 8 requests to Mont-de-Marsan are submitted and issued: the first
copies to download. Then --clients threads of this process (one `http.client`
connection per node each, kept alive) send operations back to back, for --warmup
seconds (not counted), then, after a pause of about 2 s, for --seconds (measured).
Each client alternates between the two nodes at every HTTP request, as a load
balancer without sticky sessions would, even within a login. Each operation is drawn
at random with these weights:
- `status` (40 %): GET /api/v1/act-requests/<id> of a request submitted earlier (a
  request seen `issued` joins the copies to download);
- `submit` (25 %): POST /api/v1/act-requests, the notary's request for a copie
  intégrale of one of the demo's birth acts, in either commune (Dax only with
  --no-issue), with its own Idempotency-Key: each one to Mont-de-Marsan queues an
  issuing job (render, seal, store) for the worker;
- `document` (25 %): GET /api/v1/act-requests/<id>/document of an issued request
  (the signed PDF, decrypted from the vault);
- `login` (10 %): a person's whole login, five requests: GET /login, POST /login
  (the password: Argon2id), POST /login/totp (the code), GET / (the dashboard), POST
  /logout. A TOTP code is refused if its time step is not later than the last one
  the account used, so this script never gives an account a step it gave before,
  nor an account to two logins at once: a login takes an idle account and the step
  max(last + 1, now), if that is at most now + 1 (the server accepts one step of
  drift); an account thus logs in twice at first, then at most once per 30 s. When
  no account has a step left, the client polls a status instead, and the count of
  such logins is printed (it should be 0: else give more --users).
An answer other than the expected one (201; 200 and a PDF; the login's 200 and 302
to the next step) is an error; a login stops at its first one.

Prints, for the measured window: per operation and overall, the count, the rate,
p50, p99 and max latency and the errors; the HTTP requests per node and status; the
requests stored by status and the issuing jobs done and waiting; PostgreSQL's
sessions waiting for a lock (sampled every 0.25 s) and the sessions they waited for;
the CPU time of the machine, the load generator, PostgreSQL and each server process.
And the resident size (VmRSS) of every server process (each node's gunicorn master
and workers, the worker process): at idle before any load, after the warm-up and at
the end, each read at rest (once the clients have stopped: a password check takes
64 MiB for a fraction of a second, which a reading under load may or may not catch)
as the median of 5 readings over a second; the growth from after the warm-up to the
end, checked against the issue's target (at most 10 %); and the peak (VmHWM) from the
one reading to the other, the measured window included. The load generator shares the
machine's cores with everything it measures.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _server import (  # noqa: E402 (bench/ is this script's folder on sys.path)
    children,
    cpu_seconds,
    free_port,
    peak_rss,
    reset_peak,
    rss,
    stop,
    wait_ready,
)

from tests.postgres import PostgresServer  # noqa: E402 (needs the repository on sys.path)

SECUREX = str(Path(sys.executable).with_name("securex"))
MIB = 2**20
TARGET_GROWTH = 10.0  # % of resident size, from the end of the warm-up to the end
MIX = (("status", 40), ("submit", 25), ("document", 25), ("login", 10))
PRIMED = 8  # requests issued before the load: the first copies to download
TOTP_STEP = 30
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([SECUREX, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"securex {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# --- what the clients send ---------------------------------------------------------


def request_bodies() -> list[bytes]:
    """A notary's request for each birth act of the demo, in each commune."""
    from securex.cli import DEMO_BIRTHS, DEMO_TENANTS

    bodies = []
    for insee, name, _ in DEMO_TENANTS:
        for nom, prenoms, sexe, born, father, mother in DEMO_BIRTHS:
            parents = [
                dict(zip(("nom", "prenoms"), p.split(" ", 1), strict=True))
                for p in (father, mother)
            ]
            body = {
                "commune": insee,
                "act_kind": "naissance",
                "delivery": "copie_integrale",
                "capacity": "notaire",
                "person": {
                    "nom": nom,
                    "prenoms": prenoms,
                    "sexe": sexe,
                    "date": born,
                    "lieu": name,
                },
                "parents": parents,
                "purpose": "Succession",
                "reference": f"LOAD-{insee}",
            }
            bodies.append(json.dumps(body, ensure_ascii=False).encode())
    return bodies


@dataclass
class Account:
    email: str
    password: str
    secret: str
    address: str  # where this person logs in from (X-Forwarded-For)
    last_step: int = -1


def make_accounts(env: dict[str, str], count: int) -> list[Account]:
    """`count` agents with an enrolled TOTP secret, as `init --demo` makes its users."""
    from securex.accounts import service as accounts
    from securex.config import load_settings
    from securex.db import make_engine, make_sessionmaker, transaction
    from securex.instance import load_instance_secret

    settings = load_settings(environ=env)
    keys = accounts.AccountKeys(load_instance_secret(settings.instance))
    policy = accounts.SecurityPolicy.from_settings(settings)
    engine = make_engine(settings.database_url)
    made = []
    try:
        sessions = make_sessionmaker(engine)
        for n in range(count):
            email, password = f"agent{n}@bench.example.fr", secrets.token_urlsafe(18)
            secret = accounts.new_totp_secret()
            with transaction(sessions) as db:
                user = accounts.create_user(
                    db,
                    accounts.Actor("bench"),
                    email=email,
                    name=f"Agent {n}",
                    role="agent",
                    password=password,
                    tenant_insee=("40192", "40088")[n % 2],
                    now=datetime.now(UTC),
                    policy=policy,
                )
                db.flush()
                accounts.set_totp_secret(db, keys, user, secret)
            made.append(Account(email, password, secret, f"10.0.{n // 250}.{n % 250 + 1}"))
    finally:
        engine.dispose()
    return made


class Accounts:
    """The accounts that log in: each used by one login at a time, and never given a
    TOTP step it was given before."""

    def __init__(self, accounts: list[Account]) -> None:
        self._idle = list(accounts)
        self._lock = threading.Lock()
        self.skipped = 0

    def take(self) -> tuple[Account, int] | None:
        now = int(time.time()) // TOTP_STEP
        with self._lock:
            for i, account in enumerate(self._idle):
                step = max(account.last_step + 1, now)
                if step <= now + 1:
                    account.last_step = step
                    del self._idle[i]
                    return account, step
            self.skipped += 1
            return None

    def give_back(self, account: Account) -> None:
        with self._lock:
            self._idle.append(account)


# --- the load generator -------------------------------------------------------------


@dataclass
class Op:
    name: str
    start: float
    end: float
    ok: bool


@dataclass
class Call:
    node: int
    start: float
    end: float
    status: int  # 0: the connection failed


@dataclass
class Shared:
    """What the clients share: the requests they submitted, those seen issued."""

    token: str
    bodies: list[bytes]
    accounts: Accounts
    submitted: list[int] = field(default_factory=list)
    issued: list[int] = field(default_factory=list)
    serial: itertools.count[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[str] = field(default_factory=list)  # a few unexpected answers

    def error(self, what: str) -> None:
        with self.lock:
            if len(self.samples) < 10:
                self.samples.append(what)


class Failed(Exception):
    """An unexpected answer: the operation counts as an error."""


class Client(threading.Thread):
    def __init__(self, n: int, ports: list[int], shared: Shared, stop_at: float, seed: int) -> None:
        super().__init__(name=f"client-{n}", daemon=True)
        self.ports, self.shared, self.stop_at = ports, shared, stop_at
        self.turn = n % len(ports)
        self.rng = random.Random(seed * 1000 + n)  # noqa: S311 (a mix of operations)
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.ops: list[Op] = []
        self.calls: list[Call] = []
        self.api = {"Authorization": f"Bearer {shared.token}"}

    # One request, to the next node in turn, on that node's kept-alive connection; a
    # connection the server closed while idle is reopened once, as browsers do.
    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        node = self.turn % len(self.ports)
        self.turn += 1
        port = self.ports[node]
        t0 = time.perf_counter()
        for attempt in range(2):
            conn = self.conns.get(port)
            fresh = conn is None
            if conn is None:
                conn = self.conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                del self.conns[port]
                stale = isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if fresh or attempt or not stale:
                    self.calls.append(Call(node, t0, time.perf_counter(), 0))
                    raise Failed(f"{method} {path}: {exc!r}") from None
                continue
            if response.will_close:
                conn.close()
                del self.conns[port]
            self.calls.append(Call(node, t0, time.perf_counter(), response.status))
            return response.status, response.headers, data
        raise AssertionError("unreachable")

    def expect(
        self, answer: tuple[int, Any, bytes], status: int, what: str
    ) -> tuple[int, Any, bytes]:
        if answer[0] != status:
            raise Failed(f"{what}: {answer[0]} {answer[2][:200]!r}")
        return answer

    def submit(self) -> None:
        i = next(self.shared.serial)
        body = self.shared.bodies[i % len(self.shared.bodies)]
        headers = {**self.api, "Content-Type": "application/json", "Idempotency-Key": f"load-{i}"}
        _, _, data = self.expect(
            self.send("POST", "/api/v1/act-requests", body, headers), 201, "submit"
        )
        with self.shared.lock:
            self.shared.submitted.append(json.loads(data)["id"])

    def status(self) -> None:
        with self.shared.lock:
            request_id = self.rng.choice(self.shared.submitted)
        answer = self.send("GET", f"/api/v1/act-requests/{request_id}", None, self.api)
        _, _, data = self.expect(answer, 200, "status")
        if json.loads(data)["status"] == "issued":
            with self.shared.lock:
                if request_id not in self.shared.issued:
                    self.shared.issued.append(request_id)

    def document(self) -> None:
        with self.shared.lock:
            request_id = self.rng.choice(self.shared.issued)
        answer = self.send("GET", f"/api/v1/act-requests/{request_id}/document", None, self.api)
        _, _, data = self.expect(answer, 200, "document")
        if not data.startswith(b"%PDF-"):
            raise Failed(f"document {request_id}: not a PDF")

    def login(self, account: Account, step: int) -> None:
        cookies: dict[str, str] = {}

        def browse(method: str, path: str, form: dict[str, str] | None = None) -> Any:
            headers = {"X-Forwarded-For": account.address}
            if cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
            body = None
            if form is not None:
                body = urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            answer = self.send(method, path, body, headers)
            for header in answer[1].get_all("Set-Cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        cookies.pop(name, None)
                    else:
                        cookies[name] = morsel.value
            return answer

        def token(html: bytes, what: str) -> str:
            match = CSRF_RE.search(html.decode())
            if match is None:
                raise Failed(f"{what}: no CSRF token")
            return match.group(1)

        _, _, page = self.expect(browse("GET", "/login"), 200, "login form")
        csrf = token(page, "login form")
        form = {"csrf_token": csrf, "email": account.email, "password": account.password}
        _, headers, _ = self.expect(browse("POST", "/login", form), 302, "password")
        if not headers["Location"].endswith("/login/totp"):
            raise Failed(f"password: redirected to {headers['Location']}")
        code = pyotp.TOTP(account.secret).generate_otp(step)
        self.expect(browse("POST", "/login/totp", {"csrf_token": csrf, "code": code}), 302, "code")
        _, _, page = self.expect(browse("GET", "/"), 200, "dashboard")
        self.expect(
            browse("POST", "/logout", {"csrf_token": token(page, "dashboard")}), 302, "logout"
        )

    def run(self) -> None:
        names = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        actions: dict[str, Callable[[], None]] = {
            "status": self.status,
            "submit": self.submit,
            "document": self.document,
        }
        while time.perf_counter() < self.stop_at:
            name = self.rng.choices(names, weights)[0]
            taken = self.shared.accounts.take() if name == "login" else None
            if name == "login" and taken is None:
                name = "status"
            t0 = time.perf_counter()
            ok = True
            try:
                if taken is not None:
                    self.login(*taken)
                else:
                    actions[name]()
            except Failed as exc:
                ok = False
                self.shared.error(str(exc))
            finally:
                if taken is not None:
                    self.shared.accounts.give_back(taken[0])
            self.ops.append(Op(name, t0, time.perf_counter(), ok))
        for conn in self.conns.values():
            conn.close()


# --- measuring ----------------------------------------------------------------------


@dataclass
class Proc:
    label: str
    pid: int


def processes(nodes: list[subprocess.Popen[bytes]], worker: subprocess.Popen[bytes]) -> list[Proc]:
    found = []
    for name, node in zip("AB", nodes, strict=True):
        found.append(Proc(f"node {name} master", node.pid))
        found += [Proc(f"node {name} worker {pid}", pid) for pid in children(node.pid)]
    found.append(Proc("securex worker", worker.pid))
    return found


def resident(procs: list[Proc], samples: int = 5) -> dict[int, float]:
    """The median VmRSS of each process over `samples` readings 0.25 s apart, in bytes."""
    seen: dict[int, list[int]] = {p.pid: [] for p in procs}
    for n in range(samples):
        if n:
            time.sleep(0.25)
        for p in procs:
            if (size := rss(p.pid)) is not None:
                seen[p.pid].append(size)
    return {pid: statistics.median(v) if v else float("nan") for pid, v in seen.items()}


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def postgres_cpu(data: Path) -> float:
    """CPU seconds of the PostgreSQL server and all its backends now alive."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    return sum(cpu_seconds(pid) or 0.0 for pid in [postmaster, *children(postmaster)])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def prime(port: int, shared: Shared, bodies: list[bytes], count: int) -> float:
    """`count` requests to Mont-de-Marsan submitted and issued by the worker: the first
    copies to download. Returns the seconds it took."""
    t0 = time.perf_counter()
    auth = {"Authorization": f"Bearer {shared.token}"}
    ids = []
    mdm = [b for b in bodies if json.loads(b)["commune"] == "40192"]
    for n in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {**auth, "Content-Type": "application/json", "Idempotency-Key": f"prime-{n}"}
        conn.request("POST", "/api/v1/act-requests", mdm[n % len(mdm)], headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if response.status != 201:
            raise SystemExit(f"priming request: {response.status} {data[:300]!r}")
        ids.append(json.loads(data)["id"])
    for request_id in ids:
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", f"/api/v1/act-requests/{request_id}", headers=auth)
            status = json.loads(conn.getresponse().read())["status"]
            conn.close()
            if status == "issued":
                break
            if status != "received" or time.perf_counter() - t0 > 120:
                raise SystemExit(f"priming request {request_id}: {status}, not issued")
            time.sleep(0.1)
    shared.submitted += ids
    shared.issued += ids
    return time.perf_counter() - t0


class LockWatch(threading.Thread):
    """Samples PostgreSQL's sessions every 0.25 s: how many wait for a lock, and the
    session at the root of their wait (one that holds the lock and waits for no other),
    by its state and last statement: a session idle in its transaction, while its
    process does something else, shows the statement it ran last."""

    QUERY = (
        "SELECT b.state, left(regexp_replace(b.query, '\\s+', ' ', 'g'), 90) "
        "FROM pg_stat_activity w "
        "CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) "
        "JOIN pg_stat_activity b ON b.pid = bp.pid "
        "WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' "
        "AND b.wait_event_type IS DISTINCT FROM 'Lock'"
    )

    def __init__(self, url: str) -> None:
        super().__init__(name="lock-watch", daemon=True)
        self.url = url
        self.waiting: list[int] = []
        self.blockers: dict[tuple[str, str], int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                while not self.done.wait(0.25):
                    rows = conn.execute(text(self.QUERY)).all()
                    self.waiting.append(len(rows))
                    for state, query in rows:
                        key = (str(state), str(query))
                        self.blockers[key] = self.blockers.get(key, 0) + 1
        finally:
            engine.dispose()

    def lines(self) -> list[str]:
        if not self.waiting:
            return []
        waits = sum(self.blockers.values())
        busy = sum(n > 0 for n in self.waiting) / len(self.waiting)
        out = [
            f"  PostgreSQL sessions waiting for a lock (sampled every 0.25 s): median "
            f"{statistics.median(self.waiting):g}, max {max(self.waiting)}, some waiting in "
            f"{busy * 100:.0f} % of the samples; the sessions holding what they waited for "
            "(state, last statement):"
        ]
        for (state, query), n in sorted(self.blockers.items(), key=lambda kv: -kv[1])[:3]:
            out.append(f"    {n / max(1, waits) * 100:3.0f} %  {state}: {query}")
        return out


def database_report(url: str, window: tuple[datetime, datetime]) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            statuses: dict[str, int] = {
                str(s): int(n)
                for s, n in conn.execute(
                    text("SELECT status, COUNT(*) FROM act_requests GROUP BY status")
                )
            }
            jobs = conn.execute(
                text(
                    "SELECT status, COUNT(*), MAX(attempts) FROM jobs "
                    "WHERE kind = 'comedec.issue' GROUP BY status ORDER BY status"
                )
            ).all()
            ran = [
                (finished - started).total_seconds()
                for started, finished in conn.execute(
                    text(
                        "SELECT started_at, finished_at FROM jobs WHERE kind = 'comedec.issue' "
                        "AND status = 'done' AND finished_at >= :start AND finished_at < :end"
                    ),
                    {"start": window[0], "end": window[1]},
                )
            ]
            events = conn.execute(text("SELECT COUNT(*) FROM audit_events")).scalar_one()
    finally:
        engine.dispose()
    seconds = (window[1] - window[0]).total_seconds()
    return [
        "  requests stored by status (priming and warm-up included): "
        f"{dict(sorted(statuses.items()))}",
        "  issuing jobs (status, count, most attempts): "
        + ", ".join(f"{s} {n} (attempts <= {a})" for s, n, a in jobs),
        f"  copies issued by the worker during the measured window: {len(ran)} "
        f"({len(ran) / seconds:.2f}/s), each job median {statistics.median(ran or [0]):.2f} s, "
        f"max {max(ran, default=0):.2f} s; audit events in all: {events}",
    ]


def report(clients: list[Client], window: tuple[float, float], shared: Shared) -> bool:
    """The operations and requests of the measured window; True when none failed."""
    start, end = window
    seconds = end - start
    ops = [op for c in clients for op in c.ops if op.start >= start and op.end <= end]
    calls = [x for c in clients for x in c.calls if x.start >= start and x.end <= end]
    print(
        f"\n  {'operation':<10} {'count':>7} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>7}"
    )
    rows = [(name, [op for op in ops if op.name == name]) for name, _ in MIX]
    rows.append(("overall", ops))
    for name, chosen in rows:
        times = [(op.end - op.start) * 1000 for op in chosen]
        errors = sum(not op.ok for op in chosen)
        print(
            f"  {name:<10} {len(chosen):>7} {len(chosen) / seconds:>8.1f} {pct(times, 0.5):>8.1f} "
            f"{pct(times, 0.99):>8.1f} {max(times, default=float('nan')):>8.1f} {errors:>7}"
        )
    times = [(x.end - x.start) * 1000 for x in calls]
    by_node = [sum(x.node == n for x in calls) for n in range(2)]
    statuses: dict[int, int] = {}
    for x in calls:
        statuses[x.status] = statuses.get(x.status, 0) + 1
    print(
        f"  HTTP requests {len(calls)} ({len(calls) / seconds:.1f}/s; "
        f"p50 {pct(times, 0.5):.1f} ms, p99 {pct(times, 0.99):.1f} ms): node A {by_node[0]}, "
        f"node B {by_node[1]}; by status "
        f"{dict(sorted(statuses.items()))}"
    )
    print(
        f"  logins that found no account with a fresh TOTP step (a status poll instead): "
        f"{shared.accounts.skipped}"
    )
    for sample in shared.samples:
        print(f"    e.g. {sample}")
    return not any(not op.ok for op in ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="measured (60)")
    parser.add_argument("--warmup", type=float, default=10, help="before, not counted (10)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per node (2)")
    parser.add_argument("--users", type=int, default=100, help="accounts that log in (100)")
    parser.add_argument(
        "--no-issue",
        action="store_true",
        help="submit to Dax only, whose requests wait for an agent: no copy is issued "
        "(signed) during the load",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="securex-bench-load-"))
    instance = work / "instance"
    pg: PostgresServer | None = None
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        t0 = time.perf_counter()
        pg = PostgresServer().start()
        from sqlalchemy import create_engine, text

        admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE securex"))
        admin.dispose()
        url = pg.url("securex")
        ports = [free_port(), free_port()]
        env = {
            **os.environ,
            "SECUREX_INSTANCE": str(instance),
            "SECUREX_DATABASE_URL": url,
            "SECUREX_BASE_URL": f"http://127.0.0.1:{ports[0]}",
            "SECUREX_SERVER_TRUSTED_PROXIES": "1",
        }
        run(env, "init", "--demo")
        creds = json.loads((instance / "demo-credentials.json").read_text())
        token = next(c["token"] for c in creds["api_clients"] if c["category"] == "notaire")
        accounts = make_accounts(env, args.users)
        setup = time.perf_counter() - t0

        def start(name: str, *command: str, **extra: str) -> subprocess.Popen[bytes]:
            log = work / f"{name}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [SECUREX, *command],
                    env={**env, **extra},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            started.append((proc, log))
            return proc

        web = {"SECUREX_JOBS_IN_PROCESS": "false"}
        nodes = [
            start(
                f"node-{name}", "serve", "--port", str(port), "--workers", str(args.workers), **web
            )
            for name, port in zip("AB", ports, strict=True)
        ]
        worker = start("worker", "worker")
        for name, node, port in zip("AB", nodes, ports, strict=True):
            wait_ready(port, node, work / f"node-{name}.log")
        time.sleep(1)  # every gunicorn worker booted
        procs = processes(nodes, worker)
        if len(procs) != 2 * (args.workers + 1) + 1:
            raise SystemExit(f"unexpected server processes: {procs}")
        idle = resident(procs)

        bodies = request_bodies()
        submitted = [b for b in bodies if not args.no_issue or json.loads(b)["commune"] == "40088"]
        shared = Shared(token, submitted, Accounts(accounts))
        primed = prime(ports[0], shared, bodies, PRIMED)
        print(
            f"securex mixed load: 2 nodes (securex serve --workers {args.workers}, gthread, "
            f"jobs.in_process = false) and one securex worker, PostgreSQL "
            f"{pg.bindir.parent.name} (tests/postgres.py: fsync off); {os.cpu_count()} cores "
            f"({cpu_model()}) shared with the load generator; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"  {args.clients} clients alternating between the nodes, warm-up {args.warmup:g} s "
            f"(not counted), measured {args.seconds:g} s; {args.users} accounts that log in; "
            f"mix {', '.join(f'{n} {w} %' for n, w in MIX)}"
            + (" (submissions to Dax only: --no-issue)" if args.no_issue else "")
            + f"; setup {setup:.1f} s, "
            f"{PRIMED} copies issued first in {primed:.1f} s"
        )

        def load(seconds: float, seed: int) -> tuple[list[Client], float, float]:
            """The clients, started now and running until `seconds` from now."""
            begin = time.perf_counter()
            clients = [Client(n, ports, shared, begin + seconds, seed) for n in range(args.clients)]
            for client in clients:
                client.start()
            return clients, begin, begin + seconds

        warming, _, _ = load(args.warmup, 1)
        for client in warming:
            client.join()
        time.sleep(1)  # what the last requests started is done
        warm = resident(procs)
        for p in procs:
            reset_peak(p.pid)
        watch = LockWatch(url)
        watch.start()
        cpu_start = {p.pid: cpu_seconds(p.pid) for p in procs}
        machine_start, pg_start, me_start = (
            machine_cpu(),
            postgres_cpu(pg.data),
            time.process_time(),
        )
        wall_start = datetime.now(UTC)
        clients, measured, stop_at = load(args.seconds, 2)
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        wall_end = datetime.now(UTC)
        cpu_end = {p.pid: cpu_seconds(p.pid) for p in procs}
        machine_end, pg_end, me_end = machine_cpu(), postgres_cpu(pg.data), time.process_time()
        loads = os.getloadavg()
        watch.done.set()
        watch.join()
        for client in clients:
            client.join()
        time.sleep(1)
        final = resident(procs)
        peaks = {p.pid: peak_rss(p.pid) for p in procs}
        now_procs = processes(nodes, worker)

        clean = report(clients, (measured, stop_at), shared)
        for line in database_report(url, (wall_start, wall_end)):
            print(line)
        for line in watch.lines():
            print(line)
        cores = os.cpu_count() or 1
        busy = (machine_end[0] - machine_start[0]) / max(1, machine_end[1] - machine_start[1])
        print(
            f"  CPU during the measured window, % of one core: machine {busy * 100 * cores:.0f} "
            f"of {100 * cores} (load average {loads[0]:.2f}); load generator "
            f"{(me_end - me_start) / args.seconds * 100:.0f}; PostgreSQL "
            f"{(pg_end - pg_start) / args.seconds * 100:.0f}; server processes below"
        )
        print(
            "\n  resident size (VmRSS) at rest, each the median of 5 readings over a second: "
            "idle (before any load),\n  after the warm-up and at the end; growth from the "
            "one to the other; the peak (VmHWM) from the first to the last; CPU % in the window"
        )
        print(
            f"  {'process':<24} {'idle':>10} {'warmed up':>10} {'end':>10} {'growth':>8} "
            f"{'peak':>10} {'CPU %':>6}   growth <= {TARGET_GROWTH:g} %"
        )
        ok = True
        for p in procs:
            grow = (final[p.pid] - warm[p.pid]) / warm[p.pid] * 100
            passed = grow <= TARGET_GROWTH
            ok &= passed
            a, b = cpu_start[p.pid], cpu_end[p.pid]
            cpu = f"{(b - a) / args.seconds * 100:.0f}" if a is not None and b is not None else "?"
            print(
                f"  {p.label:<24} {idle[p.pid] / MIB:>6.1f} MiB {warm[p.pid] / MIB:>6.1f} MiB "
                f"{final[p.pid] / MIB:>6.1f} MiB {grow:>+7.1f} % "
                f"{(peaks[p.pid] or 0) / MIB:>6.1f} MiB {cpu:>6}   {'PASS' if passed else 'FAIL'}"
            )
        if [p.pid for p in now_procs] != [p.pid for p in procs]:
            ok = False
            print(f"  FAIL: the server processes changed during the run: {now_procs}")
        print(
            f"  memory growth of every process <= {TARGET_GROWTH:g} %: {'PASS' if ok else 'FAIL'}; "
            f"errors: {'none' if clean else 'some (above)'}"
        )
    except BaseException:
        for _, log in started:  # the servers' side of a failure, before the folder goes
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print(f"{log.name}, last lines:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        for proc, _ in started:
            stop(proc)
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
