"""The demo PKI: certificate profiles, offline chain validation with pyHanko's
certvalidator, CRL and OCSP answers (checked by openssl too), RFC 3161 tokens, storage.

No database: the PKI is a plain library. One PKI is made per module (key generation is
the slow part); tests that revoke or re-issue use officers of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import algos, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.status import TimestampSignatureStatus
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import InvalidCertificateError, RevokedError

from securex.errors import ConfigError, Conflict, NotFound, ValidationFailed
from securex.signing.pki import DemoPki, OfficerIdentity, init_pki, load_pki

PEM, DER = Encoding.PEM, Encoding.DER

# openssl checks validity against the system clock, so the pinned instant is "now" at
# import, to the second (certificates and CRLs carry seconds).
NOW = datetime.now(UTC).replace(microsecond=0)
PASSWORD = b"a password derived from the instance secret"
BASE = "http://127.0.0.1:8000"
JEANNE = OfficerIdentity(
    "jeanne.dupont@mont-de-marsan.fr", "Jeanne Dupont", "Mont-de-Marsan", "40192"
)
PAUL = OfficerIdentity("paul.martin@dax.fr", "Paul Martin", "Dax", "40088")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    folder = tmp_path_factory.mktemp("instance") / "pki"
    made = init_pki(folder, base_url=BASE + "/", now=NOW, password=PASSWORD, officers=[JEANNE])
    made.issue_officer(PAUL, key_type="ecdsa-p256", now=NOW)
    return made


@pytest.fixture
def pem_dir(tmp_path: Path, pki: DemoPki) -> Path:
    (tmp_path / "root.pem").write_bytes(pki.roots_pem())
    (tmp_path / "ca.pem").write_bytes(pki.ca_cert.public_bytes(PEM))
    return tmp_path


_counter = iter(range(1_000_000))


def fresh_officer(pki: DemoPki) -> x509.Certificate:
    """An officer of this test's own (ECDSA: cheap to make)."""
    n = next(_counter)
    who = OfficerIdentity(f"agent{n}@dax.fr", f"Agent {n}", "Dax", "40088")
    return pki.issue_officer(who, key_type="ecdsa-p256", now=NOW)


def asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(DER))


def context(pki: DemoPki, at: datetime = NOW) -> ValidationContext:
    """What the engineer's offline validation needs: the root as the only trust anchor,
    this PKI's revocation data supplied directly, nothing fetched, revocation
    information required for every certificate of the path."""
    crls, ocsps = pki.validation_material(at)
    return ValidationContext(
        trust_roots=[asn1(pki.root_cert)],
        other_certs=[asn1(pki.ca_cert)],
        crls=crls,
        ocsps=ocsps,
        allow_fetching=False,
        revocation_mode="require",
        moment=at,
    )


def validate(
    pki: DemoPki, cert: x509.Certificate, usage: set[str], eku: set[str] | None = None
) -> list[bytes]:
    """The validated path, root first, as DER."""
    validator = CertificateValidator(asn1(cert), validation_context=context(pki))
    path = asyncio.run(validator.async_validate_usage(usage, eku))
    return [c.dump() for c in path]


def ocsp_request(
    cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None
) -> bytes:
    # SHA-1 CertIDs: what pyHanko, NSS and openssl send (RFC 5019); identification only.
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


# --- storage --------------------------------------------------------------------------


def test_folder_layout_and_modes(pki: DemoPki) -> None:
    folder = pki.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "officers").stat().st_mode) == 0o700
    p12s = [folder / f"{n}.p12" for n in ("root", "ca", "tsa")]
    p12s += [pki.officer_p12_path(JEANNE.email), pki.officer_p12_path(PAUL.email)]
    for path in [*p12s, folder / "index.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name in ("root", "ca", "tsa"):
        assert (folder / f"{name}.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    # Private keys live only inside the PKCS#12 files; the password is nowhere.
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD not in data, path
            assert b"PRIVATE KEY" not in data, path
    assert not list(folder.rglob("*.tmp"))


def test_officer_p12_opens_with_the_password(pki: DemoPki) -> None:
    key, cert, chain = pkcs12.load_key_and_certificates(
        pki.officer_p12_path(JEANNE.email).read_bytes(), pki.p12_password()
    )
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert cert == pki.officer(JEANNE.email)[0]
    assert chain == [pki.ca_cert, pki.root_cert]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(pki.officer_p12_path(JEANNE.email).read_bytes(), b"x")


def test_init_refuses_a_folder_that_holds_a_pki(pki: DemoPki) -> None:
    before = (pki.folder / "index.json").read_bytes()
    with pytest.raises(Conflict):
        init_pki(pki.folder, base_url=BASE, now=NOW, password=PASSWORD)
    assert (pki.folder / "index.json").read_bytes() == before


def test_load_with_a_wrong_password_fails_clearly(pki: DemoPki) -> None:
    with pytest.raises(ConfigError, match="mot de passe de la PKI incorrect"):
        load_pki(pki.folder, b"not the password")


def test_load_of_a_missing_pki_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="securex pki init"):
        load_pki(tmp_path / "nothing", PASSWORD)


def test_load_reads_what_init_wrote(pki: DemoPki) -> None:
    again = load_pki(pki.folder, PASSWORD)
    assert again.base_url == BASE  # trailing slash dropped
    assert (again.root_cert, again.ca_cert, again.tsa_cert) == (
        pki.root_cert,
        pki.ca_cert,
        pki.tsa_cert,
    )
    assert again.officers()[:2] == [JEANNE, PAUL]
    cert, key = again.officer(PAUL.email.upper())  # e-mail addresses are case-insensitive
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert cert == pki.officer_cert(PAUL.email)
    assert again.chain_for(cert) == [pki.ca_cert, pki.root_cert]
    assert again.roots_pem() == pki.root_cert.public_bytes(PEM)


def test_bad_inputs_are_refused(pki: DemoPki, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        pki.officer("nobody@dax.fr")
    with pytest.raises(ValidationFailed):
        pki.officer("../../etc/passwd")
    with pytest.raises(ValidationFailed):
        pki.issue_officer(PAUL, key_type="dsa", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.crl_der(datetime(2026, 1, 1))  # naive on purpose
    with pytest.raises(ValidationFailed):
        init_pki(tmp_path / "p", base_url="ftp://x", now=NOW, password=PASSWORD)
    with pytest.raises(ValidationFailed):
        init_pki(tmp_path / "p", base_url=BASE, now=NOW, password=b"")


# --- certificate profiles -------------------------------------------------------------


def test_root_and_intermediate_profiles(pki: DemoPki) -> None:
    root, ca = pki.root_cert, pki.ca_cert
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "securex Démo — Racine"
    )
    assert root.issuer == root.subject
    assert ext(root, x509.BasicConstraints).value == x509.BasicConstraints(True, 1)
    assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=20 * 365)
    assert isinstance(root.public_key(), rsa.RSAPublicKey)
    assert root.public_key().key_size >= 3072  # type: ignore[union-attr]

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "AC État civil"
    assert ca.issuer == root.subject
    assert ext(ca, x509.BasicConstraints).critical
    assert ext(ca, x509.BasicConstraints).value == x509.BasicConstraints(True, 0)
    usage = ext(ca, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.key_cert_sign and usage.crl_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=10 * 365)
    assert ca.public_key().key_size == 3072  # type: ignore[union-attr]
    crldp = ext(ca, x509.CRLDistributionPoints).value
    assert isinstance(crldp, x509.CRLDistributionPoints)
    assert crldp[0].full_name == [x509.UniformResourceIdentifier(f"{BASE}/pki/root.crl")]


def test_every_certificate_has_key_identifiers(pki: DemoPki) -> None:
    certs = [pki.root_cert, pki.ca_cert, pki.tsa_cert]
    certs += [pki.officer_cert(o.email) for o in (JEANNE, PAUL)]
    for cert in certs:
        issuer = pki.root_cert if cert.issuer == pki.root_cert.subject else pki.ca_cert
        ski = ext(issuer, x509.SubjectKeyIdentifier).value
        aki = ext(cert, x509.AuthorityKeyIdentifier).value
        assert isinstance(ski, x509.SubjectKeyIdentifier)
        assert isinstance(aki, x509.AuthorityKeyIdentifier)
        assert aki.key_identifier == ski.digest
        own = ext(cert, x509.SubjectKeyIdentifier).value
        assert own == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def _urls(cert: x509.Certificate) -> tuple[list[str], dict[str, str]]:
    crldp = ext(cert, x509.CRLDistributionPoints).value
    aia = ext(cert, x509.AuthorityInformationAccess).value
    assert isinstance(crldp, x509.CRLDistributionPoints)
    assert isinstance(aia, x509.AuthorityInformationAccess)
    crls = [str(n.value) for dp in crldp for n in dp.full_name or []]
    access = {a.access_method.dotted_string: str(a.access_location.value) for a in aia}
    return crls, access


def test_officer_profile(pki: DemoPki) -> None:
    cert = pki.officer_cert(JEANNE.email)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COUNTRY_NAME: "FR",
        NameOID.ORGANIZATION_NAME: "Mairie de Mont-de-Marsan",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "État civil",
        NameOID.LOCALITY_NAME: "Mont-de-Marsan",
        NameOID.TITLE: "Officier de l'état civil",
        NameOID.COMMON_NAME: "Jeanne Dupont",
    }
    assert cert.public_key().key_size == 3072  # type: ignore[union-attr]
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage)
    assert usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    assert ext(cert, x509.BasicConstraints).value == x509.BasicConstraints(False, None)
    # No EKU: NSS (pdfsig) would then demand emailProtection.
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.RFC822Name) == [JEANNE.email]
    crls, access = _urls(cert)
    assert crls == [f"{BASE}/pki/ca.crl"]
    assert access == {
        "1.3.6.1.5.5.7.48.1": f"{BASE}/pki/ocsp",
        "1.3.6.1.5.5.7.48.2": f"{BASE}/pki/ca.crt",
    }
    assert cert.not_valid_after_utc - NOW == timedelta(days=3 * 365)
    paul = pki.officer_cert(PAUL.email).public_key()
    assert isinstance(paul, ec.EllipticCurvePublicKey) and paul.curve.name == "secp256r1"


def test_tsa_profile(pki: DemoPki) -> None:
    cert = pki.tsa_cert
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]  # type: ignore[call-overload]
    usage = ext(cert, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.digital_signature
    assert cert.issuer == pki.ca_cert.subject
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=10 * 365 - 1)
    crls, access = _urls(cert)
    assert crls == [f"{BASE}/pki/ca.crl"]
    assert access["1.3.6.1.5.5.7.48.1"] == f"{BASE}/pki/ocsp"


# --- chain validation -----------------------------------------------------------------


@pytest.mark.parametrize("who", [JEANNE, PAUL], ids=["rsa3072", "ecdsa-p256"])
def test_officer_chain_validates_offline(pki: DemoPki, who: OfficerIdentity) -> None:
    cert = pki.officer_cert(who.email)
    path = validate(pki, cert, {"non_repudiation", "digital_signature"})
    expected = (pki.root_cert, pki.ca_cert, cert)
    assert path == [c.public_bytes(DER) for c in expected]


def test_tsa_chain_validates_offline(pki: DemoPki) -> None:
    path = validate(pki, pki.tsa_cert, set(), {"time_stamping"})
    assert path[-1] == pki.tsa_cert.public_bytes(DER)


def test_officer_cert_cannot_be_used_as_a_tsa(pki: DemoPki) -> None:
    with pytest.raises(InvalidCertificateError, match="time stamping"):
        validate(pki, pki.officer_cert(JEANNE.email), set(), {"time_stamping"})


def test_openssl_verifies_the_chain(pki: DemoPki, pem_dir: Path) -> None:
    officer = pem_dir / "officer.pem"
    officer.write_bytes(pki.officer_cert(JEANNE.email).public_bytes(PEM))
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            pem_dir / "root.pem",
            "-untrusted",
            pem_dir / "ca.pem",
            officer,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(": OK")


# --- revocation -----------------------------------------------------------------------


def test_a_revoked_officer_is_reported_by_crl_and_ocsp_and_fails(
    pki: DemoPki, pem_dir: Path
) -> None:
    cert = fresh_officer(pki)
    revoked_at = NOW + timedelta(seconds=10)
    assert not pki.is_revoked(cert.serial_number, revoked_at)
    pki.revoke(cert.serial_number, now=revoked_at)
    later = revoked_at + timedelta(seconds=1)
    assert pki.is_revoked(cert.serial_number, later)

    crl = x509.load_der_x509_crl(pki.crl_der(later))
    assert crl.is_signature_valid(pki.ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc == later + timedelta(days=7)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and entry.revocation_date_utc == revoked_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    # What a CRL says is the state at its `now`: before the revocation, not listed.
    earlier = x509.load_der_x509_crl(pki.crl_der(NOW))
    assert earlier.get_revoked_certificate_by_serial_number(cert.serial_number) is None

    resp = ocsp.load_der_ocsp_response(
        pki.ocsp_response_der(ocsp_request(cert, pki.ca_cert), later)
    )
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == revoked_at
    assert resp.revocation_reason == x509.ReasonFlags.key_compromise

    with pytest.raises(RevokedError):
        asyncio.run(
            CertificateValidator(asn1(cert), validation_context=context(pki, later))
            .async_validate_usage({"non_repudiation"})
        )  # fmt: skip

    # And openssl, given the CRL, agrees.
    (pem_dir / "leaf.pem").write_bytes(cert.public_bytes(PEM))
    (pem_dir / "crl.pem").write_bytes(crl.public_bytes(PEM))
    (pem_dir / "root-crl.pem").write_bytes(
        x509.load_der_x509_crl(pki.root_crl_der(later)).public_bytes(PEM)
    )
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check_all",
            "-CAfile",
            pem_dir / "root.pem",
            "-untrusted",
            pem_dir / "ca.pem",
            "-CRLfile",
            pem_dir / "crl.pem",
            "-CRLfile",
            pem_dir / "root-crl.pem",
            pem_dir / "leaf.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "certificate revoked" in out.stdout + out.stderr


def test_revoke_unknown_or_twice_is_refused(pki: DemoPki) -> None:
    with pytest.raises(NotFound):
        pki.revoke(12345, now=NOW)
    cert = fresh_officer(pki)
    pki.revoke(cert.serial_number, now=NOW, reason=x509.ReasonFlags.unspecified)
    with pytest.raises(Conflict):
        pki.revoke(cert.serial_number, now=NOW)
    # "unspecified" is not written as a CRL entry extension (RFC 5280 §5.3.1).
    crl = x509.load_der_x509_crl(pki.crl_der(NOW))
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and len(entry.extensions) == 0


def test_reissuing_supersedes_the_old_certificate(pki: DemoPki) -> None:
    who = OfficerIdentity("remplacee@dax.fr", "Claire Remplacée", "Dax", "40088")
    old = pki.issue_officer(who, key_type="ecdsa-p256", now=NOW)
    new = pki.issue_officer(who, key_type="ecdsa-p256", now=NOW + timedelta(seconds=1))
    assert pki.officer(who.email)[0] == new == pki.officer_cert(who.email)
    assert [o.email for o in pki.officers()].count(who.email) == 1
    crl = x509.load_der_x509_crl(pki.crl_der(NOW + timedelta(seconds=2)))
    entry = crl.get_revoked_certificate_by_serial_number(old.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.superseded
    )
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is None


def test_a_running_instance_sees_revocations_made_elsewhere(pki: DemoPki) -> None:
    server = load_pki(pki.folder, PASSWORD)  # e.g. the web app, opened earlier
    cert = fresh_officer(pki)  # e.g. the CLI, in another process
    request = ocsp_request(cert, pki.ca_cert)
    first = ocsp.load_der_ocsp_response(server.ocsp_response_der(request, NOW))
    assert first.certificate_status == ocsp.OCSPCertStatus.GOOD
    pki.revoke(cert.serial_number, now=NOW)
    then = ocsp.load_der_ocsp_response(server.ocsp_response_der(request, NOW))
    assert then.certificate_status == ocsp.OCSPCertStatus.REVOKED


# --- OCSP -------------------------------------------------------------------------------


def test_ocsp_good_with_nonce_echoed(pki: DemoPki) -> None:
    cert = pki.officer_cert(JEANNE.email)
    nonce = os.urandom(16)
    resp = ocsp.load_der_ocsp_response(
        pki.ocsp_response_der(ocsp_request(cert, pki.ca_cert, nonce), NOW)
    )
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == cert.serial_number
    assert resp.this_update_utc == NOW and resp.next_update_utc == NOW + timedelta(days=1)
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert resp.responder_key_hash == ext(pki.ca_cert, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    ca_key = pki.ca_cert.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey) and resp.signature_hash_algorithm is not None
    ca_key.verify(
        resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), resp.signature_hash_algorithm
    )


def test_ocsp_unknown_serial(pki: DemoPki) -> None:
    algorithm = hashes.SHA1()  # noqa: S303 -- the usual CertID hash
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=_h(algorithm, pki.ca_cert.subject.public_bytes()),
            issuer_key_hash=ext(pki.ca_cert, x509.SubjectKeyIdentifier).value.digest,  # type: ignore[attr-defined]
            serial_number=0x5EC0DE,
            algorithm=algorithm,
        )
        .build()
        .public_bytes(DER)
    )
    resp = ocsp.load_der_ocsp_response(pki.ocsp_response_der(request, NOW))
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def _h(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" * 2000, os.urandom(300)]
)
def test_malformed_ocsp_requests_get_an_error_response(pki: DemoPki, body: bytes) -> None:
    resp = ocsp.load_der_ocsp_response(pki.ocsp_response_der(body, NOW))
    assert resp.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_about_another_issuer_is_unauthorized(pki: DemoPki) -> None:
    # The intermediate's status, asked of this responder: the root's CRL answers that.
    request = ocsp_request(pki.ca_cert, pki.root_cert)
    resp = ocsp.load_der_ocsp_response(pki.ocsp_response_der(request, NOW))
    assert resp.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_openssl_reads_and_verifies_ocsp(pki: DemoPki, pem_dir: Path) -> None:
    officer = pem_dir / "officer.pem"
    officer.write_bytes(pki.officer_cert(JEANNE.email).public_bytes(PEM))
    # A request made by openssl (SHA-1 CertID, its own nonce encoding) ...
    subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            pem_dir / "ca.pem",
            "-cert",
            officer,
            "-reqout",
            pem_dir / "req.der",
        ],
        check=True,
        capture_output=True,
    )
    resp = pki.ocsp_response_der((pem_dir / "req.der").read_bytes(), NOW)
    (pem_dir / "resp.der").write_bytes(resp)
    text = subprocess.run(
        ["openssl", "ocsp", "-respin", pem_dir / "resp.der", "-resp_text", "-noverify"],
        capture_output=True,
        text=True,
    )
    assert text.returncode == 0, text.stderr
    assert "Cert Status: good" in text.stdout
    # ... answered, then checked by openssl: signature, responder, nonce.
    verify = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-reqin",
            pem_dir / "req.der",
            "-respin",
            pem_dir / "resp.der",
            "-CAfile",
            pem_dir / "root.pem",
            "-verify_other",
            pem_dir / "ca.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    assert "Response verify OK" in verify.stdout + verify.stderr


def test_ocsp_request_for_two_certificates_gets_an_error_response(
    pki: DemoPki, pem_dir: Path
) -> None:
    (pem_dir / "a.pem").write_bytes(pki.officer_cert(JEANNE.email).public_bytes(PEM))
    (pem_dir / "b.pem").write_bytes(pki.tsa_cert.public_bytes(PEM))
    subprocess.run(
        ["openssl", "ocsp", "-issuer", pem_dir / "ca.pem", "-cert", pem_dir / "a.pem",
         "-cert", pem_dir / "b.pem", "-reqout", pem_dir / "req.der"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    resp = pki.ocsp_response_der((pem_dir / "req.der").read_bytes(), NOW)
    assert ocsp.load_der_ocsp_response(resp).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


# --- timestamps -------------------------------------------------------------------------


def test_timestamper_token_validates(pki: DemoPki) -> None:
    stamper = pki.timestamper(fixed_dt=NOW)
    assert isinstance(stamper, DummyTimeStamper)
    digest = hashlib.sha256(b"acte de naissance").digest()
    token = asyncio.run(stamper.async_timestamp(digest, "sha256"))
    signed = token["content"]
    tst_info = signed["encap_content_info"]["content"].parsed
    assert tst_info["gen_time"].native == NOW
    kwargs = asyncio.run(validate_tst_signed_data(signed, context(pki), lambda _algorithm: digest))
    status = TimestampSignatureStatus(**kwargs)
    assert status.intact and status.valid and status.trusted
    assert status.timestamp == NOW
    # The same object is reused without a fixed time (pyHanko caches on it).
    assert pki.timestamper() is pki.timestamper()


def _ts_request(digest: bytes, *, algorithm: str = "sha256", **extra: object) -> bytes:
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": tsp.MessageImprint(
            {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
                "hashed_message": digest,
            }
        ),
    }
    fields.update(extra)
    return bytes(tsp.TimeStampReq(fields).dump())


def test_tsa_response_round_trip(pki: DemoPki, pem_dir: Path) -> None:
    digest = hashlib.sha256(b"registre").digest()
    der = pki.tsa_response_der(_ts_request(digest, nonce=987654321, cert_req=True), NOW)
    resp = tsp.TimeStampResp.load(der)
    assert resp["status"]["status"].native == "granted"
    signed = resp["time_stamp_token"]["content"]
    tst_info = signed["encap_content_info"]["content"].parsed
    assert tst_info["nonce"].native == 987654321
    assert tst_info["message_imprint"]["hashed_message"].native == digest
    assert tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert tst_info["gen_time"].native == NOW
    assert asn1(pki.tsa_cert).dump() in [choice.chosen.dump() for choice in signed["certificates"]]
    # An independent reader agrees.
    (pem_dir / "tsr.der").write_bytes(der)
    out = subprocess.run(
        [
            "openssl",
            "ts",
            "-verify",
            "-digest",
            digest.hex(),
            "-in",
            pem_dir / "tsr.der",
            "-CAfile",
            pem_dir / "root.pem",
            "-untrusted",
            pem_dir / "ca.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verification: OK" in out.stdout


def test_tsa_without_cert_req_omits_certificates(pki: DemoPki) -> None:
    digest = hashlib.sha512(b"x").digest()
    der = pki.tsa_response_der(_ts_request(digest, algorithm="sha512"), NOW)
    resp = tsp.TimeStampResp.load(der)
    assert resp["status"]["status"].native == "granted"
    signed = resp["time_stamp_token"]["content"]
    assert not signed["certificates"]  # RFC 3161 §2.4.1
    tst_info = signed["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest


def _rejection(der: bytes) -> tuple[str, set[str]]:
    # asn1crypto declares timeStampToken mandatory: read the status alone.
    outer = core.Sequence.load(der)
    assert len(outer) == 1
    info = tsp.PKIStatusInfo.load(outer[0].dump())
    return info["status"].native, set(info["fail_info"].native or ())


@pytest.mark.parametrize(
    ("body", "fail"),
    [
        (b"", "bad_data_format"),
        (b"not DER at all", "bad_data_format"),
        (b"\x30\x00", "bad_data_format"),
        (_ts_request(hashlib.sha256(b"x").digest()) + b"\x00", "bad_data_format"),
        (_ts_request(hashlib.sha1(b"x").digest(), algorithm="sha1"), "bad_alg"),  # noqa: S324
        (_ts_request(b"short"), "bad_alg"),
        (_ts_request(hashlib.sha256(b"x").digest(), req_policy="1.2.3.4"), "unaccepted_policy"),
    ],
    ids=["empty", "text", "empty-sequence", "trailing", "sha1", "short", "policy"],
)
def test_tsa_rejects_bad_requests_with_a_response(pki: DemoPki, body: bytes, fail: str) -> None:
    status, fails = _rejection(pki.tsa_response_der(body, NOW))
    assert status == "rejection"
    assert fails == {fail}


def test_tsa_rejects_version_2(pki: DemoPki) -> None:
    request = tsp.TimeStampReq.load(_ts_request(hashlib.sha256(b"x").digest()))
    fields = {name: request[name] for name in ("message_imprint",)}
    der = bytes(tsp.TimeStampReq({"version": 2, **fields}).dump())
    assert _rejection(pki.tsa_response_der(der, NOW)) == ("rejection", {"bad_request"})


# --- validation material ----------------------------------------------------------------


def test_validation_material_covers_every_certificate(pki: DemoPki) -> None:
    crls, ocsps = pki.validation_material(NOW)
    issuers = {x509.load_der_x509_crl(c).issuer for c in crls}
    assert issuers == {pki.ca_cert.subject, pki.root_cert.subject}
    serials = set()
    for der in ocsps:
        resp = ocsp.load_der_ocsp_response(der)
        assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        serials.add(resp.serial_number)
    expected = {pki.officer_cert(o.email).serial_number for o in pki.officers()}
    assert serials == expected | {pki.tsa_cert.serial_number}


@pytest.fixture(autouse=True)
def _no_stray_files(pki: DemoPki) -> Iterator[None]:
    yield
    assert not list(pki.folder.rglob(".*.tmp"))
