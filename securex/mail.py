"""Sending e-mail to people: one SMTP relay (`[mail]` settings), one function `send`.

What a message says (an address, a name, a request number) never reaches a log line
nor the disk: lines carry the Message-ID and the kind of failure only. With no relay
configured (`host = ""`) mail is off and every sending is refused with `MailDisabled`,
so that a page can tell the person plainly that no e-mail left; nothing is ever
spooled to a file instead. With `starttls = true` (the default) a relay that does not
offer STARTTLS is refused rather than spoken to in clear.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from securex.errors import ConfigError, SecurexError

log = logging.getLogger("securex.mail")

PASSWORD_ENV = "SECUREX_MAIL_PASSWORD"  # noqa: S105 (the variable's name, not a password)
# Plain ASCII addresses only: no quoted parts, no encoded words ("=?"), no ":".
_ADDRESS = re.compile(
    r"^(?!.*=\?)[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)


class MailError(SecurexError):
    """A message could not be handed to the relay (refused, unreachable, misconfigured).
    The detail is French, for the person, and names no address."""

    status = 503
    slug = "mail-unavailable"
    title = "Envoi du courriel impossible"
    exit_code = 75  # EX_TEMPFAIL


class MailDisabled(MailError):
    """No relay is configured: this instance sends no e-mail."""


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    starttls: bool
    ca_file: str
    username: str
    password: str
    sender: str
    timeout: int

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @classmethod
    def from_settings(cls, settings: Any, environ: Mapping[str, str]) -> MailSettings:
        """From the `[mail]` section; the relay's password only from the environment."""
        mail = cls(
            host=str(settings["mail.host"]).strip(),
            port=int(settings["mail.port"]),
            starttls=bool(settings["mail.starttls"]),
            ca_file=str(settings["mail.ca_file"]),
            username=str(settings["mail.username"]),
            password=environ.get(PASSWORD_ENV, ""),
            sender=str(settings["mail.sender"]).strip(),
            timeout=int(settings["mail.timeout"]),
        )
        if mail.enabled and not _ADDRESS.match(mail.sender):
            raise ConfigError(
                f"[mail] sender doit être une adresse e-mail (expéditeur des messages), "
                f"pas {mail.sender!r}."
            )
        if mail.username and not mail.password:
            raise ConfigError(
                f"[mail] username est renseigné : donnez le mot de passe du relais SMTP "
                f"dans la variable d'environnement {PASSWORD_ENV}."
            )
        return mail


def valid_address(address: str) -> bool:
    """A plausible single address: no display name, no list, no header break."""
    return len(address) <= 254 and bool(_ADDRESS.match(address))


def build(
    mail: MailSettings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The message: plain text with an HTML alternative, UTF-8, Date and Message-ID,
    marked as sent by an automaton (RFC 3834) so that auto-replies stay away."""
    for address in (to, reply_to or mail.sender):
        if not valid_address(address):
            raise MailError("L'adresse e-mail n'est pas valide : le message n'a pas été envoyé.")
    msg = EmailMessage(policy=policy.SMTP)
    try:
        msg["From"] = mail.sender
        msg["To"] = to
        if reply_to:
            msg["Reply-To"] = reply_to
        msg["Subject"] = subject
    except ValueError:  # a line break or an encoded word in a header value (injection)
        raise MailError("En-tête de message invalide : le message n'a pas été envoyé.") from None
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=Address(addr_spec=mail.sender).domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def _tls_context(mail: MailSettings) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=mail.ca_file or None)
    except (OSError, ssl.SSLError):
        raise ConfigError(
            f"[mail] ca_file illisible ({mail.ca_file}) : donnez un fichier PEM des "
            "autorités qui signent le certificat du relais SMTP."
        ) from None


def send(
    mail: MailSettings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    reply_to: str | None = None,
    now: datetime | None = None,
) -> str:
    """Hand one message to the relay; returns its Message-ID. Raises MailDisabled when
    no relay is configured, MailError for every way the relay can fail."""
    if not mail.enabled:
        raise MailDisabled(
            "L'envoi de courriels n'est pas configuré sur cette plateforme : aucun message "
            "n'a pu être envoyé."
        )
    msg = build(mail, to=to, subject=subject, text=text, html=html, reply_to=reply_to, now=now)
    message_id = str(msg["Message-ID"])
    context = _tls_context(mail) if mail.starttls else None
    try:
        with smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout) as smtp:
            smtp.ehlo()
            if context is not None:
                if not smtp.has_extn("starttls"):
                    raise MailError(
                        "Le serveur de messagerie ne propose pas de connexion chiffrée "
                        "(STARTTLS) : aucun message n'a été envoyé."
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if mail.username:
                smtp.login(mail.username, mail.password)
            smtp.send_message(msg)
    except MailError:
        log.warning("mail %s not sent: relay offers no STARTTLS", message_id)
        raise
    except (smtplib.SMTPException, OSError) as exc:
        # The exception's text may quote the recipient: log its type and code only.
        code = getattr(exc, "smtp_code", "")
        log.warning("mail %s not sent: %s %s", message_id, type(exc).__name__, code)
        raise MailError(
            "Le serveur de messagerie n'a pas accepté le message : il n'a pas été envoyé. "
            "Réessayez plus tard."
        ) from None
    log.info("mail %s sent", message_id)
    return message_id
