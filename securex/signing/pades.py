"""PAdES signatures for the officier de l'état civil, on pyHanko: levels B-B, B-T, B-LT,
B-LTA (the default for acts), a visible signature, the refusals a person needs to
understand, and the archival renewal that keeps acts verifiable for decades.

No PDF or CMS structure is built here: everything goes through pyHanko.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography import x509
from prometheus_client import Counter
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError, PdfReadError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation.pdf_embedded import read_certification_data
from pyhanko.stamp.text import TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathValidationError, RevokedError, ValidationError

from securex.fonts import font_path
from securex.signing.errors import SigningRefused

__all__ = ["Appearance", "Level", "SigningRefused", "SigningSetup", "inspect", "renew", "sign"]
from securex.signing.signers import to_asn1

PARIS = ZoneInfo("Europe/Paris")


class _OfflineByDesign(logging.Filter):
    """pyHanko warns when it embeds validation data without fetching; securex does that
    on purpose (the demo PKI's data, supplied in process), so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fetching is not allowed" not in record.getMessage()


logging.getLogger("pyhanko.sign.signers.pdf_signer").addFilter(_OfflineByDesign())
ROLE = "Officier de l'état civil"

# Room for the CMS container, so that pyHanko does not sign twice to measure it: the
# signer's chain (3 RSA-3072 certificates, ~4.5 KiB), the signature and, from B-T on,
# a timestamp token carrying the TSA's chain. Checked by the tests at every level.
RESERVED = {"B-B": 12 * 1024, "B-T": 24 * 1024, "B-LT": 24 * 1024, "B-LTA": 24 * 1024}

# Every signature securex makes goes through `sign`, whoever asks (an officier, a batch,
# a commune's seal): counted here, in this process, and served by /metrics.
SIGNATURES = Counter("securex_signatures", "PAdES signatures produced, by level.", ["level"])


class Level(StrEnum):
    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @classmethod
    def parse(cls, text: str) -> Level:
        wanted = text.strip().upper().replace("_", "-")
        if not wanted.startswith("B-"):
            wanted = "B-" + wanted
        for level in cls:
            if level.value == wanted:
                return level
        names = ", ".join(level.value for level in cls)
        raise SigningRefused(f"Niveau de signature inconnu : {text!r} (attendu : {names}).")

    @property
    def timestamped(self) -> bool:
        return self is not Level.B_B

    @property
    def long_term(self) -> bool:
        return self in (Level.B_LT, Level.B_LTA)


@dataclass(frozen=True)
class Appearance:
    """What the visible signature says, and where it sits (PDF points, page index;
    -1 is the last page)."""

    officer: str
    commune: str
    reason: str = "Délivrance d'un acte de l'état civil"
    page: int = -1
    box: tuple[int, int, int, int] = (330, 40, 560, 120)


@dataclass
class SigningSetup:
    """Everything a signature needs besides the document."""

    signer: signers.Signer
    certificate: x509.Certificate
    level: Level
    timestamper: TimeStamper | None
    # A fresh ValidationContext per call: pyHanko's caches revocation data inside it.
    validation_context: Callable[[], ValidationContext]


def inspect(data: bytes) -> PdfFileReader:
    """Open a PDF to be signed, or say in French why it cannot be."""
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise SigningRefused("Ce fichier n'est pas un PDF.")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=True)
        if reader.encrypted:
            raise SigningRefused(
                "Ce PDF est chiffré (protégé par mot de passe) : enregistrez-en une version "
                "non protégée avant de le signer."
            )
        reader.root  # noqa: B018 (forces the cross-reference table and trailer to be read)
        certification = read_certification_data(reader)
    except SigningRefused:
        raise
    except (PdfReadError, PdfError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SigningRefused(
            f"Ce PDF est endommagé (table des références croisées illisible : "
            f"{exc.__class__.__name__}). Régénérez-le avant de le signer."
        ) from None
    if certification is not None and certification.permission == fields.MDPPerm.NO_CHANGES:
        raise SigningRefused(
            "Ce PDF porte une signature de certification qui interdit toute modification : "
            "il ne peut pas recevoir d'autre signature."
        )
    return reader


def check_signer(setup: SigningSetup, now: datetime) -> None:
    """Refuse an expired, not yet valid or revoked signer certificate, before signing."""
    cert = setup.certificate
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        until = cert.not_valid_after_utc.astimezone(PARIS).strftime("%d/%m/%Y")
        raise SigningRefused(
            f"Le certificat du signataire n'est pas valide à cette date (expire le {until}) : "
            "demandez-en un nouveau."
        )
    from pyhanko_certvalidator import CertificateValidator

    validator = CertificateValidator(to_asn1(cert), validation_context=setup.validation_context())
    try:
        asyncio.run(validator.async_validate_usage({"non_repudiation"}))  # type: ignore[no-untyped-call]
    except RevokedError:
        raise SigningRefused(
            "Le certificat du signataire est révoqué : il ne peut plus signer."
        ) from None
    except (PathValidationError, ValidationError) as exc:
        raise SigningRefused(
            f"Le certificat du signataire n'est pas reconnu ({exc.__class__.__name__})."
        ) from None


class _InMemoryFont(GlyphAccumulatorFactory):
    """pyHanko's factory opens the font file and never closes it (a ResourceWarning per
    signature); the font is read once and handed over from memory instead."""

    def create_font_engine(self, writer: Any, obj_stream: Any = None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs and self.create_objstream_if_needed:
            obj_stream = writer.prepare_object_stream()
        return GlyphAccumulator(
            writer=writer,
            font_handle=io.BytesIO(_font_bytes(self.font_file)),
            font_size=self.font_size,
            obj_stream=obj_stream,
        )


@functools.cache
def _font_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _stamp(appearance: Appearance, now: datetime) -> tuple[TextStampStyle, dict[str, str]]:
    text = (
        "Signé électroniquement par\n%(officer)s\n%(role)s — %(commune)s\nle %(date)s\n%(reason)s"
    )
    params = {
        "officer": appearance.officer,
        "role": ROLE,
        "commune": appearance.commune,
        "date": now.astimezone(PARIS).strftime("%d/%m/%Y à %H:%M"),
        "reason": appearance.reason,
    }
    # An embedded font (pyHanko's default, Courier, is not): copies stay PDF/A and
    # `pdffonts` shows every font embedded.
    font = _InMemoryFont(font_path(), font_size=8)
    style = TextStampStyle(stamp_text=text, border_width=1, text_box_style=TextBoxStyle(font=font))
    return style, params


def sign(data: bytes, setup: SigningSetup, appearance: Appearance, now: datetime) -> bytes:
    """Sign `data` at `setup.level`; returns the signed PDF. `now` is the date the
    visible signature shows; pyHanko takes the signing time (/M) from the system clock
    and the timestamp from the TSA."""
    inspect(data)
    level = setup.level
    field_name = f"Signature-{uuid.uuid4().hex[:12]}"
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=appearance.reason,
        location=appearance.commune,
        name=appearance.officer,
        embed_validation_info=level.long_term,
        use_pades_lta=level is Level.B_LTA,
        validation_context=setup.validation_context() if level.long_term else None,
        signer_key_usage={"non_repudiation"},
    )
    style, params = _stamp(appearance, now)
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=True)
    pdf_signer = signers.PdfSigner(
        meta,
        setup.signer,
        timestamper=setup.timestamper if level.timestamped else None,
        stamp_style=style,
        new_field_spec=fields.SigFieldSpec(field_name, on_page=appearance.page, box=appearance.box),
    )
    out = io.BytesIO()
    try:
        pdf_signer.sign_pdf(
            writer, output=out, bytes_reserved=RESERVED[level.value], appearance_text_params=params
        )
    except SigningError as exc:
        raise SigningRefused(f"Signature refusée : {exc}") from None
    except PdfError as exc:
        if "page" in str(exc).lower():
            raise SigningRefused(
                "La page prévue pour la signature visible n'existe pas dans ce PDF "
                "(signing.stamp_page)."
            ) from None
        raise SigningRefused(f"Ce PDF ne peut pas être signé ({exc}).") from None
    with contextlib.suppress(OSError):  # a metrics file that cannot be written fails nothing
        SIGNATURES.labels(level=level.value).inc()
    return out.getvalue()


def timestamp_document(data: bytes, timestamper: TimeStamper) -> bytes:
    """Seal a PDF the platform produced (an evidence file) with a document timestamp."""
    inspect(data)
    out = io.BytesIO()
    try:
        signers.PdfTimeStamper(timestamper).timestamp_pdf(
            IncrementalPdfFileWriter(io.BytesIO(data), strict=True), "sha256", output=out
        )
    except SigningError as exc:
        raise SigningRefused(f"Horodatage impossible : {exc}") from None
    return out.getvalue()


WEAK_DIGESTS = {"md5", "sha1"}


def signer_certificate(data: bytes) -> x509.Certificate | None:
    """The certificate of a document's first signature, if it has one."""
    signatures = inspect(data).embedded_regular_signatures
    if not signatures:
        return None
    return x509.load_der_x509_certificate(signatures[0].signer_cert.dump())


def _last_archive_timestamp(data: bytes) -> Any:
    reader = inspect(data)
    stamps = [s for s in reader.embedded_signatures if s.sig_object.get("/Type") == "/DocTimeStamp"]
    if not stamps:
        raise SigningRefused(
            "Ce document n'a pas d'horodatage d'archivage (niveau inférieur à B-LTA) : "
            "il ne se renouvelle pas ; signez-le au niveau B-LTA."
        )
    return stamps[-1]


def _expiry(stamp: Any) -> datetime:
    expires: datetime = stamp.signer_cert["tbs_certificate"]["validity"]["not_after"].native
    return expires


def archive_expiry(data: bytes) -> datetime:
    """When the certificate of the document's last archival timestamp expires: the
    document must be renewed before then. A document below B-LTA is refused."""
    return _expiry(_last_archive_timestamp(data))


def renewal_reason(data: bytes, now: datetime, margin: timedelta) -> str | None:
    """Why this document needs a fresh archival timestamp now, or None: its last
    document timestamp's TSA certificate expires within `margin`, or uses a digest that
    no longer protects anything. A document below B-LTA is refused."""
    last = _last_archive_timestamp(data)
    expires = _expiry(last)
    if expires - now < margin:
        return f"certificat d'horodatage expirant le {expires.astimezone(PARIS):%d/%m/%Y}"
    digest = last.md_algorithm
    if digest in WEAK_DIGESTS:
        return f"empreinte {digest} devenue faible"
    return None


def renew(data: bytes, timestamper: TimeStamper, validation_context: ValidationContext) -> bytes:
    """Archival renewal: fresh revocation data in the DSS and a new document timestamp,
    so that a B-LTA document stays verifiable after its last timestamp's certificate
    expires or its algorithms weaken."""
    inspect(data)
    out = io.BytesIO()
    try:
        signers.PdfTimeStamper(timestamper).update_archival_timestamp_chain(
            PdfFileReader(io.BytesIO(data)), validation_context, in_place=False, output=out
        )
    except SigningError as exc:
        raise SigningRefused(f"Renouvellement impossible : {exc}") from None
    return out.getvalue()
