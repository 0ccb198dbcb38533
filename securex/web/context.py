"""Per-request access to the application's state: settings, database, keys, clock."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from securex.accounts.service import AccountKeys, SecurityPolicy
from securex.config import Settings
from securex.jobs.service import Runtime
from securex.vault import Vault


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: AccountKeys
    policy: SecurityPolicy
    clock: Callable[[], datetime]
    vault: Vault
    pki: Any = None  # the demo PKI (securex.signing.pki.DemoPki), if the instance has one
    trust_roots: list[Any] = field(default_factory=list)
    other_certs: list[Any] = field(default_factory=list)

    def runtime(self) -> Runtime:
        """What background jobs need, from this application's state."""
        return Runtime(
            settings=self.settings,
            sessions=self.sessions,
            vault=self.vault,
            pki=self.pki,
            clock=self.clock,
            environ=os.environ,
        )


def state() -> AppState:
    app_state: AppState = current_app.extensions["securex"]
    return app_state


def db() -> Session:
    """The request's database session, closed (and rolled back if uncommitted) at teardown."""
    if "db" not in g:
        g.db = state().sessions()
    session: Session = g.db
    return session


def now() -> datetime:
    return state().clock()


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()
