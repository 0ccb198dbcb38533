"""Confidential exchange over HTTP: 1 GiB uploaded (tus) and downloaded (the recipient's
link) through securex's server on loopback, measured against the same server moving
the same bytes with no encryption, in the same run.

    .venv/bin/python bench/exchange.py [--size 1GiB] [--repeat 3] [--workers 2]
                                       [--patch-size 64MiB] [--tmpfs]

Builds a throwaway instance with the real commands (SQLite, the `file` master key):
`securex init --demo`, then `securex token add` for the demo's Mont-de-Marsan agent (a
personal `sxp_` token). Starts an SMTP server in this process (aiosmtpd,
`tests/smtp.py`) and points `[mail]` at it. Starts the server, bench/_exchange_app.py:
securex's application run by gunicorn with `securex serve`'s own options and runner
(--workers threaded workers, `[jobs] in_process`), on a free loopback port, plus two
bench-only routes that move bytes with no encryption (`PUT` and `GET
/bench/plain/<name>`: 256 KiB reads of the body, a plain file on the same disk as the
vault's blobs, fsynced at the end; read back 1 MiB at a time). Waits for /readyz.

The client is this script (`http.client`, one connection per request). The data: 16
MiB of `os.urandom`, made once and cycled up to --size, sent 1 MiB at a time with a
Content-Length; its SHA-256 is computed once beforehand. The client shares the
machine's cores with the server. A warm-up (a plain upload and download, not
counted) comes first; then each round measures, in this order:
1. plain upload: `PUT /bench/plain/<name>` of --size bytes, from the first byte sent
   to the answer (201, after the server's fsync);
2. plain download: `GET /bench/plain/<name>`, from the request to the last byte, the
   body read and hashed here; then the file is removed;
3. encrypted upload: `POST /api/v1/uploads` (tus creation) then one `PATCH` of the
   whole size (or PATCHes of --patch-size), each byte sealed into the vault as it
   arrives, the offset committed every 32 MiB (`uploads.CHECKPOINT_BYTES`, with the
   part's fsync) and at the end (the part promoted to a blob): from the POST to the
   last answer (204);
   not timed: `POST /api/v1/sends` to one external recipient, then the pli's
   preparation by a server's worker thread (it decrypts the whole file for its
   SHA-256, which must match, then e-mails the link): its duration is printed;
   then, as the recipient, `POST /plis/d/<token>/code` (the code is read from the
   SMTP server) and `POST …/ouvrir` with it (a cookie);
4. encrypted download: `GET /plis/d/<token>/fichiers/<id>` with that cookie, from the
   request to the last byte, the body read and hashed here (the vault decrypts and
   checks each 1 MiB segment); then the pli is revoked (its blob destroyed).
Both downloads are checked against the SHA-256 of what was sent. Each upload thus
writes its file right after the previous file of the same size was removed, the
encrypted one as the plain one: on a virtual machine like the development one,
writing pages the guest has not used lately costs much more CPU than reusing freed
ones, and keeping the plain file while the encrypted one is written would charge
that to the encryption (docs/performance.md). Rates are MiB/s (2**20 bytes per
second); the ratios are encrypted / plain of the same round.

Memory: a thread reads VmRSS from /proc/<pid>/status of the gunicorn master and of each
worker (its children) every 50 ms during each transfer and during the preparation;
before each, the peak counter (VmHWM) of every process is reset (/proc/<pid>/clear_refs,
"5"), and read after it, so a peak between two samples is not missed. The resident
size at idle (after /readyz, before the first transfer) is printed too. The target
(< 150 MiB) applies to each process: the largest worker and the master.

Prints each round, then the medians over --repeat rounds (the ratio is the median of
the rounds' ratios), the largest peaks, and the issue's targets with PASS/FAIL:
encrypted upload and download each at least 0.5 of the plain one, every server
process under 150 MiB. The instance goes in the temporary folder (normally a disk,
printed with its filesystem), or in /dev/shm with --tmpfs. The server is stopped and
the folder removed at the end, on errors too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _server import children, peak_rss, reset_peak, rss, stop  # noqa: E402 (bench/ is this script's folder on sys.path)

from tests.smtp import SmtpServer  # noqa: E402 (needs the repository on sys.path)

SECUREX = str(Path(sys.executable).with_name("securex"))
MIB = 2**20
BLOCK = 16 * MIB
TARGET_RATIO = 0.5
TARGET_RSS_MIB = 150
TIMEOUT = 600  # seconds a socket operation may take
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": MIB, "mib": MIB, "g": 2**30, "gib": 2**30}


def size_arg(text: str) -> int:
    """`1GiB`, `64MiB`, `512k`, `1073741824`: binary units."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 64MiB)")
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return value


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# --- the data -----------------------------------------------------------------------


class Source:
    """--size bytes: one block of random data, cycled."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = memoryview(os.urandom(BLOCK))

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """Bytes start..end (excluded), at most 1 MiB at a time, without copies."""
        end = self.size if end is None else end
        position = start
        while position < end:
            at = position % BLOCK
            take = min(MIB - at % MIB, end - position, BLOCK - at)
            yield self.block[at : at + take]
            position += take

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        return digest.hexdigest()


# --- HTTP ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes = b""
    received: int = 0  # with a digest: the body's size, read and hashed, not kept
    sha256: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    upload: tuple[Source, int, int] | None = None,
    digest: bool = False,
) -> Answer:
    """One request on its own connection. `upload` (source, start, end) streams those
    bytes as the body; `digest` reads the answer's body into a reused 1 MiB buffer and
    hashes it instead of keeping it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        sent_headers = dict(headers or {})
        if upload is not None:
            sent_headers["Content-Length"] = str(upload[2] - upload[1])
        elif body is not None:
            sent_headers["Content-Length"] = str(len(body))
        for name, value in sent_headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            if upload is not None:
                source, start, end = upload
                for piece in source.pieces(start, end):
                    conn.send(piece)
            elif body is not None:
                conn.send(body)
        except OSError as exc:  # the server stopped reading: its answer says why
            try:
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                raise SystemExit(
                    f"{method} {path}: the connection broke while sending ({exc}): see the "
                    "server's log below."
                ) from None
            raise SystemExit(
                f"{method} {path}: {response.status} {response.read()[:500]!r}"
            ) from None
        response = conn.getresponse()
        if not digest:
            return Answer(response.status, response.headers, response.read())
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(MIB))
        received = 0
        while n := response.readinto(buffer):
            hasher.update(buffer[:n])
            received += n
        return Answer(response.status, response.headers, b"", received, hasher.hexdigest())
    finally:
        conn.close()


def expect(answer: Answer, status: int, what: str) -> Answer:
    if answer.status != status:
        raise SystemExit(f"{what}: {answer.status} instead of {status}: {answer.body[:500]!r}")
    return answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([SECUREX, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"securex {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(port, "GET", "/readyz").status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the server did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.2)


# --- memory -------------------------------------------------------------------------


def _status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None when the process is gone."""
    now, peak = rss(pid), peak_rss(pid)
    return None if now is None or peak is None else (now, peak)


@dataclass
class Peak:
    """The largest resident sizes of one phase: sampled every 50 ms, and the kernel's
    high-water mark (VmHWM, reset at the start of the phase)."""

    master: int = 0
    worker: int = 0
    master_sampled: int = 0
    worker_sampled: int = 0

    def show(self) -> str:
        return (
            f"peak RSS worker {mib(self.worker)} (sampled {mib(self.worker_sampled)}), "
            f"master {mib(self.master)}"
        )


class Memory:
    """The server's processes: the gunicorn master and its workers."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.workers = children(master)

    def idle(self) -> dict[int, dict[str, int]]:
        """VmRSS and its parts (RssAnon: the process's own memory; RssFile: mapped
        files, mostly shared libraries, whose pages the processes share) in bytes."""
        out = {}
        for pid in [self.master, *self.workers]:
            text = Path(f"/proc/{pid}/status").read_text()
            out[pid] = {
                k: int(v) * 1024
                for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M)
            }
        return out

    def watch(self) -> _Watch:
        current = children(self.master)
        if current != self.workers:
            print(f"  note: the server's workers changed: {self.workers} -> {current}")
            self.workers = current
        return _Watch(self.master, self.workers)


class _Watch:
    def __init__(self, master: int, workers: list[int]) -> None:
        self.master, self.workers = master, workers
        self.peak = Peak()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _record(self, pid: int, rss: int, hwm: int | None) -> None:
        p = self.peak
        if pid == self.master:
            p.master_sampled = max(p.master_sampled, rss)
            p.master = max(p.master, rss, hwm or 0)
        else:
            p.worker_sampled = max(p.worker_sampled, rss)
            p.worker = max(p.worker, rss, hwm or 0)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for pid in (self.master, *self.workers):
                if (s := _status(pid)) is not None:
                    self._record(pid, s[0], None)

    def __enter__(self) -> Peak:
        for pid in (self.master, *self.workers):
            try:
                reset_peak(pid)
            except OSError as exc:
                raise SystemExit(f"cannot reset the peak RSS of {pid}: {exc}") from None
        self._thread.start()
        return self.peak

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        for pid in (self.master, *self.workers):
            if (s := _status(pid)) is not None:
                self._record(pid, s[0], s[1])


# --- one round ----------------------------------------------------------------------


@dataclass
class Round:
    seconds: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, Peak] = field(default_factory=dict)
    prepare: float = 0.0

    def rate(self, phase: str, size: int) -> float:
        return size / MIB / self.seconds[phase]

    def ratio(self, kind: str, size: int) -> float:
        return self.rate(f"encrypted {kind}", size) / self.rate(f"plain {kind}", size)


PHASES = ("plain upload", "plain download", "encrypted upload", "encrypted download")


class Bench:
    def __init__(
        self,
        port: int,
        token: str,
        source: Source,
        expected: str,
        memory: Memory,
        smtp: SmtpServer,
        instance: Path,
        patch_size: int,
    ) -> None:
        self.port, self.source, self.expected = port, source, expected
        self.memory, self.smtp, self.instance = memory, smtp, instance
        self.patch_size = patch_size or source.size
        self.auth = {"Authorization": f"Bearer {token}"}

    def _timed(self, result: Round, phase: str, work: Any) -> Any:
        with self.memory.watch() as peak:
            t0 = time.perf_counter()
            out = work()
            result.seconds[phase] = time.perf_counter() - t0
        result.peaks[phase] = peak
        rate = result.rate(phase, self.source.size)
        print(
            f"  {phase:<19} {mib(self.source.size)} in {result.seconds[phase]:6.2f} s "
            f"{rate:8.1f} MiB/s   {peak.show()}",
            flush=True,
        )
        return out

    def _check(self, answer: Answer, what: str) -> None:
        if answer.received != self.source.size or answer.sha256 != self.expected:
            raise SystemExit(
                f"{what}: {answer.received} bytes, SHA-256 {answer.sha256}; sent "
                f"{self.source.size} bytes, SHA-256 {self.expected}"
            )

    def _mail(self, to: str, pattern: str, after: int) -> re.Match[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for message in self.smtp.messages[after:]:
                if to in message.recipients and (found := re.search(pattern, message.text, re.M)):
                    return found
            time.sleep(0.05)
        raise SystemExit(f"no e-mail to {to} matching {pattern!r} within 60 s")

    def round(self, n: int) -> Round:
        result = Round()
        self.plain(f"round-{n}", result)
        self.encrypted(n, result)
        size = self.source.size
        print(
            f"  ratios encrypted / plain: upload {result.ratio('upload', size):.2f}, "
            f"download {result.ratio('download', size):.2f}",
            flush=True,
        )
        return result

    def plain(self, name: str, result: Round) -> None:
        """Upload, download, then remove the file: the next upload, encrypted, then
        writes its 1 GiB of new pages right after 1 GiB was freed, as this one does
        after the previous round's blob was destroyed (see `warm_up`)."""
        size = self.source.size

        def upload() -> None:
            answer = call(
                self.port,
                "PUT",
                f"/bench/plain/{name}",
                {"Content-Type": "application/octet-stream"},
                upload=(self.source, 0, size),
            )
            expect(answer, 201, "plain upload")
            if answer.json()["bytes"] != size:
                raise SystemExit(f"plain upload: the server kept {answer.json()}")

        def download() -> None:
            answer = call(self.port, "GET", f"/bench/plain/{name}", digest=True)
            expect(answer, 200, "plain download")
            self._check(answer, "plain download")

        self._timed(result, "plain upload", upload)
        self._timed(result, "plain download", download)
        (self.instance / "bench-plain" / name).unlink()

    def warm_up(self) -> None:
        """A plain upload and download before the first round, not counted: the workers'
        first requests, and 1 GiB written and freed before the first upload, as before
        every later one. (On this kind of virtual machine, writing pages the guest has
        not used lately costs much more CPU than reusing freed ones.)"""
        print("warm-up, not counted", flush=True)
        self.plain("warm-up", Round())

    def encrypted(self, n: int, result: Round) -> None:
        """Upload (tus), the pli and its preparation (not timed), the recipient's code
        (not timed), the download; then the pli is revoked (its blob destroyed)."""
        size, name = self.source.size, f"round-{n}"
        recipient = f"destinataire-{n}@example.org"

        def upload() -> str:
            filename = base64.b64encode(f"{name}.bin".encode()).decode()
            tus = {**self.auth, "Tus-Resumable": "1.0.0"}
            created = call(
                self.port,
                "POST",
                "/api/v1/uploads",
                {**tus, "Upload-Length": str(size), "Upload-Metadata": f"filename {filename}"},
            )
            location = expect(created, 201, "tus creation").headers["Location"]
            for start in range(0, size, self.patch_size):
                end = min(size, start + self.patch_size)
                patched = call(
                    self.port,
                    "PATCH",
                    location,
                    {
                        **tus,
                        "Upload-Offset": str(start),
                        "Content-Type": "application/offset+octet-stream",
                    },
                    upload=(self.source, start, end),
                )
                expect(patched, 204, f"tus PATCH at {start}")
                if patched.headers["Upload-Offset"] != str(end):
                    raise SystemExit(f"tus PATCH: offset {patched.headers['Upload-Offset']}")
            return str(location).rsplit("/", 1)[1]

        upload_id = self._timed(result, "encrypted upload", upload)

        # The pli: created, then prepared by a worker thread of the server.
        mails = len(self.smtp.messages)
        body = json.dumps(
            {"recipients": [recipient], "subject": f"Bench {n}", "files": [{"upload": upload_id}]}
        ).encode()
        json_headers = {**self.auth, "Content-Type": "application/json"}
        with self.memory.watch() as peak:
            t0 = time.perf_counter()
            sent = expect(
                call(self.port, "POST", "/api/v1/sends", json_headers, body=body), 201, "send"
            ).json()
            send_id, file_id = sent["id"], sent["files"][0]["id"]
            deadline = time.monotonic() + 600
            while True:
                view = expect(
                    call(self.port, "GET", f"/api/v1/sends/{send_id}", self.auth), 200, "send"
                ).json()
                if view["status"] == "sent" and view["recipients"][0]["notified_at"]:
                    break
                if view["status"] not in ("scanning", "preparing", "sent"):
                    raise SystemExit(f"the pli went wrong: {view}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"the pli was not sent within 600 s: {view}")
                time.sleep(0.1)
            result.prepare = time.perf_counter() - t0
        result.peaks["preparation"] = peak
        if view["files"][0]["sha256"] != self.expected:
            raise SystemExit(f"the server's SHA-256 differs: {view['files'][0]}")
        token = self._mail(recipient, r"/plis/d/([A-Za-z0-9_-]+)", mails).group(1)
        print(
            f"  (pli prepared by a worker thread in {result.prepare:.2f} s, not timed: "
            f"decrypted for its SHA-256, which matches; {peak.show()})",
            flush=True,
        )

        # The recipient asks for a code, types it and gets the cookie.
        mails = len(self.smtp.messages)
        expect(call(self.port, "POST", f"/plis/d/{token}/code"), 200, "code")
        code = self._mail(recipient, r"^\s+(\d{6})\s*$", mails).group(1)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        opened = call(
            self.port, "POST", f"/plis/d/{token}/ouvrir", form, body=f"code={code}".encode()
        )
        expect(opened, 303, "code check")
        jar: SimpleCookie = SimpleCookie()
        for header in opened.headers.get_all("Set-Cookie") or []:
            jar.load(header)
        cookie = "; ".join(f"{k}={v.value}" for k, v in jar.items())

        def download() -> None:
            answer = call(
                self.port,
                "GET",
                f"/plis/d/{token}/fichiers/{file_id}",
                {"Cookie": cookie},
                digest=True,
            )
            expect(answer, 200, "encrypted download")
            self._check(answer, "encrypted download")

        self._timed(result, "encrypted download", download)
        expect(call(self.port, "DELETE", f"/api/v1/sends/{send_id}", self.auth), 204, "revocation")


# --- the report ---------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The filesystem holding `path`, from /proc/mounts: "ext4 on /dev/vda"."""
    best = ("", "?", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, kind = line.split()[:3]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, device, kind)
    return f"{best[2]} on {best[1]}"


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def summary(rounds: list[Round], size: int, idle: dict[int, dict[str, int]], master: int) -> None:
    n = len(rounds)
    print(f"\nsummary: medians of {n} round{'s' if n > 1 else ''}, {mib(size)} per transfer")
    print(f"  {'':<10} {'plain':>14} {'encrypted':>14} {'ratio':>7}   target   result")
    checks = []
    for kind in ("upload", "download"):
        plain = statistics.median(r.rate(f"plain {kind}", size) for r in rounds)
        enc = statistics.median(r.rate(f"encrypted {kind}", size) for r in rounds)
        ratio = statistics.median(r.ratio(kind, size) for r in rounds)
        ok = ratio >= TARGET_RATIO
        checks.append(ok)
        print(
            f"  {kind:<10} {plain:8.1f} MiB/s {enc:8.1f} MiB/s {ratio:7.2f}   "
            f">= {TARGET_RATIO}   {'PASS' if ok else 'FAIL'}"
        )
    prepare = statistics.median(r.prepare for r in rounds)
    print(f"  preparation of the pli (checksum job, not in the ratios): {prepare:.2f} s")
    print("  RSS at idle, before the first transfer:")
    for pid, sizes in idle.items():
        print(
            f"    {'master' if pid == master else f'worker {pid}':<13} {mib(sizes['VmRSS']):>10} "
            f"(RssAnon {mib(sizes['RssAnon'])}, RssFile {mib(sizes['RssFile'])})"
        )
    print("  peak RSS by phase (largest over the rounds; VmHWM, sampled every 50 ms):")
    for phase in (*PHASES, "preparation"):
        worker = max(r.peaks[phase].worker for r in rounds)
        sampled = max(r.peaks[phase].worker_sampled for r in rounds)
        master_peak = max(r.peaks[phase].master for r in rounds)
        print(
            f"    {phase:<19} largest worker {mib(worker):>10} (sampled {mib(sampled)}), "
            f"master {mib(master_peak)}"
        )
    limit = TARGET_RSS_MIB * MIB
    worker = max(p.worker for r in rounds for p in r.peaks.values())
    master_peak = max(p.master for r in rounds for p in r.peaks.values())
    for label, value in (("largest worker", worker), ("master", master_peak)):
        ok = value < limit
        checks.append(ok)
        print(
            f"  peak RSS, {label:<14} {mib(value):>10}   < {TARGET_RSS_MIB} MiB   "
            f"{'PASS' if ok else 'FAIL'}"
        )
    print(f"  {'all targets met' if all(checks) else 'NOT all targets met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=2**30, help="per transfer (1GiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--patch-size", type=size_arg, default=0, help="tus PATCH size (default: one PATCH)"
    )
    parser.add_argument("--tmpfs", action="store_true", help="the instance in /dev/shm")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    source = Source(args.size)
    expected = source.sha256()
    work = Path(
        tempfile.mkdtemp(prefix="securex-bench-exchange-", dir="/dev/shm" if args.tmpfs else None)
    )
    instance = work / "instance"
    port = free_port()
    smtp: SmtpServer | None = None
    proc: subprocess.Popen[bytes] | None = None
    log = work / "serve.log"
    try:
        smtp = SmtpServer().start()
        env = {
            **os.environ,
            "SECUREX_INSTANCE": str(instance),
            "SECUREX_DATABASE_URL": "",
            "SECUREX_BASE_URL": f"http://127.0.0.1:{port}",
            "SECUREX_MAIL_HOST": smtp.host,
            "SECUREX_MAIL_PORT": str(smtp.port),
            "SECUREX_MAIL_STARTTLS": "false",
        }
        t0 = time.perf_counter()
        run(env, "init", "--demo")
        creds = json.loads((instance / "demo-credentials.json").read_text())
        agents = [u for u in creds["users"] if u["role"] == "agent" and u["tenant"] == "40192"]
        out = run(env, "token", "add", agents[0]["email"], "--name", "bench")
        token = next(word for word in out.split() if word.startswith("sxp_"))
        setup = time.perf_counter() - t0

        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    *(sys.executable, str(ROOT / "bench" / "_exchange_app.py")),
                    *("--port", str(port), "--workers", str(args.workers)),
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        wait_ready(port, proc, log)
        time.sleep(1)
        memory = Memory(proc.pid)
        if len(memory.workers) != args.workers:
            raise SystemExit(f"expected {args.workers} workers, found {memory.workers}")
        idle = memory.idle()
        print(
            f"securex exchange over HTTP: gunicorn with `securex serve`'s options, "
            f"{args.workers} threaded workers, SQLite; {os.cpu_count()} cores ({cpu()}) shared "
            f"with the client; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"  {mib(args.size)} per transfer, {args.repeat} round(s), tus "
            + (f"PATCHes of {mib(args.patch_size)}" if args.patch_size else "in one PATCH")
            + f"; instance in {work} ({filesystem(work)}); setup {setup:.1f} s"
        )
        bench = Bench(port, token, source, expected, memory, smtp, instance, args.patch_size)
        bench.warm_up()
        rounds = []
        for n in range(1, args.repeat + 1):
            print(f"round {n}/{args.repeat}", flush=True)
            rounds.append(bench.round(n))
        stop(proc)
        summary(rounds, args.size, idle, memory.master)
    except BaseException:
        if log.exists():  # the server's side of the failure, before the folder goes
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("the server's log, last lines:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop(proc)
        if smtp is not None:
            smtp.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
