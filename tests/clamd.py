"""A real clamd for tests (Debian package clamav-daemon, installed by `make system-deps`),
with its configuration, socket, spool and signature database in a temporary folder.

No official database can be downloaded where the tests run, so the database is ours: one
body signature of the EICAR test string, which matches it anywhere in a stream. clamd
reports signatures from unsigned databases with ".UNOFFICIAL" appended (`REPORTED`).

    with ClamdServer() as clamd:                  # clamd.socket, clamd.tcp_address
        antivirus.scan(clamd.socket, [data])

or the session fixture `clamd_socket` (the path of the UNIX socket), made visible by an
import in a test module or in conftest.py:

    from tests.clamd import clamd_socket_fixture  # noqa: F401 (provides `clamd_socket`)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The EICAR test file, assembled so that this source file is not itself flagged.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
SIGNATURE = "Securex.Test.EICAR"
REPORTED = f"{SIGNATURE}.UNOFFICIAL"
STREAM_MAX_LENGTH = 10 * 1024 * 1024
STARTUP_TIMEOUT = 60.0  # one signature loads in ~0.1 s; a loaded CI machine may be slower
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, NUL included


def _clamd() -> str:
    found = shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else "")
    if not found:
        raise RuntimeError(
            "clamd est introuvable : installez le paquet Debian « clamav-daemon » "
            "(make system-deps le fait en root)."
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClamdServer:
    """One clamd process. `tcp=True` also listens on 127.0.0.1 and a free port."""

    def __init__(self, *, stream_max_length: int = STREAM_MAX_LENGTH, tcp: bool = False) -> None:
        self.binary = _clamd()
        self.root = Path(tempfile.mkdtemp(prefix="securex-clamd-"))
        self.socket = str(self.root / "clamd.sock")
        if len(self.socket.encode()) > _SOCKET_PATH_MAX:
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"chemin de socket trop long pour clamd : {self.socket}")
        self.port = _free_port() if tcp else None
        self.tcp_address = f"tcp://127.0.0.1:{self.port}" if tcp else None
        self.stream_max_length = stream_max_length
        self.log = self.root / "clamd.log"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def _configure(self) -> Path:
        database = self.root / "db"
        spool = self.root / "tmp"
        database.mkdir()
        spool.mkdir()
        (database / "securex-test.ndb").write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
        # No `User`: clamd runs as whoever runs the tests. Logs stay in the folder.
        lines = [
            "Foreground yes",
            f"LocalSocket {self.socket}",
            "LocalSocketMode 600",
            f"DatabaseDirectory {database}",
            f"TemporaryDirectory {spool}",
            f"PidFile {self.root / 'clamd.pid'}",
            f"LogFile {self.log}",
            "LogTime yes",
            "LogSyslog no",
            f"StreamMaxLength {self.stream_max_length}",
            "SelfCheck 0",  # nothing reloads the test database
        ]
        if self.port is not None:
            lines += [f"TCPSocket {self.port}", "TCPAddr 127.0.0.1"]
        conf = self.root / "clamd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(self.socket)
                sock.sendall(b"zPING\0")
                return sock.recv(16) == b"PONG\0"
        except OSError:
            return False

    def _output(self) -> str:
        parts = [p.read_text(errors="replace")[-2000:] for p in (self.log, self.root / "out")]
        return "\n".join(p for p in parts if p)

    def start(self) -> ClamdServer:
        conf = self._configure()
        started = time.monotonic()
        with open(self.root / "out", "wb") as out:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        while not self._answers():
            if self._process.poll() is not None:
                output = self._output()
                self.stop()
                raise RuntimeError(f"clamd s'est arrêté au démarrage :\n{output}")
            if time.monotonic() - started > STARTUP_TIMEOUT:
                output = self._output()
                self.stop()
                raise RuntimeError(f"clamd ne répond pas après {STARTUP_TIMEOUT} s :\n{output}")
            time.sleep(0.02)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            self._process = None
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session", name="clamd_socket")
def clamd_socket_fixture() -> Iterator[str]:
    """The UNIX socket of one clamd for the run (StreamMaxLength = STREAM_MAX_LENGTH)."""
    try:
        server = ClamdServer().start()
    except RuntimeError as exc:
        failure = str(exc)  # failed outside the handler, so the message is said once
    else:
        failure = ""
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield server.socket
    finally:
        server.stop()
