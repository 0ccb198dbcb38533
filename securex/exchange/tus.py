"""The tus 1.0 protocol (core, creation, termination) on a Flask blueprint, for any
kind of uploader: `add_tus_routes(bp, prefix, owner)` where `owner()` authenticates
the request and returns (tenant, owner string) or raises.

    OPTIONS {prefix}          capabilities (no authentication)
    POST    {prefix}          Upload-Length, Upload-Metadata → 201, Location
    HEAD    {prefix}/<id>     Upload-Offset, Upload-Length
    PATCH   {prefix}/<id>     application/offset+octet-stream at Upload-Offset → 204
    DELETE  {prefix}/<id>     termination → 204

Errors answer problem+json with the status tus clients expect (409 on an offset
mismatch, 412 on a missing or unsupported Tus-Resumable, 413, 415, 423, 410, 404).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, request, url_for
from werkzeug.exceptions import ClientDisconnected

from securex.accounts.models import Tenant
from securex.errors import SecurexError, UnsupportedMediaType, ValidationFailed
from securex.exchange import uploads
from securex.exchange.service import ExchangePolicy
from securex.web.api import problem_from_error
from securex.web.context import db, now, state

READ_SIZE = 256 * 1024
Owner = Callable[[], tuple[Tenant, str]]


class PreconditionFailed(SecurexError):
    status = 412
    slug = "tus-version"
    title = "Version du protocole tus non prise en charge"


def policy() -> ExchangePolicy:
    return ExchangePolicy.from_settings(state().settings)


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Tus-Resumable": uploads.TUS_VERSION, "Cache-Control": "no-store"}
    headers.update(extra or {})
    return headers


def _check_version() -> None:
    if request.headers.get("Tus-Resumable") != uploads.TUS_VERSION:
        raise PreconditionFailed(
            "En-tête Tus-Resumable: 1.0.0 requis.", tus_version=uploads.TUS_VERSION
        )


def _int_header(name: str) -> int:
    raw = request.headers.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise ValidationFailed(f"En-tête {name} absent ou invalide (entier positif attendu).")
    return int(raw)


def body_chunks() -> Iterator[bytes]:
    """The request body as it arrives; a client that goes away just ends it."""
    stream = request.stream
    while True:
        try:
            chunk = stream.read(READ_SIZE)
        except (ClientDisconnected, OSError):
            raise ClientDisconnected() from None
        if not chunk:
            return
        yield chunk


def _answer(fn: Callable[..., Response]) -> Callable[..., Response]:
    def view(**kwargs: Any) -> Response:
        try:
            return fn(**kwargs)  # the prefix's own variables (a link's token) included
        except SecurexError as error:
            db().rollback()
            response = problem_from_error(error)
            response.headers.update(_headers())
            if "offset" in error.extra:
                response.headers["Upload-Offset"] = str(error.extra["offset"])
            return response

    view.__name__ = fn.__name__
    return view


def add_tus_routes(bp: Blueprint, prefix: str, owner: Owner, endpoint: str) -> None:
    """Register the tus routes on `bp` under `prefix` (which may hold variables, such
    as a link's token: `owner` reads them from `request.view_args`); `endpoint` names
    them."""

    def options() -> Response:
        limit = policy().max_file_bytes
        return Response(
            status=204,
            headers=_headers(
                {
                    "Tus-Version": uploads.TUS_VERSION,
                    "Tus-Extension": uploads.TUS_EXTENSIONS,
                    "Tus-Max-Size": str(limit),
                }
            ),
        )

    def create() -> Response:
        tenant, who = owner()
        _check_version()
        if request.headers.get("Upload-Defer-Length"):
            raise ValidationFailed("Upload-Defer-Length n'est pas pris en charge.")
        length = _int_header("Upload-Length")
        rules = policy()
        upload = uploads.create(
            db(),
            state().vault,
            tenant,
            who,
            length=length,
            metadata=uploads.parse_metadata(request.headers.get("Upload-Metadata")),
            max_bytes=rules.max_file_bytes,
            ttl=timedelta(hours=rules.upload_hours),
            now=now(),
        )
        db().commit()
        location = url_for(
            f"{bp.name}.{endpoint}_upload", **(request.view_args or {}), upload_id=upload.id
        )
        return Response(status=201, headers=_headers({"Location": location, "Upload-Offset": "0"}))

    def head(upload_id: str) -> Response:
        _, who = owner()
        _check_version()
        upload = uploads.status(db(), state().vault, upload_id, who, now=now())
        return Response(
            status=200,
            headers=_headers(
                {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length)}
            ),
        )

    def patch(upload_id: str) -> Response:
        _, who = owner()
        _check_version()
        if request.mimetype != "application/offset+octet-stream":
            raise UnsupportedMediaType(
                "Le corps d'un PATCH tus doit être de type application/offset+octet-stream."
            )
        offset = _int_header("Upload-Offset")
        # The body is bounded by the upload's declared length (checked while it flows),
        # not by the JSON API's limit.
        request.max_content_length = policy().max_file_bytes
        db().rollback()  # no transaction stays open while the bytes flow
        upload = uploads.append(
            state().sessions,
            state().vault,
            upload_id,
            who,
            offset=offset,
            chunks=body_chunks(),
            clock=state().clock,
            lease_for=timedelta(seconds=policy().upload_lease_seconds),
        )
        return Response(status=204, headers=_headers({"Upload-Offset": str(upload.offset)}))

    def delete(upload_id: str) -> Response:
        _, who = owner()
        _check_version()
        uploads.terminate(db(), state().vault, upload_id, who, now=now())
        db().commit()
        return Response(status=204, headers=_headers())

    def one(upload_id: str, **_: str) -> Response:
        method = request.method
        if method == "HEAD":
            return head(upload_id)
        if method == "PATCH":
            return patch(upload_id)
        return delete(upload_id)

    def collection(**_: str) -> Response:
        return options() if request.method == "OPTIONS" else create()

    bp.add_url_rule(
        prefix,
        f"{endpoint}_uploads",
        _answer(collection),
        methods=["OPTIONS", "POST"],
        provide_automatic_options=False,
    )
    bp.add_url_rule(
        f"{prefix}/<upload_id>",
        f"{endpoint}_upload",
        _answer(one),
        methods=["HEAD", "PATCH", "DELETE"],
    )
