"""Fixtures: a migrated database per test (SQLite or PostgreSQL, chosen by
SECUREX_TEST_DB), an instance folder, a pinned clock, the app and its test client."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from securex.accounts import service as accounts
from securex.accounts.models import User
from securex.app import create_app
from securex.config import Settings, load_settings
from securex.db import make_engine, make_sessionmaker, transaction, upgrade
from securex.instance import create_instance_secret, load_instance_secret
from securex.vault import Vault, master_key_source, open_vault
from securex.vault.master import create_key_file

ENGINE = os.environ.get("SECUREX_TEST_DB", "sqlite")
if ENGINE not in {"sqlite", "postgresql"}:
    raise pytest.UsageError(f"SECUREX_TEST_DB must be sqlite or postgresql, not {ENGINE!r}")

START = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)  # a Monday morning in Paris (09:00)


def pytest_report_header() -> str:
    return f"securex test database: {ENGINE}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`SECUREX_TEST_ORDER=reverse` runs the modules last to first (each module's tests
    in their order). `make test` runs the two databases at once, one of them reversed,
    so that the tests that mostly wait (servers killed and restarted, browsers) do not
    wait at the same time in both runs while a core idles."""
    order = os.environ.get("SECUREX_TEST_ORDER", "")
    if order not in {"", "reverse"}:
        raise pytest.UsageError(f"SECUREX_TEST_ORDER must be empty or reverse, not {order!r}")
    if order == "reverse":
        modules = list(dict.fromkeys(item.module for item in items))
        rank = {module: n for n, module in enumerate(reversed(modules))}
        items.sort(key=lambda item: rank[item.module])  # stable: in-module order kept


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- databases ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A migrated database made once; each test gets a copy."""
    if ENGINE == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade(f"sqlite:///{path}")
        yield path
        return
    given = os.environ.get("SECUREX_TEST_DATABASE_URL")
    server = None
    if given:
        admin_url = given
    else:
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
        admin_url = server.url()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS securex_template"))
        conn.execute(text("CREATE DATABASE securex_template"))
    upgrade(re.sub(r"/[^/]*$", "/securex_template", admin_url))
    try:
        yield admin
    finally:
        admin.dispose()
        if server:
            server.stop()


_counter = itertools.count()


@contextmanager
def _database(template: Any, folder: Path) -> Iterator[str]:
    """A copy of the migrated template: a file in `folder`, or a PostgreSQL database."""
    if ENGINE == "sqlite":
        path = folder / "securex.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    name = f"securex_test_{os.getpid()}_{next(_counter)}"
    with template.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE securex_template"))
    yield re.sub(r"/[^/]*$", f"/{name}", template.url.render_as_string(hide_password=False))
    with template.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(_template: Any, tmp_path: Path) -> Iterator[str]:
    with _database(_template, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(_template: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`database_url`, made once for a module whose tests share one server."""
    with _database(_template, tmp_path_factory.mktemp("database")) as url:
        yield url


# --- instance, app -----------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    instance = tmp_path / "instance"
    instance.mkdir()
    create_instance_secret(instance)
    create_key_file(instance / "keys" / "master.key")
    return load_settings(
        environ={}, overrides={"instance": str(instance), "database": {"url": database_url}}
    )


@pytest.fixture
def factory(settings: Settings) -> Iterator[Any]:
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def keys(settings: Settings) -> accounts.AccountKeys:
    return accounts.AccountKeys(load_instance_secret(settings.instance))


@pytest.fixture
def policy(settings: Settings) -> accounts.SecurityPolicy:
    return accounts.SecurityPolicy.from_settings(settings)


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return open_vault(master_key_source(settings, {}), settings.instance)


@pytest.fixture
def app(settings: Settings, clock: Clock) -> Iterator[Any]:
    application = create_app({"TESTING": True}, settings=settings, clock=clock)
    yield application
    application.extensions["securex"].engine.dispose()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) keeping what it receives: tests/smtp.py."""
    from tests.smtp import SmtpServer

    with SmtpServer() as server:
        yield server


@pytest.fixture
def mail_app(demo_pki: Any, settings: Settings, clock: Clock, smtp: Any) -> Iterator[Any]:
    """The application sending its mail to the test's SMTP server (a module whose
    tests read mail defines `app` as this one)."""
    settings.values["mail"].update(smtp.mail_settings())
    application = create_app({"TESTING": True}, settings=settings, clock=clock)
    yield application
    application.extensions["securex"].engine.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


# --- factories ---------------------------------------------------------------------

ADMIN = accounts.Actor("test")


@dataclass
class Account:
    id: int
    email: str
    password: str
    totp_secret: str | None
    role: str
    tenant: str | None

    def code(self, at: datetime, steps: int = 0) -> str:
        assert self.totp_secret
        return pyotp.TOTP(self.totp_secret).at(at, counter_offset=steps)


class Factory:
    def __init__(
        self,
        factory: Any,
        keys: accounts.AccountKeys,
        policy: accounts.SecurityPolicy,
        clock: Clock,
        vault: Vault,
    ) -> None:
        self.factory, self.keys, self.policy, self.clock = factory, keys, policy, clock
        self.vault = vault
        self._n = itertools.count(1)

    def tenant(self, insee: str = "40192", name: str = "Mont-de-Marsan") -> str:
        with transaction(self.factory) as db:
            accounts.create_tenant(
                db, ADMIN, insee=insee, name=name, now=self.clock(), keyring=self.vault.keyring
            )
        return insee

    def user(
        self, role: str = "officer", tenant: str | None = "40192", totp: bool = True
    ) -> Account:
        n = next(self._n)
        email = f"{role}{n}@commune.example.fr"
        password = f"correct horse battery staple {n}"
        with transaction(self.factory) as db:
            user = accounts.create_user(
                db,
                ADMIN,
                email=email,
                name=f"{role.title()} {n}",
                role=role,
                password=password,
                tenant_insee=tenant,
                now=self.clock(),
                policy=self.policy,
            )
            secret = None
            if totp:
                secret = accounts.new_totp_secret()
                accounts.set_totp_secret(db, self.keys, user, secret)
            user_id = user.id
        return Account(user_id, email, password, secret, role, tenant)

    def client(
        self, category: str = "notaire", communes: tuple[str, ...] = ("40192",)
    ) -> tuple[int, str]:
        with transaction(self.factory) as db:
            c, token = accounts.create_client(
                db,
                ADMIN,
                name=f"Client {category}",
                category=category,
                communes=list(communes),
                now=self.clock(),
            )
            return c.id, token

    def get_user(self, user_id: int) -> User:
        with self.factory() as db:
            user = db.get(User, user_id)
            assert user is not None
            db.expunge(user)
            return user

    def session(self) -> Session:
        session: Session = self.factory()
        return session


@pytest.fixture
def make(
    factory: Any,
    keys: accounts.AccountKeys,
    policy: accounts.SecurityPolicy,
    clock: Clock,
    vault: Vault,
) -> Factory:
    return Factory(factory, keys, policy, clock, vault)


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture(scope="session")
def softhsm_token() -> str:
    """One SoftHSM2 token for the whole run (the module reads its configuration once per
    process); tests use distinct key labels on it."""
    from tests import softhsm

    softhsm.init_token("securex-test")
    return "securex-test"


# --- registry: a demo PKI with officers' certificates, the jobs runtime ---------------

# Tests share one demo PKI (its keys take seconds to make): its password derives from
# this instance secret, written into each test's instance that needs the PKI.
PKI_SECRET = bytes(range(32))
PKI_OFFICERS = 12  # officer1@… to officer12@commune.example.fr (the factory's e-mails)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Where the shared PKI's certificates say its CRL and OCSP responder are: a test that
# lets an outside validator (pdfsig) fetch them serves the app there.
PKI_PORT = _free_port()


@pytest.fixture(scope="session")
def _pki_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from securex.signing.pki import OfficerIdentity, init_pki
    from securex.signing.setup import demo_pki_password

    folder = tmp_path_factory.mktemp("demo-pki") / "pki"
    pki = init_pki(
        folder,
        base_url=f"http://127.0.0.1:{PKI_PORT}",
        now=datetime.now(UTC) - timedelta(days=1),
        password=demo_pki_password(PKI_SECRET),
    )
    for n in range(1, PKI_OFFICERS + 1):
        who = OfficerIdentity(
            email=f"officer{n}@commune.example.fr",
            name=f"Officer {n}",
            commune="Mont-de-Marsan",
            insee="40192",
        )
        pki.issue_officer(who, key_type="ecdsa-p256", now=datetime.now(UTC) - timedelta(days=1))
    return folder


@pytest.fixture
def demo_pki(settings: Settings, _pki_template: Path) -> Any:
    """The shared demo PKI copied into this test's instance (and the instance secret
    its password derives from). Request it before `app` or `keys`."""
    from securex.signing.setup import load_demo_pki

    (settings.instance / "keys" / "instance.key").write_bytes(PKI_SECRET)
    shutil.copytree(_pki_template, settings.instance / "pki")
    return load_demo_pki(settings.instance)


@pytest.fixture
def runtime(demo_pki: Any, settings: Settings, factory: Any, vault: Vault, clock: Clock) -> Any:
    from securex import tasks
    from securex.jobs.service import Runtime

    tasks.load()
    return Runtime(
        settings=settings,
        sessions=factory,
        vault=vault,
        pki=demo_pki,
        clock=clock,
        environ={},
    )


def pdfsig_against_demo_pki(settings: Settings, pki: Any, pdf: Path, workdir: Path) -> str:
    """What poppler's pdfsig says of `pdf`, trusting the demo PKI's root, while the app
    serves the PKI's OCSP responder and CRL where its certificates name them (on the
    real clock: NSS refuses revocation answers dated in its future)."""
    import threading

    from cryptography.hazmat.primitives.serialization import Encoding
    from werkzeug.serving import make_server

    from tests.pdfs import nss_trusting, pdfsig

    nss = nss_trusting(workdir / "nss", pki.root_cert.public_bytes(Encoding.PEM))
    served = create_app({"TESTING": True}, settings=settings)
    server = make_server("127.0.0.1", PKI_PORT, served, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        return pdfsig(nss, pdf)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        served.extensions["securex"].engine.dispose()
