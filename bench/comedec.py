"""COMEDEC request submissions over HTTP: `securex serve` on loopback, 16 clients,
measured against the same server's `/healthz` in the same run.

    .venv/bin/python bench/comedec.py [--seconds 20] [--clients 16] [--workers 2]
                                      [--issues 10] [--profile 200]

Builds a throwaway instance in the temporary folder with the real commands (SQLite,
the `file` master key): `securex init`, `securex tenant add 40192`, `securex client
add` (a notary), `securex registry import` of --acts imported birth acts (distinct
persons), `securex pki init` (the demo PKI that gives the commune's seal its
certificate on first use). Then starts `securex serve --workers N` on a free loopback
port (gunicorn; `[jobs] in_process`, so each web process runs a worker thread), waits
for /readyz, and measures with a load generator written here (one thread and one
`http.client` connection per client, reconnecting when the server closes it):
- A, the ceiling: GET /healthz for --seconds;
- B, submissions: POST /api/v1/act-requests for --seconds, each a valid notary's
  request for a copie intégrale of a different person's birth act, with its own
  Idempotency-Key; auto-issue off, so each is validated, decided, matched and queued
  (the cost of the request path itself). It then prints, from the database, the
  requests stored by status and number of matching acts (all should be
  `queued/candidates=1`: matched, one act each);
- C, auto-issue: `commune_settings.auto_issue` set in the database, then --issues
  requests one at a time, after a random pause of 0 to 1 s each, each polled (GET
  every 20 ms) until `issued`: the time from the POST to an issued copy signed with
  the commune's seal (the first request, which also issues the seal's certificate,
  is reported apart), and from the jobs table how much of it was waiting for a
  worker thread's poll (`jobs.poll_seconds`) and how much the job itself.
Phases A and B run a 2-second warm-up first, not counted. Prints requests/s, p50,
p99 and max latency and errors (non-2xx) per phase, the ratio submissions / healthz,
and the issue's targets (>= 200 submissions/s, p99 < 100 ms, auto-issue < 2 s, the
slowest of the --issues) with PASS/FAIL. The load generator shares the machine's
cores with the server. The server is stopped and the folder removed at the end,
on errors too.

With --profile N (after the server is stopped): N submissions in this process
through the Flask test client, one at a time: their time, how long each holds
SQLite's write lock (the transaction, BEGIN IMMEDIATE to COMMIT) and its SQL
statements, then the same under cProfile (top 25 by cumulative time, securex's own
functions, top 15 by internal time): where the time of one request goes.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import itertools
import json
import os
import pstats
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from _server import stop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECUREX = str(Path(sys.executable).with_name("securex"))
MDM = "40192"
SURNAMES = [
    "Dupont",
    "Martin",
    "Lacoste",
    "Duprat",
    "Lafitte",
    "Bordes",
    "Castaing",
    "Darrigade",
    "Labat",
    "Lalanne",
    "Larrieu",
    "Péré",
    "Dubroca",
    "Lassalle",
    "Hourcade",
    "Saint-Martin",
    "Ducasse",
    "Lagardère",
    "Cazaux",
    "Barrère",
    "Laborde",
    "Destenave",
    "Marsan",
    "Pujol",
    "Lescoute",
]
GIVEN = [
    ("Léa Marie", "F"),
    ("Jean Paul", "M"),
    ("Sophie", "F"),
    ("Pierre André", "M"),
    ("Camille", "F"),
    ("Louis", "M"),
    ("Chloé Anne", "F"),
    ("Hugo", "M"),
    ("Manon", "F"),
    ("Lucas Jean", "M"),
    ("Inès", "F"),
    ("Arthur", "M"),
    ("Jade Élise", "F"),
    ("Gabriel", "M"),
    ("Louise", "F"),
    ("Théo Marc", "M"),
    ("Émma", "F"),
    ("Nathan", "M"),
    ("Zoé Claire", "F"),
    ("Raphaël", "M"),
]


@dataclass(frozen=True)
class Person:
    nom: str
    prenoms: str
    sexe: str
    born: date
    mother: str


def persons(count: int) -> list[Person]:
    out = []
    for n, (nom, (prenoms, sexe)) in enumerate(itertools.product(SURNAMES, GIVEN)):
        if n == count:
            break
        born = date(1980, 1, 1) + timedelta(days=13 * n)
        out.append(Person(nom, prenoms, sexe, born, SURNAMES[(n * 7 + 3) % len(SURNAMES)]))
    if len(out) < count:
        raise SystemExit(f"at most {len(SURNAMES) * len(GIVEN)} distinct persons")
    return out


def acts_file(people: list[Person]) -> dict[str, Any]:
    numbers: dict[int, int] = {}
    acts = []
    for p in people:
        numbers[p.born.year] = numbers.get(p.born.year, 0) + 1
        acts.append(
            {
                "kind": "naissance",
                "year": p.born.year,
                "number": numbers[p.born.year],
                "drawn_at": f"{p.born.isoformat()} 18:00",
                "officer": "R. Lacoste",
                "content": {
                    "enfant": {"nom": p.nom, "prenoms": p.prenoms, "sexe": p.sexe},
                    "naissance": {
                        "date": p.born.isoformat(),
                        "heure": "10:30",
                        "lieu": "Mont-de-Marsan (Landes)",
                    },
                    "parents": [
                        {"nom": p.nom, "prenoms": "Jean", "sexe": "M"},
                        {"nom": p.mother, "prenoms": "Sophie", "sexe": "F"},
                    ],
                },
            }
        )
    return {"source": "bench/comedec.py", "acts": acts}


def request_body(p: Person, n: int) -> bytes:
    return json.dumps(
        {
            "commune": MDM,
            "act_kind": "naissance",
            "delivery": "copie_integrale",
            "capacity": "notaire",
            "person": {
                "nom": p.nom.upper(),
                "prenoms": p.prenoms,
                "sexe": p.sexe,
                "date": p.born.isoformat(),
                "lieu": "Mont-de-Marsan",
            },
            "parents": [
                {"nom": p.nom, "prenoms": "Jean"},
                {"nom": p.mother, "prenoms": "Sophie"},
            ],
            "purpose": "Succession",
            "reference": f"BENCH-{n}",
        },
        ensure_ascii=False,
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([SECUREX, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"securex {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# --- the load generator -------------------------------------------------------------


@dataclass
class Result:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # non-2xx answers and connection failures
    samples: list[bytes] = field(default_factory=list)  # a few non-2xx bodies

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Load:
    """--clients threads, each with its own connection, sending `make(client, n)`'s
    requests back to back until the deadline."""

    def __init__(self, port: int, clients: int) -> None:
        self.port, self.clients = port, clients

    def run(self, make: Any, seconds: float) -> Result:
        result = Result(seconds)
        lock = threading.Lock()
        start = threading.Barrier(self.clients + 1)
        deadline = [0.0]

        def client(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            mine: list[float] = []
            statuses: dict[int, int] = {}
            errors = 0
            samples: list[bytes] = []
            start.wait()
            for n in itertools.count():
                if time.perf_counter() >= deadline[0]:
                    break
                method, path, body, headers = make(c, n)
                t0 = time.perf_counter()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    status = response.status
                    if response.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    errors += 1
                    continue
                t1 = time.perf_counter()
                if t1 > deadline[0]:
                    break  # finished after the deadline: not counted in the rate
                mine.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if not 200 <= status < 300:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(data[:300])
            conn.close()
            with lock:
                result.latencies.extend(mine)
                for k, v in statuses.items():
                    result.statuses[k] = result.statuses.get(k, 0) + v
                result.errors += errors
                result.samples.extend(samples)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(self.clients)]
        for t in threads:
            t.start()
        deadline[0] = time.perf_counter() + seconds
        start.wait()
        for t in threads:
            t.join()
        return result


def get_json(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    # A status read waits for SQLite's write lock, which an issuing job holds throughout.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = get_json(port, "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("securex serve did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.2)


# --- phases -------------------------------------------------------------------------


def phase_c(port: int, token: str, people: list[Person], count: int) -> list[float]:
    """Auto-issue: one request at a time, POST then GET every 20 ms until issued. A random
    pause (0 to 1 s) before each POST spreads the submissions over the worker threads'
    1-second poll: back to back, every request would arrive just after both threads
    went back to sleep (both wait for the lock the previous job held), the worst case."""
    times = []
    pause = random.Random(40192)  # noqa: S311 (pauses, not secrets)
    for i in range(count + 1):
        time.sleep(pause.uniform(0, 1))
        p = people[(7 * i + 1) % len(people)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        conn.request(
            "POST",
            "/api/v1/act-requests",
            body=request_body(p, 10**6 + i),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"issue-{i}",
            },
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        if response.status != 201 or answer["status"] != "received":
            raise SystemExit(f"auto-issue request not received: {response.status} {answer}")
        while True:
            status, view = get_json(port, f"/api/v1/act-requests/{answer['id']}", token)
            if status == 200 and view["status"] == "issued":
                break
            if status != 200 or view["status"] not in ("received",):
                raise SystemExit(f"auto-issue went wrong: {status} {view}")
            if time.perf_counter() - t0 > 120:
                raise SystemExit("auto-issue: not issued within 120 s")
            time.sleep(0.02)
        times.append(time.perf_counter() - t0)
        if i == count:
            status, _ = get_json(port, f"/api/v1/act-requests/{answer['id']}/document", token)
            if status != 200:
                raise SystemExit(f"the issued copy cannot be downloaded: {status}")
    return times


def profile(instance: Path, token: str, people: list[Person], count: int) -> None:
    """Submissions through the Flask test client: timed alone, then under cProfile."""
    os.environ["SECUREX_INSTANCE"] = str(instance)
    os.environ["SECUREX_DATABASE_URL"] = ""
    from securex.app import create_app

    app = create_app({"TESTING": True})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def submit(i: int) -> None:
        body = request_body(people[i % len(people)], 2 * 10**6 + i)
        response = client.post(
            "/api/v1/act-requests",
            data=body,
            headers={**headers, "Idempotency-Key": f"profile-{i}"},
        )
        assert response.status_code == 201, response.data

    from sqlalchemy import event

    engine = app.extensions["securex"].engine
    held: list[float] = []
    opened = [0.0]
    statements = [0]

    def began(_conn: Any) -> None:
        opened[0] = time.perf_counter()

    def ended(_conn: Any) -> None:
        held.append(time.perf_counter() - opened[0])

    seen: list[str] = []

    def executed(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements[0] += 1
        seen.append(" ".join(sql.split())[:110])

    event.listen(engine, "begin", began)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)
    event.listen(engine, "before_cursor_execute", executed)
    for i in range(20):  # warm-up
        submit(i)
    times = []
    held.clear()
    statements[0] = 0
    for i in range(count):
        t0 = time.perf_counter()
        submit(100 + i)
        times.append(time.perf_counter() - t0)
    per_request = len(held) / count
    lock = sum(held) / count
    sql = statements[0] / count
    seen.clear()
    submit(99)
    event.remove(engine, "before_cursor_execute", executed)
    t0 = time.perf_counter()
    for _ in range(20):
        client.get("/healthz")
    healthz = (time.perf_counter() - t0) / 20
    print(
        f"\nin process, Flask test client, one at a time: submission median "
        f"{statistics.median(times) * 1000:.1f} ms, mean {statistics.mean(times) * 1000:.1f} ms "
        f"({1 / statistics.mean(times):.0f}/s on one core); /healthz {healthz * 1000:.2f} ms"
    )
    print(
        f"per submission: {per_request:.1f} transaction(s) (BEGIN IMMEDIATE: SQLite's write "
        f"lock) held {lock * 1000:.2f} ms in all, {sql:.1f} SQL statements; at most "
        f"{1 / lock:.0f} submissions/s whatever the number of processes"
    )
    print("the statements of one submission:", *seen, sep="\n  ")
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(count):
        submit(100 + count + i)
    profiler.disable()
    print(f"cProfile, {count} submissions (cProfile about doubles the times):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(25)
    stats.print_stats("/securex/", 30)  # securex's own functions, by cumulative time
    stats.sort_stats("tottime").print_stats(15)
    app.extensions["securex"].engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--acts", type=int, default=500)
    parser.add_argument("--issues", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="securex-bench-comedec-"))
    instance = work / "instance"
    port = free_port()
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(instance),
        "SECUREX_DATABASE_URL": "",
        "SECUREX_BASE_URL": f"http://127.0.0.1:{port}",
    }
    proc: subprocess.Popen[bytes] | None = None
    log = work / "serve.log"
    try:
        t0 = time.perf_counter()
        run(env, "init")
        run(env, "tenant", "add", MDM, "Mont-de-Marsan")
        out = run(
            env, "client", "add", "--name", "Étude bench", "--category", "notaire", "--commune", MDM
        )
        token = out.strip().splitlines()[-1]
        people = persons(args.acts)
        (work / "acts.json").write_text(json.dumps(acts_file(people), ensure_ascii=False))
        run(env, "registry", "import", str(work / "acts.json"), "--commune", MDM)
        run(env, "pki", "init")
        setup = time.perf_counter() - t0

        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    *(SECUREX, "serve", "--host", "127.0.0.1", "--port", str(port)),
                    *("--workers", str(args.workers)),
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        wait_ready(port, proc, log)
        load = Load(port, args.clients)

        def healthz(c: int, n: int) -> tuple[str, str, None, dict[str, str]]:
            return "GET", "/healthz", None, {}

        serial = itertools.count()
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def submission(c: int, n: int) -> tuple[str, str, bytes, dict[str, str]]:
            i = next(serial)
            headers = {**auth, "Idempotency-Key": f"bench-{i}"}
            return "POST", "/api/v1/act-requests", request_body(people[i % len(people)], i), headers

        load.run(healthz, 2)
        a = load.run(healthz, args.seconds)
        load.run(submission, 2)
        b = load.run(submission, args.seconds)

        db = sqlite3.connect(instance / "securex.db", timeout=30)
        try:
            rows = db.execute(
                "SELECT status, candidates, COUNT(*) FROM act_requests "
                "WHERE idempotency_key LIKE 'bench-%' GROUP BY status, candidates"
            ).fetchall()
            checkpoints = db.execute("SELECT COUNT(*) FROM audit_checkpoints").fetchone()[0]
            events = db.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0]
            db.execute(
                "INSERT OR REPLACE INTO commune_settings (tenant_id, auto_issue, "
                "not_found_at_once, due_days, service_name, service_contact) "
                "SELECT id, 1, 0, 3, 'Service de l''état civil', '' FROM tenants "
                "WHERE insee = ?",
                (MDM,),
            )
            db.commit()
        finally:
            db.close()
        issue_times = phase_c(port, token, people, args.issues)
        first_issue, issue_times = issue_times[0], issue_times[1:]
        db = sqlite3.connect(instance / "securex.db", timeout=30)
        try:
            jobs = [
                [datetime.fromisoformat(v) for v in row]
                for row in db.execute(
                    "SELECT created_at, started_at, finished_at FROM jobs "
                    "WHERE kind = 'comedec.issue' AND status = 'done' ORDER BY id"
                )
            ][1:]
        finally:
            db.close()
        waited = [(began - made).total_seconds() for made, began, _ in jobs]
        ran = [(ended - began).total_seconds() for _, began, ended in jobs]
        stop(proc)

        print(
            f"securex COMEDEC submissions: securex serve --workers {args.workers} (gunicorn), "
            f"SQLite, {os.cpu_count()} cores shared with the load generator; "
            f"{args.clients} clients, {args.seconds:g} s per phase; {args.acts} imported acts "
            f"(setup {setup:.1f} s)"
        )
        for name, r in (("A  GET /healthz (ceiling)", a), ("B  POST /api/v1/act-requests", b)):
            print(
                f"  {name:<30} {r.rate:8.1f} req/s   p50 {r.pct(0.5) * 1000:6.1f} ms   "
                f"p99 {r.pct(0.99) * 1000:6.1f} ms   max {max(r.latencies) * 1000:6.1f} ms   "
                f"errors {r.errors}  statuses {dict(sorted(r.statuses.items()))}"
            )
            for sample in r.samples[:3]:
                print(f"      e.g. {sample!r}")
        stored = {f"{s}/candidates={c}": n for s, c, n in rows}
        print(
            f"  B stored, warm-up included (status/candidates): {stored}; answered 201 in "
            f"the window: {b.statuses.get(201, 0)}; over 100 ms: "
            f"{sum(t > 0.1 for t in b.latencies)}; audit events {events}, "
            f"checkpoints {checkpoints}"
        )
        print(f"  ratio submissions / healthz: {b.rate / a.rate:.3f}")
        print(
            f"  C  auto-issue, POST to issued ({len(issue_times)} one at a time): median "
            f"{statistics.median(issue_times):.3f} s, max {max(issue_times):.3f} s "
            f"(first request, with the seal's certificate: {first_issue:.3f} s)"
        )
        print(
            f"     of which (jobs table): waiting for a worker thread's poll median "
            f"{statistics.median(waited):.3f} s, max {max(waited):.3f} s; the job itself "
            f"median {statistics.median(ran):.3f} s, max {max(ran):.3f} s"
        )
        checks = [
            ("submissions/s >= 200", f"{b.rate:.1f}/s", b.rate >= 200),
            ("submission p99 < 100 ms", f"{b.pct(0.99) * 1000:.1f} ms", b.pct(0.99) < 0.1),
            ("auto-issue < 2 s (max)", f"{max(issue_times):.3f} s", max(issue_times) < 2),
        ]
        print("  target                      measured      result")
        for label, value, ok in checks:
            print(f"  {label:<27} {value:<13} {'PASS' if ok else 'FAIL'}")
        if args.profile:
            db = sqlite3.connect(instance / "securex.db", timeout=30)
            with db:  # back to phase B's path: matched and queued, no job
                db.execute("UPDATE commune_settings SET auto_issue = 0")
            db.close()
            profile(instance, token, people, args.profile)
    except BaseException:
        if log.exists():  # the server's side of the failure, before the folder goes
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("securex serve's log, last lines:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
