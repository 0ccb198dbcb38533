"""Server-side sessions in the database, so that any number of app nodes can serve.

The cookie carries 32 random bytes; the table keys the row by their SHA-256, so a
database leak gives no usable cookie. Sessions end after the idle or absolute
timeout, on logout, on "logout everywhere" (all the user's rows go), and when the
user is disabled. `regenerate()` gives a fresh id at login (no fixation).
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from securex.accounts.models import WebSession
from securex.accounts.service import hash_session_id
from securex.web.context import AppState

COOKIE = "securex_session"
TOUCH_EVERY = timedelta(seconds=60)  # last_seen is refreshed at most once a minute


class ServerSession(CallbackDict[str, Any], SessionMixin):
    def __init__(
        self,
        data: dict[str, Any] | None = None,
        sid: str | None = None,
        row: WebSession | None = None,
    ) -> None:
        def on_update(_self: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.sid = sid
        self.row = row
        self.modified = False
        self.rotate = False
        self.destroyed = False

    def regenerate(self) -> None:
        """New id, same data: call at every privilege change (login)."""
        self.rotate = True
        self.modified = True

    def destroy(self) -> None:
        self.clear()
        self.destroyed = True


class DbSessionInterface(SessionInterface):
    def _state(self, app: Flask) -> AppState:
        st: AppState = app.extensions["securex"]
        return st

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(COOKIE)
        if not sid or len(sid) > 100:
            return ServerSession()
        st = self._state(app)
        now = st.clock()
        with st.sessions() as db, db.begin():
            row = db.get(WebSession, hash_session_id(sid))
            if row is None:
                return ServerSession()
            idle = timedelta(minutes=st.settings["security.session_idle_minutes"])
            absolute = timedelta(hours=st.settings["security.session_absolute_hours"])
            if now - row.last_seen_at > idle or now - row.created_at > absolute:
                db.delete(row)
                return ServerSession()
            db.expunge(row)
            return ServerSession(json.loads(row.data), sid=sid, row=row)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        st = self._state(app)
        secure = bool(st.settings["security.session_cookie_secure"])
        if session.destroyed or (not session and session.sid):
            if session.sid:
                with st.sessions() as db, db.begin():
                    db.execute(
                        delete(WebSession).where(WebSession.id_hash == hash_session_id(session.sid))
                    )
            response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="Lax")
            return
        if not session:
            return  # nothing worth a row (and a cookie) yet
        now = st.clock()
        stale = session.row is None or now - session.row.last_seen_at > TOUCH_EVERY
        if not (session.modified or session.rotate or stale):
            return
        user_id = session.get("_user_id")
        with st.sessions() as db, db.begin():
            created = session.row.created_at if session.row else now
            if session.rotate and session.sid:
                db.execute(
                    delete(WebSession).where(WebSession.id_hash == hash_session_id(session.sid))
                )
                session.sid, created = None, now
            if session.sid is None:
                session.sid = secrets.token_urlsafe(32)
                db.add(
                    WebSession(
                        id_hash=hash_session_id(session.sid),
                        created_at=created,
                        last_seen_at=now,
                        user_id=None,
                        data="{}",
                    )
                )
                db.flush()
            row = db.get(WebSession, hash_session_id(session.sid))
            if row is None:  # ended elsewhere meanwhile (logout everywhere)
                response.delete_cookie(
                    COOKIE, path="/", secure=secure, httponly=True, samesite="Lax"
                )
                return
            row.data = json.dumps(dict(session))
            row.user_id = int(user_id) if user_id is not None else None
            row.last_seen_at = now
        response.set_cookie(
            COOKIE, session.sid, httponly=True, secure=secure, samesite="Lax", path="/"
        )
