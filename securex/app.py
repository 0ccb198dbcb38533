"""`create_app`: the Flask application (HTML pages and /api/v1)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy.exc import DBAPIError
from werkzeug.middleware.proxy_fix import ProxyFix

from securex import __version__, logs
from securex.accounts import service as accounts_service
from securex.config import Settings, load_settings
from securex.db import make_engine, make_sessionmaker, utcnow
from securex.errors import ConfigError
from securex.instance import derive_key, load_instance_secret
from securex.vault import master_key_source, open_vault
from securex.web.context import AppState

WEB = Path(__file__).resolve().parent / "web"


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, static_folder=str(WEB / "static"), template_folder=str(WEB / "templates"))
    secret = load_instance_secret(settings.instance)
    engine = make_engine(settings.database_url)
    app.config.update(
        SECRET_KEY=derive_key(secret, "flask-secret-key"),
        MAX_CONTENT_LENGTH=settings["api.max_body_bytes"],
        SECUREX_BASE_URL=settings["base_url"],
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the server-side session
        WTF_CSRF_SSL_STRICT=False,  # Referer checks break behind some proxies; the token suffices
        JSON_AS_ASCII=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["securex"] = AppState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        keys=accounts_service.AccountKeys(secret),
        policy=accounts_service.SecurityPolicy.from_settings(settings),
        clock=clock,
        vault=open_vault(master_key_source(settings, os.environ), settings.instance),
    )
    _load_signing(app.extensions["securex"])
    try:
        with app.extensions["securex"].sessions() as db:
            app.config["SECUREX_DEMO"] = accounts_service.get_meta(db, "demo") == "true"
    except DBAPIError:
        raise ConfigError(
            "La base de données n'est pas initialisée ou injoignable : lancez "
            "« securex db upgrade » (ou « securex init » pour une nouvelle instance)."
        ) from None

    proxies = int(settings["server.trusted_proxies"])
    if proxies:
        proxied = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
        app.wsgi_app = proxied  # type: ignore[method-assign]

    from securex import tasks, web
    from securex.accounts.api import bp as accounts_api
    from securex.accounts.views import bp as accounts_views
    from securex.comedec.api import bp as comedec_api
    from securex.comedec.public import bp as sve_views
    from securex.comedec.views import bp as comedec_views
    from securex.exchange.api import bp as exchange_api
    from securex.exchange.views import bp as exchange_views
    from securex.exchange.views import public_bp as exchange_public
    from securex.registry.api import bp as registry_api
    from securex.registry.views import bp as registry_views
    from securex.web.api import meta
    from securex.web.audit import api as audit_api
    from securex.web.audit import checkpoint_after_request
    from securex.web.keys import bp as keys_views
    from securex.web.signing import api as signing_api
    from securex.web.signing import pki_bp, verify_bp

    tasks.load()  # job handlers: enqueued here, run by whichever worker
    # Registered first so that it runs last, once the request's database session is
    # released (SQLite's write lock) and the response is complete.
    app.after_request(checkpoint_after_request)
    web.init_app(
        app,
        [
            accounts_views,
            accounts_api,
            meta,
            pki_bp,
            verify_bp,
            signing_api,
            audit_api,
            registry_views,
            registry_api,
            comedec_api,
            comedec_views,
            keys_views,
            sve_views,
            exchange_api,
            exchange_views,
            exchange_public,
        ],
    )

    zone = ZoneInfo(settings["timezone"])

    @app.template_filter("date_fr")
    def date_fr(value: datetime | date | None, with_time: bool = False) -> str:
        """JJ/MM/AAAA (and HH:MM) in the configured zone, Europe/Paris by default; a
        calendar date has no zone to convert."""
        if value is None:
            return ""
        if not isinstance(value, datetime):
            return value.strftime("%d/%m/%Y")
        local = value.astimezone(zone)
        return local.strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")

    @app.context_processor
    def _shell() -> dict[str, Any]:
        from flask_login import current_user

        from securex.accounts.forms import ActionForm

        extra: dict[str, Any] = {"version": __version__}
        if current_user.is_authenticated:
            extra["logout_form"] = ActionForm(formdata=None)  # never re-reads a body
        return extra

    # pyHanko logs a warning with a traceback for every untrusted path it meets while
    # validating uploads: noise for operators, who get the report instead.
    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    if not app.testing:
        logs.install(settings)
        if settings["jobs.in_process"]:
            _start_worker(app)
    return app


def _start_worker(app: Flask) -> None:
    """The embedded instance's worker: a thread per web process (gunicorn forks before
    it calls create_app, so each process has its own); jobs are claimed in the
    database, so two threads never run the same one."""
    from securex.jobs.service import WorkerThread

    st: AppState = app.extensions["securex"]
    worker = WorkerThread(st.runtime(), float(st.settings["jobs.poll_seconds"]))
    worker.start()
    app.extensions["securex_worker"] = worker


def _load_signing(st: AppState) -> None:
    """The demo PKI (served under /pki for outside validators) and the trust anchors
    used to validate uploaded PDFs."""
    from securex.signing.setup import _trust_anchors, load_demo_pki

    st.pki = load_demo_pki(st.settings.instance)
    if st.pki is not None:
        st.other_certs = [st.pki.ca_cert]
    if st.pki is not None or st.settings["signing.trust_anchors"]:
        st.trust_roots = _trust_anchors(st.settings, st.pki)
