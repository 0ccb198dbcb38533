"""Vault errors. `IntegrityError` is the single, opaque answer to every way a ciphertext,
a wrapped key or a header can be wrong: it never says which check failed."""

from __future__ import annotations

from securex.errors import SecurexError


class IntegrityError(SecurexError):
    status = 422
    slug = "integrity"
    title = "Intégrité compromise"
    exit_code = 65

    def __init__(
        self, detail: str = "Données chiffrées altérées, tronquées ou d'une autre origine."
    ) -> None:
        super().__init__(detail)


class KeyUnavailable(SecurexError):
    """The master key (file, passphrase or token) cannot be obtained."""

    status = 503
    slug = "key-unavailable"
    title = "Clé maîtresse indisponible"
    exit_code = 78
