"""clamd scanning (securex.exchange.antivirus) against a real clamd with a test database,
and against fake daemons for the replies and failures a real one will not produce."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from securex.errors import ConfigError
from securex.exchange.antivirus import (
    CHUNK_SIZE,
    AntivirusUnavailable,
    ScanResult,
    ScanTooLarge,
    ping,
    scan,
    version,
)
from securex.vault.errors import IntegrityError
from tests.clamd import (
    EICAR,
    REPORTED,
    STREAM_MAX_LENGTH,
    ClamdServer,
    clamd_socket_fixture,  # noqa: F401 (provides `clamd_socket`)
)

MIB = 1024 * 1024
CLEAN = ScanResult(clean=True, signature=None)
INFECTED = ScanResult(clean=False, signature=REPORTED)
# Text that looks like an act: it must never reach a log line.
PERSONAL = b"Jeanne DUPONT, nee le 3 mars 1950 a Quimper. "


def _filler(size: int) -> bytes:
    return (PERSONAL * (size // len(PERSONAL) + 1))[:size]


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- a real clamd ------------------------------------------------------------------------


def test_clean_data_is_clean(clamd_socket: str) -> None:
    assert scan(clamd_socket, [PERSONAL]) == CLEAN
    assert scan(clamd_socket, _pieces(_filler(3 * MIB), 65536)) == CLEAN


def test_an_empty_stream_is_clean(clamd_socket: str) -> None:
    assert scan(clamd_socket, []) == CLEAN
    assert scan(clamd_socket, [b"", b""]) == CLEAN


EICAR_STREAMS: dict[str, Callable[[], Iterable[bytes]]] = {
    "alone": lambda: [EICAR],
    "one-byte-chunks": lambda: _pieces(EICAR, 1),
    "empty-chunks-around": lambda: [b"", EICAR[:10], b"", EICAR[10:], b""],
    "after-3-MiB-in-64-KiB-chunks": lambda: _pieces(_filler(3 * MIB) + EICAR, 65536),
    "straddling-two-chunks": lambda: [_filler(3 * MIB) + EICAR[:30], EICAR[30:] + PERSONAL],
    # One 5 MiB chunk, which scan() splits: EICAR straddles its first split.
    "straddling-a-split": lambda: [_filler(CHUNK_SIZE - 30) + EICAR + _filler(4 * MIB)],
    "followed-by-clean-data": lambda: [EICAR, _filler(2 * MIB)],
}


@pytest.mark.parametrize("stream", EICAR_STREAMS.values(), ids=EICAR_STREAMS.keys())
def test_eicar_is_found(clamd_socket: str, stream: Callable[[], Iterable[bytes]]) -> None:
    assert scan(clamd_socket, stream()) == INFECTED


def test_a_stream_of_exactly_stream_max_length_is_scanned(clamd_socket: str) -> None:
    assert scan(clamd_socket, [_filler(STREAM_MAX_LENGTH)]) == CLEAN
    infected = _filler(STREAM_MAX_LENGTH - len(EICAR)) + EICAR
    assert scan(clamd_socket, _pieces(infected, 65536)) == INFECTED


TOO_LARGE: dict[str, Callable[[], Iterable[bytes]]] = {
    "one-byte-over": lambda: [_filler(STREAM_MAX_LENGTH + 1)],
    "many-small-chunks": lambda: _pieces(_filler(STREAM_MAX_LENGTH + MIB), 65536),
    "one-byte-over-in-two": lambda: [_filler(STREAM_MAX_LENGTH), b"x"],
    # Malware past the limit is never reported clean.
    "eicar-past-the-limit": lambda: [_filler(STREAM_MAX_LENGTH), EICAR],
}


@pytest.mark.parametrize("stream", TOO_LARGE.values(), ids=TOO_LARGE.keys())
def test_a_stream_over_stream_max_length_is_too_large(
    clamd_socket: str, stream: Callable[[], Iterable[bytes]]
) -> None:
    with pytest.raises(ScanTooLarge) as caught:
        scan(clamd_socket, stream())
    assert caught.value.status == 413
    assert caught.value.slug == "antivirus-too-large"
    assert "antivirus" in caught.value.detail


def test_sending_stops_once_clamd_refuses_the_size(clamd_socket: str) -> None:
    consumed = 0

    def one_gibibyte() -> Iterator[bytes]:
        nonlocal consumed
        piece = _filler(65536)
        while consumed < 1024 * MIB:
            consumed += len(piece)
            yield piece

    with pytest.raises(ScanTooLarge):
        scan(clamd_socket, one_gibibyte())
    assert consumed < STREAM_MAX_LENGTH + 16 * MIB


def test_an_error_from_the_chunks_propagates_and_clamd_carries_on(clamd_socket: str) -> None:
    def decrypted() -> Iterator[bytes]:
        yield PERSONAL
        raise IntegrityError

    with pytest.raises(IntegrityError):
        scan(clamd_socket, decrypted())
    assert scan(clamd_socket, [EICAR]) == INFECTED


def test_concurrent_scans_get_their_own_verdicts(clamd_socket: str) -> None:
    streams = [[_filler(MIB), EICAR] if i % 2 else [_filler(MIB)] for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda chunks: scan(clamd_socket, chunks), streams))
    assert results == [INFECTED if i % 2 else CLEAN for i in range(12)]


def test_logs_name_sizes_and_signatures_never_content(
    clamd_socket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="securex")
    scan(clamd_socket, [PERSONAL])
    scan(clamd_socket, [PERSONAL, EICAR])
    with pytest.raises(ScanTooLarge):
        scan(clamd_socket, [_filler(STREAM_MAX_LENGTH + 1)])
    with pytest.raises(AntivirusUnavailable):
        scan(str(tmp_path / "absent.sock"), [PERSONAL])
    assert REPORTED in caplog.text
    assert "DUPONT" not in caplog.text and "Quimper" not in caplog.text
    assert "EICAR-STANDARD" not in caplog.text


def test_version_and_ping(clamd_socket: str, tmp_path: Path) -> None:
    assert version(clamd_socket).startswith("ClamAV ")
    assert ping(clamd_socket) is True
    assert ping(str(tmp_path / "absent.sock")) is False


def test_tcp_address() -> None:
    with ClamdServer(tcp=True) as clamd:
        assert clamd.tcp_address is not None
        assert scan(clamd.tcp_address, [PERSONAL]) == CLEAN
        assert scan(clamd.tcp_address, _pieces(_filler(2 * MIB) + EICAR, 4096)) == INFECTED
        with pytest.raises(ScanTooLarge):
            scan(clamd.tcp_address, [_filler(STREAM_MAX_LENGTH + 1)])
        assert ping(clamd.tcp_address) is True


def test_a_stopped_daemon_is_unavailable() -> None:
    clamd = ClamdServer().start()
    address = clamd.socket
    assert scan(address, [EICAR]) == INFECTED
    clamd.stop()
    with pytest.raises(AntivirusUnavailable) as caught:
        scan(address, [EICAR])
    assert caught.value.reason == "unreachable"
    assert ping(address) is False


# --- failures ------------------------------------------------------------------------------


def _assert_unavailable(exc: AntivirusUnavailable, reason: str) -> None:
    assert exc.reason == reason
    assert exc.extra == {"reason": reason}
    assert exc.status == 503
    assert exc.slug == "antivirus-unavailable"
    assert exc.title == "Antivirus indisponible"
    assert exc.detail.startswith("L'antivirus ")
    assert exc.detail.endswith("le fichier n'a pas pu être analysé.")


def test_a_missing_socket_is_unavailable(tmp_path: Path) -> None:
    address = str(tmp_path / "absent.sock")
    with pytest.raises(AntivirusUnavailable) as caught:
        scan(address, [PERSONAL])
    _assert_unavailable(caught.value, "unreachable")
    assert address not in caught.value.detail


def test_a_socket_nobody_listens_on_is_unavailable(tmp_path: Path) -> None:
    address = str(tmp_path / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(address)  # the file stays; connecting to it is refused
    with pytest.raises(AntivirusUnavailable) as caught:
        scan(address, [PERSONAL])
    _assert_unavailable(caught.value, "unreachable")


def test_a_closed_tcp_port_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AntivirusUnavailable) as caught:
        scan(f"tcp://127.0.0.1:{port}", [PERSONAL])
    _assert_unavailable(caught.value, "unreachable")


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A UNIX socket that accepts connections (in its backlog) and never reads nor answers."""
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        yield path


@pytest.mark.parametrize("size", [len(PERSONAL), 32 * MIB], ids=["verdict-wait", "send-blocked"])
def test_the_timeout_is_honoured(silent_socket: str, size: int) -> None:
    started = time.monotonic()
    with pytest.raises(AntivirusUnavailable) as caught:
        scan(silent_socket, [_filler(size)], timeout=0.3)
    assert time.monotonic() - started < 3
    _assert_unavailable(caught.value, "timeout")
    started = time.monotonic()
    assert ping(silent_socket, timeout=0.3) is False
    assert time.monotonic() - started < 3


class FakeClamd:
    """A UNIX socket that reads one zINSTREAM stream, keeps it, and answers `reply`."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.path, self.reply = str(path), reply
        self.command = b""
        self.chunk_sizes: list[int] = []
        self.data = bytearray()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = conn.recv(size - len(data))
            if not more:
                raise EOFError
            data += more
        return data

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            try:
                self.command = self._read(conn, len(b"zINSTREAM\0"))
                while size := struct.unpack(">I", self._read(conn, 4))[0]:
                    self.chunk_sizes.append(size)
                    self.data += self._read(conn, size)
                conn.sendall(self.reply)
            except (OSError, EOFError):
                pass

    def __enter__(self) -> FakeClamd:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=5)
        self._server.close()


def test_the_wire_format(tmp_path: Path) -> None:
    data = _filler(2 * CHUNK_SIZE + 5)
    with FakeClamd(tmp_path / "fake.sock", b"stream: OK\0") as fake:
        assert scan(fake.path, [b"", data, b"", b"bc"]) == CLEAN
    assert fake.command == b"zINSTREAM\0"
    assert fake.chunk_sizes == [CHUNK_SIZE, CHUNK_SIZE, 5, 2]
    assert fake.data == data + b"bc"


REPLIES: dict[str, tuple[bytes, ScanResult | str]] = {
    "ok": (b"stream: OK\0", CLEAN),
    "found": (b"stream: Eicar-Signature FOUND\0", ScanResult(False, "Eicar-Signature")),
    # ExtendedDetectionInfo: the file's digest and size are dropped from the signature.
    "found-extended": (
        b"stream: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND\0",
        ScanResult(False, "Win.Test.EICAR_HDB-1"),
    ),
    "found-without-nul": (b"stream: Eicar-Signature FOUND", ScanResult(False, "Eicar-Signature")),
    "too-large": (b"INSTREAM size limit exceeded. ERROR\0", "too-large"),
    "error": (b"stream: Can't allocate memory ERROR\0", "error"),
    "error-other": (b"Error processing command. ERROR\0", "error"),
    "unknown-command": (b"UNKNOWN COMMAND\0", "protocol"),
    "found-no-signature": (b"stream:  FOUND\0", "protocol"),
    "truncated": (b"stream: O", "protocol"),
    "not-clamd": (b"HTTP/1.1 400 Bad Request\r\n" + b"x" * 10000, "protocol"),
    "hang-up": (b"", "unreachable"),
}


@pytest.mark.parametrize("reply, outcome", REPLIES.values(), ids=REPLIES.keys())
def test_replies(tmp_path: Path, reply: bytes, outcome: ScanResult | str) -> None:
    with FakeClamd(tmp_path / "fake.sock", reply) as fake:
        if isinstance(outcome, ScanResult):
            assert scan(fake.path, [PERSONAL], timeout=5) == outcome
        elif outcome == "too-large":
            with pytest.raises(ScanTooLarge):
                scan(fake.path, [PERSONAL], timeout=5)
        else:
            with pytest.raises(AntivirusUnavailable) as caught:
                scan(fake.path, [PERSONAL], timeout=5)
            _assert_unavailable(caught.value, outcome)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "clamd.sock",
        "run/clamd.sock",
        "unix:///run/clamav/clamd.ctl",
        "tcp://127.0.0.1",
        "tcp://:3310",
        "tcp://127.0.0.1:clamd",
        "tcp://127.0.0.1:70000",
        "tcp://127.0.0.1:3310/scan",
        "tcp://user@127.0.0.1:3310",
        "http://127.0.0.1:3310",
    ],
)
def test_a_malformed_address_is_a_configuration_error(address: str) -> None:
    with pytest.raises(ConfigError):
        scan(address, [PERSONAL])
    with pytest.raises(ConfigError):
        ping(address)


def test_a_result_is_clean_or_names_its_signature() -> None:
    with pytest.raises(ValueError):
        ScanResult(clean=True, signature="Eicar-Signature")
    with pytest.raises(ValueError):
        ScanResult(clean=False)
    assert ScanResult(clean=False, signature="x").signature == "x"
