"""E-mails of the exchange, rendered outside any web request (jobs send most of them):
French plain text with an HTML alternative, from `templates/exchange/mail/<name>.txt`
and `.html`. They carry links and codes, never a pli's message or its files' names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from securex.mail import MailSettings, send

TEMPLATES = Path(__file__).resolve().parent / "templates" / "exchange" / "mail"
_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _date_fr(value: datetime, with_time: bool = False) -> str:
    local = value.astimezone(ZoneInfo("Europe/Paris"))
    return local.strftime("%d/%m/%Y à %H:%M" if with_time else "%d/%m/%Y")


_env.filters["date_fr"] = _date_fr


def render(name: str, **values: Any) -> tuple[str, str]:
    """(text, html) of the template `name`."""
    return (
        _env.get_template(f"{name}.txt").render(**values),
        _env.get_template(f"{name}.html").render(**values),
    )


def send_template(
    settings: Any,
    environ: Mapping[str, str],
    *,
    to: str,
    subject: str,
    template: str,
    reply_to: str | None = None,
    now: datetime,
    **values: Any,
) -> str:
    """Render and send; raises MailError (or MailDisabled) like `securex.mail.send`."""
    text, html = render(template, **values)
    mail = MailSettings.from_settings(settings, environ)
    return send(mail, to=to, subject=subject, text=text, html=html, reply_to=reply_to, now=now)


def base_url(settings: Any) -> str:
    return str(settings["base_url"]).rstrip("/")
