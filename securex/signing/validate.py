"""Validation of signed PDFs from untrusted sources: one report per signature and per
document timestamp, saying what a person needs to decide whether to rely on the act.

Everything is decided OFFLINE, from what the file embeds (the CMS certificates, the DSS
and its VRI entries, timestamp tokens, revocation data archived in the signature) plus
the trust anchors the caller configures: no certificate, CRL or OCSP response named
inside the file is ever fetched, and streams are decoded under `LIMITS`. Whatever the
bytes, `validate_pdf` returns a report (problems in French), never raises on them.

What the verdicts mean (validation time `now`, reference time of a signature):

- `intact`: the digest of the signed byte ranges matches the one the signer signed.
- `valid`: the signature value checks with the signer's public key.
- Reference time: when the signature carries a timestamp token that is intact, valid and
  whose TSA certificate is trusted, the signature is judged at the token's time; else at
  `now`. The TSA certificate is judged at `now` or, failing that (expired, say), at the
  time of the earliest trusted document timestamp that covers the token (B-LTA), itself
  judged the same way: that is how an act stays verifiable after its certificates expire.
- `trusted`: at the reference time the signer's certificate chains to a trust anchor,
  every certificate of the path is within its validity period, none is known revoked
  from the embedded data, and the certificate allows signing (non-repudiation or
  digital signature key usage).
- `revocation` is judged at the reference time from the embedded data only: "good" when
  every certificate of the path has a usable CRL or OCSP response saying so; "revoked"
  when one (however old) says it was revoked before the reference time; "unknown" when
  some is missing.
  Revocation data issued after the reference time counts (a later "good" answer proves the
  certificate was not revoked earlier; certificate holds are not used by the CAs we
  trust). Consequences: a B-B signature, which embeds no revocation data, is "unknown"
  even if its certificate has been revoked since (nothing in the file says so); a B-LT
  signature made before its certificate was revoked stays "good": its timestamp proves it
  was made while the certificate was valid, which is the point of long-term signatures.
- `pades_level`, the highest level whose requirements are verified: B-B (an intact and
  valid ETSI.CAdES.detached signature with the signing-certificate-v2 attribute), B-T (a
  trusted signature timestamp), B-LT (the DSS alone holds the revocation data for the
  signer's and the TSA's paths at the reference time), B-LTA (a trusted document
  timestamp covers a DSS that satisfies B-LT).
- `modified_after`: "none" when the signature covers the whole file; "allowed" when what
  follows is what pyHanko's difference analysis accepts after a signature (later
  signatures, document timestamps, DSS updates, form filling), named in `modifications`;
  "disallowed" otherwise, with pyHanko's verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import re
from collections.abc import Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.decode_limits import (
    DecodeLimits,
    DecodePurpose,
    DocumentDecodeBudget,
    StreamDecodeLimits,
)
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.xref import XRefSectionType
from pyhanko.sign.diff_analysis import DiffResult, ModificationLevel, SuspiciousModification
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.general import (
    extract_certificate_info,
    find_cms_attribute_iter,
)
from pyhanko.sign.validation import (
    EmbeddedPdfSignature,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    ModificationInfo,
    PdfSignatureStatus,
    SignatureCoverageLevel,
)
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)

from securex.signing.pades import PARIS
from securex.signing.signers import to_asn1

__all__ = [
    "LIMITS",
    "MAX_SIZE",
    "DocumentReport",
    "SignatureReport",
    "render_text",
    "validate_pdf",
]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_SIZE = 50 * MiB

# pyHanko's defaults for untrusted input, tightened: validation decodes only
# cross-reference and object streams, DSS entries and what the difference analysis
# compares, never anything near 64 MiB in a legitimate act; the budget for the whole
# document (revisions are decoded again for each signature) stays proportional to its
# size. A bomb stops at these bounds with PdfDecodeLimitError.
LIMITS = DecodeLimits(
    per_stream=StreamDecodeLimits(max_output_size=64 * MiB),
    document_budget=DocumentDecodeBudget(base_allowance=128 * MiB, max_ratio=20),
)

# Either usage makes a signing certificate: officers' qualified certificates carry
# non-repudiation; other advanced signatures often only digital signature.
_SIGNER_USAGE = KeyUsageConstraints(key_usage={"non_repudiation", "digital_signature"})
_TSA_USAGE = KeyUsageConstraints(extd_key_usage={"time_stamping"})

_PADES = "/ETSI.CAdES.detached"
_SIG_SUBFILTERS = {"/adbe.pkcs7.detached", _PADES}
_COVERAGE = {
    SignatureCoverageLevel.ENTIRE_FILE: "entire-document",
    SignatureCoverageLevel.ENTIRE_REVISION: "entire-revision",
}


# --- reports -----------------------------------------------------------------------------


@dataclass
class SignatureReport:
    """The verdict on one signature or document timestamp (see the module docstring)."""

    field: str
    kind: str  # "signature" | "document-timestamp"
    intact: bool
    valid: bool
    trusted: bool
    signer: str | None  # subject CN (and O) of the signer or the TSA
    signer_email: str | None
    certificate_serial: str | None  # lowercase hexadecimal
    signing_time: datetime | None  # claimed by the signer
    timestamp: datetime | None  # signature timestamp (B-T and above), or the document timestamp
    revocation: str  # "good" | "revoked" | "unknown" | "not-checked"
    pades_level: str | None  # "B-B" | "B-T" | "B-LT" | "B-LTA" | None
    coverage: str  # "entire-document" | "entire-revision" | "partial"
    modified_after: str  # "none" | "allowed" | "disallowed"
    problems: list[str] = dataclasses.field(default_factory=list)
    # What follows the signed revision, in French: later signatures and timestamps by
    # field name, DSS updates, form filling; or why the change is disallowed.
    modifications: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.intact
            and self.valid
            and self.trusted
            and self.revocation != "revoked"
            and self.modified_after != "disallowed"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "ok": self.ok,
            "intact": self.intact,
            "valid": self.valid,
            "trusted": self.trusted,
            "signer": self.signer,
            "signer_email": self.signer_email,
            "certificate_serial": self.certificate_serial,
            "signing_time": _iso(self.signing_time),
            "timestamp": _iso(self.timestamp),
            "revocation": self.revocation,
            "pades_level": self.pades_level,
            "coverage": self.coverage,
            "modified_after": self.modified_after,
            "modifications": list(self.modifications),
            "problems": list(self.problems),
        }


@dataclass
class DocumentReport:
    signatures: list[SignatureReport]
    problems: list[str] = dataclasses.field(default_factory=list)  # about the file as a whole
    validated_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return bool(self.signatures) and not self.problems and all(s.ok for s in self.signatures)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (format "securex-validation/1"):

        .. code-block:: text

            {"format": "securex-validation/1",
             "ok": bool,                  # at least one signature, all ok, no problems
             "validated_at": str | null,  # ISO 8601 UTC, "2026-11-29T15:24:32Z"
             "problems": [str],           # about the file as a whole, in French
             "signatures": [              # document order; signatures and document timestamps
               {"field": str, "kind": "signature" | "document-timestamp",
                "ok": bool, "intact": bool, "valid": bool, "trusted": bool,
                "signer": str | null,             # "CN (O)" of the signer or the TSA
                "signer_email": str | null,
                "certificate_serial": str | null, # lowercase hexadecimal
                "signing_time": str | null,       # claimed by the signer, ISO 8601 UTC
                "timestamp": str | null,          # the signature's or document timestamp
                "revocation": "good" | "revoked" | "unknown" | "not-checked",
                "pades_level": "B-B" | "B-T" | "B-LT" | "B-LTA" | null,
                "coverage": "entire-document" | "entire-revision" | "partial",
                "modified_after": "none" | "allowed" | "disallowed",
                "modifications": [str],           # what follows the signed revision
                "problems": [str]}]}
        """
        return {
            "format": "securex-validation/1",
            "ok": self.ok,
            "validated_at": _iso(self.validated_at),
            "problems": list(self.problems),
            "signatures": [s.to_json() for s in self.signatures],
        }


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- entry point ---------------------------------------------------------------------------


def validate_pdf(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    other_certs: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
    max_size: int = MAX_SIZE,
) -> DocumentReport:
    """Validate every signature and document timestamp of `data` (see the module
    docstring) at `now` (default: the current time; a naive datetime is taken as UTC).
    `other_certs` may help build paths (intermediates) but are not trusted; files over
    `max_size` bytes are refused unread."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if not data:
        return DocumentReport([], ["Fichier vide."], now)
    if len(data) > max_size:
        return DocumentReport(
            [],
            [f"Fichier trop volumineux ({_mib(len(data))} ; au plus {_mib(max_size)})."],
            now,
        )
    if b"%PDF-" not in data[:1024]:
        return DocumentReport([], ["Ce fichier n'est pas un PDF."], now)
    roots = [to_asn1(c) for c in trust_roots]
    others = [to_asn1(c) for c in other_certs]
    try:
        return _run(_Validation(data, roots, others, now).run())
    # Untrusted bytes reach pyHanko, asn1crypto and certvalidator in many ways; whatever
    # escapes the handlers in _Validation is still a verdict on the file, not a crash.
    except Exception:
        logger.exception("validation failed unexpectedly")
        return DocumentReport([], ["PDF illisible : la vérification n'a pas pu aboutir."], now)


def _run(work: Coroutine[Any, Any, DocumentReport]) -> DocumentReport:
    """asyncio.run, also from a thread that already runs an event loop (an async view)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} Mo".replace(".", ",")


# --- validation ----------------------------------------------------------------------------


@dataclass
class _Material:
    """Certificates and revocation data from the file."""

    certs: list[asn1_x509.Certificate] = dataclasses.field(default_factory=list)
    crls: list[asn1_crl.CertificateList] = dataclasses.field(default_factory=list)
    ocsps: list[asn1_ocsp.OCSPResponse] = dataclasses.field(default_factory=list)

    def plus(self, other: _Material) -> _Material:
        return _Material(self.certs + other.certs, self.crls + other.crls, self.ocsps + other.ocsps)


@dataclass
class _Chain:
    ok: bool  # trusted
    revocation: str  # "good" | "revoked" | "unknown"
    problem: str | None = None


@dataclass
class _Entry:
    """One filled signature field, parsed or not."""

    name: str
    emb: EmbeddedPdfSignature | None
    error: str | None = None
    # For an unreadable one: where it was found, and whether it says it is a timestamp.
    revision_hint: int = 1 << 30
    timestamp_hint: bool = False

    @property
    def revision(self) -> int:
        return self.emb.signed_revision if self.emb is not None else self.revision_hint

    @property
    def is_timestamp(self) -> bool:
        if self.emb is None:
            return self.timestamp_hint
        return bool(self.emb.sig_object_type == "/DocTimeStamp")


class _Validation:
    def __init__(
        self,
        data: bytes,
        roots: list[asn1_x509.Certificate],
        others: list[asn1_x509.Certificate],
        now: datetime,
    ) -> None:
        self.data = data
        self.roots = roots
        self.others = others
        self.now = now
        self.problems: list[str] = []
        self.reader: PdfFileReader
        self._dss: dict[int | None, _Material] = {}
        # (revision, time) of the document timestamps that are established: intact,
        # valid, their TSA trusted at `now` or at the time of a later established one.
        self._established: list[tuple[int, datetime]] = []
        self.entries: list[_Entry] = []

    async def run(self) -> DocumentReport:
        try:
            self.reader = PdfFileReader(io.BytesIO(self.data), strict=True, decode_limits=LIMITS)
            if self.reader.encrypted:
                return self._done([], "Ce PDF est chiffré : ses signatures ne sont pas vérifiées.")
            self.reader.root  # noqa: B018 (reads the trailer and the catalog now)
            self._check_tail()
            entries = self._entries()
        except Exception as exc:  # untrusted bytes: see validate_pdf
            return self._done([], f"PDF illisible ({_why(exc)}).")
        if not entries:
            return self._done([], "Aucune signature.")
        self._dss[None] = self._read_dss(None, report=True)

        entries.sort(key=lambda e: e.revision)
        self.entries = entries
        reports: dict[int, SignatureReport] = {}
        # Document timestamps first, latest first: each one may vouch for those before it.
        for index in reversed(range(len(entries))):
            if entries[index].is_timestamp:
                reports[index] = await self._guarded(entries, index)
        for index in range(len(entries)):
            if index not in reports:
                reports[index] = await self._guarded(entries, index)
        return self._done([reports[i] for i in range(len(entries))])

    def _check_tail(self) -> None:
        """Bytes after the last revision that pyHanko reads are no revision of it: another
        reader rebuilding the cross-references could still show objects hidden there
        (pyHanko looks for the last %%EOF within the final kilobyte)."""
        xrefs = self.reader.xrefs
        last = xrefs.get_xref_container_info(xrefs.total_revisions - 1)
        end = last.end_location
        if last.xref_section_type != XRefSectionType.STREAM:
            # a table ends before its trailer dictionary: skip that dictionary
            keyword = self.data.find(b"trailer", end, end + 64)
            if keyword >= 0 and not self.data[end:keyword].strip():
                end = keyword + len(b"trailer")
            stream = io.BytesIO(self.data)
            stream.seek(end)
            generic.DictionaryObject.read_from_stream(
                stream,
                generic.TrailerReference(self.reader),  # type: ignore[no-untyped-call]
            )
            end = stream.tell()
        tail = self.data[end:]
        match = _TAIL.fullmatch(tail)
        if match is None or int(match.group(1)) != last.declared_startxref:
            self.problems.append(
                f"{len(tail)} octets en fin de fichier n'appartiennent à aucune révision "
                "lisible : d'autres logiciels pourraient y lire un contenu différent."
            )

    def _done(self, reports: list[SignatureReport], problem: str | None = None) -> DocumentReport:
        problems = [*self.problems, problem] if problem else list(self.problems)
        return DocumentReport(reports, problems, self.now)

    def _entries(self) -> list[_Entry]:
        entries = []
        for name, sig_obj, sig_field in enumerate_sig_fields(self.reader, filled_status=True):
            try:
                subfilter = sig_obj.get_object().get("/SubFilter")
                if subfilter not in (*_SIG_SUBFILTERS, "/ETSI.RFC3161"):
                    raise _Unsupported(f"format de signature non pris en charge : {subfilter}")
                emb = EmbeddedPdfSignature(self.reader, sig_field, name)
                entries.append(_Entry(str(name), emb))
            except Exception as exc:  # untrusted bytes: see validate_pdf
                entry = _Entry(str(name), None, _why(exc))
                with contextlib.suppress(Exception):
                    entry.timestamp_hint = sig_obj.get_object().get("/Type") == "/DocTimeStamp"
                    entry.revision_hint = self.reader.xrefs.get_last_change(sig_obj.reference)
                entries.append(entry)
        return entries

    async def _guarded(self, entries: list[_Entry], index: int) -> SignatureReport:
        entry = entries[index]
        try:
            if entry.emb is None:
                raise _Unsupported(entry.error or "signature illisible")
            if entry.is_timestamp:
                return await self._timestamp_report(entry.name, entry.emb)
            return await self._signature_report(entry.name, entry.emb)
        except Exception as exc:  # untrusted bytes: see validate_pdf
            logger.info("signature %s unreadable", entry.name, exc_info=True)
            return SignatureReport(
                field=entry.name,
                kind="document-timestamp" if entry.is_timestamp else "signature",
                intact=False,
                valid=False,
                trusted=False,
                signer=None,
                signer_email=None,
                certificate_serial=None,
                signing_time=None,
                timestamp=None,
                revocation="not-checked",
                pades_level=None,
                coverage="partial",
                modified_after="disallowed",
                problems=[f"Signature illisible ou non conforme ({_why(exc)})."],
            )

    # --- embedded validation data --------------------------------------------------------

    def _read_dss(self, revision: int | None, *, report: bool = False) -> _Material:
        """The DSS (and its VRI entries) as of `revision` (None: the latest)."""
        if revision in self._dss:
            return self._dss[revision]
        material = _Material()
        try:
            handler = (
                self.reader if revision is None else self.reader.get_historical_resolver(revision)
            )
            dss = handler.root.get("/DSS")
            if dss is not None:
                dss = dss.get_object()
                lists = [dss]
                vri = dss.get("/VRI")
                if vri is not None:
                    lists.extend(v.get_object() for v in vri.get_object().values())
                seen: set[bytes] = set()
                for holder in lists:
                    for key in ("/Certs", "/Cert"):
                        material.certs.extend(
                            asn1_x509.Certificate.load(data)
                            for data in _streams(holder, key, DecodePurpose.CERTIFICATE, seen)
                        )
                    for key in ("/OCSPs", "/OCSP"):
                        material.ocsps.extend(
                            asn1_ocsp.OCSPResponse.load(data)
                            for data in _streams(holder, key, DecodePurpose.OCSP_RESPONSE, seen)
                        )
                    for key in ("/CRLs", "/CRL"):
                        material.crls.extend(
                            asn1_crl.CertificateList.load(data)
                            for data in _streams(holder, key, DecodePurpose.CRL, seen)
                        )
                # asn1crypto parses lazily: parse now, so that a bad entry fails here
                # (a CRL only as far as validation needs to pick it: it may be long).
                for item in (*material.certs, *material.ocsps):
                    item.native  # noqa: B018
                for crl in material.crls:
                    crl["tbs_cert_list"]["issuer"].native  # noqa: B018
                    crl["tbs_cert_list"]["this_update"].native  # noqa: B018
        except Exception as exc:  # untrusted bytes: see validate_pdf
            if report:
                self.problems.append(
                    f"Données de validation (DSS) illisibles ({_why(exc)}) : elles sont ignorées."
                )
            material = _Material()
        self._dss[revision] = material
        return material

    def _context(self, material: _Material, moment: datetime, mode: str) -> ValidationContext:
        """Offline: nothing is fetched; revocation data issued after `moment` counts."""
        return ValidationContext(
            trust_roots=self.roots,
            other_certs=self.others + material.certs,
            crls=material.crls,
            ocsps=material.ocsps,
            allow_fetching=False,
            revocation_mode=mode,
            moment=moment,
            retroactive_revinfo=True,
        )

    async def _path_error(
        self,
        cert: asn1_x509.Certificate,
        extra: Iterable[asn1_x509.Certificate],
        *,
        moment: datetime,
        material: _Material,
        mode: str,
    ) -> Exception | None:
        context = self._context(material, moment, mode)
        try:
            await CertificateValidator(cert, list(extra), context).async_validate_path()
        except (PathBuildingError, PathValidationError, ValidationError) as exc:
            return exc
        return None

    async def _trust(
        self,
        cert: asn1_x509.Certificate,
        extra: list[asn1_x509.Certificate],
        *,
        moment: datetime,
        material: _Material,
        usage: KeyUsageConstraints,
    ) -> _Chain:
        """Whether `cert` is trusted at `moment`: a valid path to an anchor, the usage
        required, not known revoked; and its revocation status then."""
        error = await self._path_error(cert, extra, moment=moment, material=material, mode="none")
        if error is None:
            try:
                usage.validate(cert)
            except ValidationError as exc:
                error = exc
        if error is not None:
            return _Chain(False, "unknown", _describe(error))
        revocation, revoked = await self._revocation(cert, extra, moment, material)
        if revoked is not None:
            return _Chain(False, revocation, _describe(revoked))
        return _Chain(True, revocation)

    async def _revocation(
        self,
        cert: asn1_x509.Certificate,
        extra: list[asn1_x509.Certificate],
        moment: datetime,
        material: _Material,
    ) -> tuple[str, RevokedError | None]:
        """The revocation status of `cert`'s path at `moment` from `material`: "good" when
        usable data says so for every certificate of the path, "revoked" when some says one
        was revoked before `moment`, else "unknown"."""
        error = await self._path_error(
            cert, extra, moment=moment, material=material, mode="require"
        )
        if error is None:
            return "good", None
        if isinstance(error, RevokedError):
            return "revoked", error
        # Revocation data too old to say "good" at `moment` still proves a revocation
        # dated before it: look again at the time each piece was issued.
        for issued in _issuance_times(material):
            if issued == moment:
                continue
            error = await self._path_error(
                cert, extra, moment=issued, material=material, mode="soft-fail"
            )
            if isinstance(error, RevokedError) and error.revocation_dt <= moment:
                return "revoked", error
        return "unknown", None

    def _poe_after(self, revision: int) -> datetime | None:
        """The earliest established document timestamp added after `revision`."""
        times = [when for rev, when in self._established if rev > revision]
        return min(times) if times else None

    # --- document timestamps -----------------------------------------------------------------

    async def _timestamp_report(self, name: str, emb: EmbeddedPdfSignature) -> SignatureReport:
        latest = self._dss[None]
        status: DocumentTimestampStatus = await async_validate_pdf_timestamp(
            emb, validation_context=self._context(latest, self.now, "none")
        )
        problems = _integrity_problems(status.intact, status.valid, "L'horodatage")
        tsa = status.signing_cert
        extra = list(emb.other_embedded_certs)
        chain = await self._trust(tsa, extra, moment=self.now, material=latest, usage=_TSA_USAGE)
        if not chain.ok and (poe := self._poe_after(emb.signed_revision)) is not None:
            later = await self._trust(tsa, extra, moment=poe, material=latest, usage=_TSA_USAGE)
            if later.ok:
                chain = later
        trusted = status.intact and status.valid and chain.ok
        if not chain.ok and chain.problem:
            problems.append(f"Autorité d'horodatage non reconnue : {chain.problem}")
        if trusted:
            self._established.append((emb.signed_revision, status.timestamp))
        modified, modifications = self._modifications(emb, status)
        return SignatureReport(
            field=name,
            kind="document-timestamp",
            intact=status.intact,
            valid=status.valid,
            trusted=trusted,
            signer=_display_name(tsa),
            signer_email=_email(tsa),
            certificate_serial=format(tsa.serial_number, "x"),
            signing_time=None,
            timestamp=status.timestamp,
            revocation=chain.revocation,
            pades_level=None,
            coverage=_COVERAGE.get(status.coverage, "partial") if status.coverage else "partial",
            modified_after=modified,
            modifications=modifications,
            problems=problems + _modification_problems(modified, modifications),
        )

    # --- signatures --------------------------------------------------------------------------

    async def _signature_report(self, name: str, emb: EmbeddedPdfSignature) -> SignatureReport:
        latest = self._dss[None]
        status: PdfSignatureStatus = await async_validate_pdf_signature(
            emb,
            signer_validation_context=self._context(latest, self.now, "none"),
            ts_validation_context=self._context(latest, self.now, "none"),
            key_usage_settings=_SIGNER_USAGE,
        )
        problems = _integrity_problems(status.intact, status.valid, "La signature")
        signer = emb.signer_cert
        extra = list(emb.other_embedded_certs)
        material = latest.plus(_archived_revinfo(emb))

        # The signature timestamp, and whether its TSA is trusted (now or at a later POE).
        timestamp: datetime | None = None
        reference: datetime | None = None
        ts_status = status.timestamp_validity
        tst = None
        if ts_status is not None:  # the token pyHanko judged, among those attached
            tst = next(
                (
                    token
                    for token in extract_tst_data_iter(emb.signer_info, signed=False)
                    if extract_certificate_info(token).signer_cert.dump()
                    == ts_status.signing_cert.dump()
                ),
                None,
            )
        tst_ok = False
        if ts_status is not None and tst is not None:
            if ts_status.intact and ts_status.valid:
                timestamp = ts_status.timestamp
                tsa = ts_status.signing_cert
                tsa_extra = extract_certificate_info(tst).other_certs
                chain = await self._trust(
                    tsa, tsa_extra, moment=self.now, material=material, usage=_TSA_USAGE
                )
                if not chain.ok and (poe := self._poe_after(emb.signed_revision)) is not None:
                    chain = await self._trust(
                        tsa, tsa_extra, moment=poe, material=material, usage=_TSA_USAGE
                    )
                if chain.ok:
                    tst_ok, reference = True, timestamp
                else:
                    problems.append(f"Horodatage de signature non reconnu : {chain.problem}")
            else:
                problems.append("L'horodatage de la signature est altéré ou invalide.")

        moment = reference or self.now
        chain = await self._trust(
            signer, extra, moment=moment, material=material, usage=_SIGNER_USAGE
        )
        trusted = status.intact and status.valid and chain.ok
        if not chain.ok and chain.problem:
            problems.append(f"Signataire non reconnu : {chain.problem}")
        revocation = chain.revocation
        if revocation == "unknown" and chain.ok:
            problems.append(
                "Statut de révocation inconnu : le document ne contient pas les données de "
                "révocation du certificat du signataire."
            )

        level = None
        if status.intact and status.valid and _is_pades(emb):
            level = "B-B"
            if tst_ok and tst is not None and reference is not None:
                level = "B-T"
                if await self._long_term(emb, tst, reference, self._dss[None]):
                    level = "B-LT"
                    for revision, _ in sorted(self._established):
                        if revision > emb.signed_revision and await self._long_term(
                            emb, tst, reference, self._read_dss(revision)
                        ):
                            level = "B-LTA"
                            break
        elif status.intact and status.valid:
            problems.append(
                "Signature PDF qui n'est pas au format PAdES (ETSI.CAdES.detached avec "
                "attribut signing-certificate-v2)."
            )

        modified, modifications = self._modifications(emb, status)
        return SignatureReport(
            field=name,
            kind="signature",
            intact=status.intact,
            valid=status.valid,
            trusted=trusted,
            signer=_display_name(signer),
            signer_email=_email(signer),
            certificate_serial=format(signer.serial_number, "x"),
            signing_time=status.signer_reported_dt,
            timestamp=timestamp,
            revocation=revocation,
            pades_level=level,
            coverage=_COVERAGE.get(status.coverage, "partial") if status.coverage else "partial",
            modified_after=modified,
            modifications=modifications,
            problems=problems + _modification_problems(modified, modifications),
        )

    async def _long_term(
        self,
        emb: EmbeddedPdfSignature,
        tst: asn1_cms.SignedData,
        reference: datetime,
        dss: _Material,
    ) -> bool:
        """Whether `dss` alone holds the revocation data for the signer's and the TSA's
        paths at `reference`."""
        tst_certs = extract_certificate_info(tst)
        for cert, extra in (
            (emb.signer_cert, list(emb.other_embedded_certs)),
            (tst_certs.signer_cert, list(tst_certs.other_certs)),
        ):
            status, _ = await self._revocation(cert, extra, reference, dss)
            if status != "good":
                return False
        return True

    # --- modifications -------------------------------------------------------------------------

    def _modifications(
        self, emb: EmbeddedPdfSignature, status: ModificationInfo
    ) -> tuple[str, list[str]]:
        coverage = status.coverage
        if coverage == SignatureCoverageLevel.ENTIRE_FILE:
            return "none", []
        if coverage != SignatureCoverageLevel.ENTIRE_REVISION:
            return "disallowed", [
                "La signature ne couvre pas toute la révision qu'elle signe (plage d'octets "
                "non standard)."
            ]
        diff = status.diff_result
        if isinstance(diff, SuspiciousModification):
            verdict = " ".join(str(diff).split())[:500]
            return "disallowed", [f"Modification non autorisée après la signature : {verdict}"]
        if not isinstance(diff, DiffResult):
            return "disallowed", ["Modifications après la signature non analysées."]
        if diff.modification_level == ModificationLevel.OTHER or status.docmdp_ok is False:
            return "disallowed", [
                "Modifications après la signature incompatibles avec les autorisations du "
                f"document (niveau {diff.modification_level.name})."
            ]
        return "allowed", self._describe_later(emb, diff)

    def _describe_later(self, emb: EmbeddedPdfSignature, diff: DiffResult) -> list[str]:
        by_revision = {e.revision: e for e in self.entries if e.emb is not None}
        names = []
        for revision in range(emb.signed_revision + 1, self.reader.xrefs.total_revisions):
            entry = by_revision.get(revision)
            if entry is not None:
                what = "horodatage de document" if entry.is_timestamp else "signature"
                names.append(f"{what} « {entry.name} »")
            elif self._dss_changed(revision):
                names.append("ajout de données de validation (DSS)")
            else:
                names.append(f"mise à jour incrémentale (révision {revision + 1})")
        signed_fields = {e.name for e in self.entries}
        filled = sorted(set(diff.changed_form_fields) - signed_fields)
        if filled:
            names.append(f"champs de formulaire remplis : {', '.join(filled)}")
        return names

    def _dss_changed(self, revision: int) -> bool:
        def counts(rev: int) -> tuple[int, ...]:
            dss = self.reader.get_historical_resolver(rev).root.get("/DSS")
            if dss is None:
                return ()
            dss = dss.get_object()
            return tuple(len(dss.get(key, ())) for key in ("/Certs", "/OCSPs", "/CRLs", "/VRI"))

        try:
            return counts(revision) != counts(revision - 1)
        except Exception:  # untrusted bytes: a description only
            return False


class _Unsupported(Exception):
    pass


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, _Unsupported):
        return text
    return f"{exc.__class__.__name__}: {text[:200]}" if text else exc.__class__.__name__


# What may follow the last cross-reference stream (or table and trailer): the end of the
# stream object, startxref and %%EOF, with end-of-line padding (sometimes NULs).
_TAIL = re.compile(rb"\s*(?:endobj\s*)?startxref\s+(\d+)\s*%%EOF[\s\x00]*")


def _describe(error: Exception) -> str:
    """A certificate path's failure, in French."""
    if isinstance(error, RevokedError):
        whose = "le certificat" if error.is_ee_cert else "un certificat de l'autorité"
        return f"{whose} a été révoqué le {_fr(error.revocation_dt)}."
    if isinstance(error, ExpiredError):
        return f"certificat expiré le {_fr(error.expired_dt)}."
    if isinstance(error, NotYetValidError):
        return f"certificat valide seulement à partir du {_fr(error.valid_from)}."
    if isinstance(error, InsufficientRevinfoError):
        return "données de révocation absentes ou périmées."
    if isinstance(error, PathBuildingError):
        return "le certificat ne remonte à aucune autorité de confiance configurée."
    if isinstance(error, PathValidationError):
        return f"chaîne de certification refusée ({error})."
    return f"le certificat n'est pas prévu pour cet usage ({error})."


# Revocation data issued at more distinct times than this is not all looked at again
# (see _Validation._revocation): a legitimate act gathers one set per renewal.
_MAX_ISSUANCE_TIMES = 16


def _issuance_times(material: _Material) -> list[datetime]:
    """When each piece of revocation data was issued, latest first."""
    times: set[datetime] = set()
    for crl in material.crls:
        with contextlib.suppress(Exception):  # untrusted: skip what does not parse
            times.add(crl["tbs_cert_list"]["this_update"].native)
    for response in material.ocsps:
        with contextlib.suppress(Exception):
            basic = response["response_bytes"]["response"].parsed
            for single in basic["tbs_response_data"]["responses"]:
                times.add(single["this_update"].native)
    return sorted(times, reverse=True)[:_MAX_ISSUANCE_TIMES]


def _streams(holder: Any, key: str, purpose: DecodePurpose, seen: set[bytes]) -> list[bytes]:
    """The decoded streams listed under `key`, each distinct content once (the VRI
    entries repeat the DSS's)."""
    refs = holder.get(key)
    if refs is None:
        return []
    out = []
    for ref in refs.get_object():
        stream = ref.get_object()
        if not isinstance(stream, generic.StreamObject):
            raise _Unsupported(f"entrée {key} qui n'est pas un flux")
        data = stream.read_data(purpose)
        if data not in seen:
            seen.add(data)
            out.append(data)
    return out


def _archived_revinfo(emb: EmbeddedPdfSignature) -> _Material:
    """Revocation data archived inside the signature (Adobe's attribute, adbe.pkcs7)."""
    material = _Material()
    for archival in find_cms_attribute_iter(
        emb.signer_info["signed_attrs"], "adobe_revocation_info_archival"
    ):
        material.crls.extend(archival["crl"] or [])
        material.ocsps.extend(archival["ocsp"] or [])
    return material


def _is_pades(emb: EmbeddedPdfSignature) -> bool:
    if emb.sig_object.get("/SubFilter") != _PADES:
        return False
    attrs = emb.signer_info["signed_attrs"]
    names = {attr["type"].native for attr in attrs} if attrs else set()
    return {"content_type", "message_digest", "signing_certificate_v2"} <= names


def _integrity_problems(intact: bool, valid: bool, what: str) -> list[str]:
    problems = []
    if not intact:
        problems.append(
            f"{what} ne correspond plus au document : les octets signés ont été modifiés."
        )
    elif not valid:
        problems.append(f"{what} est cryptographiquement invalide.")
    return problems


def _modification_problems(modified: str, modifications: list[str]) -> list[str]:
    return list(modifications) if modified == "disallowed" else []


def _display_name(cert: asn1_x509.Certificate) -> str | None:
    subject = cert.subject.native
    cn, org = subject.get("common_name"), subject.get("organization_name")
    cn = cn[-1] if isinstance(cn, list) else cn
    org = org[-1] if isinstance(org, list) else org
    if cn and org:
        return f"{cn} ({org})"
    return cn or org or None


def _email(cert: asn1_x509.Certificate) -> str | None:
    for name in cert.subject_alt_name_value or ():
        if name.name == "rfc822_name":
            return str(name.native)
    email = cert.subject.native.get("email_address")
    return str(email) if email else None


def _fr(when: datetime) -> str:
    return when.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


# --- text rendering -------------------------------------------------------------------------

_REVOCATION = {
    "good": "non révoqué (données incorporées)",
    "revoked": "RÉVOQUÉ",
    "unknown": "inconnu (aucune donnée de révocation incorporée)",
    "not-checked": "non vérifié",
}
_COVERAGE_FR = {
    "entire-document": "tout le document",
    "entire-revision": "toute sa révision (des mises à jour suivent)",
    "partial": "partielle",
}
_MODIFIED_FR = {
    "none": "aucune",
    "allowed": "autorisées",
    "disallowed": "NON AUTORISÉES",
}


def render_text(report: DocumentReport) -> str:
    """The report in French, for `securex verify` (dates in Europe/Paris time)."""

    def yes(flag: bool, good: str, bad: str) -> str:
        return good if flag else bad

    def when(value: datetime | None) -> str:
        return _fr(value) if value is not None else "—"

    count = len(report.signatures)
    verdict = "VALIDE" if report.ok else "NON VALIDE"
    lines = [f"Document : {verdict} ({count} signature{'s' if count > 1 else ''})"]
    lines += [f"  ! {p}" for p in report.problems]
    for number, sig in enumerate(report.signatures, 1):
        kind = "Horodatage de document" if sig.kind == "document-timestamp" else "Signature"
        who = "Autorité d'horodatage" if sig.kind == "document-timestamp" else "Signataire"
        signer = sig.signer or "inconnu"
        if sig.signer_email:
            signer += f" <{sig.signer_email}>"
        lines += [
            "",
            f"{kind} {number} — champ « {sig.field} » : {yes(sig.ok, 'VALIDE', 'NON VALIDE')}",
            f"  {who} : {signer}",
            f"  Certificat n° : {sig.certificate_serial or '—'}",
            f"  Intégrité : {yes(sig.intact, 'intacte', 'ALTÉRÉE')}",
            f"  Signature cryptographique : {yes(sig.valid, 'valide', 'INVALIDE')}",
            f"  Chaîne de confiance : {yes(sig.trusted, 'reconnue', 'NON RECONNUE')}",
            f"  Révocation : {_REVOCATION.get(sig.revocation, sig.revocation)}",
        ]
        if sig.kind == "signature":
            lines += [
                f"  Date déclarée : {when(sig.signing_time)}",
                f"  Horodatage : {when(sig.timestamp)}",
                f"  Niveau PAdES : {sig.pades_level or 'aucun'}",
            ]
        else:
            lines.append(f"  Date : {when(sig.timestamp)}")
        lines += [
            f"  Couverture : {_COVERAGE_FR.get(sig.coverage, sig.coverage)}",
            "  Modifications ultérieures : "
            + _MODIFIED_FR.get(sig.modified_after, sig.modified_after),
        ]
        if sig.modified_after == "allowed":
            lines += [f"    - {m}" for m in sig.modifications]
        lines += [f"  ! {p}" for p in sig.problems]
    return "\n".join(lines) + "\n"
