"""The /api/v1 plumbing: operations declared with pydantic models, bearer-token
authentication (API clients' tokens, users' personal tokens), strict JSON parsing,
RFC 9457 problem+json, and an OpenAPI document built from the declarations themselves."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel, ConfigDict, ValidationError

from securex import __version__
from securex.accounts.models import ApiClient, User
from securex.accounts.service import authenticate_client, authenticate_personal_token
from securex.db import reading
from securex.errors import (
    AuthenticationFailed,
    SecurexError,
    UnsupportedMediaType,
    ValidationFailed,
)
from securex.web.context import db, now

PROBLEM_TYPE = "urn:securex:problem:"


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    if request:
        body["instance"] = request.path
    response = Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json"
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="securex"'
    return response


def problem_from_error(error: SecurexError) -> Response:
    return problem(error.status, error.slug, error.title, error.detail, **error.extra)


class ApiModel(BaseModel):
    """Base of every request body: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Auth(StrEnum):
    """Which bearer token an operation takes. Each kind is looked up in its own table
    only, so the other kind's token fails exactly like an unknown one (no oracle)."""

    NONE = "none"  # public
    CLIENT = "client"  # an API client's token (`sx_…`): requester organisations
    USER = "user"  # a personal token (`sxp_…`): acts as the user who made it

    @property
    def note(self) -> str:
        """What the OpenAPI description says about it."""
        return AUTH_NOTES[self]


AUTH_NOTES = {
    Auth.NONE: "",
    Auth.CLIENT: "Jeton : celui d'un client API (`sx_…`).",
    Auth.USER: "Jeton : un jeton personnel (`sxp_…`), qui agit au nom de son titulaire.",
}


def _auth(value: bool | Auth) -> Auth:
    """`True` is an API client's token (what every operation took before personal
    tokens existed), `False` none."""
    if isinstance(value, bool):
        return Auth.CLIENT if value else Auth.NONE
    return Auth(value)


@dataclass
class Operation:
    method: str
    path: str  # Flask rule, relative to /api/v1
    operation_id: str
    summary: str
    tag: str
    response: type[BaseModel] | None
    status: int
    body: type[BaseModel] | None
    auth: Auth
    errors: tuple[int, ...]
    description: str = ""
    query: list[dict[str, Any]] = field(default_factory=list)
    raw_body: str | None = None  # media type of a non-JSON body the view reads itself
    raw_response: str | None = None  # media type of a non-JSON answer the view builds


class ApiBlueprint(Blueprint):
    """A blueprint whose routes are declared operations, served under /api/v1."""

    def __init__(self, name: str, import_name: str, tag: str) -> None:
        super().__init__(name, import_name, url_prefix="/api/v1")
        self.tag = tag
        self.operations: list[Operation] = []

    def operation(
        self,
        path: str,
        method: str = "GET",
        *,
        summary: str,
        response: type[BaseModel] | None = None,
        status: int = 200,
        body: type[BaseModel] | None = None,
        auth: bool | Auth = True,
        errors: tuple[int, ...] = (),
        query: list[dict[str, Any]] | None = None,
        raw_body: str | None = None,
        raw_response: str | None = None,
        read_first: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an operation. `auth`: see `Auth` (`True`: an API client's token).
        With `raw_response` (a media type) the view returns a Flask `Response` itself.
        `read_first`: the request's first transaction only reads (no write lock on
        SQLite: `securex.db.reading`); a view that writes commits it first. Only with
        client tokens, whose check writes nothing."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            op = Operation(
                method,
                path,
                fn.__name__,
                summary,
                self.tag,
                response,
                status,
                body,
                _auth(auth),
                errors,
                inspect.cleandoc(fn.__doc__ or ""),
                query or [],
                raw_body,
                raw_response,
            )
            self.operations.append(op)

            @wraps(fn)
            def view(**kwargs: Any) -> Response:
                if read_first:
                    reading(db())
                if op.auth is Auth.CLIENT:
                    g.api_client = authenticate_client(db(), _bearer())
                elif op.auth is Auth.USER:
                    g.api_user = _authenticate_user()
                if op.body is not None:
                    kwargs["body"] = _parse_body(op.body)
                if op.raw_body is not None and request.mimetype != op.raw_body:
                    raise UnsupportedMediaType(f"Le corps doit être de type {op.raw_body}.")
                result = fn(**kwargs)
                if isinstance(result, Response):
                    return result
                headers: dict[str, str] = {}
                status = op.status
                if isinstance(result, tuple):
                    result, status, headers = result
                if result is None:
                    return Response(status=status, headers=headers)
                payload = result.model_dump_json(exclude_none=False)
                return Response(
                    payload, status=status, headers=headers, mimetype="application/json"
                )

            self.add_url_rule(path, fn.__name__, view, methods=[method])
            return view

        return decorate


def current_client() -> ApiClient:
    client: ApiClient = g.api_client
    return client


def current_api_user() -> User:
    """The user whose personal token authenticated the request (`auth=Auth.USER`)."""
    user: User = g.api_user
    return user


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("En-tête « Authorization: Bearer <jeton> » attendu.")
    return token.strip()


def _authenticate_user() -> User:
    session = db()
    token = authenticate_personal_token(session, _bearer(), now=now())
    if session.is_modified(token):
        # `last_used_at` moved (at most once a minute): kept even if the operation fails.
        session.commit()
    return token.user


def _parse_body(model: type[BaseModel]) -> BaseModel:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Le corps doit être du JSON (Content-Type: application/json).")
    raw = request.get_data(cache=False)
    try:
        json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SecurexError(f"JSON mal formé : {exc}.") from None
    except RecursionError:
        raise SecurexError("JSON mal formé : imbrication trop profonde.") from None
    try:
        # JSON mode: strict models accept "2026-11-30" for a date, never "1" for a number.
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic("Certains champs sont invalides.", exc) from None


# --- OpenAPI -----------------------------------------------------------------------

# The French name of each HTTP error status: problem titles and OpenAPI descriptions.
HTTP_TITLES = {
    400: "Requête invalide",
    401: "Authentification requise",
    403: "Accès refusé",
    404: "Introuvable",
    405: "Méthode non autorisée",
    409: "Conflit",
    413: "Requête trop volumineuse",
    415: "Type de contenu non pris en charge",
    422: "Données invalides",
    429: "Trop de requêtes",
    500: "Erreur interne",
}


def _openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    parts = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            conv, _, name = part[1:-1].rpartition(":")
            schema = {"type": "integer"} if conv == "int" else {"type": "string"}
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
            parts.append("{" + name + "}")
        else:
            parts.append(part)
    return "/api/v1" + "/".join(parts), params


def openapi_document(blueprints: list[ApiBlueprint]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    problem_ref = ref(Problem)
    problem_content = {"application/problem+json": {"schema": problem_ref}}
    paths: dict[str, Any] = {}
    for bp in blueprints:
        for op in bp.operations:
            path, params = _openapi_path(op.path)
            responses: dict[str, Any] = {}
            if op.response is not None:
                responses[str(op.status)] = {
                    "description": op.summary,
                    "content": {"application/json": {"schema": ref(op.response)}},
                }
            elif op.raw_response is not None:
                responses[str(op.status)] = {
                    "description": op.summary,
                    "content": {
                        op.raw_response: {"schema": {"type": "string", "format": "binary"}}
                    },
                }
            else:
                responses[str(op.status)] = {"description": op.summary}
            codes = set(op.errors) | {400}
            if op.auth is not Auth.NONE:
                codes.add(401)
            if op.body is not None:
                codes |= {413, 415, 422}
            if op.raw_body is not None:
                codes |= {413, 415}
            for code in sorted(codes):
                responses[str(code)] = {
                    "description": HTTP_TITLES.get(code, "Erreur"),
                    "content": problem_content,
                }
            entry: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": [op.tag],
                "responses": responses,
                "security": [{"bearer": []}] if op.auth is not Auth.NONE else [],
            }
            description = "\n\n".join(d for d in (op.description, op.auth.note) if d)
            if description:
                entry["description"] = description
            if params or op.query:
                entry["parameters"] = params + op.query
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.body)}},
                }
            if op.raw_body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {op.raw_body: {"schema": {"type": "string", "format": "binary"}}},
                }
            paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "securex API",
            "version": __version__,
            "description": "API des organismes demandeurs (notaires, administrations, "
            "guichets, mairies), avec un jeton de client API, et des agents des communes, "
            "avec leur jeton personnel. Erreurs au format RFC 9457.",
        },
        "servers": [{"url": current_app.config["SECUREX_BASE_URL"]}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class OpenApiDocument(BaseModel):
    """The OpenAPI 3.1 description of this API."""

    model_config = {"extra": "allow"}


meta = ApiBlueprint("api_meta", __name__, tag="meta")


@meta.operation(
    "/openapi.json",
    summary="Description OpenAPI 3.1 de l'API",
    auth=False,
    response=OpenApiDocument,
)
def openapi() -> OpenApiDocument:
    blueprints = [bp for bp in current_app.blueprints.values() if isinstance(bp, ApiBlueprint)]
    return OpenApiDocument.model_validate(openapi_document(blueprints))


# --- query strings -------------------------------------------------------------------

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGER = re.compile(r"[0-9]{1,9}")


def query_param(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    """An OpenAPI query parameter, for `ApiBlueprint.operation(query=[...])`."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def query_arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    return value or None


def invalid_field(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": name, "message": message, "type": "value"}])


def query_date(name: str) -> date | None:
    value = query_arg(name)
    if value is None:
        return None
    try:
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise invalid_field(name, f"Date invalide : {value!r} (attendu : AAAA-MM-JJ).") from None


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = query_arg(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise invalid_field(name, f"« {name} » : un entier de {low} à {high}.")
    return int(raw)
