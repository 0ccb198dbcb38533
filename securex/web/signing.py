"""HTTP surface of the signing library: the demo PKI's certificates, CRL, OCSP responder
and RFC 3161 timestamping for outside validators; signature validation through the API
and on a public page where anyone can check a signed copy."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from securex.errors import PayloadTooLarge
from securex.web.api import ApiBlueprint
from securex.web.context import now, state

pki_bp = Blueprint("pki", __name__, url_prefix="/pki")
pki_bp.csrf_exempt = True  # type: ignore[attr-defined]
verify_bp = Blueprint("verify", __name__)
# Anyone may check a document; no cookie carries authority there. Without a CSRF token
# the page needs no session, so anonymous visits write nothing to the database.
verify_bp.csrf_exempt = True  # type: ignore[attr-defined]
api = ApiBlueprint("signing_api", __name__, tag="signature")


def _pki() -> Any:
    authority = state().pki
    if authority is None:
        abort(404)
    return authority


def _der(data: bytes, mimetype: str, name: str) -> Response:
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@pki_bp.get("/root.crt")
def root_crt() -> Response:
    from cryptography.hazmat.primitives.serialization import Encoding

    return _der(_pki().root_cert.public_bytes(Encoding.DER), "application/pkix-cert", "root.crt")


@pki_bp.get("/ca.crt")
def ca_crt() -> Response:
    from cryptography.hazmat.primitives.serialization import Encoding

    return _der(_pki().ca_cert.public_bytes(Encoding.DER), "application/pkix-cert", "ca.crt")


@pki_bp.get("/ca.crl")
def ca_crl() -> Response:
    return _der(_pki().crl_der(now()), "application/pkix-crl", "ca.crl")


@pki_bp.get("/root.crl")
def root_crl() -> Response:
    return _der(_pki().root_crl_der(now()), "application/pkix-crl", "root.crl")


@pki_bp.route("/ocsp", methods=["POST"])
@pki_bp.route("/ocsp/<path:encoded>", methods=["GET"])
def ocsp(encoded: str | None = None) -> Response:
    """RFC 6960: POST the DER request, or GET it base64-encoded in the path."""
    if encoded is None:
        der = request.get_data(cache=False)
    else:
        try:
            der = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            der = b""
    return Response(_pki().ocsp_response_der(der, now()), mimetype="application/ocsp-response")


@pki_bp.post("/tsa")
def tsa() -> Response:
    """RFC 3161 over HTTP: a DER TimeStampReq in, a TimeStampResp out."""
    return Response(
        _pki().tsa_response_der(request.get_data(cache=False), now()),
        mimetype="application/timestamp-reply",
    )


# --- validation ----------------------------------------------------------------------


def validate_document(data: bytes) -> Any:
    from securex.signing.validate import validate_pdf

    st = state()
    return validate_pdf(data, trust_roots=st.trust_roots, other_certs=st.other_certs, now=now())


def _read_upload() -> bytes:
    limit = int(state().settings["signing.max_upload_bytes"])
    request.max_content_length = limit
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(
            f"PDF trop volumineux (au plus {limit // (1024 * 1024)} Mio)."
        ) from None


class ValidationReport(BaseModel):
    """Per-signature validation report of a PDF (see docs/api.md)."""

    model_config = {"extra": "allow"}
    ok: bool


@api.operation(
    "/validate",
    "POST",
    summary="Valider les signatures d'un PDF",
    response=ValidationReport,
    raw_body="application/pdf",
)
def validate() -> ValidationReport:
    """Validation hors ligne : seules les données incluses dans le PDF et les ancres de
    confiance configurées sont utilisées."""
    return ValidationReport.model_validate(validate_document(_read_upload()).to_json())


class UploadForm(FlaskForm):
    class Meta:
        csrf = False

    document = FileField(
        "Document PDF signé", validators=[FileRequired("Choisissez un fichier PDF.")]
    )


@verify_bp.route("/verifier", methods=["GET", "POST"])
def public_verify() -> Any:
    """Anyone can check a signed copy here; nothing is kept."""
    form = UploadForm()
    report = None
    status = 200
    if request.method == "POST":
        limit = int(state().settings["signing.max_upload_bytes"])
        request.max_content_length = limit
        if form.validate_on_submit():
            report = validate_document(form.document.data.read(limit + 1)[:limit])
        else:
            status = 400
    return render_template("signing/verify.html", form=form, report=report), status
