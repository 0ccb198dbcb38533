"""Typed errors. Raised anywhere below the shell; mapped in one place each to
problem+json (API), a page (UI) and a message with an exit code (CLI)."""

from __future__ import annotations

from typing import Any


class SecurexError(Exception):
    """Base class: `status` is the HTTP status, `slug` names the problem type."""

    status = 400
    slug = "bad-request"
    title = "Requête invalide"
    exit_code = 1

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ConfigError(SecurexError):
    status = 500
    slug = "configuration"
    title = "Configuration invalide"
    exit_code = 78  # EX_CONFIG


class ValidationFailed(SecurexError):
    """Input that is well-formed but not acceptable (a weak password, an unknown role)."""

    status = 422
    slug = "validation"
    title = "Données invalides"
    exit_code = 65  # EX_DATAERR

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, errors=errors or [])

    @classmethod
    def from_pydantic(cls, detail: str, exc: Any) -> ValidationFailed:
        """One entry per field of a pydantic ValidationError (never the input value:
        it may be personal data)."""
        return cls(
            detail,
            errors=[
                {
                    "field": ".".join(str(p) for p in err["loc"]),
                    "message": err["msg"],
                    "type": err["type"],
                }
                for err in exc.errors(include_url=False, include_input=False)
            ],
        )


class NotFound(SecurexError):
    status = 404
    slug = "not-found"
    title = "Introuvable"
    exit_code = 66  # EX_NOINPUT


class Conflict(SecurexError):
    status = 409
    slug = "conflict"
    title = "Conflit"
    exit_code = 65


class AuthenticationFailed(SecurexError):
    status = 401
    slug = "unauthenticated"
    title = "Authentification requise"
    exit_code = 77  # EX_NOPERM


class Forbidden(SecurexError):
    status = 403
    slug = "forbidden"
    title = "Accès refusé"
    exit_code = 77


class AccountLocked(SecurexError):
    status = 423
    slug = "account-locked"
    title = "Compte verrouillé"
    exit_code = 77


class RateLimited(SecurexError):
    status = 429
    slug = "rate-limited"
    title = "Trop de tentatives"
    exit_code = 75  # EX_TEMPFAIL


class PayloadTooLarge(SecurexError):
    status = 413
    slug = "payload-too-large"
    title = "Requête trop volumineuse"


class UnsupportedMediaType(SecurexError):
    status = 415
    slug = "unsupported-media-type"
    title = "Type de contenu non pris en charge"


class Locked(SecurexError):
    """The resource is being changed by another request (an upload in progress)."""

    status = 423
    slug = "locked"
    title = "Ressource occupée"


class Gone(SecurexError):
    """The resource existed but is no more (a pli revoked or expired)."""

    status = 410
    slug = "gone"
    title = "N'existe plus"


class InsufficientStorage(SecurexError):
    """The disk holding the blobs is full (or over quota): what was being written was
    not kept, and nothing of it is left behind."""

    status = 507
    slug = "insufficient-storage"
    title = "Espace de stockage insuffisant"
    exit_code = 73  # EX_CANTCREAT
