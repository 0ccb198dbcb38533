"""Pages of the confidential exchange (French, working without JavaScript).

Two blueprints:

- `bp` (`exchange`), the commune's staff, behind login and CSRF: the plis sent and
  received, a new pli (files in the form, or sent beforehand with the resumable upload
  of `tus-upload.js`), one pli with what each recipient did, revocation and unlocking,
  deposit links, the recipients' OpenPGP keys; and the button with which a platform
  user opens a pli addressed to them.
- `public_bp` (`exchange_public`), the recipients' and depositors' pages, without
  session or CSRF token, like `securex.comedec.public`: the secret is the link in the
  URL, which another site does not know, so a forged cross-site POST has nothing to
  borrow. Opening a link is a read that changes nothing (mail scanners open links
  before people do): codes are sent and checked, and downloads counted, only after a
  POST. A right code gives a cookie scoped to that link's path.

Files are streamed from the vault segment by segment, in a database session of their
own that lives as long as the response body; the end of a recipient's download (its
bytes, complete or cut) is recorded when the body ends.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from securex.accounts.models import Role, Tenant
from securex.audit import EventType, record
from securex.db import reading, transaction
from securex.errors import (
    AuthenticationFailed,
    ConfigError,
    Forbidden,
    Gone,
    NotFound,
    RateLimited,
    SecurexError,
    ValidationFailed,
)
from securex.exchange import forms, mailer, service, uploads
from securex.exchange.models import Pli, PliStatus, Recipient, ScanStatus
from securex.exchange.tus import add_tus_routes
from securex.mail import MailError, MailSettings
from securex.vault.columns import column_keys
from securex.vault.errors import IntegrityError
from securex.web import roles
from securex.web.api import problem
from securex.web.context import AppState, db, now, state

bp = Blueprint("exchange", __name__, template_folder="templates")
public_bp = Blueprint("exchange_public", __name__, template_folder="templates")
public_bp.csrf_exempt = True  # type: ignore[attr-defined]  # see the module's docstring

log = logging.getLogger("securex.exchange.views")

staff = roles.commune_roles(Role.AGENT, Role.OFFICER, Role.ADMIN)
MIB = 2**20
# The resumable upload sends files in PATCH requests of this size (tus-upload.js).
CHUNK_BYTES = 8 * MIB
# An armored public key is at most openpgp.MAX_KEY_SIZE; its textarea and file field
# together stay under this.
KEY_FORM_BYTES = 3 * MIB
TABS = {"envoyes": "Envoyés", "recus": "Reçus"}
SCAN_LABELS = {
    ScanStatus.NOT_SCANNED: "non analysé (pas d'antivirus)",
    ScanStatus.PENDING: "analyse en cours",
    ScanStatus.CLEAN: "aucun virus détecté",
    ScanStatus.INFECTED: "refusé : virus détecté",
    ScanStatus.TOO_LARGE: "trop volumineux pour l'antivirus",
}
UNITS = ("Ko", "Mo", "Go", "To")
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def _policy() -> service.ExchangePolicy:
    return service.ExchangePolicy.from_settings(state().settings)


def _form_limit(policy: service.ExchangePolicy) -> int:
    """A form's body: its files (`form_max_bytes` in all) and room for the fields."""
    return policy.form_max_bytes + MIB


# --- what templates show ----------------------------------------------------------------


def size_fr(size: int | None) -> str:
    """A size as people read it, in French: "812 octets", "1,5 Mo"."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} octet{'s' if size > 1 else ''}"
    value, unit = size / 1024, 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text.replace('.', ',')} {UNITS[unit]}"


def fingerprint(value: str) -> str:
    """An OpenPGP fingerprint in groups of four, as gpg shows it."""
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def masked(address: str) -> str:
    """An address shown on a page anyone with the link sees: j***@example.fr."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _helpers() -> dict[str, Any]:
    return {
        "size_fr": size_fr,
        "fingerprint": fingerprint,
        "scan_label": lambda value: SCAN_LABELS.get(ScanStatus(value), value),
        "status_label": lambda value: PliStatus(value).label,
    }


bp.context_processor(_helpers)
public_bp.context_processor(_helpers)


# --- request bodies -------------------------------------------------------------------------


@bp.url_value_preprocessor
def _staff_body_limit(endpoint: str | None, _values: dict[str, Any] | None) -> None:
    """Each route's body limit, set before anything reads the body. The CSRF check reads
    the form in a before-request hook; URL value preprocessors run before those."""
    if endpoint == "exchange.new":
        request.max_content_length = _form_limit(_policy())
    elif endpoint == "exchange.staff_upload":
        request.max_content_length = _policy().max_file_bytes
    elif endpoint == "exchange.keys":
        request.max_content_length = KEY_FORM_BYTES
        request.max_form_memory_size = KEY_FORM_BYTES


@public_bp.url_value_preprocessor
def _public_body_limit(endpoint: str | None, _values: dict[str, Any] | None) -> None:
    if endpoint in ("exchange_public.reply", "exchange_public.deposit"):
        request.max_content_length = _form_limit(_policy())


def _too_large(javascript: bool) -> Any:
    # The body was refused unread: the page must not try to read it again, as every
    # FlaskForm does (the logout button's too).
    request.__dict__.update(form=ImmutableMultiDict(), files=ImmutableMultiDict())
    policy = _policy()
    if request.endpoint in ("exchange.staff_uploads", "exchange.staff_upload"):
        response = problem(
            413,
            "payload-too-large",
            "Requête trop volumineuse",
            f"Fichier trop volumineux : au plus {size_fr(policy.max_file_bytes)} par fichier.",
        )
        response.headers["Tus-Resumable"] = uploads.TUS_VERSION
        return response
    return render_template(
        "exchange/too_large.html",
        form_limit=size_fr(policy.form_max_bytes),
        file_limit=size_fr(policy.max_file_bytes),
        javascript=javascript,
    ), 413


@bp.errorhandler(RequestEntityTooLarge)
def _staff_too_large(_error: RequestEntityTooLarge) -> Any:
    return _too_large(javascript=True)


@public_bp.errorhandler(RequestEntityTooLarge)
def _public_too_large(_error: RequestEntityTooLarge) -> Any:
    return _too_large(javascript=False)


def _form_files(field: str = "files") -> list[service.FileInput]:
    """The files of a multipart form, in memory (`securex.web.Request`), within the
    body limit set above."""
    return [
        service.FileInput(
            name=upload.filename or "",
            media_type=upload.mimetype or "application/octet-stream",
            content=upload.read(),
        )
        for upload in request.files.getlist(field)
        if upload.filename
    ]


def _mail(to: str, subject: str, template: str, **values: Any) -> bool:
    """Send one of the exchange's e-mails; False (and a log line naming no one) when it
    could not leave: the page then says so."""
    try:
        mailer.send_template(
            state().settings,
            os.environ,
            to=to,
            subject=subject,
            template=template,
            now=now(),
            **values,
        )
    except (MailError, ConfigError) as exc:
        log.warning("exchange mail %s not sent (%s)", template, type(exc).__name__)
        return False
    return True


def _base_url() -> str:
    return mailer.base_url(state().settings)


def _remove_blobs(objects: Sequence[str]) -> None:
    """After the commit that shredded them: their keys are gone, the ciphertext goes."""
    for object_id in objects:
        with contextlib.suppress(FileNotFoundError, NotFound):
            state().vault.blobs.delete(object_id)


# --- streaming files ------------------------------------------------------------------------

Finish = Callable[[int, bool], None]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range (RFC 9110, 14.1.2), or None to send
    the whole file: no header, or one not served in part (several ranges, another unit,
    bad syntax), which a server may ignore. ValueError when it cannot be satisfied."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last n bytes
        wanted = int(last)
        if wanted == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - wanted), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(end, size - 1)


def disposition(name: str) -> str:
    """Content-Disposition for a download (RFC 6266): the UTF-8 name, and an ASCII
    fallback for old clients."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9 ._()-]+", "_", ascii_name).strip(" ._") or "fichier"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _download_headers(name: str) -> dict[str, str]:
    return {
        "Content-Disposition": disposition(name),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _file_body(
    st: AppState, item: service.Servable, first: int, last: int, finish: Finish | None
) -> Iterator[bytes]:
    """The plaintext of bytes first..last, read from the vault as the client takes it,
    in a session that ends with the body. `finish(sent, complete)` is called when the
    body ends: complete when the last byte of the file went out."""
    chunks = _reader(st, item, first)
    length = last - first + 1
    to_end = last == item.size - 1

    def body() -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in chunks:
                piece = chunk[: length - sent]
                if piece:
                    sent += len(piece)  # counted before the yield: it is then handed over
                    yield piece
                if sent >= length and not to_end:
                    break  # a range that stops short: the rest is not read
        except IntegrityError:
            log.error("object %s: damaged, download %s cut", item.object_id, item.file_id)
        finally:
            _close(chunks)
            if finish is not None:
                finish(sent, to_end and sent == length)

    return body()


def _reader(st: AppState, item: service.Servable, start: int = 0) -> Iterator[bytes]:
    """The object's plaintext from `start`. The session only unwraps the key (a read,
    no write lock on SQLite) and is closed before the first byte is read: no
    transaction lasts as long as a download."""
    with st.sessions() as session:
        reading(session)
        return st.vault.reader(session, item.tenant, item.object_id, start=start)


class _Sink(io.RawIOBase):
    """Where `zipfile` writes the archive: the generator takes out what was written
    after each write, so that only a chunk or two is ever held."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._offset += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._offset

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def unique_names(names: Sequence[str]) -> list[str]:
    """Names for the entries of an archive: a repeated name gets " (2)", " (3)"…"""
    seen: set[str] = set()
    out = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not stem:
            stem, dot, ext = name, "", ""
        candidate, n = name, 2
        while candidate.casefold() in seen:
            candidate, n = f"{stem} ({n}){dot}{ext}", n + 1
        seen.add(candidate.casefold())
        out.append(candidate)
    return out


def _zip_body(
    st: AppState, items: Sequence[service.Servable], finish: Finish | None
) -> Iterator[bytes]:
    """Every file in a ZIP archive (stored, not compressed: files are mostly PDFs and
    images already), streamed; `finish(sent, complete)` when the body ends."""
    stamp = st.clock().astimezone(ZoneInfo(str(st.settings["timezone"]))).timetuple()[:6]
    names = unique_names([item.name for item in items])

    def body() -> Iterator[bytes]:
        sink = _Sink()
        sent, done = 0, False
        try:
            with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, item in zip(names, items, strict=True):
                    info = zipfile.ZipInfo(name, date_time=stamp)
                    info.compress_type = zipfile.ZIP_STORED
                    info.file_size = item.size  # zip64 headers when it needs them
                    info.external_attr = 0o644 << 16
                    chunks = _reader(st, item)
                    try:
                        with archive.open(info, "w") as entry:
                            for chunk in chunks:
                                entry.write(chunk)
                                data = sink.take()
                                sent += len(data)
                                yield data
                    finally:
                        _close(chunks)
            data = sink.take()  # the last descriptor and the central directory
            sent += len(data)
            done = True
            yield data
        except IntegrityError:
            log.error("archive of %d files cut: a damaged object", len(items))
        finally:
            if finish is not None:
                finish(sent, done)

    return body()


def _recorder(st: AppState, download_id: int) -> Finish:
    """Record how a recipient's download ended, in a transaction of its own (the
    request's is over by then)."""

    def finish(sent: int, complete: bool) -> None:
        try:
            with transaction(st.sessions) as session:
                service.finish_download(
                    session, download_id, sent=sent, complete=complete, now=st.clock()
                )
        except Exception:  # the body is sent: nothing to tell the client any more
            log.exception("download %s: its end was not recorded", download_id)

    return finish


def _send_file(
    item: service.Servable,
    *,
    start: Callable[[int], Finish | None],
    ranges: bool,
) -> Response:
    """A download with HTTP ranges (a single range; If-Range with our ETag). `start`
    counts it (with the first byte served) once we know it will be served."""
    etag = f'"{item.object_id}"'
    headers = _download_headers(item.name)
    headers.update({"ETag": etag, "Accept-Ranges": "bytes" if ranges else "none"})
    wanted = None
    if ranges and request.headers.get("If-Range", etag) == etag:
        try:
            wanted = byte_range(request.headers.get("Range"), item.size)
        except ValueError:
            headers["Content-Range"] = f"bytes */{item.size}"
            return Response(status=416, headers=headers)
    first, last = wanted or (0, item.size - 1)
    headers["Content-Length"] = str(last - first + 1)
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{item.size}"
    status = 206 if wanted is not None else 200
    content_type = uploads.clean_media_type(item.media_type)
    if request.method == "HEAD":  # a look at the headers is not a download
        return Response(status=status, headers=headers, content_type=content_type)
    finish = start(first)
    body = _file_body(state(), item, first, last, finish)
    return Response(body, status=status, headers=headers, content_type=content_type)


def _send_zip(items: Sequence[service.Servable], filename: str, finish: Finish | None) -> Response:
    headers = _download_headers(filename)
    if request.method == "HEAD":
        return Response(status=200, headers=headers, content_type="application/zip")
    return Response(
        _zip_body(state(), items, finish), headers=headers, content_type="application/zip"
    )


# --- staff: lists ---------------------------------------------------------------------------


@bp.get("/plis")
@staff
def index() -> Any:
    tab = request.args.get("onglet", "envoyes")
    if tab not in TABS:
        abort(404)
    user, vault = roles.current(), state().vault
    sent = received = addressed = None
    if tab == "envoyes":
        sent = service.list_for_staff(db(), vault, user, direction=service.OUTGOING)
    else:
        received = service.list_for_staff(db(), vault, user, direction=service.INCOMING)
        addressed = service.received_by_user(db(), vault, user)
    return render_template(
        "exchange/index.html",
        tabs=TABS,
        tab=tab,
        sent=sent,
        received=received,
        addressed=addressed,
    )


@bp.get("/plis/recus/<int:pli_id>")
@login_required
def received(pli_id: int) -> Any:
    """A pli addressed to the signed-in user on the platform, by any commune: its
    recipient page (the link token is kept sealed for the sending commune)."""
    pli = db().get(Pli, pli_id)
    if pli is None or pli.direction != service.OUTGOING:
        raise NotFound("Pli introuvable.")
    tenant = db().get(Tenant, pli.tenant_id)
    assert tenant is not None
    with column_keys(db(), state().vault.keyring, tenant.insee):
        link = db().scalar(
            select(Recipient.link).where(
                Recipient.pli_id == pli.id, Recipient.user_id == roles.current().id
            )
        )
    if link is None:
        raise NotFound("Pli introuvable.")
    return redirect(url_for("exchange_public.landing", token=link))


# --- staff: a new pli -----------------------------------------------------------------------


def _uploader() -> tuple[Tenant, str]:
    """Who sends files with the resumable upload: a signed-in agent of a commune."""
    if not current_user.is_authenticated:
        raise AuthenticationFailed("Connectez-vous pour téléverser des fichiers.")
    user = roles.current()
    if user.tenant is None or not service.staff_can_send(user):
        raise Forbidden("Les fichiers des plis sont téléversés par les agents d'une commune.")
    return user.tenant, f"user:{user.id}"


add_tus_routes(bp, "/plis/televersements", _uploader, "staff")


def _kept_uploads(ids: Sequence[str]) -> list[uploads.UploadView]:
    """The finished uploads a form came back with: offered again, not sent again."""
    owner = f"user:{roles.current().id}"
    kept = []
    for upload_id in dict.fromkeys(ids):
        try:
            upload = uploads.status(db(), state().vault, upload_id, owner, now=now())
        except SecurexError:
            continue
        if upload.complete:
            kept.append(upload)
    return kept


def _render_new(
    form: forms.SendForm, kept: Sequence[uploads.UploadView], status: int = 200
) -> tuple[str, int]:
    policy = _policy()
    return render_template(
        "exchange/new.html",
        form=form,
        kept=kept,
        policy=policy,
        form_limit=size_fr(policy.form_max_bytes),
        file_limit=size_fr(policy.max_file_bytes),
        chunk_bytes=CHUNK_BYTES,
        keep_hours=_policy().upload_hours,
    ), status


def _int(value: int | None) -> int | None:
    return value if isinstance(value, int) else None


@bp.route("/plis/nouveau", methods=["GET", "POST"])
@staff
def new() -> Any:
    policy = _policy()
    form = forms.SendForm()
    if request.method == "GET":
        form.expires_in_days.data = policy.default_expiry_days
        form.download_limit.data = policy.default_download_limit
        return _render_new(form, [])
    upload_ids = [u for u in request.form.getlist("uploads") if u][: service.MAX_FILES]
    files = _form_files()
    if form.validate():
        try:
            pli, phone_codes = service.send(
                db(),
                state().vault,
                roles.current(),
                recipients=(form.recipients.data or "").splitlines(),
                subject=form.subject.data or "",
                message=form.message.data or "",
                files=[*files, *(service.FileInput(upload_id=u) for u in upload_ids)],
                expires_in_days=_int(form.expires_in_days.data),
                download_limit=_int(form.download_limit.data),
                verification=form.verification.data or "",
                source="web",
                now=now(),
                policy=policy,
            )
        except SecurexError as exc:
            db().rollback()
            forms.show_errors(form, exc)
        else:
            db().commit()
            if phone_codes:
                # Shown once, in this answer: never stored, not even in the session.
                return render_template("exchange/sent.html", pli_id=pli.id, phone_codes=phone_codes)
            flash(
                f"Pli n° {pli.id} créé : les destinataires reçoivent leur lien dans un instant.",
                "success",
            )
            return redirect(url_for(".detail", pli_id=pli.id), 303)
    form.form_errors.append("Le pli n'est pas envoyé : corrigez ce qui est signalé.")
    if files:
        form.form_errors.append(
            "Les fichiers joints au formulaire n'ont pas été conservés : choisissez-les à nouveau."
        )
    return _render_new(form, _kept_uploads(upload_ids), 422)


# --- staff: one pli -------------------------------------------------------------------------


def _staff_pli(pli_id: int) -> Pli:
    return service.get_for_staff(db(), roles.current(), pli_id)


@bp.get("/plis/<int:pli_id>")
@staff
def detail(pli_id: int) -> Any:
    pli = _staff_pli(pli_id)
    view = service.read(db(), state().vault, pli, roles.actor(), now=now())
    db().commit()
    return render_template(
        "exchange/detail.html",
        pli=view,
        incoming=view.direction == service.INCOMING,
        downloadable=_staff_downloadable(pli),
        action=forms.ActionForm(),
        mail_enabled=MailSettings.from_settings(state().settings, os.environ).enabled,
    )


@bp.post("/plis/<int:pli_id>/destinataires/<int:recipient_id>/deverrouiller")
@staff
def unlock(pli_id: int, recipient_id: int) -> Any:
    pli = _staff_pli(pli_id)
    service.unlock(db(), pli, recipient_id, roles.actor(), now=now())
    db().commit()
    flash("Destinataire déverrouillé : il peut demander un nouveau code et le saisir.", "success")
    return redirect(url_for(".detail", pli_id=pli_id), 303)


@bp.route("/plis/<int:pli_id>/revoquer", methods=["GET", "POST"])
@staff
def revoke(pli_id: int) -> Any:
    """GET: the confirmation page; POST: the pli is withdrawn, its files destroyed."""
    pli = _staff_pli(pli_id)
    if request.method == "GET":
        view = service.view(db(), state().vault, pli, with_downloads=False)
        return render_template("exchange/revoke.html", pli=view, action=forms.ActionForm())
    try:
        gone = service.revoke(db(), state().vault, pli, roles.actor(), now=now())
    except Gone as exc:
        db().rollback()
        flash(exc.detail, "warning")
        return redirect(url_for(".detail", pli_id=pli_id), 303)
    db().commit()
    _remove_blobs(gone)
    flash("Pli révoqué : ses fichiers sont détruits et ses liens ne s'ouvrent plus.", "success")
    return redirect(url_for(".detail", pli_id=pli_id), 303)


def _staff_downloadable(pli: Pli) -> bool:
    return pli.direction == service.INCOMING and pli.status in (
        PliStatus.SENT,
        PliStatus.PREPARING,
    )


def _incoming_files(pli_id: int) -> tuple[Pli, list[service.Servable]]:
    """The files of a pli the commune received (a reply, a deposit), for its staff."""
    pli = _staff_pli(pli_id)
    if pli.direction != service.INCOMING:
        raise Forbidden(
            "Les fichiers d'un pli envoyé se téléchargent par ses destinataires, pas ici."
        )
    if not _staff_downloadable(pli):
        raise Gone(
            f"Les fichiers de ce pli ne sont pas disponibles "
            f"({PliStatus(pli.status).label.lower()})."
        )
    view = service.view(db(), state().vault, pli, with_downloads=False)
    objects = {f.id: f.object_id for f in service.files_of(db(), pli)}
    items = [
        service.Servable(
            view.insee, objects[f["id"]], f["name"], f["type"], f["size"], f["id"], False
        )
        for f in view.files
    ]
    return pli, items


def _audit_staff_download(pli: Pli, file_id: int | None) -> None:
    record(
        db(),
        EventType.PLI_DOWNLOADED,
        actor=str(roles.actor()),
        subject=f"pli:{pli.id}",
        tenant=roles.insee(),
        details={"file": file_id},
        now=now(),
    )
    db().commit()


@bp.get("/plis/<int:pli_id>/fichiers/<int:file_id>")
@staff
def staff_file(pli_id: int, file_id: int) -> Any:
    pli, items = _incoming_files(pli_id)
    item = next((i for i in items if i.file_id == file_id), None)
    if item is None:
        raise NotFound("Fichier introuvable dans ce pli.")

    def start(_first: int) -> None:
        _audit_staff_download(pli, file_id)

    return _send_file(item, start=start, ranges=False)


@bp.get("/plis/<int:pli_id>/tout.zip")
@staff
def staff_zip(pli_id: int) -> Any:
    pli, items = _incoming_files(pli_id)
    if request.method != "HEAD":
        _audit_staff_download(pli, None)
    return _send_zip(items, f"pli-{pli.id}.zip", None)


# --- staff: deposit links -------------------------------------------------------------------


def _render_deposits(
    form: forms.DepositForm, status: int = 200, created: dict[str, Any] | None = None
) -> tuple[str, int]:
    rows = service.list_deposits(db(), state().vault, roles.current())
    return render_template(
        "exchange/deposits.html",
        form=form,
        rows=rows,
        created=created,
        now=now(),
        policy=_policy(),
        action=forms.ActionForm(),
    ), status


@bp.route("/plis/depots", methods=["GET", "POST"])
@staff
def deposits() -> Any:
    policy = _policy()
    form = forms.DepositForm()
    if request.method == "GET":
        form.days.data, form.uses.data = policy.deposit_days, 1
        return _render_deposits(form)
    if not form.validate():
        return _render_deposits(form, 422)
    user = roles.current()
    try:
        deposit, token = service.create_deposit(
            db(),
            state().vault,
            user,
            label=form.label.data or "",
            instructions=form.instructions.data or "",
            email=form.email.data or "",
            days=_int(form.days.data),
            uses=_int(form.uses.data) or 1,
            now=now(),
            policy=policy,
        )
    except SecurexError as exc:
        db().rollback()
        forms.show_errors(form, exc)
        return _render_deposits(form, 422)
    db().commit()
    content = service.deposit_content(db(), state().vault, deposit)
    link = f"{_base_url()}{url_for('exchange_public.deposit', token=token)}"
    mailed = None
    if content["email"]:
        mailed = _mail(
            content["email"],
            f"{content['commune']} : déposez vos documents en toute sécurité",
            "deposit",
            commune=content["commune"],
            label=content["label"],
            link=link,
            expires_at=deposit.expires_at,
        )
    # The link is in this answer only (not a redirect): it is never stored anywhere.
    fresh = forms.DepositForm(formdata=None)
    fresh.days.data, fresh.uses.data = policy.deposit_days, 1
    created = {"link": link, "email": content["email"], "mailed": mailed, **content}
    return _render_deposits(fresh, created=created)


@bp.post("/plis/depots/<int:deposit_id>/revoquer")
@staff
def revoke_deposit(deposit_id: int) -> Any:
    service.revoke_deposit(db(), roles.current(), deposit_id, now=now())
    db().commit()
    flash("Lien de dépôt révoqué : il ne s'ouvre plus.", "success")
    return redirect(url_for(".deposits"), 303)


# --- staff: OpenPGP keys --------------------------------------------------------------------


def _inspect_key(data: bytes | str) -> Any:
    """What the key is, read by GnuPG in a throwaway home (in memory when possible)."""
    from securex.exchange.openpgp import OpenPgp

    shm = Path("/dev/shm")  # noqa: S108 (the directory is created private by mkdtemp)
    home = tempfile.mkdtemp(prefix="securex-gnupg-", dir=str(shm) if shm.is_dir() else None)
    try:
        return OpenPgp(home).inspect(data)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def armor(data: bytes) -> str:
    """A binary public key in ASCII armor (RFC 4880, 6.2), as keys are stored."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    checksum = base64.b64encode((crc & 0xFFFFFF).to_bytes(3, "big")).decode()
    return "\n".join(
        [
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "",
            *lines,
            f"={checksum}",
            "-----END PGP PUBLIC KEY BLOCK-----",
            "",
        ]
    )


def _submitted_key(form: forms.KeyForm) -> tuple[bytes | str, str] | None:
    """The key given (the file first, else the text) and its armored text."""
    upload = request.files.get("key_file")
    if upload is not None and upload.filename:
        data = upload.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data, armor(data)
        if "-----BEGIN PGP" in text:
            return text, text
        return data, armor(data)
    text = (form.key.data or "").strip()
    return (text, text + "\n") if text else None


@bp.route("/plis/cles", methods=["GET", "POST"])
@staff
def keys() -> Any:
    form = forms.KeyForm()
    status = 200 if request.method == "GET" else 422
    if request.method == "POST" and form.validate():
        given = _submitted_key(form)
        if given is None:
            form.key.errors = ["Collez la clé publique, ou choisissez son fichier."]
        else:
            data, armored = given
            try:
                key = _inspect_key(data)
                service.register_key(
                    db(),
                    state().vault,
                    roles.current(),
                    form.email.data or "",
                    key,
                    armored,
                    now=now(),
                )
            except SecurexError as exc:
                db().rollback()
                forms.show_errors(form, exc)
                if getattr(exc, "reason", "") == "secret-key":
                    form.key.data = ""  # a private key is not shown back, even to its sender
            else:
                db().commit()
                flash(
                    f"Clé {fingerprint(key.fingerprint)} enregistrée : les prochains plis "
                    "adressés à cette adresse lui seront chiffrés.",
                    "success",
                )
                return redirect(url_for(".keys"), 303)
    rows = service.list_keys(db(), state().vault, roles.current())
    return render_template("exchange/keys.html", form=form, rows=rows, now=now()), status


# --- recipients ---------------------------------------------------------------------------


@public_bp.errorhandler(SecurexError)
def _public_error(error: SecurexError) -> Any:
    db().rollback()
    titles = {
        403: "Accès refusé",
        404: "Lien introuvable",
        410: "Plus disponible",
        429: "Accès verrouillé",
    }
    return render_template(
        "exchange/public_error.html",
        title=titles.get(error.status, error.title),
        message=error.detail,
        status=error.status,
    ), error.status


def _landing(
    access: service.Access,
    token: str,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    code_sent: bool = False,
    typed: dict[str, str] | None = None,
) -> tuple[str, int]:
    rcpt = access.recipient
    view = service.view(db(), state().vault, access.pli, with_downloads=False)
    me = current_user.is_authenticated and current_user.id == rcpt.user_id
    pending = rcpt.code_mac is not None and (
        rcpt.code_expires_at is not None and rcpt.code_expires_at > now()
    )
    return render_template(
        "exchange/landing.html",
        pli=view,
        token=token,
        platform=rcpt.user_id is not None,
        me=me,
        other_account=current_user.is_authenticated and not me,
        locked=rcpt.locked_at is not None,
        phone=rcpt.phone_code_mac is not None,
        show_code=code_sent or pending,
        code_until=rcpt.code_expires_at if pending else None,
        notice=notice,
        error=error,
        typed=typed or {},
        action=forms.ActionForm() if me else None,
        expired=request.args.get("acces") == "expire",
    ), status


@public_bp.get("/plis/d/<token>")
def landing(token: str) -> Any:
    """A read only: no code sent, nothing counted or marked (mail scanners open it)."""
    return _landing(service.by_link(db(), token, now=now()), token)


@public_bp.post("/plis/d/<token>/code")
def send_code(token: str) -> Any:
    st, policy = state(), _policy()
    try:
        access, code, address = service.new_code(
            db(), st.vault, st.keys, token, now=now(), policy=policy
        )
    except (RateLimited, Forbidden) as exc:
        db().commit()  # the count of codes asked for
        return _landing(
            service.by_link(db(), token, now=now()), token, status=exc.status, error=exc.detail
        )
    db().commit()  # the code is valid before it leaves
    commune = service.view(db(), st.vault, access.pli, with_downloads=False).commune
    mailed = _mail(
        address,
        f"Code d'accès au pli confidentiel de {commune}",
        "code",
        commune=commune,
        code=code,
        minutes=policy.code_minutes,
        link=f"{_base_url()}{url_for('.landing', token=token)}",
    )
    if not mailed:
        return _landing(
            access,
            token,
            status=503,
            error="Le code n'a pas pu vous être envoyé par e-mail. Réessayez dans quelques "
            "minutes, ou contactez l'expéditeur.",
        )
    return _landing(
        access,
        token,
        code_sent=True,
        notice=f"Un code vient d'être envoyé à l'adresse {masked(address)}. Il est valable "
        f"{policy.code_minutes} minutes.",
    )


def _set_access(response: BaseResponse, token: str, cookie: str) -> BaseResponse:
    response.set_cookie(
        service.ACCESS_COOKIE,
        cookie,
        max_age=_policy().access_minutes * 60,
        path=url_for("exchange_public.landing", token=token),
        secure=bool(state().settings["security.session_cookie_secure"]),
        httponly=True,
        samesite="Lax",
    )
    return response


@public_bp.post("/plis/d/<token>/ouvrir")
def open_with_code(token: str) -> Any:
    typed = {
        "code": (request.form.get("code") or "")[:20],
        "phone_code": (request.form.get("phone_code") or "")[:20],
    }
    try:
        _, cookie = service.check_code(
            db(),
            state().vault,
            token,
            typed["code"],
            typed["phone_code"],
            now=now(),
            policy=_policy(),
        )
    except (ValidationFailed, RateLimited) as exc:
        db().commit()  # a wrong entry counts, and a lock holds
        access = service.by_link(db(), token, now=now())
        return _landing(access, token, status=exc.status, error=exc.detail, typed=typed)
    db().commit()
    return _set_access(redirect(url_for(".pli", token=token), 303), token, cookie)


@bp.post("/plis/d/<token>/compte")
@login_required
def open_as_user(token: str) -> Any:
    """A platform user opens a pli addressed to their account (CSRF-protected: the
    signed-in session is what authorises it)."""
    _, cookie = service.open_as_user(db(), token, roles.current(), now=now(), policy=_policy())
    db().commit()
    return _set_access(redirect(url_for("exchange_public.pli", token=token), 303), token, cookie)


def _access(token: str) -> service.Access:
    return service.with_access(db(), token, request.cookies.get(service.ACCESS_COOKIE), now=now())


def _to_landing(token: str) -> BaseResponse:
    return redirect(url_for(".landing", token=token, acces="expire"), 303)


def _pli_page(
    access: service.Access,
    token: str,
    *,
    form: forms.ReplyForm | None = None,
    status: int = 200,
) -> tuple[str, int]:
    st = state()
    view = service.view(db(), st.vault, access.pli, with_downloads=False)
    pli = access.pli
    return render_template(
        "exchange/pli.html",
        pli=view,
        token=token,
        items=service.servables(db(), st.vault, access),
        available=pli.status == PliStatus.SENT,
        can_reply=pli.direction == service.OUTGOING and pli.sender_user_id is not None,
        form=form or forms.ReplyForm(formdata=None),
        form_limit=size_fr(_policy().form_max_bytes),
        file_limit=size_fr(_policy().max_file_bytes),
        max_file_bytes=_policy().max_file_bytes,
        chunk_bytes=CHUNK_BYTES,
        keep_hours=_policy().upload_hours,
        replied=request.args.get("reponse") == "envoyee",
    ), status


@public_bp.get("/plis/d/<token>/pli")
def pli(token: str) -> Any:
    try:
        access = _access(token)
    except Forbidden:
        return _to_landing(token)
    return _pli_page(access, token)


def _read_body() -> None:
    """Take in the whole form (its files too) before the first database statement: on
    SQLite a transaction holds the write lock, and a slow sender must not hold it
    while the body arrives."""
    _ = request.form, request.files


def _uploaded() -> list[service.FileInput]:
    """The files a form's script already sent by resumable upload (their ids)."""
    ids = [u for u in request.form.getlist("uploads") if u][: service.MAX_FILES]
    return [service.FileInput(upload_id=u) for u in ids]


def _reply_owner() -> tuple[Tenant, str]:
    """A recipient who opened the pli uploads the files of a reply."""
    token = (request.view_args or {})["token"]
    access = service.with_access(db(), token, request.cookies.get(service.ACCESS_COOKIE), now=now())
    tenant = db().get(Tenant, access.pli.tenant_id)
    assert tenant is not None
    return tenant, f"recipient:{access.recipient.id}"


def _deposit_owner() -> tuple[Tenant, str]:
    """Whoever holds a deposit link uploads the files of their deposit."""
    found = service.deposit_by_token(db(), (request.view_args or {})["token"], now=now())
    tenant = db().get(Tenant, found.tenant_id)
    assert tenant is not None
    return tenant, f"deposit:{found.id}"


add_tus_routes(public_bp, "/plis/d/<token>/televersements", _reply_owner, "reply")
add_tus_routes(public_bp, "/depot/<token>/televersements", _deposit_owner, "deposit")


@public_bp.post("/plis/d/<token>/repondre")
def reply(token: str) -> Any:
    _read_body()
    try:
        access = _access(token)
    except Forbidden:
        return _to_landing(token)
    form = forms.ReplyForm()
    files = _form_files() + _uploaded()
    if form.validate():
        try:
            service.reply(
                db(),
                state().vault,
                access,
                message=form.message.data or "",
                files=files,
                now=now(),
                policy=_policy(),
            )
        except (ValidationFailed, Forbidden, Gone) as exc:
            db().rollback()
            forms.show_errors(form, exc)
        else:
            db().commit()
            return redirect(url_for(".pli", token=token, reponse="envoyee"), 303)
    form.form_errors.append("La réponse n'est pas envoyée : corrigez ce qui est signalé.")
    if files:
        form.form_errors.append(
            "Les fichiers joints n'ont pas été conservés : choisissez-les à nouveau."
        )
    return _pli_page(_access(token), token, form=form, status=422)


@public_bp.get("/plis/d/<token>/fichiers/<int:file_id>")
def download(token: str, file_id: int) -> Any:
    try:
        access = _access(token)
    except Forbidden:
        return _to_landing(token)
    st = state()
    item = next(
        (s for s in service.servables(db(), st.vault, access) if s.file_id == file_id), None
    )
    if item is None:
        raise NotFound("Fichier introuvable dans ce pli.")

    def start(first: int) -> Finish:
        download_id, _ = service.start_download(
            db(),
            st.vault,
            access,
            file_id,
            range_start=first,
            address=request.remote_addr or "",
            now=now(),
        )
        db().commit()
        return _recorder(st, download_id)

    return _send_file(item, start=start, ranges=True)


@public_bp.get("/plis/d/<token>/tout.zip")
def download_all(token: str) -> Any:
    try:
        access = _access(token)
    except Forbidden:
        return _to_landing(token)
    st = state()
    if request.method == "HEAD":
        return _send_zip([], f"pli-{access.pli.id}.zip", None)
    download_id, items = service.start_download(
        db(), st.vault, access, None, range_start=0, address=request.remote_addr or "", now=now()
    )
    db().commit()
    return _send_zip(items, f"pli-{access.pli.id}.zip", _recorder(st, download_id))


# --- deposits -------------------------------------------------------------------------------


@public_bp.route("/depot/<token>", methods=["GET", "POST"])
def deposit(token: str) -> Any:
    """Someone without an account sends files to the commune. Opening the link is a
    read; the POST uses it."""
    if request.method == "POST":
        _read_body()
    st = state()
    found = service.deposit_by_token(db(), token, now=now())
    content = service.deposit_content(db(), st.vault, found)
    form = forms.DepositUseForm()
    status = 200
    if request.method == "POST":
        status = 422
        files = _form_files() + _uploaded()
        if form.validate():
            try:
                pli = service.use_deposit(
                    db(),
                    st.vault,
                    token,
                    name=form.name.data or "",
                    email=form.email.data or "",
                    message=form.message.data or "",
                    files=files,
                    now=now(),
                    policy=_policy(),
                )
            except ValidationFailed as exc:
                db().rollback()
                forms.show_errors(form, exc)
            else:
                db().commit()
                return render_template(
                    "exchange/deposit_done.html",
                    commune=content["commune"],
                    pli_id=pli.id,
                    files=len(files),
                )
        form.form_errors.append("Rien n'est transmis : corrigez ce qui est signalé.")
        if files:
            form.form_errors.append(
                "Les fichiers joints n'ont pas été conservés : choisissez-les à nouveau."
            )
    return render_template(
        "exchange/deposit.html",
        deposit=content,
        token=token,
        form=form,
        form_limit=size_fr(_policy().form_max_bytes),
        file_limit=size_fr(_policy().max_file_bytes),
        max_file_bytes=_policy().max_file_bytes,
        chunk_bytes=CHUNK_BYTES,
        keep_hours=_policy().upload_hours,
    ), status
