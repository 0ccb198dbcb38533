"""Audit log performance: appending, verifying and proving, against the targets of the
Provable audit trail issue, measured in the same run.

    .venv/bin/python bench/audit.py [--events 1000000] [--repeat 3] [--quick] [--dir DIR]

1. Appending through the service layer: `securex.audit.record` in a SQLite database
   migrated with `securex.db.upgrade` (WAL, as `make_engine` sets it up), (a) one event
   per transaction, committed each (the web app's pattern) and (b) 100 events per
   transaction; events per second, median of --repeat rounds. Target: >= 2,000/s. Mode
   (a) is measured again on the big log at the end (does appending slow down as the log
   grows?).
2. `securex audit verify` over --events events, in an instance made by
   `securex init --demo`. The log is built in transactions of
   `audit.checkpoint_every_events` events, each followed by `checkpoint_if_due` as the
   web app runs it after a request, so the log carries its signed, RFC 3161 timestamped
   checkpoints. The first --record-events events go through `record` (the build rate is
   printed); the rest, if any, through this file's bulk writer, which writes the very
   rows `record` writes (securex's own encoding, chain, leaf and tree functions) with
   plain executemany: the output says how many went each way, and verification below
   recomputes and checks every one of them. Then `verify_chain(session)` as the command
   calls it, per-checkpoint costs of what `verify_checkpoints` does (on a sample), and
   the whole command `securex audit verify` as a new process (with its peak RSS).
   Target: under 15 s.
3. Inclusion proofs at that size, on random leaves: `inclusion_proof_at`, `root_at`,
   `verify_inclusion` (each timed on its own), the bundle the route serves
   (`event_proof`), and `GET /api/v1/audit/events/<id>/proof` through Flask's test
   client (bearer token, the requester's own events). Median and p95. Target: < 5 ms.
   The query plan SQLite uses for the proof's node lookup is printed.
Peak RSS of this process is printed too. Every repeated step stops early (after at
least one round) once it has used --budget seconds, and says how many rounds it ran.

Files go to --dir (the system's temporary folder by default, on disk: the appending
figures then include SQLite's real write path; pass --dir /dev/shm for a tmpfs).
"""

from __future__ import annotations

import argparse
import json
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


def rounds(step: Callable[[], float], repeat: int, budget: float) -> list[float]:
    """Up to `repeat` results of `step`, fewer if they take more than `budget` seconds
    (always at least one)."""
    results: list[float] = []
    start = time.perf_counter()
    while len(results) < repeat and (not results or time.perf_counter() - start < budget):
        results.append(step())
    return results


# --- events ------------------------------------------------------------------------


def event_stream(client_actor: str) -> Iterator[tuple[Any, dict[str, Any]]]:
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
    n = 0
    while True:
        action, subject, details = kinds[n % len(kinds)]
        yield (
            action,
            {
                "actor": client_actor if n % 4 == 0 else f"user:{n % 97 + 1}",
                "subject": subject.format(n=n, u=n % 97 + 1),
                "tenant": "40192" if n % 3 else "40088",
                "details": details(n),
            },
        )
        n += 1


def append(factory: Any, count: int, per_tx: int, stream: Iterator[Any]) -> float:
    """Events per second appending `count` events through `record`, `per_tx` per
    committed transaction."""
    from securex.audit import record
    from securex.db import transaction, utcnow

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


def bulk_append(factory: Any, count: int, stream: Iterator[Any]) -> None:
    """Append `count` events in one transaction, writing exactly the rows `record` would
    (event, chain value, level-0 leaf and completed subtrees, head with its frontier),
    computed with securex's own functions, but with one executemany per table instead of
    ORM statements per event. Not the service layer: only to build a big log fast."""
    from sqlalchemy import insert, select, update

    from securex.audit.log import chain_value, encode
    from securex.audit.merkle import leaf_hash
    from securex.audit.models import AuditEvent, AuditHead, AuditNode
    from securex.audit.tree import dump_frontier, parse_frontier, push
    from securex.db import transaction, utcnow

    heads = AuditHead.__table__
    with transaction(factory) as db:
        size, prev, blob = db.execute(
            select(heads.c.size, heads.c.last_hash, heads.c.frontier).where(heads.c.id == 1)
        ).one()
        frontier = parse_frontier(size, blob or b"")
        events, nodes = [], []
        for _ in range(count):
            action, kw = next(stream)
            now = utcnow()
            details = json.dumps(
                kw["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            event_id = size + 1
            data = encode(
                event_id, now, kw["tenant"], kw["actor"], str(action), kw["subject"], details
            )
            entry = chain_value(prev, data)
            events.append(
                {
                    "id": event_id,
                    "recorded_at": now,
                    "tenant": kw["tenant"],
                    "actor": kw["actor"],
                    "action": str(action),
                    "subject": kw["subject"],
                    "details": details,
                    "prev_hash": prev,
                    "entry_hash": entry,
                }
            )
            nodes.extend(
                {"level": lv, "idx": ix, "hash": h}
                for lv, ix, h in push(frontier, size, leaf_hash(data))
            )
            size, prev = event_id, entry
        conn = db.connection()
        conn.execute(insert(AuditEvent.__table__), events)
        conn.execute(insert(AuditNode.__table__), nodes)
        conn.execute(
            update(heads)
            .where(heads.c.id == 1)
            .values(size=size, last_hash=prev, frontier=dump_frontier(frontier))
        )


# --- printing ------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def rate_line(label: str, rates: list[float], target: float | None = APPEND_TARGET) -> None:
    rate = statistics.median(rates)
    tail = ""
    if target is not None:
        tail = f"  {rate / target:5.2f}x target (>= {target:,.0f}/s: {verdict(rate >= target)})"
    print(f"  {label:<60} {rate:8,.0f} events/s{tail}  [{len(rates)} round(s)]")


def seconds_line(label: str, times: list[float], target: float | None = VERIFY_TARGET) -> None:
    seconds = statistics.median(times)
    tail = ""
    if target is not None:
        ok = verdict(seconds < target)
        tail = f"  {seconds / target:5.2f}x target (< {target:g} s: {ok})"
    print(f"  {label:<60} {seconds:8.2f} s{tail}  [{len(times)} round(s)]")


def ms_line(label: str, samples: list[float], target: float | None = PROOF_TARGET) -> None:
    med, p95 = statistics.median(samples) * 1e3, pct(samples, 0.95) * 1e3
    tail = ""
    if target is not None:
        tail = f"  {p95 / target:6.2f}x target (p95 < {target:g} ms: {verdict(p95 < target)})"
    print(f"  {label:<60} median {med:8.3f} ms  p95 {p95:8.3f} ms{tail}")


def size_of(db_path: Path) -> int:
    return sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))


# --- the run -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="size of the big log")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each timed step")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20,000 events, all through record, smaller rounds (about a minute)",
    )
    parser.add_argument(
        "--record-events",
        type=int,
        default=100_000,
        help="events of the big log appended through record; the rest through the bulk "
        "writer (-1: all through record, about 12 minutes per million here)",
    )
    parser.add_argument("--append-single", type=int, default=2000, help="events per round (a)")
    parser.add_argument("--append-batched", type=int, default=10_000, help="events per round (b)")
    parser.add_argument("--proofs", type=int, default=1000, help="random leaves proved")
    parser.add_argument("--http", type=int, default=300, help="proofs fetched over HTTP")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds a repeated step may take"
    )
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    if args.quick:
        args.events = min(args.events, 20_000)
        args.append_single, args.append_batched = 500, 5000
    if args.record_events < 0 or args.record_events > args.events:
        args.record_events = args.events

    work = Path(tempfile.mkdtemp(prefix="securex-bench-audit-", dir=args.dir))
    url = f"sqlite:///{work / 'securex.db'}"
    env = {**os.environ, "SECUREX_INSTANCE": str(work / "instance"), "SECUREX_DATABASE_URL": url}
    os.environ.update({k: env[k] for k in ("SECUREX_INSTANCE", "SECUREX_DATABASE_URL")})
    try:
        run(args, work, url, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, url: str, env: dict[str, str]) -> None:
    from sqlalchemy import event, func, select

    from securex.accounts import service as accounts
    from securex.audit import verify_chain
    from securex.audit.checkpoint import open_note
    from securex.audit.log import canonical_encoding
    from securex.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
    from securex.audit.models import AuditCheckpoint, AuditEvent, AuditHead
    from securex.audit.proofs import (
        _b64,
        check_proof,
        check_timestamp,
        checkpoint_covering,
        create_checkpoint,
        event_proof,
    )
    from securex.audit.tree import consistency_proof_at, inclusion_proof_at, root_at
    from securex.config import load_settings
    from securex.db import make_engine, make_sessionmaker, transaction, upgrade, utcnow
    from securex.seal import checkpoint_if_due, sealer, tsa_roots
    from securex.signing.setup import load_demo_pki
    from securex.vault import master_key_source, open_vault

    rng = random.Random(args.seed)  # noqa: S311 -- which leaves to prove, not a secret
    print(
        f"securex audit benchmark: {args.events:,} events, median of up to {args.repeat} "
        f"round(s) ({args.budget:g} s budget per step), SQLite {sqlite_version()} (WAL) in "
        f"{args.dir}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )

    # 1. Appending, on a fresh migrated database ------------------------------------
    fresh = f"sqlite:///{work / 'append.db'}"
    upgrade(fresh)
    fresh_engine = make_engine(fresh)
    fresh_factory = make_sessionmaker(fresh_engine)
    stream = event_stream("client:1")
    append(fresh_factory, 200, 1, stream)  # warm-up: imports, statement caches
    single = rounds(
        lambda: append(fresh_factory, args.append_single, 1, stream), args.repeat, args.budget
    )
    batched = rounds(
        lambda: append(fresh_factory, args.append_batched, 100, stream), args.repeat, args.budget
    )
    fresh_engine.dispose()
    print(
        f"\n1. Appending through securex.audit.record (fresh database; {args.append_single:,} "
        f"and {args.append_batched:,} events per round)"
    )
    rate_line("(a) one event per transaction, commit each (web app)", single)
    rate_line("(b) 100 events per transaction", batched)
    met = [
        name
        for name, rates in (("(a)", single), ("(b)", batched))
        if statistics.median(rates) >= APPEND_TARGET
    ]
    print(f"  modes meeting the target: {', '.join(met) if met else 'none'}")

    # 2. Building the big log, then verifying it ------------------------------------
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
        start_size = db.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0
        db.rollback()
    every = int(settings["audit.checkpoint_every_events"])
    todo = max(0, args.events - start_size)
    through_record = max(0, min(todo, args.record_events - start_size))
    print(
        f"\n2. securex audit verify over {args.events:,} events (instance from securex init "
        f"--demo; {every:,} events per transaction, then checkpoint_if_due)",
        flush=True,
    )
    stream = event_stream(client_actor)
    spent = {"record": 0.0, "bulk": 0.0, "checkpoints": 0.0}
    done = 0
    build_start = time.perf_counter()
    next_report = build_start + 60
    while done < todo:
        n = min(every, todo - done)
        t0 = time.perf_counter()
        if done < through_record:
            n = min(n, through_record - done)
            append(factory, n, n, stream)
            way = "record"
        else:
            bulk_append(factory, n, stream)
            way = "bulk"
        t1 = time.perf_counter()
        with transaction(factory) as db:
            checkpoint_if_due(settings, db, keyring, pki, utcnow())
        t2 = time.perf_counter()
        spent[way] += t1 - t0
        spent["checkpoints"] += t2 - t1
        done += n
        if t2 >= next_report:
            next_report = t2 + 60
            print(
                f"    ... {start_size + done:,} events, {t2 - build_start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    with transaction(factory) as db:  # a last checkpoint covering the whole log
        create_checkpoint(db, sealer(settings, db, keyring, pki, utcnow()), now=utcnow())
    build_total = time.perf_counter() - build_start
    with factory() as db:
        size = db.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0
        cps = list(db.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)))
        verifier = sealer(settings, db, keyring, pki, utcnow()).verifier
        db.expunge_all()  # keep the checkpoints loaded once the session closes
    sizes = {cp.size for cp in cps}
    bulk = todo - through_record
    roots_ca = tsa_roots(settings, pki)
    print(f"  built {todo:,} events in {build_total:.1f} s:")
    if through_record:
        print(
            f"    {start_size + 1:,}..{start_size + through_record:,} through record: "
            f"{through_record / spent['record']:,.0f} events/s ({spent['record']:.1f} s)"
            + (
                f"; all {todo:,} through record would take about "
                f"{todo / (through_record / spent['record']):,.0f} s"
                if bulk
                else ""
            )
        )
    if bulk:
        print(
            f"    {start_size + through_record + 1:,}..{size:,} NOT through record: the bench's "
            f"bulk writer, same rows ({bulk / spent['bulk']:,.0f} events/s, "
            f"{spent['bulk']:.1f} s)"
        )
    print(f"    checkpoint_if_due after each transaction: {spent['checkpoints']:.1f} s")
    print(
        f"  log: {size:,} events, {len(cps):,} signed and timestamped checkpoints, "
        f"database {size_of(work / 'securex.db') / MIB:,.0f} MiB"
    )

    def chain_round() -> float:
        with factory() as db:  # no transaction begun, as the command does
            t0 = time.perf_counter()
            report = verify_chain(db, at_sizes=sizes)
            t = time.perf_counter() - t0
            db.rollback()
        if not report.ok or report.size != size:
            raise SystemExit(f"verify_chain failed: {report.problems[:5]}")
        if any(report.roots[cp.size] != cp.root for cp in cps):
            raise SystemExit("a checkpoint's root differs from the recomputed one")
        return t

    seconds_line("verify_chain(session), in process", rounds(chain_round, args.repeat, args.budget))

    # What verify_checkpoints does per checkpoint, on a sample of them.
    sample = sorted(rng.sample(range(1, len(cps)), min(20, len(cps) - 1))) if len(cps) > 1 else []
    note_t, cons_t, stamp_t = [], [], []
    with factory() as db:
        for i in sample:
            old, new = cps[i - 1], cps[i]
            t0 = time.perf_counter()
            cp = open_note(new.note, verifier)
            t1 = time.perf_counter()
            proof = consistency_proof_at(db, old.size, new.size)
            verify_consistency(old.size, new.size, old.root, new.root, proof)
            t2 = time.perf_counter()
            check_timestamp(_b64(new.timestamp_token), cp, roots_ca)
            t3 = time.perf_counter()
            note_t.append(t1 - t0)
            cons_t.append(t2 - t1)
            stamp_t.append(t3 - t2)
        db.rollback()
    if sample:
        print(f"  verify_checkpoints, per checkpoint (sample of {len(sample)}; x{len(cps):,}):")
        for label, samples in (
            ("signed note (Ed25519)", note_t),
            ("consistency_proof_at + verify_consistency", cons_t),
            ("RFC 3161 timestamp (check_timestamp)", stamp_t),
        ):
            med = statistics.median(samples)
            print(
                f"    {label:<58} median {med * 1e3:8.3f} ms  x{len(cps):,} = "
                f"{med * len(cps):7.2f} s"
            )

    cli_peaks: list[int] = []

    def cli_round() -> float:
        n = len(cli_peaks)
        t, peak, text = timed_command([SECUREX, "audit", "verify"], env, work / f"verify{n}.txt")
        if f"{size} événements" not in text:
            raise SystemExit(f"unexpected output of securex audit verify: {text!r}")
        cli_peaks.append(peak)
        return t

    seconds_line(
        "securex audit verify, whole command (new process)",
        rounds(cli_round, args.repeat, args.budget),
    )
    print(f"  {'peak RSS of securex audit verify':<60} {max(cli_peaks) / MIB:8.1f} MiB")
    print(f"  {'peak RSS of this process so far':<60} {peak_rss() / MIB:8.1f} MiB", flush=True)

    # 3. Inclusion proofs at that size -------------------------------------------------
    proof_t, root_t, verify_t, bundle_t = [], [], [], []
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        statements.append((statement, params))

    with factory() as db:
        cp_last = checkpoint_covering(db, size)
        assert cp_last is not None and cp_last.size == size
        if root_at(db, size) != cp_last.root:
            raise SystemExit("root_at does not match the last checkpoint")
        event.listen(engine, "before_cursor_execute", capture)
        inclusion_proof_at(db, 0, size)
        event.remove(engine, "before_cursor_execute", capture)
        statement, params = statements[-1]
        plan = [
            row[-1]
            for row in db.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement,  # securex's own statement
                params,
            )
        ]
        start = time.perf_counter()
        while len(proof_t) < args.proofs and (
            not proof_t or time.perf_counter() - start < args.budget
        ):
            index = rng.randrange(size)
            found = db.get(AuditEvent, index + 1)
            assert found is not None
            leaf = leaf_hash(canonical_encoding(found))
            db.expunge_all()  # the bundle reads the event afresh, as a request would
            t0 = time.perf_counter()
            proof = inclusion_proof_at(db, index, size)
            t1 = time.perf_counter()
            root = root_at(db, size)
            t2 = time.perf_counter()
            verify_inclusion(index, size, leaf, proof, root)
            t3 = time.perf_counter()
            event_proof(db, index + 1, cp_last, verifier)
            t4 = time.perf_counter()
            proof_t.append(t1 - t0)
            root_t.append(t2 - t1)
            verify_t.append(t3 - t2)
            bundle_t.append(t4 - t3)
            db.expunge_all()
        db.rollback()
    served = [p + v for p, v in zip(proof_t, verify_t, strict=True)]
    print(
        f"\n3. Inclusion proofs at {size:,} events ({len(proof_t):,} random leaves of "
        f"{args.proofs:,} asked)"
    )
    print(f"  SQLite's plan for the proof's node lookup: {' / '.join(plan)}")
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
        assert first is not None
        # From `first` on, one event in four is the client's (the route answers 404
        # for any other, which stops the bench).
        own = range(first, size + 1, 4)
        for event_id in (own[0], own[-1], *rng.sample(own, 3)):  # warm-up; check offline
            response = http.get(f"/api/v1/audit/events/{event_id}/proof", headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"proof request failed: {response.status_code} {response.text}")
            check_proof(response.get_json(), verifier)
        http_t: list[float] = []
        start = time.perf_counter()
        while len(http_t) < args.http and (not http_t or time.perf_counter() - start < args.budget):
            event_id = rng.choice(own)
            t0 = time.perf_counter()
            response = http.get(f"/api/v1/audit/events/{event_id}/proof", headers=headers)
            http_t.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise SystemExit(f"proof request failed: {response.status_code}")
        ms_line(f"GET /api/v1/audit/events/<id>/proof, test client ({len(http_t)})", http_t)
        app.extensions["securex"].engine.dispose()

    # Appending again, on the big log --------------------------------------------------
    big = rounds(lambda: append(factory, args.append_single, 1, stream), args.repeat, args.budget)
    print(f"\nAppending through record on the big log ({size:,} events)")
    rate_line("(a) one event per transaction, commit each", big)
    engine.dispose()
    print(f"\npeak RSS of this process (building, verifying, proving): {peak_rss() / MIB:.1f} MiB")


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    main()
