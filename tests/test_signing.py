"""PAdES signing: every level, the visible signature, batch signing on both cores, the
refusals a person needs to understand, archival renewal, PKCS#11 tokens, and the
demo PKI served over HTTP for outside validators (poppler's pdfsig)."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko_certvalidator import ValidationContext

from securex.signing import pades
from securex.signing.errors import SigningRefused
from securex.signing.pki import OfficerIdentity, init_pki
from securex.signing.signers import LoadedKeySigner, to_asn1
from tests.pdfs import nss_trusting, one_page_pdf, pdfsig

SECUREX = str(Path(sys.executable).with_name("securex"))
OFFICER = OfficerIdentity(
    email="o@mairie-dax.fr", name="Odile Officier", commune="Dax", insee="40088"
)
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki") / "pki"
    return init_pki(
        folder,
        base_url="http://127.0.0.1:9",
        now=NOW - timedelta(days=1),
        password=b"test-password",
        officers=[OFFICER],
    )


def setup_for(
    authority, level: pades.Level, email: str = OFFICER.email, now: datetime = NOW
) -> pades.SigningSetup:
    cert, key = authority.officer(email)
    crls, ocsps = authority.validation_material(now)
    roots = [to_asn1(authority.root_cert)]
    others = [to_asn1(authority.ca_cert)]
    return pades.SigningSetup(
        signer=LoadedKeySigner(cert, key, authority.chain_for(cert)),
        certificate=cert,
        level=level,
        timestamper=authority.timestamper(),
        validation_context=lambda: ValidationContext(
            trust_roots=roots,
            other_certs=others,
            crls=crls,
            ocsps=ocsps,
            allow_fetching=False,
            revocation_mode="hard-fail",
        ),
    )


APPEARANCE = pades.Appearance(officer="Odile Officier", commune="Dax")


def offline_context(authority) -> ValidationContext:
    """An independent validator's view: the demo root only, embedded data only."""
    return ValidationContext(trust_roots=[to_asn1(authority.root_cert)], allow_fetching=False)


@pytest.mark.parametrize("level", list(pades.Level))
def test_each_level_validates_with_pyhanko(authority, level, tmp_path):
    signed = pades.sign(one_page_pdf(), setup_for(authority, level), APPEARANCE, NOW)
    reader = PdfFileReader(io.BytesIO(signed))
    sig = reader.embedded_regular_signatures[0]
    status = validate_pdf_signature(
        sig,
        offline_context(authority),
        key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
    )
    assert status.intact and status.valid and status.trusted
    assert status.bottom_line
    assert (status.timestamp_validity is not None) == level.timestamped
    assert sig.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    # Long-term levels carry their revocation data in the DSS (the full LTV check by
    # pyHanko's AdES validator is in test_signing_validate.py).
    dss = reader.root.get("/DSS")
    assert (dss is not None) == level.long_term
    if dss is not None:
        dss = dss.get_object()
        assert "/Certs" in dss and ("/OCSPs" in dss or "/CRLs" in dss)
    timestamps = [s for s in reader.embedded_signatures if s.sig_object["/Type"] == "/DocTimeStamp"]
    assert len(timestamps) == (1 if level is pades.Level.B_LTA else 0)
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    qpdf = subprocess.run(["qpdf", "--check", str(path)], capture_output=True)
    assert qpdf.returncode == 0, qpdf.stdout.decode() + qpdf.stderr.decode()


def test_visible_signature_says_who_when_and_why(authority):
    signed = pades.sign(one_page_pdf(), setup_for(authority, pades.Level.B_B), APPEARANCE, NOW)
    reader = PdfFileReader(io.BytesIO(signed))
    field = reader.embedded_regular_signatures[0].sig_field
    widget_rect = [float(v) for v in field["/Rect"]]
    assert widget_rect == [330.0, 40.0, 560.0, 120.0]
    appearance = field["/AP"]["/N"]
    raw = appearance.data.decode("latin-1")
    # Undo PDF string escapes (\ooo octal, \( \) \\) to read the text as drawn.
    text = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw)
    text = re.sub(r"\\(.)", r"\1", text)
    local = NOW.astimezone(pades.PARIS).strftime("%d/%m/%Y")
    for part in (
        "Odile Officier",
        "Officier de l'état civil",
        "Dax",
        local,
        "Délivrance d'un acte",
    ):
        assert part in text, (part, text)


def test_refuses_what_is_not_a_pdf(authority):
    with pytest.raises(SigningRefused, match="pas un PDF"):
        pades.sign(b"GIF89a not a pdf", setup_for(authority, pades.Level.B_B), APPEARANCE, NOW)


def test_refuses_an_encrypted_pdf(authority, tmp_path):
    plain, locked = tmp_path / "p.pdf", tmp_path / "e.pdf"
    plain.write_bytes(one_page_pdf())
    subprocess.run(
        ["qpdf", "--encrypt", "user", "owner", "256", "--", str(plain), str(locked)], check=True
    )
    with pytest.raises(SigningRefused, match="chiffré"):
        pades.sign(locked.read_bytes(), setup_for(authority, pades.Level.B_B), APPEARANCE, NOW)


def test_refuses_a_broken_cross_reference_table(authority):
    data = one_page_pdf()
    broken = data.replace(b"startxref\n", b"startxref\n9").replace(b"xref\n0 ", b"xref\n7 ")
    assert broken != data
    with pytest.raises(SigningRefused, match="endommagé"):
        pades.sign(broken, setup_for(authority, pades.Level.B_B), APPEARANCE, NOW)


def test_refuses_a_certified_document_that_forbids_changes(authority):
    setup = setup_for(authority, pades.Level.B_B)
    meta = signers.PdfSignatureMetadata(
        field_name="Certif", certify=True, docmdp_permissions=fields.MDPPerm.NO_CHANGES
    )
    out = io.BytesIO()
    signers.PdfSigner(meta, setup.signer).sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(one_page_pdf())), output=out
    )
    with pytest.raises(SigningRefused, match="interdit toute modification"):
        pades.sign(out.getvalue(), setup, APPEARANCE, NOW)


def test_refuses_an_expired_certificate(authority):
    setup = setup_for(authority, pades.Level.B_B)
    later = setup.certificate.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(SigningRefused, match="pas valide à cette date"):
        pades.check_signer(setup, later)


def test_refuses_a_revoked_certificate(tmp_path):
    who = OfficerIdentity("r@mairie.fr", "Rémi Révoqué", "Dax", "40088")
    pki = init_pki(tmp_path / "pki", now=NOW - timedelta(days=1), password=b"pw", officers=[who])
    cert, _ = pki.officer(who.email)
    pades.check_signer(setup_for(pki, pades.Level.B_B, who.email), NOW)  # fine before
    pki.revoke(cert.serial_number, now=NOW - timedelta(hours=1))
    with pytest.raises(SigningRefused, match="révoqué"):
        pades.check_signer(setup_for(pki, pades.Level.B_B, who.email), NOW)


def test_archival_renewal_adds_a_document_timestamp(authority):
    setup = setup_for(authority, pades.Level.B_LTA)
    signed = pades.sign(one_page_pdf(), setup, APPEARANCE, NOW)
    renewed = pades.renew(signed, authority.timestamper(), setup.validation_context())
    reader = PdfFileReader(io.BytesIO(renewed))
    stamps = [s for s in reader.embedded_signatures if s.sig_object["/Type"] == "/DocTimeStamp"]
    assert len(stamps) == 2
    assert renewed.startswith(signed)  # incremental: the signed bytes are untouched
    sig = reader.embedded_regular_signatures[0]
    assert validate_pdf_signature(sig, offline_context(authority)).bottom_line


def test_level_parsing():
    assert pades.Level.parse("lta") is pades.Level.B_LTA
    assert pades.Level.parse("b_t") is pades.Level.B_T
    with pytest.raises(SigningRefused, match="inconnu"):
        pades.Level.parse("B-X")


def test_ecdsa_officer_signs_too(tmp_path):
    who = OfficerIdentity("e@mairie.fr", "Élise Ecdsa", "Dax", "40088")
    pki = init_pki(tmp_path / "pki", now=NOW - timedelta(days=1), password=b"pw")
    pki.issue_officer(who, key_type="ecdsa-p256", now=NOW - timedelta(hours=1))
    setup = setup_for(pki, pades.Level.B_LTA, who.email)
    signed = pades.sign(one_page_pdf(), setup, APPEARANCE, NOW)
    sig = PdfFileReader(io.BytesIO(signed)).embedded_regular_signatures[0]
    assert validate_pdf_signature(
        sig, ValidationContext(trust_roots=[to_asn1(pki.root_cert)], allow_fetching=False)
    ).bottom_line


# --- PKCS#11 ---------------------------------------------------------------------------


def test_pkcs11_token_signs(authority, tmp_path, softhsm_token):
    """The officer's key imported on a SoftHSM2 token; pyHanko signs through it."""
    import pkcs11
    from pkcs11.util.rsa import encode_rsa_public_key  # noqa: F401 (module import check)

    from securex.signing.signers import pkcs11_signer
    from tests import softhsm

    cert, key = authority.officer(OFFICER.email)
    label = f"officer-{os.getpid()}-{time.monotonic_ns() % 100000}"
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_id = os.urandom(4).hex()
    subprocess.run(
        [
            "softhsm2-util",
            "--import",
            str(pem),
            "--token",
            "securex-test",
            "--label",
            label,
            "--id",
            key_id,
            "--pin",
            softhsm.PIN,
        ],
        check=True,
        capture_output=True,
    )
    pem.unlink()
    lib = pkcs11.lib(softhsm.MODULE)
    token = lib.get_token(token_label="securex-test")
    try:
        session = token.open(user_pin=softhsm.PIN, rw=True)
    except pkcs11.UserAlreadyLoggedIn:  # logins are per process: a vault test's session
        session = token.open(rw=True)  # no login of its own, so no logout at its close
    with session:
        session.create_object(
            {
                pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE,
                pkcs11.Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                pkcs11.Attribute.TOKEN: True,
                pkcs11.Attribute.LABEL: label,
                pkcs11.Attribute.ID: bytes.fromhex(key_id),
                pkcs11.Attribute.SUBJECT: cert.subject.public_bytes(),
                pkcs11.Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
            }
        )
    signer = pkcs11_signer(
        softhsm.MODULE, "securex-test", label, softhsm.PIN, [authority.ca_cert, authority.root_cert]
    )
    setup = setup_for(authority, pades.Level.B_T)
    setup.signer = signer
    signed = pades.sign(one_page_pdf(), setup, APPEARANCE, NOW)
    sig = PdfFileReader(io.BytesIO(signed)).embedded_regular_signatures[0]
    assert validate_pdf_signature(sig, offline_context(authority)).bottom_line


# --- the command and the served PKI ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo instance whose certificates name a port this module serves on."""
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(root / "inst"),
        "SECUREX_DATABASE_URL": "",
        "SECUREX_BASE_URL": f"http://127.0.0.1:{port}",
    }
    subprocess.run([SECUREX, "init", "--demo"], env=env, check=True, capture_output=True)
    return root, env, port


def run(env, *args, ok=True):
    result = subprocess.run([SECUREX, *args], env=env, capture_output=True, text=True)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_cli_signs_one_file_and_a_batch(demo, tmp_path):
    _, env, _ = demo
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"acte-{i}.pdf").write_bytes(one_page_pdf(f"Acte {i}"))
    (src / "notes.txt").write_text("ignored")
    (src / "broken.pdf").write_bytes(b"not a pdf at all")
    out = tmp_path / "out"
    result = run(env, "sign", "--batch", str(src), "-o", str(out), "--level", "B-T", ok=False)
    assert result.returncode == 65
    assert "6 PDF signé(s)" in result.stdout and "broken.pdf" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"acte-{i}.pdf" for i in range(6)]
    single = tmp_path / "one.pdf"
    result = run(env, "sign", str(src / "acte-0.pdf"), "-o", str(single))
    assert "B-LTA" in result.stdout  # the configured default
    verdict = run(env, "verify", str(single), "--json")
    assert '"ok": true' in verdict.stdout


def test_cli_refusals_are_clear(demo, tmp_path):
    _, env, _ = demo
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"hello")
    result = run(env, "sign", str(bad), "-o", str(tmp_path / "x.pdf"), ok=False)
    assert result.returncode == 65 and "pas un PDF" in result.stderr
    assert not (tmp_path / "x.pdf").exists()
    result = run(env, "sign", str(bad), "-o", str(tmp_path / "x.pdf"), "--level", "B-Z", ok=False)
    assert result.returncode == 65 and "inconnu" in result.stderr
    result = run(
        env,
        "sign",
        str(bad),
        "-o",
        str(tmp_path / "x.pdf"),
        "--signer",
        "agent.dax@demo.securex.fr",
        ok=False,
    )
    assert result.returncode == 78 and "officier" in result.stderr


def test_pdfsig_trusts_a_signature_checked_against_the_served_pki(demo, tmp_path):
    _root, env, port = demo
    signed = tmp_path / "signed.pdf"
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(signed), "--level", "B-LT")
    nss = nss_trusting(tmp_path / "nss", run(env, "pki", "roots").stdout.encode())
    server = subprocess.Popen(
        [SECUREX, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/pki/ca.crl", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "securex serve did not start"
                time.sleep(0.2)
        out = pdfsig(nss, signed)
        assert "Signature Validation: Signature is Valid." in out, out
        assert "Certificate Validation: Certificate is Trusted." in out, out
        # A tampered copy: pdfsig must say so.
        data = bytearray(signed.read_bytes())
        data[data.index(b"Acte de naissance")] ^= 0x20
        tampered = tmp_path / "tampered.pdf"
        tampered.write_bytes(bytes(data))
        out = pdfsig(nss, tampered)
        assert "Signature is Valid." not in out and "Digest Mismatch" in out, out
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_openssl_verifies_the_extracted_cms(demo, tmp_path):
    _root, env, _ = demo
    signed = tmp_path / "s.pdf"
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(signed), "--level", "B-B")
    data = signed.read_bytes()
    sig = PdfFileReader(io.BytesIO(data)).embedded_regular_signatures[0]
    (tmp_path / "sig.der").write_bytes(sig.sig_object["/Contents"])
    ranges = list(sig.sig_object["/ByteRange"])
    content = b"".join(data[ranges[i] : ranges[i] + ranges[i + 1]] for i in (0, 2))
    (tmp_path / "content.bin").write_bytes(content)
    roots = tmp_path / "root.pem"
    roots.write_text(run(env, "pki", "roots").stdout)
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "sig.der"),
            "-content",
            str(tmp_path / "content.bin"),
            "-CAfile",
            str(roots),
            "-purpose",
            "any",
            "-out",
            os.devnull,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Verification successful" in result.stderr, result.stderr


def test_served_pki_endpoints(demo):
    """CRL, OCSP and TSA over HTTP, as outside validators fetch them (through Flask's
    test client: the real-server path is covered by the pdfsig test)."""
    from asn1crypto import ocsp, tsp
    from cryptography.x509 import ocsp as x509_ocsp

    from securex.app import create_app
    from securex.config import load_settings

    _, env, _ = demo
    settings = load_settings(environ=env)
    app = create_app({"TESTING": True}, settings=settings)
    client = app.test_client()
    crl = x509.load_der_x509_crl(client.get("/pki/ca.crl").data)
    assert crl.issuer == app.extensions["securex"].pki.ca_cert.subject
    root_crl = x509.load_der_x509_crl(client.get("/pki/root.crl").data)
    assert root_crl.issuer == app.extensions["securex"].pki.root_cert.subject
    root = x509.load_der_x509_certificate(client.get("/pki/root.crt").data)
    assert root == app.extensions["securex"].pki.root_cert
    authority = app.extensions["securex"].pki
    cert = authority.officer_cert("officier.dax@demo.securex.fr")
    request = (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(
            cert,
            authority.ca_cert,
            __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA1"]).SHA1(),
        )
        .build()
    )
    answer = client.post(
        "/pki/ocsp",
        data=request.public_bytes(serialization.Encoding.DER),
        content_type="application/ocsp-request",
    )
    parsed = ocsp.OCSPResponse.load(answer.data)
    assert parsed["response_status"].native == "successful"
    garbage = ocsp.OCSPResponse.load(client.post("/pki/ocsp", data=b"\x00junk").data)
    assert garbage["response_status"].native == "malformed_request"
    import hashlib

    req = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(b"acte").digest(),
            },
            "cert_req": True,
        }
    )
    reply = tsp.TimeStampResp.load(
        client.post("/pki/tsa", data=req.dump(), content_type="application/timestamp-query").data
    )
    assert reply["status"]["status"].native == "granted"
    app.extensions["securex"].engine.dispose()


@pytest.fixture
def demo_app(demo):
    from securex.app import create_app
    from securex.config import load_settings

    _, env, _ = demo
    app = create_app({"TESTING": True}, settings=load_settings(environ=env))
    yield app, env
    app.extensions["securex"].engine.dispose()


def _signed_copy(env, tmp_path, level="B-LT") -> bytes:
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(tmp_path / "signed.pdf"), "--level", level)
    return (tmp_path / "signed.pdf").read_bytes()


def test_validate_api(demo_app, tmp_path):
    import json

    app, env = demo_app
    creds = json.loads((Path(env["SECUREX_INSTANCE"]) / "demo-credentials.json").read_text())
    token = creds["api_clients"][0]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    signed = _signed_copy(env, tmp_path)
    answer = client.post(
        "/api/v1/validate", data=signed, headers=auth, content_type="application/pdf"
    )
    assert answer.status_code == 200
    report = answer.get_json()
    assert report["ok"] is True
    assert report["signatures"][0]["pades_level"] == "B-LT"
    tampered = bytearray(signed)
    tampered[tampered.index(b"Acte de naissance")] ^= 0x20
    report = client.post(
        "/api/v1/validate", data=bytes(tampered), headers=auth, content_type="application/pdf"
    ).get_json()
    assert report["ok"] is False and report["signatures"][0]["intact"] is False
    garbage = client.post(
        "/api/v1/validate", data=b"\x00" * 100, headers=auth, content_type="application/pdf"
    )
    assert garbage.status_code == 200 and garbage.get_json()["ok"] is False
    assert (
        client.post(
            "/api/v1/validate", data=signed, headers=auth, content_type="text/plain"
        ).status_code
        == 415
    )
    assert (
        client.post("/api/v1/validate", data=signed, content_type="application/pdf").status_code
        == 401
    )
    app.extensions["securex"].settings.values["signing"]["max_upload_bytes"] = 1000
    too_big = client.post(
        "/api/v1/validate", data=signed, headers=auth, content_type="application/pdf"
    )
    assert too_big.status_code == 413
    assert too_big.get_json()["type"] == "urn:securex:problem:payload-too-large"


def test_public_verification_page(demo_app, tmp_path):
    app, env = demo_app
    client = app.test_client()
    page = client.get("/verifier")
    assert page.status_code == 200 and "Vérifier un document signé" in page.get_data(True)
    assert "Set-Cookie" not in page.headers  # anonymous visits leave nothing behind
    signed = _signed_copy(env, tmp_path, "B-B")
    answer = client.post(
        "/verifier",
        data={"document": (io.BytesIO(signed), "copie.pdf")},
        content_type="multipart/form-data",
    )
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "Toutes les signatures sont valides" in html and "Officier de Mont-de-Marsan" in html
    assert "Set-Cookie" not in answer.headers
    missing = client.post("/verifier", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "Choisissez un fichier PDF" in missing.get_data(True)


def test_cli_renews_archival_timestamps_when_due(demo, tmp_path):
    _, env, _ = demo
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    lta, bb = tmp_path / "lta.pdf", tmp_path / "bb.pdf"
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(lta), "--level", "B-LTA")
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(bb), "--level", "B-B")
    before = lta.read_bytes()
    assert "À jour" in run(env, "sign", "renew", str(lta)).stdout
    assert lta.read_bytes() == before
    out = run(env, "sign", "renew", str(lta), "--margin-days", "100000").stdout
    assert "Renouvelé (certificat d'horodatage expirant" in out
    renewed = lta.read_bytes()
    assert renewed.startswith(before) and len(renewed) > len(before)
    stamps = [
        s
        for s in PdfFileReader(io.BytesIO(renewed)).embedded_signatures
        if s.sig_object["/Type"] == "/DocTimeStamp"
    ]
    assert len(stamps) == 2
    assert '"ok": true' in run(env, "verify", str(lta), "--json").stdout
    result = run(env, "sign", "renew", str(bb), ok=False)
    assert result.returncode == 65 and "B-LTA" in result.stderr


def test_long_term_signature_carries_only_its_own_revocation_data(demo, tmp_path):
    """The demo has two officers: a B-LT act holds the signer's and the TSA's OCSP
    answers, not the other officer's."""
    from asn1crypto import ocsp

    _, env, _ = demo
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(tmp_path / "lt.pdf"), "--level", "B-LT")
    reader = PdfFileReader(io.BytesIO((tmp_path / "lt.pdf").read_bytes()))
    dss = reader.root["/DSS"].get_object()
    answers = [ocsp.OCSPResponse.load(o.get_object().data) for o in dss["/OCSPs"]]
    serials = {
        a.basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_id"][
            "serial_number"
        ].native
        for a in answers
    }
    signer = reader.embedded_regular_signatures[0].signer_cert.serial_number
    assert signer in serials and len(serials) == 2


def test_renewal_adds_only_the_signers_revocation_data(demo, tmp_path):
    from asn1crypto import ocsp

    _, env, _ = demo
    (tmp_path / "in.pdf").write_bytes(one_page_pdf())
    lta = tmp_path / "lta.pdf"
    run(env, "sign", str(tmp_path / "in.pdf"), "-o", str(lta), "--level", "B-LTA")
    run(env, "sign", "renew", str(lta), "--force")
    reader = PdfFileReader(io.BytesIO(lta.read_bytes()))
    dss = reader.root["/DSS"].get_object()
    serials = {
        ocsp.OCSPResponse.load(o.get_object().data)
        .basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_id"]["serial_number"]
        .native
        for o in dss["/OCSPs"]
    }
    assert len(serials) == 2  # the officer's and the TSA's, not the other officer's
