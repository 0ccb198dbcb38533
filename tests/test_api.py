"""The /api/v1 plumbing: bearer tokens, problem+json, strict bodies, OpenAPI."""

from __future__ import annotations

import json

import pytest

from securex.accounts import service
from securex.db import transaction
from securex.web import register
from securex.web.api import ApiBlueprint, ApiModel


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"].startswith("urn:securex:problem:")
    assert body["title"] and body["detail"]
    return body


def test_me_tells_the_client_who_it_is(client, make):
    make.tenant()
    make.tenant("40088", "Dax")
    client_id, token = make.client("notaire", ("40192", "40088"))
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {
        "id": client_id,
        "name": "Client notaire",
        "category": "notaire",
        "communes": [
            {"insee": "40088", "name": "Dax"},
            {"insee": "40192", "name": "Mont-de-Marsan"},
        ],
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer sx_not-a-real-token"},
    ],
)
def test_missing_or_wrong_token_is_401(client, headers):
    body = assert_problem(client.get("/api/v1/me", headers=headers), 401)
    assert body["instance"] == "/api/v1/me"


def test_revoked_token_is_401(client, make, clock):
    make.tenant()
    client_id, token = make.client()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    with transaction(make.factory) as db:
        service.revoke_client(db, service.Actor("test"), client_id, now=clock())
    response = client.get("/api/v1/me", headers=bearer(token))
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_is_stored_as_a_hash_only(make):
    make.tenant()
    _, token = make.client()
    with make.session() as db:
        stored = service.list_clients(db)[0]
        assert token not in (stored.token_hash, stored.token_prefix)
        assert stored.token_hash == service._hash_token(token)


def test_unknown_api_route_and_method_are_problems(client):
    assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert_problem(client.post("/api/v1/me"), 405)


class Echo(ApiModel):
    name: str
    count: int


@pytest.fixture
def echo_app(app):
    """A throwaway operation with a body, declared the way feature packages do."""
    bp = ApiBlueprint("echo_api", __name__, tag="test")

    @bp.operation("/echo", "POST", summary="Renvoie le corps", body=Echo, response=Echo, status=201)
    def echo(body: Echo) -> Echo:
        return body

    register(app, bp)
    app.config["MAX_CONTENT_LENGTH"] = 2048
    return app


def test_body_round_trip(echo_app, make):
    make.tenant()
    _, token = make.client()
    response = echo_app.test_client().post(
        "/api/v1/echo", json={"name": "a", "count": 2}, headers=bearer(token)
    )
    assert response.status_code == 201 and response.get_json() == {"name": "a", "count": 2}


def test_bad_bodies_are_4xx_problems(echo_app, make):
    make.tenant()
    _, token = make.client()
    http = echo_app.test_client()
    post = lambda **kw: http.post("/api/v1/echo", headers=bearer(token), **kw)
    assert_problem(post(data="{not json", content_type="application/json"), 400)
    assert_problem(post(data=b"\xff\xfe", content_type="application/json"), 400)
    assert_problem(post(data="name=a", content_type="application/x-www-form-urlencoded"), 415)
    body = assert_problem(post(json={"name": "a", "count": 1, "extra": True}), 422)
    assert body["errors"][0]["field"] == "extra"
    body = assert_problem(post(json={"name": "a", "count": "many"}), 422)
    assert body["errors"][0]["field"] == "count"
    body = assert_problem(post(json={"name": "a", "count": "1"}), 422)  # no coercion
    assert body["errors"][0]["field"] == "count"
    assert_problem(post(json=[1, 2]), 422)
    body = assert_problem(
        post(data=json.dumps({"name": "x" * 5000, "count": 1}), content_type="application/json"),
        413,
    )
    assert body["type"] == "urn:securex:problem:payload-too-large"


def test_bad_body_needs_authentication_first(echo_app):
    assert_problem(echo_app.test_client().post("/api/v1/echo", data="{"), 401)


def test_openapi_is_generated_from_the_operations(echo_app):
    doc = echo_app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    me = doc["paths"]["/api/v1/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    assert (
        me["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/Me"
    )
    assert "401" in me["responses"]
    echo = doc["paths"]["/api/v1/echo"]["post"]
    assert (
        echo["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/Echo"
    )
    assert {"201", "413", "415", "422"} <= set(echo["responses"])
    assert doc["components"]["schemas"]["Echo"]["additionalProperties"] is False
    assert doc["components"]["schemas"]["Me"]["properties"]["communes"]
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
