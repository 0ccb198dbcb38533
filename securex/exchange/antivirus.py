"""Antivirus scanning of exchanged files by clamd, over its `zINSTREAM` protocol.

The caller hands the plaintext as an iterable of chunks (typically the vault's decrypting
stream); each chunk goes to clamd as it comes, so securex never holds the whole file nor
writes it to disk. (clamd itself spools the stream into its `TemporaryDirectory` before
scanning: that folder belongs on a tmpfs.)

Outcomes, from the safest for a caller that forgets one:

- `ScanResult(clean=True)`, or `ScanResult(clean=False, signature=...)` for an infected file;
- `ScanTooLarge` when the stream exceeds clamd's `StreamMaxLength`: the file was not
  scanned, and the caller decides whether such a file may go out unscanned;
- `AntivirusUnavailable` for everything else (no daemon, refused connection, timeout,
  error reply, unexpected answer): the file was not scanned.

The address is the path of clamd's UNIX socket (`LocalSocket`) or `tcp://host:port`
(`TCPSocket`/`TCPAddr`). Logs name the address, sizes and signatures, never content."""

from __future__ import annotations

import logging
import re
import select
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from securex.errors import ConfigError, PayloadTooLarge, SecurexError

log = logging.getLogger(__name__)

# clamd accepts chunks of any size up to StreamMaxLength; bounded pieces keep each send
# short enough that an early reply (size limit) is noticed soon after it is written.
CHUNK_SIZE = 1024 * 1024
_REPLY_MAX = 4096  # clamd's replies are one line; anything longer is not clamd
_END_OF_STREAM = struct.pack(">I", 0)
_TOO_LARGE = "INSTREAM size limit exceeded. ERROR"
# With `ExtendedDetectionInfo yes` clamd appends "(<hash>:<size>)" of the file to the
# signature; a digest of a confidential file does not belong in results or logs.
_FOUND = re.compile(r"stream: (?P<signature>.+?)(?:\([0-9A-Fa-f]+:\d+\))? FOUND")


class AntivirusUnavailable(SecurexError):
    """The file could not be scanned: clamd is unreachable, too slow, or answered an error.
    `reason` (in `extra`) is one of "unreachable", "timeout", "error", "protocol"."""

    status = 503
    slug = "antivirus-unavailable"
    title = "Antivirus indisponible"
    exit_code = 75  # EX_TEMPFAIL

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class ScanTooLarge(PayloadTooLarge):
    """The stream exceeds clamd's StreamMaxLength: the file was not scanned."""

    slug = "antivirus-too-large"
    title = "Fichier trop volumineux pour l'antivirus"

    def __init__(
        self,
        detail: str = (
            "Le fichier dépasse la taille maximale que l'antivirus accepte d'analyser : "
            "il n'a pas été analysé."
        ),
    ) -> None:
        super().__init__(detail)


@dataclass(frozen=True)
class ScanResult:
    """clamd's verdict on a whole stream: clean, or infected with `signature`."""

    clean: bool
    signature: str | None = None

    def __post_init__(self) -> None:
        if self.clean != (self.signature is None):
            raise ValueError("a clean result has no signature; an infected one has one")


_UNREACHABLE = "L'antivirus est injoignable : le fichier n'a pas pu être analysé."
_TIMEOUT = "L'antivirus n'a pas répondu à temps : le fichier n'a pas pu être analysé."
_ERROR = "L'antivirus a signalé une erreur : le fichier n'a pas pu être analysé."
_PROTOCOL = "L'antivirus a donné une réponse inattendue : le fichier n'a pas pu être analysé."


def scan(socket_path: str, chunks: Iterable[bytes], *, timeout: float = 60.0) -> ScanResult:
    """Stream `chunks` to clamd at `socket_path` and return its verdict.

    `timeout` bounds each socket operation (connecting, each send, the wait for the
    verdict), not the whole scan: a large file streams for as long as it keeps moving.
    An exception raised by `chunks` propagates unchanged, the connection closed."""
    started = time.monotonic()
    sent = 0
    with _connect(socket_path, timeout) as sock:
        try:
            sock.sendall(b"zINSTREAM\0")
            poller = select.poll()  # not select(): a busy worker may hold fds above 1024
            poller.register(sock, select.POLLIN)
            for chunk in chunks:
                view = memoryview(chunk)
                # A zero-length chunk would end the stream early: empty chunks are skipped.
                for start in range(0, len(view), CHUNK_SIZE):
                    piece = view[start : start + CHUNK_SIZE]
                    sock.sendall(struct.pack(">I", len(piece)))
                    sock.sendall(piece)
                    sent += len(piece)
                    if poller.poll(0):
                        raise _RepliedEarly
            sock.sendall(_END_OF_STREAM)
        except (_RepliedEarly, BrokenPipeError, ConnectionResetError):
            # clamd answers and hangs up as soon as the stream exceeds StreamMaxLength.
            pass
        except TimeoutError:
            _fail(socket_path, "timeout", _TIMEOUT)
        except OSError as exc:
            _fail(socket_path, "unreachable", _UNREACHABLE, exc)
        reply = _read_reply(sock, socket_path)
    elapsed = time.monotonic() - started
    if reply == _TOO_LARGE:
        log.warning("antivirus: stream over StreamMaxLength after %d bytes, not scanned", sent)
        raise ScanTooLarge
    if reply == "stream: OK":
        log.info("antivirus: %d bytes clean (%.2f s)", sent, elapsed)
        return ScanResult(clean=True)
    found = _FOUND.fullmatch(reply)
    if found:
        signature = found.group("signature")
        log.warning("antivirus: %d bytes infected: %s (%.2f s)", sent, signature, elapsed)
        return ScanResult(clean=False, signature=signature)
    if reply.endswith(" ERROR"):
        _fail(socket_path, "error", _ERROR, reply=reply)
    _fail(socket_path, "protocol", _PROTOCOL, reply=reply)


def version(socket_path: str, *, timeout: float = 5.0) -> str:
    """clamd's `VERSION` answer ("ClamAV 1.4.6/27480/…"): engine and database versions."""
    return _command(socket_path, "VERSION", timeout)


def ping(socket_path: str, *, timeout: float = 5.0) -> bool:
    """Whether clamd answers `PING`, for readiness checks. A malformed address still raises
    `ConfigError`: it is a configuration mistake, not a daemon that is down."""
    try:
        return _command(socket_path, "PING", timeout) == "PONG"
    except AntivirusUnavailable:
        return False


class _RepliedEarly(Exception):
    """clamd answered before the end of the stream."""


def _connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("tcp://"):
        try:
            return socket.create_connection(_tcp_endpoint(address), timeout=timeout)
        except TimeoutError:
            _fail(address, "timeout", _TIMEOUT)
        except OSError as exc:
            _fail(address, "unreachable", _UNREACHABLE, exc)
    if not address.startswith("/"):
        _bad_address(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except TimeoutError:
        sock.close()
        _fail(address, "timeout", _TIMEOUT)
    except OSError as exc:
        sock.close()
        _fail(address, "unreachable", _UNREACHABLE, exc)
    return sock


def _tcp_endpoint(address: str) -> tuple[str, int]:
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        _bad_address(address)
    if not host or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        _bad_address(address)
    return host, port


def _read_reply(sock: socket.socket, address: str) -> str:
    """One NUL-terminated reply; an early close after some bytes still counts."""
    reply = b""
    try:
        while not reply.endswith(b"\0") and len(reply) < _REPLY_MAX:
            data = sock.recv(_REPLY_MAX)
            if not data:
                break
            reply += data
    except TimeoutError:
        _fail(address, "timeout", _TIMEOUT)
    except OSError as exc:
        if not reply:
            _fail(address, "unreachable", _UNREACHABLE, exc)
    if not reply:
        _fail(address, "unreachable", _UNREACHABLE)
    return reply.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _command(address: str, command: str, timeout: float) -> str:
    with _connect(address, timeout) as sock:
        try:
            sock.sendall(f"z{command}\0".encode())
        except TimeoutError:
            _fail(address, "timeout", _TIMEOUT)
        except OSError as exc:
            _fail(address, "unreachable", _UNREACHABLE, exc)
        return _read_reply(sock, address)


def _fail(
    address: str, reason: str, detail: str, exc: OSError | None = None, *, reply: str = ""
) -> NoReturn:
    # clamd's replies quote no content, only its own state; the address is configuration.
    cause = type(exc).__name__ if exc is not None else reply[:200]
    log.warning("antivirus %s: %s %s", address, reason, cause)
    raise AntivirusUnavailable(detail, reason=reason) from exc


def _bad_address(address: str) -> NoReturn:
    raise ConfigError(
        f"Adresse de l'antivirus invalide : « {address} ». Attendu : le chemin absolu du "
        "socket UNIX de clamd ou tcp://hôte:port."
    )
