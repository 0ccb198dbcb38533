"""Fuzzing of what securex reads from outside (issue 10, "Bad input"): the PDF upload
and validation paths (`POST /api/v1/validate`, the public `/verifier` page), the vault
reader (stored blobs and standalone export files), the register import (CSV and JSON,
by the function and by the command) and the webhooks (the registration API, the URL
check, and delivery to a hostile receiver). Malformed input is refused with a clear
error, in French where a person reads it, never a crash, a 500 or a hang.

Hypothesis runs derandomized (the examples derive from each test's name, so CI sees
the same ones every run) and without an example database; every call is also timed
against its own bound, since a hang is a failure as much as a traceback."""

from __future__ import annotations

import functools
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securex.accounts.service import Actor
from securex.comedec import webhooks
from securex.db import transaction
from securex.errors import ValidationFailed
from securex.registry.importer import ImportReport, import_file
from securex.signing import pades
from securex.vault import Vault
from securex.vault.errors import IntegrityError
from securex.vault.stream import (
    decrypt_stream,
    encrypt_stream,
    iter_decrypt,
    new_header,
    read_header,
)
from tests.pdfs import one_page_pdf
from tests.test_registry_import import cli  # noqa: F401 (the fixture)
from tests.test_signing import setup_for

T = TypeVar("T")

BOUND = 5.0  # seconds: no single call on malformed input may take longer
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=2 * BOUND),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the app and database are read, not changed
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


MDM = "40192"
OFFICER = "officer1@commune.example.fr"
CANARY = "Zyxwvutsrq"  # a value of the file: it must never appear in a report
ACTOR = Actor("cli", "registry-import")


def timed(call: Callable[[], T], bound: float = BOUND) -> T:
    start = time.monotonic()
    result = call()
    elapsed = time.monotonic() - start
    assert elapsed < bound, f"{elapsed:.1f} s on one input"
    return result


# --- byte mutations ---------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes, hot: tuple[bytes, ...] = ()) -> bytes:
    """`original` after one to four flips, truncations, insertions, deletions,
    overwrites or duplications, at random places or next to one of the `hot` tokens
    (the parts a parser looks at first)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        anchors = [data.find(token) for token in hot]
        anchors = [a for a in anchors if a >= 0]
        if anchors and draw(st.booleans()):
            base = draw(st.sampled_from(anchors))
            pos = min(size, max(0, base + draw(st.integers(-16, 64))))
        else:
            pos = draw(st.integers(0, size))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "dup"]))
        if op == "flip" and pos < size:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 256))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=64))
            data[pos : pos + len(chunk)] = chunk
        elif op == "dup" and size:
            start = draw(st.integers(0, size - 1))
            data[pos:pos] = data[start : start + draw(st.integers(1, 4096))]
    return bytes(data)


# --- PDF upload and validation ----------------------------------------------------------

PDF_TOKENS = (
    b"%PDF-",
    b"xref",
    b"startxref",
    b"trailer",
    b"/ByteRange",
    b"/Contents <",
    b"/Type /Sig",
    b"/DSS",
    b"/Root",
    b"/Length",
    b"stream",
    b"%%EOF",
)


@pytest.fixture
def signed_pdf(demo_pki: Any, clock: Any) -> bytes:
    """A one-page act signed by the demo PKI at B-LT (a CMS signature, a timestamp and
    a DSS: every part the validator parses), on the real clock the PKI was made on."""
    now = datetime.now(UTC)
    clock.now = now + timedelta(minutes=1)
    setup = setup_for(demo_pki, pades.Level.B_LT, email=OFFICER, now=now)
    appearance = pades.Appearance(officer="Officer 1", commune="Mont-de-Marsan")
    signed: bytes = pades.sign(one_page_pdf(), setup, appearance, now)
    return signed


@pytest.fixture
def validator(demo_pki: Any, app: Any, make: Any, signed_pdf: bytes) -> Iterator[Any]:
    """Posts bytes to the API and checks the answer is a report; the intact file is one."""
    make.tenant()
    _, token = make.client()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def validate(data: bytes) -> dict[str, Any]:
        answer = timed(
            lambda: client.post(
                "/api/v1/validate", data=data, headers=headers, content_type="application/pdf"
            )
        )
        # Documented: once the token, media type and size pass, always 200 and a report.
        assert answer.status_code == 200, answer.get_data(as_text=True)
        report: dict[str, Any] = answer.get_json()
        assert isinstance(report["ok"], bool)
        if not report["ok"]:
            reasons = report["problems"] + [
                p for s in report.get("signatures", []) for p in s["problems"]
            ]
            bad = [s for s in report.get("signatures", []) if not s["ok"]]
            assert reasons or bad, report
            assert all(isinstance(r, str) and r for r in reasons)
        return report

    assert validate(signed_pdf)["ok"] is True
    yield validate


@fuzz(300)
@given(draw=st.data())
def test_validate_api_refuses_mutated_signed_pdfs(
    validator: Any, signed_pdf: bytes, draw: st.DataObject
) -> None:
    validator(draw.draw(mutated(signed_pdf, PDF_TOKENS)))


@fuzz(150)
@given(
    body=st.one_of(
        st.binary(max_size=2048).map(lambda b: b"%PDF-1.7\n" + b),
        st.binary(max_size=512).map(lambda b: b"%PDF-1.4\n" + b + b"\n%%EOF\n"),
        st.binary(max_size=256),
    )
)
def test_validate_api_refuses_arbitrary_bytes(validator: Any, body: bytes) -> None:
    assert validator(body)["ok"] is False


@fuzz(100)
@given(draw=st.data())
def test_public_verifier_page_answers_in_french(
    demo_pki: Any, app: Any, signed_pdf: bytes, draw: st.DataObject
) -> None:
    data = draw.draw(st.one_of(mutated(signed_pdf, PDF_TOKENS), st.binary(max_size=512)))
    name = draw.draw(st.text(max_size=40))
    client = app.test_client()
    answer = timed(
        lambda: client.post(
            "/verifier",
            data={"document": (io.BytesIO(data), name or "copie.pdf")},
            content_type="multipart/form-data",
        )
    )
    assert answer.status_code in (200, 400), answer.status_code
    assert answer.mimetype == "text/html"
    assert "Vérifier un document signé" in answer.get_data(as_text=True)


# --- the vault reader -------------------------------------------------------------------

DEK = bytes(range(32))
TENANT, OBJECT = MDM, "fuzz-object"


def _seal(plaintext: bytes, segment_size: int = 4096) -> bytes:
    out = io.BytesIO()
    header = new_header(key_id=f"tenant:{TENANT}", key_version=1, segment_size=segment_size)
    encrypt_stream(
        io.BytesIO(plaintext), out, dek=DEK, header=header, tenant=TENANT, object_id=OBJECT
    )
    return out.getvalue()


SEALED = _seal(bytes(range(256)) * 40)  # three segments of 4096 bytes
SEALED_HEADER_SIZE = len(read_header(io.BytesIO(SEALED)).to_bytes())


def _opens_or_integrity_error(blob: bytes) -> bytes | None:
    """Both decryption paths on a whole file: the plaintext, or None after the one
    opaque IntegrityError; any other exception fails the test."""
    results = []
    for path in ("stream", "iter"):
        src = io.BytesIO(blob)
        try:
            header = read_header(src)
            kwargs: dict[str, Any] = {
                "dek": DEK,
                "header": header,
                "tenant": TENANT,
                "object_id": OBJECT,
            }
            if path == "stream":
                out = io.BytesIO()
                timed(functools.partial(decrypt_stream, src, out, **kwargs))
                results.append(out.getvalue())
            else:
                chunks = timed(functools.partial(list, iter_decrypt(src, **kwargs)))
                results.append(b"".join(chunks))
        except IntegrityError as exc:
            assert str(exc) == str(IntegrityError())
            results.append(None)
    assert results[0] == results[1]
    return results[0]


@fuzz(1000)
@given(
    blob=st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=2048).map(lambda b: b"SXV1" + b),
        st.binary(max_size=2048).map(lambda b: b"SXV1\x01\x00" + b),
        st.binary(max_size=2048).map(lambda b: b"SXV1\x01\x01" + b),
    )
)
def test_arbitrary_blobs_are_an_integrity_error(blob: bytes) -> None:
    assert _opens_or_integrity_error(blob) is None


@fuzz(1000)
@given(draw=st.data())
def test_mutated_headers_are_an_integrity_error(draw: st.DataObject) -> None:
    """Several changes at once inside the header (lengths, flags, the segment size
    moved out of step with the rest), where test_vault_stream.py flips one bit."""
    header = SEALED[:SEALED_HEADER_SIZE]
    changed = draw.draw(mutated(header))
    blob = changed + SEALED[SEALED_HEADER_SIZE:]
    assert _opens_or_integrity_error(blob) in (None, bytes(range(256)) * 40)
    if changed != header:
        assert _opens_or_integrity_error(blob) is None


@pytest.fixture
def stored(make: Any, vault: Vault) -> tuple[str, bytes, Path]:
    make.tenant()
    plaintext = bytes(range(256)) * 40
    with transaction(make.factory) as db:
        object_id = vault.put(
            db, MDM, io.BytesIO(plaintext), now=make.clock(), segment_size=4096
        ).id
    path = next(Path(vault.blobs.root).glob(f"??/??/{object_id}"))  # type: ignore[attr-defined]
    return object_id, plaintext, path


@fuzz(300)
@given(draw=st.data())
def test_vault_reader_on_damaged_blobs(
    make: Any, vault: Vault, stored: tuple[str, bytes, Path], draw: st.DataObject
) -> None:
    object_id, plaintext, path = stored
    original = path.read_bytes()
    damaged = draw.draw(st.one_of(mutated(original), st.binary(max_size=1024)))
    start = draw.draw(st.integers(0, len(plaintext)))
    path.write_bytes(damaged)
    try:
        with make.session() as db:
            got = timed(lambda: b"".join(vault.reader(db, MDM, object_id, start)))
        # Only a change in the segments before `start` (never read) goes unnoticed.
        assert got == plaintext[start:]
    except IntegrityError as exc:
        assert str(exc) == str(IntegrityError())
    finally:
        path.write_bytes(original)


@pytest.fixture
def export(make: Any, vault: Vault) -> bytes:
    make.tenant()
    out = io.BytesIO()
    with make.session() as db:
        vault.encrypt_file(db, MDM, io.BytesIO(b"registre 1987" * 500), out)
    return out.getvalue()


@fuzz(300)
@given(draw=st.data())
def test_standalone_files_are_refused_whole(
    make: Any, vault: Vault, export: bytes, tmp_path: Path, draw: st.DataObject
) -> None:
    """`decrypt_file` reads files from outside (an export brought back): its header
    carries the wrapped key and the key version, which nothing has checked yet."""
    damaged = draw.draw(
        st.one_of(
            mutated(export),
            mutated(export[:200]).map(lambda h: h + export[200:]),
            st.binary(max_size=512).map(lambda b: b"SXV1\x01\x01" + b),
        )
    )
    out = tmp_path / "out" / "registre.csv"
    out.parent.mkdir(exist_ok=True)
    try:
        with make.session() as db:
            timed(lambda: vault.decrypt_file(db, MDM, io.BytesIO(damaged), out))
        assert out.read_bytes() == b"registre 1987" * 500
        out.unlink()
    except IntegrityError as exc:
        assert str(exc) == str(IntegrityError())
    assert list(out.parent.iterdir()) == []  # nothing half-written left behind


# --- register import --------------------------------------------------------------------

ROW = {
    "kind": "naissance",
    "year": "1987",
    "number": "12",
    "drawn_at": "02/03/1987 10:00",
    "officer": "Jean Lartigue",
    "enfant.nom": CANARY,
    "enfant.prenoms": "Léa Marie",
    "enfant.sexe": "F",
    "naissance.date": "01/03/1987",
    "naissance.heure": "22h15",
    "naissance.lieu": "Mont-de-Marsan, Landes",
    "parents.0.nom": CANARY,
    "parents.0.prenoms": "Pierre",
    "declarant.nom": CANARY,
    "declarant.prenoms": "Pierre",
}
VALUES = st.one_of(
    st.sampled_from(["", " ", "oui", "F", "X", "0", "-1", "99999999999999999999", "32/13/1987"]),
    st.text(max_size=30).map(lambda t: CANARY + t),
    st.integers(1, 200_000).map(lambda n: CANARY + "x" * n),  # past csv's field limit
)
COLUMNS = st.one_of(
    st.sampled_from([*sorted(ROW), "scan", "", "..", "a..b", "enfant.", ".nom", "KIND"]),
    st.text(max_size=12),
)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 3))):
        row = dict(ROW)
        for key in draw(st.lists(st.sampled_from(sorted(ROW)), max_size=4)):
            row.pop(key, None)
        for key in draw(st.lists(COLUMNS, max_size=3)):
            row[key] = draw(VALUES)
        rows.append(row)
    names = list(ROW) if not rows else list(dict.fromkeys(k for r in rows for k in r))
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    end = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    quote = draw(st.sampled_from(['"', "'"]))

    def line(cells: list[str]) -> str:
        if draw(st.booleans()):
            cells = [quote + c.replace(quote, quote * 2) + quote for c in cells]
        return sep.join(cells) + end

    text = line(names) + "".join(line([r.get(k, "") for k in names]) for r in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = draw(mutated(data, (b"\n", sep.encode(), b'"')))
    return data


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def json_files(draw: st.DrawFn) -> bytes:
    act = {
        **{k: v for k, v in ROW.items() if "." not in k},
        "year": 1987,
        "number": 12,
        "content": {"enfant": {"nom": CANARY, "prenoms": "Léa", "sexe": "F"}},
    }
    shape = draw(st.sampled_from(["acts", "mutated", "random", "bytes"]))
    if shape == "acts":
        acts = [
            {**act, **draw(st.dictionaries(st.sampled_from(sorted(act)), JSON_VALUES, max_size=3))}
            for _ in range(draw(st.integers(0, 3)))
        ]
        acts += draw(st.lists(JSON_VALUES, max_size=2))
        return json.dumps({"acts": acts}).encode()
    if shape == "mutated":
        return draw(mutated(json.dumps({"acts": [act, act]}).encode(), (b"{", b"[", b'"', b":")))
    if shape == "random":
        return json.dumps(draw(JSON_VALUES)).encode()
    return draw(st.binary(max_size=512))


def _check_report(report: ImportReport) -> None:
    assert not report.imported
    text = "\n".join([report.summary(), *report.text_lines()])
    assert CANARY not in text
    if not report.ok:
        assert "rien n'a été importé" in report.summary()
    for issue in report.issues:
        assert issue.message and isinstance(issue.message, str)


@pytest.fixture
def importer(make: Any, factory: Any, vault: Vault, settings: Any, tmp_path: Path) -> Any:
    make.tenant()
    folder = tmp_path / "import"
    folder.mkdir()

    def run(name: str, data: bytes) -> ImportReport:
        path = folder / name
        path.write_bytes(data)
        try:
            report = timed(
                lambda: import_file(
                    path,
                    insee=MDM,
                    dry_run=True,
                    session_factory=factory,
                    vault=vault,
                    actor=ACTOR,
                    now=make.clock(),
                    max_scan_bytes=settings["registry.max_scan_bytes"],
                )
            )
        finally:
            path.unlink()
        _check_report(report)
        return report

    return run


@fuzz(400)
@given(data=csv_files())
def test_csv_import_reports_in_french(importer: Any, data: bytes) -> None:
    importer("registre.csv", data)


@fuzz(400)
@given(data=json_files())
def test_json_import_reports_in_french(importer: Any, data: bytes) -> None:
    importer("registre.json", data)


@fuzz(40)
@given(data=st.one_of(csv_files(), json_files()), suffix=st.sampled_from([".csv", ".json"]))
def test_import_command_never_shows_a_traceback(
    cli: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    data: bytes,
    suffix: str,
) -> None:
    path = tmp_path / f"registre{suffix}"
    path.write_bytes(data)
    result = timed(lambda: cli("registry", "import", str(path), "--commune", MDM, "--dry-run"))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert CANARY not in result.output
    assert result.exit_code in (0, 65), result.output
    if result.exit_code:
        assert "rien n'a été importé" in result.stderr


# --- webhooks ---------------------------------------------------------------------------

URL_PARTS = st.sampled_from(
    [
        "https://",
        "http://",
        "HTTPS://",
        "//",
        ":",
        "@",
        "[",
        "]",
        "::1",
        "%",
        "?",
        "#",
        "/",
        "127.0.0.1",
        "localhost",
        "example.fr",
        ":443",
        ":0",
        ":99999",
        ":-1",
        "user:pw@",
        "\x00",
        "é",
        " ",
        "\t",
        "xn--",
        "[::ffff:127.0.0.1]",
        "[v1.x]",
        "a" * 60,
    ]
)
URLS = st.one_of(st.text(max_size=80), st.lists(URL_PARTS, max_size=8).map("".join))


@fuzz(1000)
@given(url=URLS)
def test_webhook_urls_are_checked_in_french(url: str) -> None:
    try:
        assert timed(lambda: webhooks.check_url(url)) == url
    except ValidationFailed as exc:
        assert exc.detail.startswith("L'URL du webhook")
        assert exc.extra["errors"] == [{"field": "url", "message": exc.detail}]


@pytest.fixture
def notary(app: Any, make: Any) -> tuple[Any, dict[str, str]]:
    make.tenant()
    _, token = make.client()
    return app.test_client(), {"Authorization": f"Bearer {token}"}


@fuzz(200)
@given(
    body=st.one_of(
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["url", "secret", "URL"]), JSON_VALUES, max_size=2).map(
            lambda v: json.dumps(v).encode()
        ),
        URLS.map(lambda u: json.dumps({"url": u}).encode()),
        st.binary(max_size=200),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=latin-1", "text/plain", ""]
    ),
)
def test_webhook_registration_refuses_bad_bodies(
    notary: tuple[Any, dict[str, str]], body: bytes, content_type: str
) -> None:
    client, headers = notary
    answer = timed(
        lambda: client.put(
            "/api/v1/webhook", data=body, headers=headers, content_type=content_type or None
        )
    )
    assert answer.status_code in (200, 400, 413, 415, 422), answer.get_data(as_text=True)
    if answer.status_code != 200:
        assert answer.mimetype == "application/problem+json"
        assert answer.json["detail"]


class HostileReceiver:
    """A TCP server on 127.0.0.1 that reads each request and answers whatever bytes it
    is told to (a status line with garbage, endless headers, nothing at all)."""

    def __init__(self) -> None:
        self.answer = b""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(BOUND)
                try:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        request += chunk
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    while len(body) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join()


@pytest.fixture
def endpoint(make: Any, vault: Vault) -> Iterator[tuple[int, HostileReceiver]]:
    from securex.accounts.models import ApiClient

    make.tenant()
    client_id, _ = make.client()
    receiver = HostileReceiver()
    with transaction(make.factory) as db:
        client = db.get(ApiClient, client_id)
        row, _ = webhooks.register(
            db, client, receiver.url, now=make.clock(), keyring=vault.keyring
        )
        endpoint_id = row.id
    yield endpoint_id, receiver
    receiver.close()


STATUS = st.one_of(st.integers(-1000, 100_000).map(str), st.text(max_size=8))
HEADER_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Content-Length: 5",
                b"Content-Length: -1",
                b"Content-Length: 99999999999999999999",
                b"Transfer-Encoding: chunked",
                b"Location: file:///etc/passwd",
                b"Location: http://10.0.0.1/",
                b"Connection: close",
                b": no name",
                b"no colon",
                b"X-Long: " + b"a" * 70_000,
            ]
        ),
        st.binary(max_size=40),
    ),
    max_size=6,
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=300))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1x", b""]))
    status = draw(STATUS).encode()
    reason = draw(st.binary(max_size=20))
    lines = draw(HEADER_LINES)
    if draw(st.booleans()):
        lines += [b"X-Many: 1"] * draw(st.integers(90, 120))
    head = b" ".join([version, status, reason]) + b"\r\n" + b"".join(h + b"\r\n" for h in lines)
    return head + draw(st.sampled_from([b"\r\n", b"", b"\r\n\r\n"])) + draw(st.binary(max_size=64))


def _deliver(
    make: Any, vault: Vault, endpoint_id: int, *, timeout: float, deadline: float = 5.0
) -> bool:
    return webhooks.deliver(
        make.factory,
        endpoint_id,
        {"type": "fuzz"},
        job_id=1,
        keyring=vault.keyring,
        clock=make.clock,
        timeout=timeout,
        deadline=deadline,
        allow_private=True,
    )


@fuzz(200)
@given(answer=answers())
def test_webhook_delivery_survives_a_hostile_receiver(
    make: Any, vault: Vault, endpoint: tuple[int, HostileReceiver], answer: bytes
) -> None:
    """What securex parses of a webhook receiver is its answer: whatever it is, a
    delivery is a success (2xx) or a DeliveryFailed the job retries, within its timeout."""
    endpoint_id, receiver = endpoint
    receiver.answer = answer
    try:
        delivered = timed(lambda: _deliver(make, vault, endpoint_id, timeout=1.0))
        assert delivered is True
    except webhooks.DeliveryFailed as failure:
        assert failure.details  # a status or the class of the error, for the audit log


def test_webhook_delivery_to_a_silent_receiver_times_out(
    make: Any, vault: Vault, endpoint: tuple[int, HostileReceiver]
) -> None:
    """A receiver that accepts and never answers holds a delivery for its timeout only."""
    endpoint_id, _ = endpoint
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with transaction(make.factory) as db:
            from securex.comedec.models import WebhookEndpoint

            row = db.get(WebhookEndpoint, endpoint_id)
            assert row is not None
            row.url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        with pytest.raises(webhooks.DeliveryFailed) as failed:
            timed(lambda: _deliver(make, vault, endpoint_id, timeout=0.5), bound=3.0)
        assert failed.value.details == {"error": "TimeoutError"}
    finally:
        silent.close()


def test_webhook_delivery_to_a_trickling_receiver_ends_at_its_deadline(
    make: Any, vault: Vault, endpoint: tuple[int, HostileReceiver]
) -> None:
    """A receiver that sends its answer a byte at a time, each within the read timeout,
    holds a delivery until the delivery's deadline only, not for as long as it likes."""
    endpoint_id, _ = endpoint
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 1000:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        with transaction(make.factory) as db:
            from securex.comedec.models import WebhookEndpoint

            row = db.get(WebhookEndpoint, endpoint_id)
            assert row is not None
            row.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        started = time.monotonic()
        with pytest.raises(webhooks.DeliveryFailed) as failed:
            _deliver(make, vault, endpoint_id, timeout=0.5, deadline=1.5)
        assert 1.4 < time.monotonic() - started < 3.0  # the trickle alone lasts 100 s
        assert failed.value.details == {"error": "TimeoutError"}
    finally:
        stop.set()
        listener.close()
        thread.join(5)
