"""The web shell: security headers, error pages and problem+json, server-side sessions,
CSRF, the login manager; request ids, access lines, metrics and health checks are
`securex.web.observability`'s."""

from __future__ import annotations

import io
import logging
from typing import Any

import flask
from flask import Blueprint, Flask, Response, render_template, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from securex.errors import PayloadTooLarge, SecurexError, UnsupportedMediaType
from securex.web import observability
from securex.web.api import HTTP_TITLES, ApiBlueprint, problem, problem_from_error
from securex.web.context import close_db
from securex.web.sessions import DbSessionInterface

log = logging.getLogger("securex.web")
csrf = CSRFProtect()
login_manager = LoginManager()

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


# Same problem types whether Werkzeug or securex raised the error.
PROBLEM_SLUGS = {e.status: e.slug for e in (PayloadTooLarge, UnsupportedMediaType)}

HTTP_MESSAGES = {
    400: "La requête est invalide.",
    401: "Vous devez vous connecter pour accéder à cette page.",
    403: "Vous n'avez pas accès à cette page.",
    404: "Cette page n'existe pas.",
    405: "Cette action n'est pas possible à cette adresse.",
    413: "Le contenu envoyé est trop volumineux.",
    415: "Ce type de contenu n'est pas accepté.",
    429: "Trop de tentatives. Patientez quelques minutes.",
    500: "Une erreur interne est survenue. Elle a été consignée ; réessayez plus tard.",
}


def _wants_problem() -> bool:
    return request.path.startswith("/api/")


def _page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, message=message), status


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")
    return response


def _release_db(response: Response) -> Response:
    close_db()
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(SecurexError)
    def securex_error(error: SecurexError) -> Any:
        if _wants_problem():
            return problem_from_error(error)
        return _page(error.status, error.title, error.detail)

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        message = (
            "Le formulaire a expiré ou n'a pas été envoyé depuis securex. "
            "Rechargez la page et recommencez."
        )
        if _wants_problem():
            return problem(400, "csrf", "Jeton CSRF invalide", message)
        return _page(400, "Formulaire expiré", message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        message = HTTP_MESSAGES.get(status, error.description or "Erreur.")
        title = HTTP_TITLES.get(status, error.name or "Erreur")
        if _wants_problem():
            slug = PROBLEM_SLUGS.get(status) or (error.name or "error").lower().replace(" ", "-")
            return problem(status, slug, title, message)
        return _page(status, title, message)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        # The endpoint, not the path: paths carry link and deposit tokens.
        log.exception("unhandled error on %s %s", request.method, request.endpoint)
        observability.count_exception()
        if _wants_problem():
            return problem(500, "internal", "Erreur interne", HTTP_MESSAGES[500])
        return _page(500, "Erreur interne", HTTP_MESSAGES[500])


def register(app: Flask, bp: Blueprint) -> None:
    # Bearer tokens (API) or anonymous machine protocols (OCSP, RFC 3161): no cookie
    # carries any authority there, so CSRF does not apply.
    if isinstance(bp, ApiBlueprint) or getattr(bp, "csrf_exempt", False):
        csrf.exempt(bp)
    app.register_blueprint(bp)


class Request(flask.Request):
    """Uploaded files stay in memory (bounded by the request size limit): a document a
    person sends is never spooled to a temporary file in clear."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> Any:
        return io.BytesIO()


class DatabaseId(IntegerConverter):
    """`<int:…>` in every route: ids beyond a 32-bit column are simply not found (404),
    rather than an overflow inside the database driver (500). They still match the
    route (as id 0, which no row has), so that every method of it answers 404, not a
    405 that a rule failing to match would give."""

    MAX = 2**31 - 1

    def to_python(self, value: str) -> int:
        number = int(super().to_python(value))
        return number if number <= self.MAX else 0


def init_app(app: Flask, blueprints: list[Blueprint]) -> None:
    app.url_map.converters["int"] = DatabaseId
    app.request_class = Request
    app.session_interface = DbSessionInterface()
    observability.init_app(app)  # its hooks first: every request gets an id
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = "Connectez-vous pour accéder à cette page."
    login_manager.session_protection = None  # ids are rotated at login instead
    app.teardown_appcontext(close_db)
    app.after_request(_security_headers)
    # Release the request's transaction before the session is saved: on SQLite every
    # transaction holds the write lock, and the session store needs it next.
    app.after_request(_release_db)
    _register_errors(app)
    for bp in blueprints:
        register(app, bp)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"instance_demo": app.config.get("SECUREX_DEMO", False)}
