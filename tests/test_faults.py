"""Issue 10, "Faults": the server SIGKILLed fifty times at random moments loses nothing
and does nothing twice; a full disk during an upload gives a clear error and leaves
nothing behind.

Fifty kills (fifteen in the PostgreSQL run, see KILLS): `securex init --demo`, then
`securex serve` (one gunicorn worker and its job thread, in their own process group,
killed as one and started again each time)
while a client thread uploads files with tus and sends them in plis, an officier's
batches of acts are signed, and a notary's requests are issued with the commune's
seal; each kill lands after a delay drawn (seeded, the seed in every failure) over
the span of that work. The client then finds out what was kept, as a real one would:
`Upload-Offset` by HEAD, the list of sends, the idempotency key sent again. After the
kills: every pli's file downloads byte for byte, every act is signed once with its
number and a valid signature, every request has one copy, no job is left, no upload
is complete without its object, and `securex audit verify` and `vault verify` pass.

Full disk: the blob folder of the instance (`<instance>/blobs`, where every vault
object and every resumable upload's part is written) is a small tmpfs that the test
mounts itself (the suite runs as root, here and in CI; a mount that fails fails the
test).
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pyotp
import pytest
from sqlalchemy import create_engine, func, select, text

from securex.accounts import service as accounts
from securex.db import transaction, utcnow
from securex.exchange.models import Pli, Upload
from securex.vault.models import VaultObject
from tests.conftest import ENGINE, csrf_token
from tests.test_backup import Cli
from tests.test_exchange_api import create_upload, patch
from tests.test_exchange_views import multipart
from tests.test_login import login
from tests.test_registry import naissance, presented
from tests.test_serve import SECUREX
from tests.test_two_nodes import BODY, Answer, Browser, Node, _free_port, serve

DISK = 4 * 2**20  # the tmpfs holding the blobs
TUS = {"Tus-Resumable": "1.0.0"}


# --- a full disk --------------------------------------------------------------------


def _free(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture
def small_disk(settings: Any) -> Iterator[Path]:
    """`<instance>/blobs` on a tmpfs of `DISK` bytes, unmounted at the end."""
    blobs = settings.instance / "blobs"
    blobs.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(blobs)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs on {blobs} (this test mounts one and needs root, as in "
            f"CI): {mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield blobs
    finally:
        if subprocess.run(["umount", str(blobs)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(blobs)], check=True)


@pytest.fixture
def sender(make: Any, factory: Any, clock: Any, app: Any) -> dict[str, Any]:
    make.tenant("40192", "Mont-de-Marsan")
    agent = make.user("agent")
    with transaction(factory) as db:
        user = db.get(accounts.User, agent.id)
        _, token = accounts.create_personal_token(
            db, accounts.Actor("test"), user, name="t", now=clock()
        )
    browser = app.test_client()
    login(browser, agent, clock)
    return {"agent": agent, "token": token, "browser": browser}


def _counts(factory: Any) -> tuple[int, int, int]:
    with factory() as db:
        return (
            db.scalar(select(func.count()).select_from(Upload)) or 0,
            db.scalar(select(func.count()).select_from(VaultObject)) or 0,
            db.scalar(select(func.count()).select_from(Pli)) or 0,
        )


def _full(answer: Any) -> str:
    """The problem+json of a full disk; its detail, which must say what to do."""
    assert answer.status_code == 507, answer.get_data(as_text=True)[:2000]
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.get_json()
    assert problem["type"].endswith("insufficient-storage")
    assert problem["title"] == "Espace de stockage insuffisant"
    assert "Réessayez plus tard" in problem["detail"] or "plus tard" in problem["detail"]
    return str(problem["detail"])


def test_a_full_disk_gives_a_clear_error_and_leaves_nothing(
    small_disk: Path, sender: dict[str, Any], client: Any, factory: Any
) -> None:
    """Each way a file reaches the blobs, given more than the disk holds: a clear
    French error, the disk as free as before, no row for what was refused; then the
    service goes on as if nothing had happened."""
    bearer = {"Authorization": f"Bearer {sender['token']}"}
    free, rows = _free(small_disk), _counts(factory)
    assert _files(small_disk) == []

    def nothing_left(what: str) -> None:
        assert _files(small_disk) == [], f"{what}: files left on the full disk"
        assert _free(small_disk) == free, f"{what}: space not given back"
        assert _counts(factory) == rows, f"{what}: rows (uploads, objects, plis) left"

    # Resumable upload (tus): created (its part holds the header), then a PATCH that
    # fills the disk. The upload is cancelled: resuming it would need that room again.
    too_big = os.urandom(free + 2**20)
    created = create_upload(client, sender["token"], len(too_big))
    assert created.status_code == 201, created.get_json()
    location = created.headers["Location"]
    answer = patch(client, sender["token"], location, 0, too_big)
    assert "téléversement est annulé" in _full(answer)
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    nothing_left("tus")
    assert client.head(location, headers={**bearer, **TUS}).status_code == 404

    # The page without JavaScript: the files in the form's body, the first one stored
    # before the second fills the disk.
    browser = sender["browser"]
    page = browser.get("/plis/nouveau").get_data(as_text=True)
    fields = {
        "csrf_token": csrf_token(page),
        "recipients": "lea.martin@example.org",
        "subject": "Pièces du dossier",
        "expires_in_days": "7",
        "download_limit": "5",
        "verification": "email",
    }
    files = [(os.urandom(2**20), "petit.pdf"), (too_big, "gros.pdf")]
    answer = multipart(browser, "/plis/nouveau", fields, files)
    page = html.unescape(answer.get_data(as_text=True))
    assert answer.status_code == 422, page[-2000:]
    assert "Espace de stockage insuffisant sur le serveur" in page
    assert "Le pli n'est pas envoyé" in page
    nothing_left("form")

    # The API with the file in its JSON body (at most `api.max_body_bytes`, 1 MiB): a
    # ballast leaves less room than the file takes.
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(free - 256 * 1024))
    try:
        answer = client.post(
            "/api/v1/sends",
            json={
                "recipients": ["lea.martin@example.org"],
                "subject": "Pièces du dossier",
                "files": [
                    {"name": "acte.pdf", "content": base64.b64encode(os.urandom(2**19)).decode()}
                ],
            },
            headers=bearer,
        )
        _full(answer)
    finally:
        ballast.unlink()
    nothing_left("JSON")

    # The service goes on: a file that fits is uploaded, sent, and reads back.
    content = os.urandom(300_000)
    location = create_upload(client, sender["token"], len(content)).headers["Location"]
    answer = patch(client, sender["token"], location, 0, content)
    assert answer.status_code == 204 and answer.headers["Upload-Offset"] == str(len(content))
    answer = client.post(
        "/api/v1/sends",
        json={
            "recipients": ["lea.martin@example.org"],
            "subject": "Pièces du dossier",
            "files": [{"upload": location.rsplit("/", 1)[1]}],
        },
        headers=bearer,
    )
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["files"][0]["size"] == len(content)
    assert _free(small_disk) < free


# --- fifty SIGKILLs -------------------------------------------------------------------

# Three kinds of work, each killed this many times; the seed is drawn anew at each run
# (so that runs explore other moments) and named in every failure. Fifty kills in the
# SQLite run; fifteen in the PostgreSQL run, which runs at the same time in `make test`,
# for that engine's own paths (row locks, SKIP LOCKED), within the 20-minute budget.
KILLS = (
    {"uploads": 17, "batch": 17, "issue": 16}
    if ENGINE == "sqlite"
    else {"uploads": 5, "batch": 5, "issue": 5}
)
SEED = int(os.environ.get("SECUREX_FAULTS_SEED") or secrets.randbits(32))
# Seconds from a restart to the next kill, drawn uniformly: the span of each kind's
# operations, so that kills land before a commit, while a PDF is signed, while bytes
# flow, while a job is taken back…
SPANS = {"uploads": (0.05, 1.2), "batch": (0.5, 5.0), "issue": (0.3, 4.0)}
MIB = 2**20
PIECE = 768 * 1024  # bytes per PATCH: several PATCHes per file
MDM, DAX = "40192", "40088"
ACTS_PER_BATCH = 10
RECIPIENT = "agent.dax@demo.securex.fr"  # a platform user: downloads once signed in
SERVER_ENV = {
    "SECUREX_CONFIG": "",
    "SECUREX_JOBS_STALE_SECONDS": "1",  # a dead worker's job is taken back at once
    "SECUREX_JOBS_POLL_SECONDS": "0.1",
    "SECUREX_EXCHANGE_UPLOAD_LEASE_SECONDS": "1",  # a dead PATCH's upload likewise
}


class Lost(Exception):
    """The server went away in the middle of a call (killed)."""


class Chaos:
    """`securex serve` (one gunicorn worker, its job thread) killed with its whole
    process group and started again; what the client thread was doing at each kill."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.log = env, folder / "serve.log"
        self.rng = random.Random(SEED)  # noqa: S311 - reproducible moments, not keys
        self.node = Node("faults", _free_port(), None)  # type: ignore[arg-type] (started below)
        self.up = threading.Event()
        self.stop = threading.Event()
        self.where = "idle"
        self.points: dict[str, list[str]] = {kind: [] for kind in KILLS}
        self.starts: list[float] = []
        self.generation = 0

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message} (seed {SEED}: SECUREX_FAULTS_SEED={SEED} runs it again)")

    def start(self) -> None:
        began = time.monotonic()
        self.node = serve("faults", self.env, self.node.port, self.log, "--workers", "1")
        self.starts.append(time.monotonic() - began)
        self.generation += 1
        self.up.set()

    def kill(self) -> None:
        self.up.clear()
        if self.node.proc.poll() is not None:
            return
        os.killpg(self.node.proc.pid, signal.SIGKILL)
        self.node.proc.wait()

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        browser: Browser | None = None,
        form: list[tuple[str, str]] | None = None,
    ) -> Answer:
        """One request (a browser's, with its cookies, when given); `Lost` if the
        server dies under it."""
        if not self.up.wait(90):
            self.fail("the server did not come back")
        try:
            if browser is not None:
                return browser.call(self.node, method, path, form)  # type: ignore[arg-type]
            return self.node.call(method, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise Lost from exc

    def sure(self, method: str, path: str, **kwargs: Any) -> Answer:
        """A request that may be sent again (reads): until the server answers (within
        two minutes: a server that keeps dying under one read is a failure)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                return self.call(method, path, **kwargs)
            except Lost:
                continue
        self.fail(f"{method} {path}: no answer within 120 s")

    def phase(self, kind: str, work: Callable[[], None]) -> None:
        """`work` in a thread, looping until told to stop; meanwhile KILLS[kind] kills,
        each followed by a restart."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"faults-{kind}", daemon=True)
        thread.start()
        for _ in range(KILLS[kind]):
            time.sleep(self.rng.uniform(*SPANS[kind]))
            if errors or not thread.is_alive():
                break
            self.points[kind].append(self.where)
            self.kill()
            self.start()
        self.stop.set()
        thread.join(timeout=120)
        self.stop.clear()
        if errors:
            raise errors[0]
        if thread.is_alive():
            self.fail(f"{kind}: the work did not end after the kills ({self.where})")
        if len(self.points[kind]) != KILLS[kind]:
            self.fail(f"{kind}: the work ended after {len(self.points[kind])} kills")


def _login(chaos: Chaos, user: dict[str, str], behind: int = 0) -> tuple[Browser, int]:
    """A session of `user`, its second factor the code of the TOTP step `behind` steps
    before the current one, read just before the code is sent (the password's check
    may take a step boundary with it): the session and that step."""
    browser = Browser("127.0.0.1")
    page = chaos.sure("GET", "/login", browser=browser)
    form = [("csrf_token", csrf_token(page.text)), ("email", user["email"])]
    answer = chaos.call(
        "POST", "/login", browser=browser, form=[*form, ("password", user["password"])]
    )
    assert answer.status == 302, answer.text
    page = chaos.sure("GET", "/login/totp", browser=browser)
    step = int(time.time()) // 30 - behind
    code = pyotp.TOTP(user["totp_secret"]).at(step * 30)
    form = [("csrf_token", csrf_token(page.text)), ("code", code)]
    answer = chaos.call("POST", "/login/totp", browser=browser, form=form)
    assert answer.status == 302, answer.text
    return browser, step


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def _make_acts(cli: Cli, creds: dict[str, Any], insee: str, count: int) -> list[int]:
    """Birth acts drafted by the commune's agent and presented for signature."""
    agent = next(u for u in creds["users"] if u["role"] == "agent" and u["tenant"] == insee)
    born = (utcnow() - timedelta(days=2)).date().isoformat()
    contents = [naissance(prenoms=f"Enfant {n}", day=born) for n in range(count)]
    return presented(cli.app(), agent["email"], insee, contents)


def test_sigkills_at_random_moments_lose_nothing_and_do_nothing_twice(
    tmp_path: Path, database_url: str
) -> None:
    began = time.monotonic()
    cli = Cli(tmp_path / "inst", database_url)
    cli("init", "--demo")
    creds = json.loads((cli.instance / "demo-credentials.json").read_text())

    def user(role: str, insee: str) -> dict[str, str]:
        return next(u for u in creds["users"] if u["role"] == role and u["tenant"] == insee)

    def token(email: str) -> str:
        out = cli("token", "add", email, "--name", "faults").output
        return next(word for word in out.split() if word.startswith("sxp_"))

    agent = {"Authorization": f"Bearer {token(user('agent', MDM)['email'])}"}
    readers = {
        insee: {"Authorization": f"Bearer {token(user('agent', insee)['email'])}"}
        for insee in (MDM, DAX)
    }
    notary = next(c["token"] for c in creds["api_clients"] if c["category"] == "notaire")
    notary_auth = {"Authorization": f"Bearer {notary}"}
    batches = [
        (insee, acts[i : i + ACTS_PER_BATCH])
        for insee in (MDM, DAX)
        for acts in [_make_acts(cli, creds, insee, 2 * ACTS_PER_BATCH)]
        for i in range(0, 2 * ACTS_PER_BATCH, ACTS_PER_BATCH)
    ]
    engine = create_engine(database_url)
    env = {**os.environ, **cli.env, **SERVER_ENV}
    chaos = Chaos(env, tmp_path)
    setup = time.monotonic() - began
    chaos.start()
    try:
        # Sessions first (no kill yet): each officier's login takes TOTP step now - 1,
        # so that two batches can be confirmed at once (now, now + 1) without waiting.
        sessions = {insee: _login(chaos, user("officer", insee), behind=1) for insee in (MDM, DAX)}
        officers = {insee: browser for insee, (browser, _) in sessions.items()}
        last_step = {insee: step for insee, (_, step) in sessions.items()}
        plis = _run_uploads(chaos, agent)
        signed = _run_batches(
            chaos,
            engine,
            creds,
            officers,
            last_step,
            batches,
            lambda: [
                (insee, _make_acts(cli, creds, insee, ACTS_PER_BATCH)) for insee in (MDM, DAX)
            ],
        )
        requests = _run_issues(chaos, notary_auth)
        work = time.monotonic() - began
        _check_plis(chaos, agent, plis, user("agent", DAX))
        _check_acts(chaos, engine, readers, notary_auth, signed)
        _check_requests(chaos, engine, notary_auth, requests)
        _check_the_rest(chaos, engine, env)
    finally:
        chaos.kill()
        engine.dispose()
    total = time.monotonic() - began
    print(
        f"\nfaults: seed {SEED}; setup {setup:.1f} s, work with kills {work - setup:.1f} s, "
        f"checks {total - work:.1f} s, total {total:.1f} s; {len(chaos.starts)} starts, "
        f"{sum(chaos.starts) / len(chaos.starts):.2f} s each on average"
    )
    for kind, points in chaos.points.items():
        print(f"  {kind}: {len(points)} kills: " + "; ".join(points))


# The client's side of each kind of work: it knows only what answers told it, and
# after a kill it finds out what was kept, as a real client would.


def _run_uploads(chaos: Chaos, agent: dict[str, str]) -> list[tuple[int, bytes]]:
    """Files of a few MiB uploaded in several PATCHes, each then sent in a pli to a
    platform user: the plis and their files' content."""
    sizes = random.Random(SEED + 1)  # noqa: S311 - reproducible sizes, not keys
    plis: list[tuple[int, bytes]] = []
    tus = {**agent, **TUS}

    def one(n: int) -> None:
        content = os.urandom(sizes.randint(2 * MIB, 3 * MIB))
        chaos.where = f"creating upload {n}"
        try:
            created = chaos.call(
                "POST", "/api/v1/uploads", None, {**tus, "Upload-Length": str(len(content))}
            )
        except Lost:
            return  # created or not, this one is left unfinished: the purge's business
        assert created.status == 201, created.text
        location = created.headers["Location"]
        offset, acknowledged, sent = 0, 0, 0
        while offset < len(content):
            end = min(offset + PIECE, len(content))
            chaos.where = f"upload {n}: PATCH {offset}-{end} of {len(content)}"
            headers = {
                **tus,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            sent = max(sent, end)
            try:
                answer = chaos.call("PATCH", location, content[offset:end], headers)
            except Lost:
                head = chaos.sure("HEAD", location, headers=tus)
                assert head.status == 200, head.status
                offset = int(head.headers["Upload-Offset"])
                if not acknowledged <= offset <= sent:
                    chaos.fail(
                        f"upload {n}: offset {offset} after a kill, but {acknowledged} "
                        f"acknowledged and {sent} sent"
                    )
                continue
            if answer.status == 423:  # the dead PATCH's lease, until it expires
                time.sleep(0.2)
                continue
            assert answer.status == 204, answer.text
            offset = acknowledged = int(answer.headers["Upload-Offset"])
            assert offset == end
        subject = f"Pièces {SEED} n° {n}"
        body = json.dumps(
            {
                "recipients": [RECIPIENT],
                "subject": subject,
                "files": [{"upload": location.rsplit("/", 1)[1]}],
            }
        ).encode()
        while True:
            chaos.where = f"upload {n}: sending the pli"
            try:
                answer = chaos.call(
                    "POST", "/api/v1/sends", body, {**agent, "Content-Type": "application/json"}
                )
            except Lost:  # committed or not? The list of sends says.
                sends = chaos.sure("GET", "/api/v1/sends", headers=agent).json()["sends"]
                found = [s["id"] for s in sends if s["subject"] == subject]
                if found:
                    plis.append((found[0], content))
                    return
                continue
            assert answer.status == 201, answer.text
            plis.append((answer.json()["id"], content))
            return

    def work() -> None:
        n = 0
        while not chaos.stop.is_set():
            one(n)
            n += 1

    chaos.phase("uploads", work)
    return plis


def _run_batches(
    chaos: Chaos,
    engine: Any,
    creds: dict[str, Any],
    officers: dict[str, Browser],
    last_step: dict[str, int],
    batches: list[tuple[str, list[int]]],
    more: Callable[[], list[tuple[str, list[int]]]],
) -> list[tuple[str, list[int]]]:
    """The officiers' batches confirmed one after the other until the last kill (`more`
    makes further ones if a fast machine signs them all before): those that were."""
    started: list[tuple[str, list[int]]] = []

    def code(insee: str) -> str:
        """A TOTP code later than any the officier gave (never a replay)."""
        while True:
            now = int(time.time()) // 30
            step = max(last_step[insee] + 1, now - 1)
            if step <= now + 1:
                last_step[insee] = step
                officer = next(
                    u for u in creds["users"] if u["role"] == "officer" and u["tenant"] == insee
                )
                return pyotp.TOTP(officer["totp_secret"]).at(step * 30)
            time.sleep(1)

    def job_of(first: int) -> Any:
        found = _rows(
            engine,
            "SELECT id FROM jobs WHERE kind = 'registry.batch_sign' AND payload LIKE :ref",
            ref=f'%"act:{first}"%',
        )
        return found[0][0] if found else None

    def one(insee: str, acts: list[int]) -> None:
        browser = officers[insee]
        form = [("action", "selection"), *(("items", f"act:{a}") for a in acts)]
        form.append(("code", code(insee)))
        while True:
            chaos.where = f"batch of {insee}: confirming"
            page = chaos.sure("GET", "/registre/signature", browser=browser)
            assert page.status == 200, page.text
            try:
                answer = chaos.call(
                    "POST",
                    "/registre/signature",
                    browser=browser,
                    form=[("csrf_token", csrf_token(page.text)), *form],
                )
            except Lost:
                job_id = job_of(acts[0])
                if job_id is None:
                    continue  # rolled back: the same code is still unused
                break
            assert answer.status == 302, answer.text
            job_id = int(answer.headers["Location"].rsplit("/", 1)[1])
            break
        while True:
            ((status, done, total),) = _rows(
                engine, "SELECT status, done, total FROM jobs WHERE id = :id", id=job_id
            )
            chaos.where = f"batch job {job_id}: {status}, {done}/{total} signed"
            if status == "done":
                return
            assert status in ("queued", "running"), status
            time.sleep(0.05)

    def work() -> None:
        waiting = list(batches)
        while not chaos.stop.is_set():
            if not waiting:
                waiting = more()
            insee, acts = waiting.pop(0)
            started.append((insee, acts))
            one(insee, acts)

    chaos.phase("batch", work)
    return started


def _run_issues(chaos: Chaos, notary: dict[str, str]) -> list[tuple[str, int]]:
    """Requests for a copy, each with its Idempotency-Key, to a commune that issues them
    automatically; a request acknowledged before a restart is sent again after it. The
    keys and the requests' ids."""
    requests: list[tuple[str, int]] = []
    headers = {**notary, "Content-Type": "application/json"}

    def post(key: str) -> Answer:
        body = json.dumps({**BODY, "reference": key}).encode()
        return chaos.call("POST", "/api/v1/act-requests", body, {**headers, "Idempotency-Key": key})

    def replay(key: str, request_id: int) -> None:
        while True:
            try:
                again = post(key)
            except Lost:
                continue
            assert again.status == 201, again.text
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["id"] == request_id
            return

    def one(n: int) -> None:
        key = f"FAUTES-{SEED}-{n}"
        chaos.where = f"request {n}: submitting"
        while True:
            try:
                answer = post(key)
            except Lost:
                continue  # the same key again: created once, whatever the kill cut
            assert answer.status == 201, answer.text
            break
        request_id = answer.json()["id"]
        requests.append((key, request_id))
        generation = chaos.generation
        while True:
            chaos.where = f"request {n}: waiting for its copy"
            status = chaos.sure("GET", f"/api/v1/act-requests/{request_id}", headers=notary).json()[
                "status"
            ]
            if status == "issued":
                break
            assert status == "received", status
            time.sleep(0.05)
        if chaos.generation != generation:  # restarted meanwhile: the key still holds
            chaos.where = f"request {n}: replaying its key"
            replay(key, request_id)

    def work() -> None:
        n = 0
        while not chaos.stop.is_set():
            one(n)
            n += 1

    chaos.phase("issue", work)
    for key, request_id in requests:  # every key, after the last restart
        replay(key, request_id)
    return requests


# --- after the kills: everything acknowledged is there, whole, once -------------------


def _check_plis(
    chaos: Chaos, agent: dict[str, str], plis: list[tuple[int, bytes]], reader: dict[str, str]
) -> None:
    """Each pli prepared (its job resumed), its file's checksum right, and the file
    downloaded by its recipient byte for byte."""
    assert plis, "no pli sent"
    browser, _ = _login(chaos, reader)
    for pli_id, content in plis:
        deadline = time.monotonic() + 60
        while True:
            view = chaos.sure("GET", f"/api/v1/sends/{pli_id}", headers=agent).json()
            if view["status"] == "sent" and view["files"][0]["sha256"]:
                break
            if time.monotonic() > deadline:
                chaos.fail(f"pli {pli_id} not prepared: {view}")
            time.sleep(0.1)
        (item,) = view["files"]
        assert (item["size"], item["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
        opened = chaos.sure("GET", f"/plis/recus/{pli_id}", browser=browser)
        assert opened.status == 302, opened.text
        landing = urlsplit(opened.headers["Location"]).path
        page = chaos.sure("GET", landing, browser=browser)
        answer = chaos.call(
            "POST",
            f"{landing}/compte",
            browser=browser,
            form=[("csrf_token", csrf_token(page.text))],
        )
        assert answer.status == 303, answer.text
        download = chaos.sure("GET", f"{landing}/fichiers/{item['id']}", browser=browser)
        assert download.status == 200, download.text[:500]
        if download.body != content:
            chaos.fail(f"pli {pli_id}: the file downloaded differs from the one uploaded")


def _check_acts(
    chaos: Chaos,
    engine: Any,
    readers: dict[str, dict[str, str]],
    validator: dict[str, str],
    batches: list[tuple[str, list[int]]],
) -> None:
    """Every act of every confirmed batch signed exactly once, the register's numbers
    without a gap, and each signed PDF valid."""
    for insee, acts in batches:
        for act_id in acts:
            ((status,),) = _rows(engine, "SELECT status FROM acts WHERE id = :id", id=act_id)
            assert status == "signed", (act_id, status)
            events = _rows(
                engine,
                "SELECT COUNT(*) FROM audit_events WHERE action = 'registry:act:signed' "
                "AND subject = :subject",
                subject=f"act:{act_id}",
            )
            assert events[0][0] == 1, f"act {act_id} signed {events[0][0]} times"
            pdf = chaos.sure("GET", f"/api/v1/acts/{act_id}/document", headers=readers[insee])
            assert pdf.status == 200, pdf.text[:500]
            report = chaos.sure(
                "POST",
                "/api/v1/validate",
                body=pdf.body,
                headers={**validator, "Content-Type": "application/pdf"},
            ).json()
            assert report["ok"], (act_id, report)
    for insee, register, year, numbers in _rows(
        engine,
        "SELECT insee, register, year, COUNT(*) FROM acts WHERE status = 'signed' "
        "AND NOT imported GROUP BY insee, register, year",
    ):
        found = sorted(
            n
            for (n,) in _rows(
                engine,
                "SELECT number FROM acts WHERE status = 'signed' AND NOT imported "
                "AND insee = :insee AND register = :register AND year = :year",
                insee=insee,
                register=register,
                year=year,
            )
        )
        assert found == list(range(1, numbers + 1)), (insee, register, year, found)


def _check_requests(
    chaos: Chaos, engine: Any, notary: dict[str, str], requests: list[tuple[str, int]]
) -> None:
    """Each request once, issued once, with one copy that downloads."""
    assert requests, "no request made"
    for key, request_id in requests:
        rows = _rows(
            engine,
            "SELECT id, status, delivery_id FROM act_requests WHERE idempotency_key = :key",
            key=key,
        )
        assert len(rows) == 1, f"{key}: {len(rows)} requests"
        assert (rows[0][0], rows[0][1]) == (request_id, "issued") and rows[0][2], rows
        copy = chaos.sure("GET", f"/api/v1/act-requests/{request_id}/document", headers=notary)
        assert copy.status == 200 and copy.body.startswith(b"%PDF-"), copy.status
    ids = [request_id for _, request_id in requests]
    deliveries = {
        row[0]
        for row in _rows(engine, "SELECT delivery_id FROM act_requests WHERE status = 'issued'")
        if row[0]
    }
    issued = [r for r in _rows(engine, "SELECT id FROM act_requests WHERE status = 'issued'")]
    assert len(deliveries) == len(issued) >= len(ids)  # one copy each, none signed twice


def _check_the_rest(chaos: Chaos, engine: Any, env: dict[str, str]) -> None:
    """No job left behind, no upload said complete that is not, and both verifications
    of the instance pass."""
    deadline = time.monotonic() + 60
    while _rows(engine, "SELECT id FROM jobs WHERE status IN ('queued', 'running')"):
        if time.monotonic() > deadline:
            chaos.fail(
                "jobs still queued or running: "
                + str(
                    _rows(
                        engine,
                        "SELECT id, kind, status FROM jobs WHERE status IN ('queued', 'running')",
                    )
                )
            )
        time.sleep(0.1)
    failed = _rows(engine, "SELECT id, kind, error FROM jobs WHERE status = 'failed'")
    assert not failed, failed
    for upload_id, length, offset, completed, size in _rows(
        engine,
        'SELECT u.id, u.length, u."offset", u.completed_at, o.size FROM exchange_uploads u '
        "LEFT JOIN vault_objects o ON o.id = u.id",
    ):
        assert offset <= length, upload_id
        if completed is not None:
            assert size == length, f"upload {upload_id} complete without its object"
    chaos.kill()  # the commands read a quiet instance (SQLite's lock is theirs)
    for command in (("audit", "verify"), ("vault", "verify")):
        done = subprocess.run(
            [SECUREX, *command], env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            chaos.fail(f"securex {' '.join(command)}: {done.returncode} {done.stdout}{done.stderr}")
