"""Audit log performance: appending, verifying and proving, against the targets of the
Provable audit trail issue, measured in the same run.

    .venv/bin/python bench/audit.py [--events 1000000] [--repeat 3] [--quick] [--dir DIR]

1. Appending through the service layer: `securex.audit.record` in a SQLite database
   migrated with `securex.db.upgrade` (WAL, as `make_engine` sets it up), (a) one event
   per transaction, committed each (the web app's pattern) and (b) 100 events per
   transaction; events per second, median of --repeat rounds. Target: >= 2,000/s. The
   one-per-transaction rate is measured again on the big log at the end (does appending
   slow down as the log grows?).
2. `securex audit verify` over --events events. The log is built in an instance made by
   `securex init --demo`, *through `record`* (transactions of
   `audit.checkpoint_every_events` events, then `checkpoint_if_due` as the web app does
   after a request, so the log carries its signed, RFC 3161 timestamped checkpoints);
   the build time is printed. Then, --repeat times each: `verify_chain(session)` as the
   command calls it, `verify_checkpoints` (signatures, consistency, timestamps), and the
   whole command `securex audit verify` as a new process (with its peak RSS).
   Target: under 15 s.
3. Inclusion proofs at that size, over --proofs random leaves: `inclusion_proof_at`,
   `root_at`, `verify_inclusion` (each timed on its own), the bundle the route serves
   (`event_proof`), and `GET /api/v1/audit/events/<id>/proof` through Flask's test
   client (bearer token, the requester's own events). Median and p95. Target: < 5 ms.
Peak RSS of this process is printed too.

Files go to --dir (the system's temporary folder by default, on disk: the appending
figures then include SQLite's real write path; pass --dir /dev/shm for a tmpfs).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECUREX = str(Path(sys.executable).with_name("securex"))
MIB = 1024 * 1024

APPEND_TARGET = 2000.0  # events per second, at least
VERIFY_TARGET = 15.0  # seconds, under
PROOF_TARGET = 5.0  # milliseconds, under

# Runs the command with its output in a file, so that the peak RSS read through wait4
# is the command's own and not inherited from this (large) process at fork time.
WRAPPER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=[
    (os.POSIX_SPAWN_OPEN, 1, sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    (os.POSIX_SPAWN_DUP2, 1, 2)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def timed_command(args: list[str], env: dict[str, str], out: Path) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and output of one run of `args`."""
    res = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    text = out.read_text(encoding="utf-8", errors="replace")
    if res[2] != "0":
        raise SystemExit(f"{' '.join(args)} failed with exit code {res[2]}:\n{text}")
    return float(res[0]), int(res[1]), text


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- events ------------------------------------------------------------------------


def event_stream(client_actor: str, start: int = 0) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A plausible mix of events: downloads, signatures, logins, key use; one in four
    caused by the API client whose proofs the HTTP figure fetches."""
    from securex.audit import EventType

    kinds: list[tuple[Any, str, Callable[[int], dict[str, Any]]]] = [
        (
            EventType.VAULT_FILE_DECRYPTED,
            "vault:object:{n}",
            lambda n: {"bytes": 180_000 + n % 70_000, "purpose": "download"},
        ),
        (
            EventType.DOCUMENT_SIGNED,
            "act:{n}",
            lambda n: {"level": "B-LTA", "pages": 1 + n % 7, "officer": n % 40},
        ),
        (EventType.LOGIN_SUCCEEDED, "user:{u}", lambda n: {"method": "totp"}),
        (
            EventType.VAULT_FILE_ENCRYPTED,
            "vault:object:{n}",
            lambda n: {"bytes": 90_000 + n % 50_000, "key_version": 1},
        ),
    ]
    n = start
    while True:
        action, subject, details = kinds[n % len(kinds)]
        actor = client_actor if n % 4 == 0 else f"user:{n % 97 + 1}"
        yield (
            action,
            {
                "actor": actor,
                "subject": subject.format(n=n, u=n % 97 + 1),
                "tenant": "40192" if n % 3 else "40088",
                "details": details(n),
            },
        )
        n += 1


def append(factory: Any, count: int, per_tx: int, client_actor: str = "client:1") -> float:
    """Events per second appending `count` events through `record`, `per_tx` per
    committed transaction."""
    from securex.audit import record
    from securex.db import transaction, utcnow

    stream = event_stream(client_actor)
    start = time.perf_counter()
    done = 0
    while done < count:
        n = min(per_tx, count - done)
        with transaction(factory) as db:
            for _ in range(n):
                action, kw = next(stream)
                record(db, action, now=utcnow(), **kw)
        done += n
    return count / (time.perf_counter() - start)


# --- helpers for figures -------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def rate_line(label: str, rate: float, target: float | None = APPEND_TARGET) -> None:
    tail = ""
    if target is not None:
        tail = f"  {rate / target:5.2f}x target (>= {target:,.0f}/s: {verdict(rate >= target)})"
    print(f"  {label:<58} {rate:9,.0f} events/s{tail}")


def seconds_line(label: str, seconds: float, target: float | None = VERIFY_TARGET) -> None:
    tail = ""
    if target is not None:
        tail = (
            f"  {seconds / target:5.2f}x target (< {target:g} s: {verdict(seconds < target)})"
        )
    print(f"  {label:<58} {seconds:9.2f} s{tail}")


def ms_line(label: str, samples: list[float], target: float | None = PROOF_TARGET) -> None:
    med, p95 = statistics.median(samples) * 1e3, pct(samples, 0.95) * 1e3
    tail = ""
    if target is not None:
        tail = f"  {p95 / target:5.2f}x target (p95 < {target:g} ms: {verdict(p95 < target)})"
    print(f"  {label:<58} median {med:7.3f} ms  p95 {p95:7.3f} ms{tail}")


def size_of(db_path: Path) -> int:
    return sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))


# --- the run -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="size of the big log")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each timed step")
    parser.add_argument(
        "--quick", action="store_true", help="20,000 events, smaller rounds (about a minute)"
    )
    parser.add_argument("--append-single", type=int, default=2000, help="events per round (a)")
    parser.add_argument("--append-batched", type=int, default=10_000, help="events per round (b)")
    parser.add_argument("--proofs", type=int, default=1000, help="random leaves proved")
    parser.add_argument("--http", type=int, default=300, help="proofs fetched over HTTP")
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    if args.quick:
        args.events = min(args.events, 20_000)
        args.append_single, args.append_batched = 500, 5000
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="securex-bench-audit-", dir=args.dir))
    db_path = work / "securex.db"
    url = f"sqlite:///{db_path}"
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(work / "instance"),
        "SECUREX_DATABASE_URL": url,
    }
    os.environ.update({k: env[k] for k in ("SECUREX_INSTANCE", "SECUREX_DATABASE_URL")})
    try:
        run(args, rng, work, db_path, url, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(
    args: argparse.Namespace,
    rng: random.Random,
    work: Path,
    db_path: Path,
    url: str,
    env: dict[str, str],
) -> None:
    from sqlalchemy import func, select

    from securex.accounts import service as accounts
    from securex.audit import verify_chain
    from securex.audit.log import canonical_encoding
    from securex.audit.merkle import leaf_hash, verify_inclusion
    from securex.audit.models import AuditCheckpoint, AuditEvent, AuditHead
    from securex.audit.proofs import (
        check_proof,
        checkpoint_covering,
        create_checkpoint,
        event_proof,
        verify_checkpoints,
    )
    from securex.audit.tree import inclusion_proof_at, root_at
    from securex.config import load_settings
    from securex.db import make_engine, make_sessionmaker, transaction, upgrade, utcnow
    from securex.seal import checkpoint_if_due, sealer, tsa_roots
    from securex.signing.setup import load_demo_pki
    from securex.vault import master_key_source, open_vault

    print(
        f"securex audit benchmark: {args.events:,} events, median of {args.repeat} "
        f"round(s), SQLite (WAL) in {args.dir}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}"
    )

    # 1. Appending, on a fresh migrated database ------------------------------------
    fresh = f"sqlite:///{work / 'append.db'}"
    upgrade(fresh)
    fresh_engine = make_engine(fresh)
    fresh_factory = make_sessionmaker(fresh_engine)
    append(fresh_factory, 200, 1)  # warm-up: imports, statement caches
    single = [append(fresh_factory, args.append_single, 1) for _ in range(args.repeat)]
    batched = [append(fresh_factory, args.append_batched, 100) for _ in range(args.repeat)]
    fresh_engine.dispose()
    print(
        f"\n1. Appending through securex.audit.record (fresh database; {args.append_single:,} "
        f"and {args.append_batched:,} events per round)"
    )
    rate_line("(a) one event per transaction, commit each (web app)", statistics.median(single))
    rate_line("(b) 100 events per transaction", statistics.median(batched))
    met = [
        name
        for name, rate in (("(a)", single), ("(b)", batched))
        if statistics.median(rate) >= APPEND_TARGET
    ]
    print(f"  modes meeting the target: {', '.join(met) if met else 'none'}")

    # 2. Building the big log through record, then verifying it ---------------------
    subprocess.run([SECUREX, "init", "--demo"], env=env, check=True, capture_output=True)
    settings = load_settings()
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    keyring = open_vault(master_key_source(settings, os.environ), settings.instance).keyring
    pki = load_demo_pki(settings.instance)
    with transaction(factory) as db:
        client, token = accounts.create_client(
            db,
            accounts.Actor("bench"),
            name="Étude notariale (bench)",
            category="notaire",
            communes=["40192", "40088"],
            now=utcnow(),
        )
        client_actor = f"client:{client.id}"
    with factory() as db:
        head = db.get(AuditHead, 1)
        start_size = head.size if head else 0
    every = int(settings["audit.checkpoint_every_events"])
    todo = max(0, args.events - start_size)
    print(
        f"\n2. securex audit verify over {args.events:,} events (built through record, "
        f"{every:,} per transaction, checkpoint_if_due after each)",
        flush=True,
    )
    from securex.audit import record

    stream = event_stream(client_actor)
    recording = checkpointing = 0.0
    done = 0
    build_start = time.perf_counter()
    next_report = build_start + 60
    while done < todo:
        n = min(every, todo - done)
        t0 = time.perf_counter()
        with transaction(factory) as db:
            for _ in range(n):
                action, kw = next(stream)
                record(db, action, now=utcnow(), **kw)
        t1 = time.perf_counter()
        with transaction(factory) as db:
            checkpoint_if_due(settings, db, keyring, pki, utcnow())
        t2 = time.perf_counter()
        recording += t1 - t0
        checkpointing += t2 - t1
        done += n
        if t2 >= next_report:
            next_report = t2 + 60
            print(
                f"    ... {start_size + done:,} events, {done / recording:,.0f} events/s "
                f"through record, {t2 - build_start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    with transaction(factory) as db:  # a last checkpoint covering the whole log
        create_checkpoint(db, sealer(settings, db, keyring, pki, utcnow()), now=utcnow())
    build_total = time.perf_counter() - build_start
    with factory() as db:
        size = db.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0
        checkpoints = db.scalar(select(func.count()).select_from(AuditCheckpoint)) or 0
        sizes = set(db.scalars(select(AuditCheckpoint.size)))
        verifier = sealer(settings, db, keyring, pki, utcnow()).verifier
        db.rollback()
    roots_ca = tsa_roots(settings, pki)
    print(
        f"  built {todo:,} events through record in {build_total:.1f} s: "
        f"{todo / recording if recording else 0:,.0f} events/s in record + commit "
        f"({recording:.1f} s), {checkpointing:.1f} s checkpointing"
    )
    print(
        f"  log: {size:,} events, {checkpoints:,} signed and timestamped checkpoints, "
        f"database {size_of(db_path) / MIB:,.0f} MiB"
    )

    chain_times, cp_times = [], []
    for _ in range(args.repeat):
        with factory() as db:  # no transaction begun, as the command does
            t0 = time.perf_counter()
            report = verify_chain(db, at_sizes=sizes)
            t1 = time.perf_counter()
            problems = verify_checkpoints(db, verifier, report.roots, roots_ca)
            t2 = time.perf_counter()
        if not report.ok or problems or report.size != size:
            raise SystemExit(f"verification failed: {(report.problems + problems)[:5]}")
        chain_times.append(t1 - t0)
        cp_times.append(t2 - t1)
    cli_times, cli_peaks = [], []
    for i in range(args.repeat):
        t, peak, text = timed_command([SECUREX, "audit", "verify"], env, work / f"verify{i}.txt")
        if f"{size} événements" not in text:
            raise SystemExit(f"unexpected output of securex audit verify: {text!r}")
        cli_times.append(t)
        cli_peaks.append(peak)
    seconds_line("verify_chain(session), in process", statistics.median(chain_times))
    seconds_line(
        f"verify_checkpoints ({checkpoints:,}, with timestamps), in process",
        statistics.median(cp_times),
        None,
    )
    seconds_line("securex audit verify, whole command (new process)", statistics.median(cli_times))
    print(f"  {'peak RSS of securex audit verify':<58} {max(cli_peaks) / MIB:9.1f} MiB")
    print(f"  {'peak RSS of this process so far':<58} {peak_rss() / MIB:9.1f} MiB")

    # 3. Inclusion proofs at that size -------------------------------------------------
    indexes = [rng.randrange(size) for _ in range(args.proofs)]
    proof_t, root_t, verify_t, bundle_t = [], [], [], []
    with factory() as db:
        cp = checkpoint_covering(db, size)
        assert cp is not None and cp.size == size
        root = root_at(db, size)
        if root != cp.root:
            raise SystemExit("root_at does not match the last checkpoint")
        for index in indexes:
            event = db.get(AuditEvent, index + 1)
            assert event is not None
            leaf = leaf_hash(canonical_encoding(event))
            t0 = time.perf_counter()
            proof = inclusion_proof_at(db, index, size)
            t1 = time.perf_counter()
            r = root_at(db, size)
            t2 = time.perf_counter()
            verify_inclusion(index, size, leaf, proof, r)
            t3 = time.perf_counter()
            event_proof(db, index + 1, cp, verifier)
            t4 = time.perf_counter()
            proof_t.append(t1 - t0)
            root_t.append(t2 - t1)
            verify_t.append(t3 - t2)
            bundle_t.append(t4 - t3)
            db.expunge_all()  # each proof reads the event afresh, as a request would
        db.rollback()
    served = [p + v for p, v in zip(proof_t, verify_t, strict=True)]
    print(f"\n3. Inclusion proofs at {size:,} events ({args.proofs:,} random leaves)")
    ms_line("inclusion_proof_at(session, index, size)", proof_t)
    ms_line("root_at(session, size)", root_t, None)
    ms_line("verify_inclusion against root_at's root", verify_t, None)
    ms_line("inclusion_proof_at + verify_inclusion", served)
    ms_line("event_proof (the bundle the route serves, no Flask)", bundle_t)

    if args.http:
        from securex.app import create_app

        app = create_app({"TESTING": True}, settings=settings)
        http = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        with factory() as db:
            first = db.scalar(
                select(func.min(AuditEvent.id)).where(AuditEvent.actor == client_actor)
            )
            db.rollback()
        # The bench's events from `first` on are the client's one in four.
        own = [first + 4 * k for k in range(max(1, (size - first) // 4))]
        ids = [rng.choice(own) for _ in range(args.http)]
        for event_id in ids[:5]:  # warm-up, and the bundles check offline
            response = http.get(f"/api/v1/audit/events/{event_id}/proof", headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"proof request failed: {response.status_code} {response.text}")
            check_proof(response.get_json(), verifier)
        http_t = []
        for event_id in ids:
            t0 = time.perf_counter()
            response = http.get(f"/api/v1/audit/events/{event_id}/proof", headers=headers)
            http_t.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise SystemExit(f"proof request failed: {response.status_code}")
        ms_line(f"GET /api/v1/audit/events/<id>/proof, test client ({len(ids)})", http_t)
        app.extensions["securex"].engine.dispose()

    # Appending again, on the big log --------------------------------------------------
    big = [append(factory, args.append_single, 1, client_actor) for _ in range(args.repeat)]
    print(f"\nAppending on the big log ({size:,} events)")
    rate_line("(a) one event per transaction, commit each", statistics.median(big))
    engine.dispose()
    print(f"\npeak RSS of this process (building, verifying, proving): {peak_rss() / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
