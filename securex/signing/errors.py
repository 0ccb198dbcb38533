"""Signing errors, with a French message a person can act on."""

from __future__ import annotations

from securex.errors import SecurexError


class SigningRefused(SecurexError):
    """The document or the signer cannot be used for a signature (bad input)."""

    status = 422
    slug = "signing-refused"
    title = "Signature impossible"
    exit_code = 65


class SignerUnavailable(SecurexError):
    """The signer's key or token cannot be reached (configuration)."""

    status = 503
    slug = "signer-unavailable"
    title = "Signataire indisponible"
    exit_code = 78
