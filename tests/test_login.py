"""Web login: password then TOTP, lockout, replay, recovery codes, CSRF, sessions."""

from __future__ import annotations

from datetime import timedelta

import pyotp
from sqlalchemy import func, select

from securex.accounts.models import WebSession
from securex.audit.models import AuditEvent
from securex.web.sessions import COOKIE
from tests.conftest import Account, csrf_token


def post_password(client, account: Account, password: str | None = None):
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "csrf_token": csrf_token(page.get_data(as_text=True)),
            "email": account.email,
            "password": password or account.password,
        },
    )


def post_code(client, code: str):
    page = client.get("/login/totp")
    return client.post(
        "/login/totp", data={"csrf_token": csrf_token(page.get_data(as_text=True)), "code": code}
    )


def login(client, account: Account, clock) -> None:
    response = post_password(client, account)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/login/totp")
    response = post_code(client, account.code(clock()))
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/")


def actions(make) -> list[str]:
    with make.session() as db:
        return list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_officer_logs_in_with_password_and_totp(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Officier de l&#39;état civil" in html or "Officier de l'état civil" in html
    assert "Signer les actes" in html
    assert actions(make)[-1] == "accounts:login:succeeded"


def test_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_password_alone_does_not_open_a_session(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    assert post_password(client, officer).status_code == 302
    assert client.get("/").status_code == 302  # still anonymous until the second factor


def test_wrong_password_is_refused_in_french(client, make):
    make.tenant()
    officer = make.user("officer")
    response = post_password(client, officer, "not the right password at all")
    assert response.status_code == 401
    assert "Adresse e-mail ou mot de passe incorrect" in response.get_data(as_text=True)
    assert actions(make)[-1] == "accounts:login:failed"


def test_unknown_email_gets_the_same_answer(client, make):
    make.tenant()
    ghost = Account(0, "nobody@commune.example.fr", "whatever password 1", None, "agent", None)
    response = post_password(client, ghost)
    assert response.status_code == 401
    assert "Adresse e-mail ou mot de passe incorrect" in response.get_data(as_text=True)


def test_five_failures_lock_the_account_for_fifteen_minutes(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    for _ in range(4):
        assert post_password(client, officer, "wrong password number x").status_code == 401
    response = post_password(client, officer, "wrong password number x")
    assert response.status_code == 423
    assert "verrouillé" in response.get_data(as_text=True)
    # The right password is refused while locked...
    assert post_password(client, officer).status_code == 423
    clock.advance(minutes=14, seconds=59)
    assert post_password(client, officer).status_code == 423
    # ...and accepted once the 15 minutes are over.
    clock.advance(seconds=2)
    assert post_password(client, officer).status_code == 302
    assert "accounts:user:locked" in actions(make)


def test_totp_failures_count_towards_the_lockout(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    post_password(client, officer)
    for _ in range(4):
        assert post_code(client, "000000").status_code == 401
    response = post_code(client, "000000")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert post_password(client, officer).status_code == 423


def test_replayed_totp_code_is_refused(client, make, clock, app):
    make.tenant()
    officer = make.user("officer")
    code = officer.code(clock())
    login_with = post_password(client, officer)
    assert login_with.status_code == 302
    assert post_code(client, code).status_code == 302
    # A second browser tries the same code within its validity window.
    other = app.test_client()
    assert post_password(other, officer).status_code == 302
    clock.advance(seconds=5)
    response = post_code(other, code)
    assert response.status_code == 401
    assert "déjà servi" in response.get_data(as_text=True)
    assert "accounts:totp:replay-refused" in actions(make)
    # The next step's code is fine.
    clock.advance(seconds=30)
    assert post_code(other, officer.code(clock())).status_code == 302


def test_totp_accepts_one_step_of_drift_but_not_two(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    post_password(client, officer)
    assert post_code(client, officer.code(clock(), steps=2)).status_code == 401
    assert post_code(client, officer.code(clock(), steps=-2)).status_code == 401
    assert post_code(client, officer.code(clock(), steps=-1)).status_code == 302


def test_recovery_code_works_once(client, make, clock, keys, app):
    make.tenant()
    officer = make.user("officer", totp=False)
    # Enrol through the page to receive the recovery codes.
    post_password(client, officer)
    page = client.get("/login/enrol").get_data(as_text=True)
    secret = page.split('class="secret">')[1].split("<")[0]
    response = client.post(
        "/login/enrol",
        data={"csrf_token": csrf_token(page), "code": pyotp.TOTP(secret).at(clock())},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "codes de secours" in html
    codes = [c.split("</code>")[0] for c in html.split("<li><code>")[1:]]
    assert len(codes) == 10 and len(set(codes)) == 10
    client.post(
        "/logout", data={"csrf_token": csrf_token(client.get("/compte").get_data(as_text=True))}
    )
    post_password(client, officer)
    assert post_code(client, codes[0]).status_code == 302
    other = app.test_client()
    post_password(other, officer)
    assert post_code(other, codes[0]).status_code == 401
    assert "accounts:recovery-code:used" in actions(make)


def test_officer_without_totp_must_enrol_before_anything(client, make, clock):
    make.tenant()
    officer = make.user("officer", totp=False)
    response = post_password(client, officer)
    assert response.headers["Location"].endswith("/login/enrol")
    assert client.get("/").status_code == 302
    page = client.get("/login/enrol").get_data(as_text=True)
    assert "data:image/svg+xml;base64," in page  # the QR code
    wrong = client.post("/login/enrol", data={"csrf_token": csrf_token(page), "code": "123456"})
    assert wrong.status_code == 422
    assert client.get("/").status_code == 302


def test_agent_without_totp_logs_in_with_password(client, make):
    make.tenant()
    agent = make.user("agent", totp=False)
    response = post_password(client, agent)
    assert response.status_code == 302 and response.headers["Location"].endswith("/")
    assert client.get("/").status_code == 200


def test_missing_csrf_token_is_refused(client, make):
    make.tenant()
    officer = make.user("officer")
    client.get("/login")
    response = client.post("/login", data={"email": officer.email, "password": officer.password})
    assert response.status_code == 400
    assert "Formulaire expiré" in response.get_data(as_text=True)
    assert actions(make).count("accounts:login:failed") == 0


def test_csrf_token_from_another_session_is_refused(client, make, app):
    make.tenant()
    officer = make.user("officer")
    token = csrf_token(app.test_client().get("/login").get_data(as_text=True))
    client.get("/login")
    response = client.post(
        "/login", data={"csrf_token": token, "email": officer.email, "password": officer.password}
    )
    assert response.status_code == 400


def session_cookie(client) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def test_session_id_changes_at_login_and_cookie_is_hardened(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    response = client.get("/login")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "Secure" in header and "SameSite=Lax" in header
    before = session_cookie(client)
    login(client, officer, clock)
    after = session_cookie(client)
    assert before and after and before != after
    with make.session() as db:  # the pre-login row is gone
        assert db.scalar(select(func.count()).select_from(WebSession)) == 1


def test_idle_timeout_is_thirty_minutes(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    clock.advance(minutes=29)
    assert client.get("/").status_code == 200
    clock.advance(minutes=29)  # activity above kept it alive
    assert client.get("/").status_code == 200
    clock.advance(minutes=31)
    assert client.get("/").status_code == 302


def test_absolute_timeout_is_twelve_hours(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    for _ in range(24):
        clock.advance(minutes=29)
        client.get("/")
    assert clock() - timedelta(hours=11) > clock() - timedelta(hours=12)
    clock.advance(minutes=29)
    assert client.get("/").status_code == 302


def test_logout_everywhere_ends_other_sessions(client, make, clock, app):
    make.tenant()
    agent = make.user("agent", totp=False)
    other = app.test_client()
    assert post_password(client, agent).status_code == 302
    clock.advance(seconds=1)
    assert post_password(other, agent).status_code == 302
    assert other.get("/").status_code == 200
    page = client.get("/compte").get_data(as_text=True)
    response = client.post("/logout/everywhere", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert other.get("/").status_code == 302
    assert client.get("/").status_code == 302


def test_disabled_user_loses_session_and_cannot_log_in(client, make, clock):
    from securex.accounts import service
    from securex.db import transaction

    make.tenant()
    agent = make.user("agent", totp=False)
    post_password(client, agent)
    assert client.get("/").status_code == 200
    with transaction(make.factory) as db:
        service.disable_user(db, service.Actor("test"), agent.email, now=clock())
    assert client.get("/").status_code == 302
    assert post_password(client, agent).status_code == 401


def test_per_address_rate_limit(client, make, app, clock):
    make.tenant()
    # Eight accounts, at most four failures each: no account locks, only the address.
    accounts_ = [make.user("agent", totp=False) for _ in range(8)]
    statuses = []
    for i in range(31):
        wrong = post_password(client, accounts_[i % 8], "wrong password again")
        statuses.append(wrong.status_code)
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429
    # Even the right password from that address waits for the window to end.
    assert post_password(client, accounts_[0]).status_code == 429
    clock.advance(seconds=901)
    assert post_password(client, accounts_[0]).status_code == 302
    assert actions(make).count("accounts:login:rate-limited") == 1  # once per window


def test_security_headers_on_every_response(client):
    for path in ("/login", "/healthz", "/api/v1/me", "/nowhere"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in client.get("/login").headers
    secure = client.get("/login", base_url="https://securex.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_pages_have_no_inline_script(client):
    html = client.get("/login").get_data(as_text=True)
    assert "<script" not in html
    assert 'lang="fr"' in html and '<label for="email">' in html


def test_health_endpoints(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    # Every check is in tests/test_observability.py; no worker beats here.
    assert client.get("/readyz").get_json()["checks"]["database"] == "ok"


def test_unknown_page_is_a_french_404(client):
    response = client.get("/nulle-part")
    assert response.status_code == 404
    assert "Cette page n&#39;existe pas" in response.get_data(as_text=True)


def test_login_purges_expired_sessions_and_rate_windows(client, make, clock, app):
    from securex.accounts.models import RateLimit

    make.tenant()
    agent = make.user("agent", totp=False)
    stale = app.test_client()
    post_password(stale, agent, "a wrong password here")  # a session row and a window
    clock.advance(minutes=31)
    assert post_password(client, agent).status_code == 302
    with make.session() as db:
        assert db.scalar(select(func.count()).select_from(WebSession)) == 1
        assert db.scalar(select(func.count()).select_from(RateLimit)) == 1  # this login's


def test_password_alone_cannot_replace_an_enrolled_second_factor(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    before = make.get_user(officer.id).totp_sealed
    assert post_password(client, officer).status_code == 302
    response = client.get("/login/enrol")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/totp")
    # Posting a code for a secret of the attacker's choosing changes nothing either.
    page = client.get("/login").get_data(as_text=True)
    attempt = client.post(
        "/login/enrol",
        data={
            "csrf_token": csrf_token(page),
            "code": pyotp.TOTP(pyotp.random_base32()).at(clock()),
        },
    )
    assert attempt.status_code == 302 and attempt.headers["Location"].endswith("/login/totp")
    assert client.get("/").status_code == 302
    assert make.get_user(officer.id).totp_sealed == before


def test_enrolled_user_cannot_re_enrol_from_the_account_page(client, make, clock):
    make.tenant()
    officer = make.user("officer")
    login(client, officer, clock)
    response = client.get("/login/enrol")
    assert response.status_code == 302 and response.headers["Location"].endswith("/compte")
