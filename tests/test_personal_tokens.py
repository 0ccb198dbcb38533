"""Personal API tokens: made, listed and revoked by service, CLI and the account page;
shown once, stored as a hash; expired, revoked, disabled-user and wrong-kind tokens all
refused with the same 401; `last_used_at` written at most once a minute."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from securex.accounts import service
from securex.accounts.models import PersonalToken, User
from securex.audit.models import AuditEvent
from securex.cli import main
from securex.db import make_engine, make_sessionmaker, transaction, utcnow
from securex.errors import AuthenticationFailed, NotFound, ValidationFailed
from securex.web import register
from securex.web.api import ApiBlueprint, ApiModel, Auth, current_api_user
from tests.conftest import csrf_token
from tests.test_api import assert_problem, bearer
from tests.test_login import login

ADMIN = service.Actor("test")
TOKEN_RE = re.compile(r"sxp_[A-Za-z0-9_-]{43}")


class Who(ApiModel):
    email: str


@pytest.fixture
def app_(app):
    """The app with a throwaway operation for personal tokens, declared the way
    feature packages do."""
    bp = ApiBlueprint("who_api", __name__, tag="test")

    @bp.operation("/test/who", summary="Titulaire du jeton", response=Who, auth=Auth.USER)
    def who() -> Who:
        return Who(email=current_api_user().email)

    register(app, bp)
    return app


@pytest.fixture
def http(app_):
    return app_.test_client()


def new_token(make, account, clock, days: int | None = None) -> tuple[int, str]:
    with transaction(make.factory) as db:
        user = db.get(User, account.id)
        row, token = service.create_personal_token(
            db, ADMIN, user, name="Script de test", now=clock(), days=days
        )
        return row.id, token


def who(http, token: str):
    return http.get("/api/v1/test/who", headers=bearer(token))


def actions(make) -> list[tuple[str, str, str]]:
    with make.session() as db:
        rows = db.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.subject).order_by(AuditEvent.id)
        )
        return [tuple(r) for r in rows]


# --- service -------------------------------------------------------------------------


def test_token_is_made_once_and_stored_as_a_hash(make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    token_id, token = new_token(make, agent, clock)
    assert TOKEN_RE.fullmatch(token)
    with make.session() as db:
        row = db.get(PersonalToken, token_id)
        assert row is not None and row.user_id == agent.id
        assert row.token_hash == service._hash_token(token) and token not in row.token_hash
        assert row.token_prefix == token[:12]
        assert row.expires_at == clock() + timedelta(days=365)
        assert row.revoked_at is None and row.last_used_at is None
    assert ("accounts:personal-token:created", "test", f"user:{agent.id}") in actions(make)


def test_validity_and_name_are_checked(make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    for days in (0, -1, 731):
        with pytest.raises(ValidationFailed, match="de 1 à 730 jours"):
            new_token(make, agent, clock, days=days)
    token_id, _ = new_token(make, agent, clock, days=730)
    with make.session() as db:
        assert db.get(PersonalToken, token_id).expires_at == clock() + timedelta(days=730)
    with transaction(make.factory) as db:
        user = db.get(User, agent.id)
        for name in ("", "   ", "x" * 121):
            with pytest.raises(ValidationFailed):
                service.create_personal_token(db, ADMIN, user, name=name, now=clock())
        service.disable_user(db, ADMIN, agent.email, now=clock())
        with pytest.raises(ValidationFailed, match="désactivé"):
            service.create_personal_token(db, ADMIN, user, name="n", now=clock())


def test_list_and_revoke(make, clock):
    make.tenant()
    agent, other = make.user("agent", totp=False), make.user("agent", totp=False)
    first, _ = new_token(make, agent, clock)
    second, _ = new_token(make, other, clock)
    with transaction(make.factory) as db:
        user = db.get(User, agent.id)
        assert [t.id for t in service.list_personal_tokens(db)] == [first, second]
        assert [t.id for t in service.list_personal_tokens(db, user)] == [first]
        # A user revokes only their own tokens: another's is "missing".
        with pytest.raises(NotFound):
            service.revoke_personal_token(db, ADMIN, second, now=clock(), owner=user)
        with pytest.raises(NotFound):
            service.revoke_personal_token(db, ADMIN, 999, now=clock())
        row = service.revoke_personal_token(db, ADMIN, first, now=clock(), owner=user)
        assert row.revoked_at == clock()
        assert service.personal_token_state(row, clock()) == "révoqué"
    with transaction(make.factory) as db:
        service.revoke_personal_token(db, ADMIN, first, now=clock())  # twice: no-op
    revoked = [a for a in actions(make) if a[0] == "accounts:personal-token:revoked"]
    assert revoked == [("accounts:personal-token:revoked", "test", f"user:{agent.id}")]


# --- authentication ------------------------------------------------------------------


def test_personal_token_acts_as_its_user(http, make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    _, token = new_token(make, agent, clock)
    response = who(http, token)
    assert response.status_code == 200
    assert response.get_json() == {"email": agent.email}


def unknown_token_problem(http) -> dict:
    body = assert_problem(who(http, "sxp_" + "A" * 43), 401)
    body.pop("instance")
    return body


def test_expired_token_is_refused_like_an_unknown_one(http, make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    _, token = new_token(make, agent, clock, days=30)
    clock.advance(days=30, seconds=-1)
    assert who(http, token).status_code == 200
    clock.advance(seconds=1)
    body = assert_problem(who(http, token), 401)
    body.pop("instance")
    assert body == unknown_token_problem(http)
    assert body["detail"] == "Jeton d'accès inconnu ou révoqué."


def test_revoked_token_is_refused(http, make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    token_id, token = new_token(make, agent, clock)
    assert who(http, token).status_code == 200
    with transaction(make.factory) as db:
        service.revoke_personal_token(db, ADMIN, token_id, now=clock())
    response = who(http, token)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_disabled_user_token_stops_working_until_enabled(http, make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    _, token = new_token(make, agent, clock)
    with transaction(make.factory) as db:
        service.disable_user(db, ADMIN, agent.email, now=clock())
    body = assert_problem(who(http, token), 401)
    body.pop("instance")
    assert body == unknown_token_problem(http)
    with transaction(make.factory) as db:
        service.enable_user(db, ADMIN, agent.email, now=clock())
    assert who(http, token).status_code == 200


def test_token_kinds_do_not_cross(http, make, clock):
    """A client token on a user operation and a personal token on a client operation
    get exactly the problem an unknown token gets."""
    make.tenant()
    agent = make.user("agent", totp=False)
    _, personal = new_token(make, agent, clock)
    _, client_token = make.client()
    body = assert_problem(who(http, client_token), 401)
    body.pop("instance")
    assert body == unknown_token_problem(http)
    me = assert_problem(http.get("/api/v1/me", headers=bearer(personal)), 401)
    unknown = assert_problem(http.get("/api/v1/me", headers=bearer("sx_" + "A" * 43)), 401)
    assert me == unknown
    assert http.get("/api/v1/me", headers=bearer(client_token)).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}]
)
def test_missing_header_on_a_user_operation_is_401(http, headers):
    assert_problem(http.get("/api/v1/test/who", headers=headers), 401)


def last_used(make, token_id: int):
    with make.session() as db:
        return db.get(PersonalToken, token_id).last_used_at


def test_last_used_is_written_at_most_once_a_minute(http, make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    token_id, token = new_token(make, agent, clock)
    first = clock()
    assert who(http, token).status_code == 200
    assert last_used(make, token_id) == first
    clock.advance(seconds=59)
    assert who(http, token).status_code == 200
    assert last_used(make, token_id) == first
    # Kept even when the operation itself fails.
    clock.advance(seconds=1)
    assert http.get("/api/v1/acts/999", headers=bearer(token)).status_code == 404
    assert last_used(make, token_id) == clock()


def test_last_used_is_not_written_on_refusal(make, clock):
    make.tenant()
    agent = make.user("agent", totp=False)
    token_id, token = new_token(make, agent, clock)
    with transaction(make.factory) as db:
        service.revoke_personal_token(db, ADMIN, token_id, now=clock())
    with transaction(make.factory) as db, pytest.raises(AuthenticationFailed):
        service.authenticate_personal_token(db, token, now=clock())
    assert last_used(make, token_id) is None


def test_openapi_says_which_token_an_operation_takes(http):
    doc = http.get("/api/v1/openapi.json").get_json()
    user_op = doc["paths"]["/api/v1/test/who"]["get"]
    assert user_op["security"] == [{"bearer": []}] and "401" in user_op["responses"]
    assert "sxp_" in user_op["description"]
    assert "sx_…" in doc["paths"]["/api/v1/me"]["get"]["description"]
    assert "description" not in doc["paths"]["/api/v1/openapi.json"]["get"]


# --- CLI -----------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, database_url: str):
    env = {
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
        "SECUREX_CONFIG": "",
    }

    def invoke(*args: str, input: str | None = None, ok: bool = True):
        result = CliRunner().invoke(main, list(args), env=env, input=input)
        if ok:
            assert result.exit_code == 0, result.output + str(result.exception)
        assert "Traceback" not in result.output
        return result

    invoke.url = database_url  # type: ignore[attr-defined]
    return invoke


def test_cli_token_lifecycle(run):
    run("init")
    run("tenant", "add", "40192", "Mont-de-Marsan")
    password = "une phrase de passe solide\n"
    for email in ("agent@mdm.fr", "other@mdm.fr"):
        run(
            "user",
            "add",
            "--email",
            email,
            "--name",
            "Ana Agent",
            "--role",
            "agent",
            "--tenant",
            "40192",
            input=password * 2,
        )
    out = run("token", "add", "agent@mdm.fr", "--name", "Paie", "--days", "30").output
    assert "Jeton n° 1 créé pour agent@mdm.fr : Paie" in out
    token = out.strip().splitlines()[-1]
    assert TOKEN_RE.fullmatch(token)
    run("token", "add", "other@mdm.fr", "--name", "Autre")

    listing = run("token", "list").output
    assert token not in listing and token[:12] in listing
    assert "agent@mdm.fr" in listing and "other@mdm.fr" in listing
    mine = run("token", "list", "agent@mdm.fr").output.strip().splitlines()
    assert len(mine) == 1 and mine[0].startswith("1\tagent@mdm.fr\t") and "\tactif\t" in mine[0]

    engine = make_engine(run.url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as db:
        assert service.authenticate_personal_token(db, token, now=utcnow()).id == 1
    assert "Jeton n° 1 révoqué : Paie (agent@mdm.fr)" in run("token", "revoke", "1").output
    assert "\trévoqué\t" in run("token", "list", "agent@mdm.fr").output
    with transaction(factory) as db, pytest.raises(AuthenticationFailed):
        service.authenticate_personal_token(db, token, now=utcnow())
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["token", "revoke", "42"], 66, "Aucun jeton personnel n° 42"),
        (["token", "add", "nobody@mdm.fr", "--name", "x"], 66, "Aucun compte"),
        (["token", "list", "nobody@mdm.fr"], 66, "Aucun compte"),
        (["token", "add", "a@mdm.fr", "--name", "x", "--days", "731"], 65, "de 1 à 730"),
        (["token", "add", "a@mdm.fr", "--name", " "], 65, "Donnez un nom"),
    ],
)
def test_cli_mistakes(run, args, code, message):
    run("init")
    run("tenant", "add", "40192", "Mont-de-Marsan")
    run(
        "user",
        "add",
        "--email",
        "a@mdm.fr",
        "--name",
        "A",
        "--role",
        "agent",
        "--tenant",
        "40192",
        input="une phrase de passe solide\n" * 2,
    )
    result = run(*args, ok=False)
    assert result.exit_code == code, result.output
    assert message in result.output


# --- the account page ----------------------------------------------------------------


def create_on_page(client, name: str = "Mon script", days: str = "30"):
    page = client.get("/compte")
    return client.post(
        "/compte/jetons",
        data={"csrf_token": csrf_token(page.get_data(as_text=True)), "name": name, "days": days},
    )


def test_account_page_creates_shows_once_and_revokes(client, make, clock, app_):
    make.tenant()
    agent = make.user("agent")
    login(client, agent, clock)
    page = client.get("/compte").get_data(as_text=True)
    assert "Jetons d'API personnels" in page and "aucun jeton personnel" in page

    response = create_on_page(client)
    assert response.status_code == 201
    html = response.get_data(as_text=True)
    tokens = TOKEN_RE.findall(html)
    assert len(tokens) == 1 and "ne sera plus jamais affiché" in html
    token = tokens[0]
    with make.session() as db:
        row = db.scalar(select(PersonalToken))
        assert row.user_id == agent.id and row.name == "Mon script"
        assert row.expires_at == clock() + timedelta(days=30)
    assert ("accounts:personal-token:created", f"user:{agent.id}", f"user:{agent.id}") in actions(
        make
    )
    assert app_.test_client().get("/api/v1/test/who", headers=bearer(token)).status_code == 200

    # Shown once: the page never shows it again, only its beginning.
    again = client.get("/compte").get_data(as_text=True)
    assert token not in again and token[:12] in again and "Mon script" in again

    response = client.post(
        f"/compte/jetons/{row.id}/revoquer", data={"csrf_token": csrf_token(again)}
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/compte#jetons")
    after = client.get("/compte").get_data(as_text=True)
    assert "Jeton « Mon script » révoqué." in after and "révoqué le" in after
    assert_problem(app_.test_client().get("/api/v1/test/who", headers=bearer(token)), 401)


def test_account_page_refuses_bad_input(client, make, clock):
    make.tenant()
    agent = make.user("agent")
    login(client, agent, clock)
    assert create_on_page(client, name="").status_code == 400
    assert create_on_page(client, days="1000").status_code == 400
    assert create_on_page(client, name="x" * 121).status_code == 400
    page = client.get("/compte")
    missing_csrf = client.post("/compte/jetons", data={"name": "n", "days": "30"})
    assert missing_csrf.status_code == 400
    with make.session() as db:
        assert db.scalar(select(PersonalToken)) is None
    assert "Mon script" not in page.get_data(as_text=True)


def test_account_page_cannot_revoke_another_users_token(client, make, clock):
    make.tenant()
    agent, other = make.user("agent"), make.user("agent", totp=False)
    token_id, _ = new_token(make, other, clock)
    login(client, agent, clock)
    page = client.get("/compte").get_data(as_text=True)
    response = client.post(
        f"/compte/jetons/{token_id}/revoquer", data={"csrf_token": csrf_token(page)}
    )
    assert response.status_code == 404
    with make.session() as db:
        assert db.get(PersonalToken, token_id).revoked_at is None


def test_account_page_needs_login(client, make):
    make.tenant()
    assert client.get("/compte").status_code == 302
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/compte/jetons", data={"csrf_token": token, "name": "n", "days": "30"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    response = client.post("/compte/jetons/1/revoquer", data={"csrf_token": token})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    with make.session() as db:
        assert db.scalar(select(PersonalToken)) is None
