"""Background work of the exchange: preparing a pli (antivirus, checksums, OpenPGP
copies, notifications), receipts to senders, reminders before expiry, and the purge.

Every step is idempotent, because a job that crashes is run again: a scanned file is
not scanned twice, a copy made is not made again, a recipient notified is not
notified again (each notification is committed on its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from securex.accounts.models import Tenant, User
from securex.audit import EventType, record
from securex.db import reading, transaction
from securex.errors import NotFound
from securex.exchange import antivirus, service, uploads
from securex.exchange.mailer import base_url, send_template
from securex.exchange.models import (
    PgpCopy,
    PgpKey,
    Pli,
    PliFile,
    PliStatus,
    Recipient,
    ScanStatus,
)
from securex.jobs.models import Job
from securex.jobs.service import Runtime, handler, periodic
from securex.mail import MailError, MailSettings
from securex.vault.columns import column_keys

log = logging.getLogger(__name__)


class IterReader(io.RawIOBase):
    """A read-only file over an iterator of chunks (for `Vault.put`)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        view = memoryview(target)
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def policy(rt: Runtime) -> service.ExchangePolicy:
    return service.ExchangePolicy.from_settings(rt.settings)


def _payload(rt: Runtime, job_id: int) -> dict[str, Any]:
    with rt.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        payload: dict[str, Any] = json.loads(job.payload)
        return payload


def _insee(db: Any, pli: Pli) -> str:
    tenant = db.get(Tenant, pli.tenant_id)
    assert tenant is not None
    return str(tenant.insee)


def _plain(rt: Runtime, insee: str, object_id: str) -> Iterator[bytes]:
    """The plaintext of an object. The session only unwraps its key and is closed
    before the first byte is read, so no transaction lasts as long as the file."""
    with rt.sessions() as db:
        reading(db)
        return rt.vault.reader(db, insee, object_id)


# --- preparation ---------------------------------------------------------------------------


def _scan_files(rt: Runtime, pli_id: int) -> bool:
    """Checksum (and scan, when clamd is configured) each file not done yet. Returns
    False when the pli was blocked."""
    rules = policy(rt)
    with rt.sessions() as db:
        pli = db.get(Pli, pli_id)
        assert pli is not None
        insee = _insee(db, pli)
        todo = [
            (f.id, f.object_id)
            for f in service.files_of(db, pli)
            if f.scan in (ScanStatus.PENDING, ScanStatus.NOT_SCANNED)
        ]
        with column_keys(db, rt.vault.keyring, insee):
            done = {f.id for f in service.files_of(db, pli) if "sha256" in json.loads(f.meta)}
    for file_id, object_id in todo:
        if file_id in done and not rules.clamd:
            continue
        digest = hashlib.sha256()

        def feed(chunks: Iterable[bytes], digest: Any = digest) -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk

        chunks = feed(_plain(rt, insee, object_id))
        verdict: tuple[str, str | None]
        if rules.clamd:
            try:
                result = antivirus.scan(rules.clamd, chunks)
                verdict = (
                    (ScanStatus.CLEAN, None)
                    if result.clean
                    else (ScanStatus.INFECTED, result.signature)
                )
            except antivirus.ScanTooLarge:
                for _ in chunks:  # finish the checksum
                    pass
                verdict = (ScanStatus.TOO_LARGE, None)
        else:
            for _ in chunks:
                pass
            verdict = (ScanStatus.NOT_SCANNED, None)
        with transaction(rt.sessions) as db:
            row = db.get(PliFile, file_id)
            assert row is not None
            with column_keys(db, rt.vault.keyring, insee):
                meta = json.loads(row.meta)
                meta["sha256"] = digest.hexdigest()
                row.meta = json.dumps(meta)
                db.flush()
            row.scan, row.scan_signature = verdict
            if rules.clamd:
                record(
                    db,
                    EventType.PLI_SCANNED,
                    actor="system:antivirus",
                    subject=f"pli:{pli_id}",
                    tenant=insee,
                    details={"file": file_id, "result": verdict[0]},
                    now=rt.clock(),
                )
    with transaction(rt.sessions) as db:
        pli = db.get(Pli, pli_id)
        assert pli is not None
        infected = [
            f
            for f in service.files_of(db, pli)
            if f.scan == ScanStatus.INFECTED
            or (f.scan == ScanStatus.TOO_LARGE and rules.scan_too_large != "offer")
        ]
        if not infected:
            if pli.status == PliStatus.SCANNING:
                pli.status = PliStatus.PREPARING
            return True
        now = rt.clock()
        pli.status = PliStatus.BLOCKED
        record(
            db,
            EventType.PLI_BLOCKED,
            actor="system:antivirus",
            subject=f"pli:{pli_id}",
            tenant=insee,
            details={"files": [f.id for f in infected]},
            now=now,
        )
        gone = service._shred(db, rt.vault, pli, "system:antivirus", now)
        sender_id = pli.sender_user_id
        count = len(infected)
    _remove_blobs(rt, gone)
    if sender_id is not None:
        with rt.sessions() as db:
            user = db.get(User, sender_id)
            assert user is not None
            email = user.email
        _mail(
            rt,
            to=email,
            subject=f"Pli n° {pli_id} bloqué par l'antivirus",
            template="blocked",
            pli_id=pli_id,
            infected=count,
            link=f"{base_url(rt.settings)}/plis/{pli_id}",
        )
    return False


def _pgp_copies(rt: Runtime, pli_id: int) -> None:
    """Each file encrypted to each recipient who has a registered key, kept in the
    vault like the original; the GnuPG home exists only while encrypting."""
    from securex.exchange.openpgp import KeyRefused, OpenPgp

    with rt.sessions() as db:
        pli = db.get(Pli, pli_id)
        assert pli is not None
        insee = _insee(db, pli)
        files = [(f.id, f.object_id) for f in service.files_of(db, pli)]
        wanted = [
            (r.id, r.pgp_fingerprint) for r in service.recipients_of(db, pli) if r.pgp_fingerprint
        ]
        have = {
            (c.recipient_id, c.file_id)
            for c in db.scalars(select(PgpCopy).join(Recipient).where(Recipient.pli_id == pli_id))
        }
        keys: dict[str, str] = {}
        with column_keys(db, rt.vault.keyring, insee):
            for _, fingerprint in wanted:
                assert fingerprint is not None
                row = db.scalars(
                    select(PgpKey).where(
                        PgpKey.tenant_id == pli.tenant_id, PgpKey.fingerprint == fingerprint
                    )
                ).first()
                if row is not None:
                    keys[fingerprint] = row.armored
    if not wanted:
        return
    home = Path(tempfile.mkdtemp(prefix="securex-gpg-", dir=_ram_dir()))
    try:
        gpg = OpenPgp(home, clock=rt.clock)
        usable = set()
        for fingerprint, armored in keys.items():
            try:
                gpg.import_key(armored)
                usable.add(fingerprint)
            except KeyRefused:
                log.warning("pli %s: an OpenPGP key is refused now (expired, revoked)", pli_id)
        for recipient_id, fingerprint in wanted:
            assert fingerprint is not None
            if fingerprint not in usable:
                # Expired or revoked since it was registered: this recipient gets the
                # files as every other one does, protected by the code.
                _drop_key(rt, recipient_id)
                continue
            for file_id, object_id in files:
                if (recipient_id, file_id) in have:
                    continue
                try:
                    encrypted = gpg.encrypt(fingerprint, _plain(rt, insee, object_id))
                except (KeyRefused, NotFound):
                    log.warning("pli %s: OpenPGP key refused, sent without it", pli_id)
                    _drop_key(rt, recipient_id)
                    break
                with rt.sessions() as db:
                    reading(db)  # only the tenant's key: no write lock while gpg runs
                    obj = rt.vault.write(db, insee, IterReader(encrypted), now=rt.clock())
                with transaction(rt.sessions) as db:
                    pli = db.scalar(select(Pli).where(Pli.id == pli_id).with_for_update())
                    db.add(obj)
                    db.flush()
                    if pli is None or pli.purged_at is not None:
                        # Revoked or purged while gpg ran: this copy goes at once too.
                        rt.vault.shred(db, insee, obj.id, now=rt.clock(), actor="system:exchange")
                        continue
                    db.add(
                        PgpCopy(
                            file_id=file_id,
                            recipient_id=recipient_id,
                            object_id=obj.id,
                            size=obj.size,
                        )
                    )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _drop_key(rt: Runtime, recipient_id: int) -> None:
    with transaction(rt.sessions) as db:
        rcpt = db.get(Recipient, recipient_id)
        assert rcpt is not None
        pli = db.get(Pli, rcpt.pli_id)
        assert pli is not None
        rcpt.pgp_fingerprint = None
        for copy in db.scalars(select(PgpCopy).where(PgpCopy.recipient_id == recipient_id)):
            rt.vault.shred(
                db, _insee(db, pli), copy.object_id, now=rt.clock(), actor="system:exchange"
            )
            db.delete(copy)


def _ram_dir() -> str | None:
    """Public keys name people: their throwaway GnuPG home goes to memory when the
    system offers a tmpfs."""
    shm = Path("/dev/shm")  # noqa: S108 (the directory is created private by mkdtemp)
    return str(shm) if shm.is_dir() else None


def _mail(rt: Runtime, *, to: str, subject: str, template: str, **values: Any) -> bool:
    try:
        send_template(
            rt.settings,
            rt.environ,
            to=to,
            subject=subject,
            template=template,
            now=rt.clock(),
            **values,
        )
    except MailError as exc:
        log.warning("exchange mail %s not sent: %s", template, type(exc).__name__)
        return False
    return True


def _mail_enabled(rt: Runtime) -> bool:
    return MailSettings.from_settings(rt.settings, rt.environ).enabled


def _notify(rt: Runtime, pli_id: int) -> bool:
    """One message per recipient not yet notified, each committed on its own. Returns
    False if some could not be sent (the job is then retried for them)."""
    with transaction(rt.sessions) as db:
        pli = db.get(Pli, pli_id)
        assert pli is not None
        if pli.status == PliStatus.PREPARING:
            pli.status = PliStatus.SENT
        todo = [r.id for r in service.recipients_of(db, pli) if r.notified_at is None]
    all_sent = True
    for recipient_id in todo:
        with rt.sessions() as db:
            rcpt = db.get(Recipient, recipient_id)
            pli = db.get(Pli, pli_id)
            assert rcpt is not None and pli is not None
            if pli.status != PliStatus.SENT:
                return True  # revoked (or purged) meanwhile: nobody more is told
            tenant = db.get(Tenant, pli.tenant_id)
            assert tenant is not None
            with column_keys(db, rt.vault.keyring, tenant.insee):
                email, link = rcpt.email, rcpt.link
            files = len(service.files_of(db, pli))
            reply_to = None
            sender = ""
            if pli.sender_user_id is not None:
                user = db.get(User, pli.sender_user_id)
                assert user is not None
                sender, reply_to = user.name, user.email
            incoming = pli.direction == service.INCOMING
            values: dict[str, Any] = {
                "commune": tenant.name,
                "files": files,
                "expires_at": pli.expires_at,
                "pli_id": pli.id,
            }
        if incoming:
            what = "Une réponse à un pli" if pli.parent_id else "Un dépôt de documents"
            sent = _mail(
                rt,
                to=email,
                subject=f"{what} : pli n° {pli_id}",
                template="incoming",
                what=what,
                link=f"{base_url(rt.settings)}/plis/{pli_id}",
                **values,
            )
        else:
            sent = _mail(
                rt,
                to=email,
                subject=f"{tenant.name} : un pli confidentiel vous attend",
                template="notify",
                sender=sender,
                platform=rcpt.user_id is not None,
                phone=rcpt.phone_code_mac is not None,
                link=f"{base_url(rt.settings)}/plis/d/{link}",
                reply_to=reply_to,
                **values,
            )
        with transaction(rt.sessions) as db:
            rcpt = db.get(Recipient, recipient_id)
            assert rcpt is not None
            if sent:
                rcpt.notified_at = rt.clock()
                rcpt.notify_failed = False
                record(
                    db,
                    EventType.PLI_NOTIFIED,
                    actor="system:exchange",
                    subject=f"pli:{pli_id}",
                    tenant=tenant.insee,
                    details={"recipient": recipient_id},
                    now=rt.clock(),
                )
            else:
                rcpt.notify_failed = True
                all_sent = False
    return all_sent


@handler(service.PREPARE_JOB, max_attempts=6)
def prepare(rt: Runtime, job_id: int) -> None:
    pli_id = int(_payload(rt, job_id)["pli"])
    with rt.sessions() as db:
        pli = db.get(Pli, pli_id)
        if pli is None or pli.status not in (
            PliStatus.SCANNING,
            PliStatus.PREPARING,
            PliStatus.SENT,
        ):
            return  # revoked, blocked or purged meanwhile
    if not _scan_files(rt, pli_id):
        return
    _pgp_copies(rt, pli_id)
    if not _notify(rt, pli_id) and _mail_enabled(rt):
        # A relay that refused may accept later; with no relay at all, retrying is
        # pointless: the sender's page shows that the notification did not leave.
        raise MailError("Notification non envoyée : nouvel essai plus tard.")


# --- receipts, reminders, purge ----------------------------------------------------------------


@handler(service.RECEIPT_JOB, max_attempts=6)
def receipt(rt: Runtime, job_id: int) -> None:
    """Tell the sender that a recipient has every file (a download completed)."""
    recipient_id = int(_payload(rt, job_id)["recipient"])
    with rt.sessions() as db:
        rcpt = db.get(Recipient, recipient_id)
        assert rcpt is not None
        pli = db.get(Pli, rcpt.pli_id)
        assert pli is not None
        if pli.sender_user_id is None or rcpt.downloaded_at is None:
            return
        sender = db.get(User, pli.sender_user_id)
        assert sender is not None
        insee = _insee(db, pli)
        with column_keys(db, rt.vault.keyring, insee):
            who = rcpt.email
        to, at = sender.email, rcpt.downloaded_at
    if not _mail_enabled(rt):
        return  # nothing to retry: the sender's page shows the download
    if not _mail(
        rt,
        to=to,
        subject=f"Pli n° {pli.id} téléchargé",
        template="receipt",
        recipient=who,
        pli_id=pli.id,
        at=at,
        link=f"{base_url(rt.settings)}/plis/{pli.id}",
    ):
        raise MailError("Accusé de téléchargement non envoyé : nouvel essai plus tard.")
    with transaction(rt.sessions) as db:
        record(
            db,
            EventType.PLI_RECEIPT_SENT,
            actor="system:exchange",
            subject=f"pli:{pli.id}",
            tenant=insee,
            details={"recipient": recipient_id},
            now=rt.clock(),
        )


def send_reminders(rt: Runtime) -> int:
    rules = policy(rt)
    with rt.sessions() as db:
        due = service.due_reminders(db, now=rt.clock(), policy=rules)
    sent = 0
    for recipient_id in due:
        with transaction(rt.sessions) as db:
            # Claimed first, so that two workers never remind the same recipient twice.
            claimed = db.execute(
                update(Recipient)
                .where(Recipient.id == recipient_id, Recipient.reminded_at.is_(None))
                .values(reminded_at=rt.clock())
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            rcpt = db.get(Recipient, recipient_id)
            assert rcpt is not None
            pli = db.get(Pli, rcpt.pli_id)
            assert pli is not None
            tenant = db.get(Tenant, pli.tenant_id)
            assert tenant is not None
            with column_keys(db, rt.vault.keyring, tenant.insee):
                email, link = rcpt.email, rcpt.link
            values = {"commune": tenant.name, "expires_at": pli.expires_at}
        reminded = _mail(
            rt,
            to=email,
            subject=f"Rappel : un pli de {tenant.name} expire bientôt",
            template="reminder",
            link=f"{base_url(rt.settings)}/plis/d/{link}",
            **values,
        )
        with transaction(rt.sessions) as db:
            rcpt = db.get(Recipient, recipient_id)
            assert rcpt is not None
            if not reminded:
                rcpt.reminded_at = None  # the next round tries again
                continue
            record(
                db,
                EventType.PLI_REMINDED,
                actor="system:exchange",
                subject=f"pli:{rcpt.pli_id}",
                tenant=tenant.insee,
                details={"recipient": recipient_id},
                now=rt.clock(),
            )
        sent += 1
    return sent


def _remove_blobs(rt: Runtime, objects: list[str]) -> None:
    for object_id in objects:
        with contextlib.suppress(FileNotFoundError, NotFound):
            rt.vault.blobs.delete(object_id)


def purge(rt: Runtime) -> int:
    """Expired plis: keys destroyed, then blobs removed; abandoned uploads removed."""
    with transaction(rt.sessions) as db:
        gone = service.purge_expired(db, rt.vault, now=rt.clock())
        uploads.expire(db, rt.vault, now=rt.clock())
    _remove_blobs(rt, gone)
    return len(gone)


@periodic("exchange.gc", timedelta(hours=1))
def collect(rt: Runtime) -> None:
    """Parts no row knows of any more (a crash between the part and its row), and blobs
    whose row never came (a refused send) or was shredded (expired uploads)."""
    rt.vault.gc_uploads(grace_seconds=(policy(rt).upload_hours + 1) * 3600)
    with rt.sessions() as db:
        reading(db)
        rt.vault.gc(db)


@periodic("exchange.reminders", timedelta(minutes=15))
def _reminders(rt: Runtime) -> None:
    send_reminders(rt)


@periodic("exchange.purge", timedelta(minutes=5))
def _purge(rt: Runtime) -> None:
    purge(rt)
