"""Validation reports (securex.signing.validate) on PDFs signed by securex at every
level, tampered with, or not PDFs at all; and the verdicts of validators securex did not
write on the same files: pyHanko's AdES validation, qpdf, OpenSSL and poppler's pdfsig.

The PKI is made once for the module (RSA key generation is slow) with the real clock:
OpenSSL and NSS judge certificates at the system time."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.ades.report import AdESPassed
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.ades import ades_lta_validation, ades_with_time_validation
from pyhanko.sign.validation.policy_decl import (
    CertificateFetchingRule,
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import REQUIRE_REVINFO, CertRevTrustPolicy
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer

from securex.signing.pades import Appearance, Level, SigningSetup, sign
from securex.signing.pki import DemoPki, OfficerIdentity, init_pki
from securex.signing.setup import validation_context_factory
from securex.signing.signers import LoadedKeySigner, to_asn1
from securex.signing.validate import DocumentReport, render_text, validate_pdf

MARIE = OfficerIdentity("marie.curie@mairie-lyon.fr", "Marie Curie", "Lyon", "69123")
PAUL = OfficerIdentity("paul.langevin@mairie-lyon.fr", "Paul Langevin", "Lyon", "69123")
SETTINGS = {"signing.trust_anchors": "", "signing.fetch_revocation": False}
# Nothing listens there: no validator may need the PKI's URLs.
BASE_URL = "http://127.0.0.1:9"
LEVELS = [level.value for level in Level]
MiB = 1024 * 1024


def one_page_pdf(text: str = "Acte de naissance n. 42") -> bytes:
    """A one-page PDF with a line of text in Helvetica (a standard font: nothing embedded)."""
    writer = PdfFileWriter()
    font = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
        }
    )
    resources = generic.DictionaryObject(
        {
            generic.pdf_name("/Font"): generic.DictionaryObject(
                {generic.pdf_name("/F1"): writer.add_object(font)}
            )
        }
    )
    content = generic.StreamObject(stream_data=f"BT /F1 18 Tf 72 760 Td ({text}) Tj ET".encode())
    writer.insert_page(
        PageObject(
            contents=writer.add_object(content), media_box=[0, 0, 595, 842], resources=resources
        )
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return init_pki(
        tmp_path_factory.mktemp("pki"),
        base_url=BASE_URL,
        now=datetime.now(UTC),
        password=b"test-pki-password",
        officers=[MARIE],
    )


def signer_for(pki: DemoPki, who: OfficerIdentity) -> Callable[[bytes, str], bytes]:
    cert, key = pki.officer(who.email)
    signer = LoadedKeySigner(cert, key, pki.chain_for(cert))

    def _sign(data: bytes, level: str) -> bytes:
        now = datetime.now(UTC)
        setup = SigningSetup(
            signer=signer,
            certificate=cert,
            level=Level(level),
            timestamper=pki.timestamper(),
            validation_context=validation_context_factory(SETTINGS, pki, now),
        )
        return sign(data, setup, Appearance(officer=who.name, commune=who.commune), now)

    return _sign


@pytest.fixture(scope="module")
def signed(pki: DemoPki) -> dict[str, bytes]:
    """The same act signed by Marie Curie at each level."""
    marie = signer_for(pki, MARIE)
    data = one_page_pdf()
    return {level: marie(data, level) for level in LEVELS}


def check(pki: DemoPki, data: bytes, **kwargs: Any) -> DocumentReport:
    """Validate trusting the demo root; every report renders as JSON and as text."""
    report = validate_pdf(data, trust_roots=[pki.root_cert], **kwargs)
    json.dumps(report.to_json())
    render_text(report)
    return report


# --- each level, by our report ------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_validates(pki: DemoPki, signed: dict[str, bytes], level: str) -> None:
    report = check(pki, signed[level])
    assert report.ok, report.to_json()
    assert report.problems == []
    sig = report.signatures[0]
    assert (sig.kind, sig.intact, sig.valid, sig.trusted) == ("signature", True, True, True)
    assert sig.pades_level == level
    assert sig.signer == "Marie Curie (Mairie de Lyon)"
    assert sig.signer_email == MARIE.email
    assert sig.certificate_serial == format(pki.officer_cert(MARIE.email).serial_number, "x")
    assert sig.signing_time is not None
    assert sig.revocation == ("good" if level in ("B-LT", "B-LTA") else "unknown")
    assert (sig.timestamp is None) == (level == "B-B")
    if level in ("B-B", "B-T"):
        assert (sig.coverage, sig.modified_after) == ("entire-document", "none")
    else:  # the DSS (and the document timestamp) follow the signed revision
        assert (sig.coverage, sig.modified_after) == ("entire-revision", "allowed")
        assert "ajout de données de validation (DSS)" in sig.modifications
    if level == "B-LTA":
        stamp = report.signatures[1]
        assert stamp.kind == "document-timestamp" and stamp.ok
        assert stamp.signer == "securex Démo — Horodatage (securex Démo)"
        assert f"horodatage de document « {stamp.field} »" in sig.modifications
        assert len(report.signatures) == 2
    else:
        assert len(report.signatures) == 1


def test_json_and_text(pki: DemoPki, signed: dict[str, bytes]) -> None:
    report = check(pki, signed["B-LTA"])
    data = report.to_json()
    assert data["format"] == "securex-validation/1" and data["ok"] is True
    sig = data["signatures"][0]
    assert set(sig) == {
        "field", "kind", "ok", "intact", "valid", "trusted", "signer", "signer_email",
        "certificate_serial", "signing_time", "timestamp", "revocation", "pades_level",
        "coverage", "modified_after", "modifications", "problems",
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", sig["timestamp"])
    assert data["signatures"][1]["kind"] == "document-timestamp"
    text = render_text(report)
    assert text.startswith("Document : VALIDE (2 signatures)")
    assert "Niveau PAdES : B-LTA" in text and "Marie Curie" in text
    when = report.signatures[0].timestamp
    assert when is not None
    paris = when.astimezone(ZoneInfo("Europe/Paris"))
    assert f"Horodatage : {paris:%d/%m/%Y %H:%M}" in text
    # dates are UTC in JSON whatever the zone they were given in
    paris_now = datetime.now(ZoneInfo("Europe/Paris")).replace(microsecond=0)
    validated_at = check(pki, signed["B-B"], now=paris_now).to_json()["validated_at"]
    assert validated_at == paris_now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- validators we did not write ---------------------------------------------------------


def pyhanko_spec(pki: DemoPki, knowledge: LocalKnowledge) -> SignatureValidationSpec:
    """Only the demo root is trusted; revocation data is required for every certificate
    of every path; nothing is fetched."""
    return SignatureValidationSpec(
        cert_validation_policy=CertValidationPolicySpec(
            trust_manager=SimpleTrustManager.build(trust_roots=[to_asn1(pki.root_cert)]),
            revinfo_policy=CertRevTrustPolicy(REQUIRE_REVINFO),
        ),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(
            online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY,
            certificate_fetching_rule=CertificateFetchingRule.NEVER_FETCH,
        ),
        local_knowledge=knowledge,
    )


def dss_knowledge(reader: PdfFileReader) -> LocalKnowledge:
    dss = DocumentSecurityStore.read_dss(reader)
    return LocalKnowledge(
        known_ocsps=[
            cont
            for ref in dss.ocsps
            for cont in OCSPContainer.load_multi(asn1_ocsp.OCSPResponse.load(ref.get_object().data))
        ],
        known_crls=[
            CRLContainer(asn1_crl.CertificateList.load(ref.get_object().data)) for ref in dss.crls
        ],
        known_certs=list(dss.load_certs()),
    )


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
def test_pyhanko_ades_validation_accepts(
    pki: DemoPki, signed: dict[str, bytes], level: str
) -> None:
    """pyHanko 0.38 no longer has validate_pdf_ltv_signature; its LTV validation is the
    AdES one (ETSI EN 319 102-1): "with time" (§5.5, signatures with long-term validation
    material) for B-LT, "long-term availability" (§5.6.3) for B-LTA. Here it reads the
    validation data from the DSS alone."""
    reader = PdfFileReader(io.BytesIO(signed[level]))
    emb = reader.embedded_regular_signatures[0]
    now = datetime.now(UTC)
    timing = ValidationTimingInfo(now, now, False)
    spec = pyhanko_spec(pki, dss_knowledge(reader))
    emb.compute_integrity_info()
    with_time = asyncio.run(
        ades_with_time_validation(
            emb.signed_data,
            spec,
            timing_info=timing,
            raw_digest=emb.compute_digest(),
            extra_status_kwargs=emb.summarise_integrity_info(),
            status_cls=PdfSignatureStatus,
        )
    )
    assert with_time.ades_subindic == AdESPassed.OK, with_time.failure_msg
    assert with_time.api_status is not None and with_time.api_status.bottom_line
    if level == "B-LTA":
        lta = asyncio.run(
            ades_lta_validation(
                emb, PdfSignatureValidationSpec(pyhanko_spec(pki, LocalKnowledge())), timing
            )
        )
        assert lta.ades_subindic == AdESPassed.OK, lta.failure_msg
        assert lta.oldest_evidence_record_timestamp is not None


@pytest.mark.parametrize("level", LEVELS)
def test_qpdf_check_is_clean(tmp_path: Path, signed: dict[str, bytes], level: str) -> None:
    path = tmp_path / "act.pdf"
    path.write_bytes(signed[level])
    done = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No syntax or stream encoding errors found" in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_openssl_verifies_each_cms(
    tmp_path: Path, pki: DemoPki, signed: dict[str, bytes], level: str
) -> None:
    """`openssl cms -verify` on each signature's CMS over its byte ranges; a document
    timestamp's token goes through `openssl ts -verify` (its content is a TSTInfo)."""
    data = signed[level]
    root = tmp_path / "root.pem"
    root.write_bytes(pki.roots_pem())
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca_cert.public_bytes(serialization.Encoding.PEM))
    reader = PdfFileReader(io.BytesIO(data))
    assert reader.embedded_signatures
    for emb in reader.embedded_signatures:
        a, b, c, d = (int(v) for v in emb.byte_range)
        content = tmp_path / "content.bin"
        content.write_bytes(data[a : a + b] + data[c : c + d])
        der = tmp_path / "sig.der"
        der.write_bytes(emb.pkcs7_content)
        if emb.sig_object_type == "/Sig":
            cmd = ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(der)]
            cmd += ["-content", str(content), "-CAfile", str(root), "-binary", "-purpose", "any"]
            cmd += ["-out", "/dev/null"]
            expected = "CMS Verification successful"
        else:
            cmd = ["openssl", "ts", "-verify", "-data", str(content), "-in", str(der)]
            cmd += ["-token_in", "-CAfile", str(root), "-untrusted", str(ca)]
            expected = "Verification: OK"
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert expected in done.stdout + done.stderr


@pytest.fixture(scope="module")
def nss_db(tmp_path_factory: pytest.TempPathFactory, pki: DemoPki) -> str:
    """An NSS database trusting the demo root, holding the PKI's current CRLs.

    The CRLs are there because poppler 22.12 (Debian 12) reads PORT_GetError() after
    CERT_PKIXVerifyCert even when it succeeded: libpkix looking for a CRL it does not have
    leaves SEC_ERROR_CRL_NOT_FOUND behind, which pdfsig prints as "Unknown issue with
    Certificate or corrupted data." (fixed in later poppler releases). The app serves the
    same CRLs; OCSP is not used here (-no-ocsp)."""
    folder = tmp_path_factory.mktemp("nss")
    db = f"sql:{folder}"
    root = folder / "root.pem"
    root.write_bytes(pki.roots_pem())
    subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", db, "-n", "securex-root", "-t", "CT,C,C", "-i", str(root)],
        check=True,
    )
    now = datetime.now(UTC)
    for name, der in (("root.crl", pki.root_crl_der(now)), ("ca.crl", pki.crl_der(now))):
        (folder / name).write_bytes(der)
        subprocess.run(
            ["crlutil", "-I", "-d", db, "-i", str(folder / name), "-B"],
            check=True,
            capture_output=True,
        )
    return db


def pdfsig(tmp_path: Path, nss: str, data: bytes) -> list[str]:
    """pdfsig's output, one block per signature (its exit code is 0 even on a digest
    mismatch, so only its words count)."""
    path = tmp_path / "act.pdf"
    path.write_bytes(data)
    done = subprocess.run(
        ["pdfsig", "-nssdir", nss, "-no-ocsp", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return re.split(r"\nSignature #\d+:\n", done.stdout)[1:]


@pytest.mark.parametrize("level", LEVELS)
def test_pdfsig_says_valid_and_trusted(
    tmp_path: Path, nss_db: str, signed: dict[str, bytes], level: str
) -> None:
    blocks = pdfsig(tmp_path, nss_db, signed[level])
    # pdfsig 22.12 does not validate document timestamps (ETSI.RFC3161): the signature is
    # the first block.
    assert len(blocks) == (2 if level == "B-LTA" else 1)
    assert "Signature Type: ETSI.CAdES.detached" in blocks[0]
    assert "Signature Validation: Signature is Valid." in blocks[0]
    assert "Certificate Validation: Certificate is Trusted." in blocks[0]


# --- tampering -----------------------------------------------------------------------------


def test_one_byte_changed_in_signed_range(
    tmp_path: Path, pki: DemoPki, nss_db: str, signed: dict[str, bytes]
) -> None:
    data = signed["B-LTA"]
    at = data.index(b"Acte de naissance") + 5
    assert at < int(PdfFileReader(io.BytesIO(data)).embedded_signatures[0].byte_range[1])
    tampered = data[:at] + b"X" + data[at + 1 :]
    report = check(pki, tampered)
    assert not report.ok
    sig = report.signatures[0]
    assert not sig.intact and not sig.ok and sig.pades_level is None
    assert any("octets signés ont été modifiés" in p for p in sig.problems)
    # the document timestamp covers that byte too
    assert not report.signatures[1].intact
    assert "Signature Validation: Digest Mismatch." in pdfsig(tmp_path, nss_db, tampered)[0]


def test_page_added_after_signing(pki: DemoPki, signed: dict[str, bytes]) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed["B-B"]))
    content = generic.StreamObject(stream_data=b"BT /F1 18 Tf 72 760 Td (Mention) Tj ET")
    writer.insert_page(PageObject(contents=writer.add_object(content), media_box=[0, 0, 595, 842]))
    out = io.BytesIO()
    writer.write(out)
    report = check(pki, out.getvalue())
    sig = report.signatures[0]
    assert sig.intact and sig.valid and sig.trusted
    assert sig.coverage == "entire-revision"
    assert sig.modified_after == "disallowed"
    assert sig.modifications and sig.modifications[0] in sig.problems
    assert not sig.ok and not report.ok


def test_second_signature_is_an_allowed_modification(
    pki: DemoPki, signed: dict[str, bytes]
) -> None:
    twice = signer_for(pki, MARIE)(signed["B-T"], "B-T")
    report = check(pki, twice)
    assert report.ok, report.to_json()
    first, second = report.signatures
    assert first.modified_after == "allowed"
    assert first.modifications == [f"signature « {second.field} »"]
    assert (second.modified_after, second.coverage) == ("none", "entire-document")


def test_unsigned_pdf(pki: DemoPki) -> None:
    report = check(pki, one_page_pdf())
    assert not report.ok
    assert report.signatures == [] and report.problems == ["Aucune signature."]


def xref_stream_bomb(inflated: int) -> bytes:
    """A PDF whose cross-reference stream inflates to `inflated` bytes."""
    squeeze = zlib.compressobj(9)
    chunk = bytes(MiB)
    bomb = b"".join(squeeze.compress(chunk) for _ in range(inflated // MiB)) + squeeze.flush()
    head = (
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    )
    xref = (
        b"3 0 obj\n<< /Type /XRef /Size 4 /W [1 4 2] /Root 1 0 R /Filter /FlateDecode /Length "
        + str(len(bomb)).encode()
        + b" >>\nstream\n"
    )
    return head + xref + bomb + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % len(head)


def dss_bomb(signed_pdf: bytes, inflated: int) -> bytes:
    """`signed_pdf` with a DSS added whose only certificate inflates to `inflated` bytes."""
    squeeze = zlib.compressobj(9)
    chunk = bytes(MiB)
    bomb = b"".join(squeeze.compress(chunk) for _ in range(inflated // MiB)) + squeeze.flush()
    writer = IncrementalPdfFileWriter(io.BytesIO(signed_pdf))
    stream = generic.StreamObject(
        {generic.pdf_name("/Filter"): generic.pdf_name("/FlateDecode")}, encoded_data=bomb
    )
    writer.root[generic.pdf_name("/DSS")] = writer.add_object(
        generic.DictionaryObject(
            {generic.pdf_name("/Certs"): generic.ArrayObject([writer.add_object(stream)])}
        )
    )
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def malformed(signed: dict[str, bytes]) -> dict[str, bytes]:
    lta = signed["B-LTA"]
    return {
        "empty": b"",
        "garbage": bytes(range(256)) * 64,
        "pdf-header-then-garbage": b"%PDF-1.7\n" + bytes(range(256)) * 64,
        "truncated": lta[: len(lta) // 2],
        "truncated-tail": lta[:-40],
        "xref-stream-bomb": xref_stream_bomb(200 * MiB),
        "dss-bomb": dss_bomb(signed["B-B"], 200 * MiB),
        "contents-not-cms": lta.replace(b"/Contents <30", b"/Contents <31", 1),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "garbage",
        "pdf-header-then-garbage",
        "truncated",
        "truncated-tail",
        "xref-stream-bomb",
        "dss-bomb",
        "contents-not-cms",
    ],
)
def test_malformed_input_gives_a_report(
    pki: DemoPki, malformed: dict[str, bytes], case: str
) -> None:
    start = time.monotonic()
    report = check(pki, malformed[case])
    assert time.monotonic() - start < 10
    assert not report.ok
    problems = report.problems + [p for s in report.signatures for p in s.problems]
    assert problems, report.to_json()
    if case == "dss-bomb":  # the DSS is ignored, the signature itself still checks
        assert report.problems[0].startswith("Données de validation (DSS) illisibles")
        assert report.signatures[0].intact and report.signatures[0].trusted


def test_bytes_hidden_after_the_last_revision(pki: DemoPki, signed: dict[str, bytes]) -> None:
    """Objects appended without a cross-reference section, then an old startxref: pyHanko
    reads the signed revisions only, but a viewer rebuilding the cross-references would
    show the appended page."""
    data = signed["B-LTA"]
    end = data.rindex(b"startxref")
    shadow = b"5 0 obj\n<< /Type /Page /Contents 9 0 R >>\nendobj\n"
    report = check(pki, data + shadow + data[end:])
    assert all(s.ok for s in report.signatures)
    assert not report.ok
    assert "n'appartiennent à aucune révision" in report.problems[0]


def test_cross_reference_table_and_padding(tmp_path: Path, pki: DemoPki) -> None:
    """A source PDF with classic cross-reference tables (as qpdf writes them), and
    end-of-line padding after %%EOF, are no hidden bytes."""
    source, table = tmp_path / "source.pdf", tmp_path / "table.pdf"
    source.write_bytes(one_page_pdf())
    subprocess.run(["qpdf", "--object-streams=disable", str(source), str(table)], check=True)
    assert b"\nxref\n" in table.read_bytes()
    data = signer_for(pki, MARIE)(table.read_bytes(), "B-LTA") + b"\r\n\x00"
    report = check(pki, data)
    assert report.ok and report.problems == [], report.to_json()
    assert report.signatures[0].pades_level == "B-LTA"


def test_plain_pdf_signature_is_not_pades(pki: DemoPki) -> None:
    cert, key = pki.officer(MARIE.email)
    meta = signers.PdfSignatureMetadata(
        field_name="Adobe", subfilter=fields.SigSeedSubFilter.ADOBE_PKCS7_DETACHED
    )
    out = signers.sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(one_page_pdf())),
        meta,
        signer=LoadedKeySigner(cert, key, pki.chain_for(cert)),
    )
    report = check(pki, out.getvalue())
    sig = report.signatures[0]
    assert report.ok and sig.field == "Adobe" and sig.pades_level is None
    assert any("pas au format PAdES" in p for p in sig.problems)


def test_size_limit(pki: DemoPki, signed: dict[str, bytes]) -> None:
    report = check(pki, signed["B-B"], max_size=1000)
    assert report.signatures == [] and "trop volumineux" in report.problems[0]
    assert check(pki, b"GIF89a" + bytes(100)).problems == ["Ce fichier n'est pas un PDF."]


# --- trust and revocation -------------------------------------------------------------------


def test_another_root_is_not_trusted(pki: DemoPki, signed: dict[str, bytes]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Une autre racine")])
    now = datetime.now(UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    report = validate_pdf(signed["B-LT"], trust_roots=[other])
    sig = report.signatures[0]
    assert sig.intact and sig.valid and not sig.trusted and not sig.ok
    assert sig.revocation == "unknown"
    assert any("aucune autorité de confiance" in p for p in sig.problems)
    # the intermediate alone is no anchor either: it is passed as an untrusted helper
    assert not validate_pdf(signed["B-B"], trust_roots=[other], other_certs=[pki.ca_cert]).ok


def test_long_term_levels_outlive_the_officer_certificate(
    pki: DemoPki, signed: dict[str, bytes]
) -> None:
    """Four years on, the officer's certificate (three years) has expired: a B-LTA act is
    judged at its timestamp's time, a B-B act cannot be."""
    later = datetime.now(UTC) + timedelta(days=4 * 365)
    lta = check(pki, signed["B-LTA"], now=later)
    assert lta.ok, lta.to_json()
    assert lta.signatures[0].revocation == "good"
    plain = check(pki, signed["B-B"], now=later).signatures[0]
    assert plain.intact and not plain.trusted
    assert any("expiré" in p for p in plain.problems)


def test_revocation(pki: DemoPki) -> None:
    """Offline validation knows only what the file embeds.

    - B-B signed, then the certificate revoked: nothing in the file says so, "unknown",
      still trusted;
    - the same with the post-revocation CRL and OCSP response added to its DSS: "revoked";
    - B-LT signed before the revocation: its timestamp proves the signature was made
      while the certificate was good, "good" now and after fresh revocation data saying
      "revoked since" is added (as an archival renewal would)."""
    pki.issue_officer(PAUL, key_type="ecdsa-p256", now=datetime.now(UTC))
    paul = signer_for(pki, PAUL)
    data = one_page_pdf("Acte de mariage")
    b_b, b_lt = paul(data, "B-B"), paul(data, "B-LT")
    revoked_at = datetime.now(UTC) + timedelta(seconds=2)
    pki.revoke(pki.officer_cert(PAUL.email).serial_number, now=revoked_at)
    after = revoked_at + timedelta(seconds=1)
    later = datetime.now(UTC) + timedelta(hours=1)

    sig = check(pki, b_b, now=later).signatures[0]
    assert (sig.trusted, sig.revocation) == (True, "unknown")

    def with_fresh_revinfo(pdf: bytes) -> bytes:
        crls, ocsps = pki.validation_material(after)
        out = io.BytesIO(pdf)
        DocumentSecurityStore.add_dss(
            out,
            None,
            crls=[asn1_crl.CertificateList.load(c) for c in crls],
            ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in ocsps],
        )
        return out.getvalue()

    revealed = with_fresh_revinfo(b_b)
    report = check(pki, revealed, now=later)
    sig = report.signatures[0]
    assert (sig.trusted, sig.revocation, sig.ok, report.ok) == (False, "revoked", False, False)
    assert sig.modified_after == "allowed"  # a DSS update is no tampering
    assert any("révoqué" in p for p in sig.problems)
    # a month later that CRL and OCSP response are stale, yet still prove the revocation
    sig = check(pki, revealed, now=later + timedelta(days=30)).signatures[0]
    assert (sig.trusted, sig.revocation) == (False, "revoked")

    for pdf in (b_lt, with_fresh_revinfo(b_lt)):
        report = check(pki, pdf, now=later)
        sig = report.signatures[0]
        assert (sig.trusted, sig.revocation, sig.pades_level) == (True, "good", "B-LT")
        assert report.ok


def test_from_a_running_event_loop(pki: DemoPki, signed: dict[str, bytes]) -> None:
    """An async caller (an async view, say) gets the same report."""

    async def caller() -> DocumentReport:
        return check(pki, signed["B-T"])

    assert asyncio.run(caller()).ok
