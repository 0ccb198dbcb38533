"""Detached CMS signatures (CAdES-B) over the exchange's structured answers, made with
the commune's seal through pyHanko's signer: a verifier checks them with any CMS
tool (`openssl cms -verify -binary -content answer.json -inform DER -in sig.der`)."""

from __future__ import annotations

import asyncio
from typing import Any

from securex.errors import SecurexError


def sign_detached(setup: Any, data: bytes) -> bytes:
    """DER of a CMS SignedData, detached, SHA-256, signing-time and the signer's chain."""
    try:
        signed = asyncio.run(setup.signer.async_sign_general_data(data, "sha256", detached=True))
    except Exception as exc:
        raise SecurexError(f"Signature de la réponse impossible : {exc}") from None
    der: bytes = signed.dump()
    return der
