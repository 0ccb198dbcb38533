"""A real SMTP server for tests (aiosmtpd, on 127.0.0.1 and a free port), which keeps
every message it accepts so that a test reads what was actually sent.

    with SmtpServer() as smtp:                      # plain SMTP
        settings.values["mail"].update(smtp.mail_settings())
        ...
        (message,) = smtp.messages
        assert "Objet" == message.subject and "code" in message.text

`SmtpServer(tls_dir=tmp_path)` offers STARTTLS with a certificate made for the test
(its CA file in `mail_settings()["ca_file"]`); `username`/`password` require a login
(over TLS only, as a relay would)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    """One accepted message: the envelope and the parsed message."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def _part(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        content: str = part.get_content()  # type: ignore[attr-defined]
        return content

    @property
    def text(self) -> str:
        return self._part("plain")

    @property
    def html(self) -> str:
        return self._part("html")


@dataclass
class _Handler:
    messages: list[Received] = field(default_factory=list)
    credentials: tuple[str, str] | None = None
    logins: dict[int, str] = field(default_factory=dict)

    async def handle_AUTH(self, server: Any, session: Any, envelope: Any, args: list[str]) -> str:
        """AUTH PLAIN with its initial response, as smtplib sends it. (aiosmtpd's own
        authenticator path warns of a deprecation on every success, which the test
        suite treats as an error.)"""
        if len(args) != 2 or args[0].upper() != "PLAIN" or self.credentials is None:
            return "504 5.5.4 Unrecognized authentication type"
        try:
            _, login, password = base64.b64decode(args[1], validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return "501 5.5.2 Cannot decode response"
        if (login, password) != self.credentials:
            return "535 5.7.8 Authentication credentials invalid"
        session.authenticated = True
        self.logins[id(session)] = login
        return "235 2.7.0 Authentication successful"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = self.logins.get(id(session))
        self.messages.append(
            Received(
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                message=message,
                tls=bool(session.ssl),
                login=login,
            )
        )
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA), and its
    key (mode 0600): for the SMTP relay's STARTTLS and the nginx test's TLS."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securex test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


class SmtpServer:
    def __init__(
        self,
        *,
        tls_dir: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.username, self.password = username, password
        self._handler = _Handler()
        kwargs: dict[str, Any] = {}
        self.ca_file: Path | None = None
        if tls_dir is not None:
            self.ca_file, key_file = self_signed_certificate(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca_file, key_file)
            kwargs.update(tls_context=context, require_starttls=True)
        if username is not None:
            self._handler.credentials = (username, password or "")
            kwargs.update(auth_required=True, auth_require_tls=True)
        self._controller = Controller(self._handler, hostname=self.host, port=self.port, **kwargs)

    @property
    def messages(self) -> list[Received]:
        return self._handler.messages

    def mail_settings(self) -> dict[str, Any]:
        """The `[mail]` settings that make securex send here."""
        return {
            "host": self.host,
            "port": self.port,
            "starttls": self.ca_file is not None,
            "ca_file": str(self.ca_file or ""),
            "username": self.username or "",
            "sender": "etat-civil@mairie.example.fr",
            "timeout": 10,
        }

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
