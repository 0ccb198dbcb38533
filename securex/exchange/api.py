"""Confidential sends for systems (a payroll system sending payslips): an agent's
personal token (`Auth.USER`) creates a pli and follows it.

Files are either small contents in the JSON body (base64, within the body limit) or
finished resumable uploads: `/api/v1/uploads` speaks tus 1.0 (core, creation,
termination) with the same token, and the upload's id is given in `files[].upload`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from securex.accounts.models import Tenant
from securex.accounts.service import Actor
from securex.errors import Forbidden, NotFound, ValidationFailed
from securex.exchange import service
from securex.exchange.models import Pli
from securex.exchange.tus import add_tus_routes
from securex.web.api import ApiBlueprint, Auth, _authenticate_user, current_api_user, query_int
from securex.web.context import db, now, state

bp = ApiBlueprint("exchange_api", __name__, tag="plis")

Text = Annotated[str, StringConstraints(max_length=service.MAX_MESSAGE)]


class FileIn(BaseModel):
    """Un fichier du pli : `upload` (identifiant d'un téléversement tus terminé), ou
    `name` et `content` (contenu en base64, pour les petits fichiers)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    upload: str | None = Field(default=None, description="Identifiant renvoyé par /uploads.")
    name: Annotated[str, StringConstraints(max_length=255)] | None = Field(
        default=None, description="Nom du fichier (avec `content`)."
    )
    media_type: Annotated[str, StringConstraints(max_length=100)] = Field(
        default="application/octet-stream", description="Type du contenu (avec `content`)."
    )
    content: str | None = Field(default=None, description="Contenu en base64 (RFC 4648).")

    @model_validator(mode="after")
    def _one_source(self) -> FileIn:
        if (self.upload is None) == (self.content is None):
            raise ValueError("donnez soit `upload`, soit `name` et `content`")
        if self.content is not None and not self.name:
            raise ValueError("`name` est obligatoire avec `content`")
        return self


class SendIn(BaseModel):
    """Un pli à envoyer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    recipients: list[Annotated[str, StringConstraints(max_length=254)]] = Field(
        min_length=1,
        max_length=service.MAX_RECIPIENTS,
        description="Adresses e-mail ; celles des comptes de la plateforme s'ouvrent en se "
        "connectant, les autres avec un code envoyé à l'adresse.",
    )
    subject: Annotated[str, StringConstraints(min_length=1, max_length=service.MAX_SUBJECT)]
    message: Text = ""
    files: list[FileIn] = Field(min_length=1, max_length=service.MAX_FILES)
    expires_in_days: int | None = Field(
        default=None, description="Jours de mise à disposition (défaut et maximum : configuration)."
    )
    download_limit: int | None = Field(
        default=None, description="Téléchargements de chaque fichier permis par destinataire."
    )
    verification: Literal["email", "email+phone"] = Field(
        default="email",
        description="`email+phone` : en plus du code e-mailé, un code que l'expéditeur "
        "transmet par téléphone (renvoyé une seule fois, dans `phone_codes`).",
    )


class DownloadOut(BaseModel):
    file: str = Field(description="Nom du fichier, ou « tous les fichiers (zip) ».")
    started_at: datetime
    completed_at: datetime | None
    bytes: int
    address: str = Field(description="Adresse IP d'où le téléchargement a été fait.")
    encrypted: bool = Field(description="Copie chiffrée pour la clé OpenPGP du destinataire.")


class RecipientOut(BaseModel):
    email: str
    platform: bool = Field(description="Compte de la plateforme (sinon : adresse externe).")
    notified_at: datetime | None
    notify_failed: bool
    opened_at: datetime | None
    verified_at: datetime | None = Field(description="Code vérifié (ou connexion).")
    downloaded_at: datetime | None = Field(description="Tous les fichiers téléchargés.")
    locked: bool = Field(description="Verrouillé après trop de codes erronés.")
    reminded_at: datetime | None
    openpgp: bool
    downloads: list[DownloadOut]


class FileOut(BaseModel):
    id: int
    name: str
    media_type: str
    size: int
    scan: str = Field(description="`not_scanned`, `pending`, `clean`, `infected` ou `too_large`.")
    sha256: str | None = Field(description="Empreinte du contenu, une fois le pli préparé.")


class SendOut(BaseModel):
    """Un pli et, par destinataire, ce qu'il en a fait."""

    id: int
    status: str = Field(
        description="`scanning`, `preparing`, `sent`, `blocked`, `revoked` ou `expired`."
    )
    subject: str
    created_at: datetime
    expires_at: datetime
    download_limit: int
    verification: str
    files: list[FileOut]
    recipients: list[RecipientOut]
    phone_codes: dict[str, str] | None = Field(
        default=None,
        description="Seulement à la création avec `email+phone` : adresse → code à "
        "transmettre par téléphone. Il n'est plus jamais montré.",
    )


class SendList(BaseModel):
    sends: list[SendOut]


def _sender() -> tuple[Actor, Tenant]:
    user = current_api_user()
    if user.tenant is None or not service.staff_can_send(user):
        raise Forbidden("Les plis sont envoyés par les agents d'une commune.")
    return Actor.for_user(user), user.tenant


def _sent(send_id: int) -> Pli:
    """A pli the token holder's commune sent (received ones are not sends: 404)."""
    pli = service.get_for_staff(db(), current_api_user(), send_id)
    if pli.direction != service.OUTGOING:
        raise NotFound("Pli introuvable.")
    return pli


def _out(v: service.PliView, phone_codes: dict[str, str] | None = None) -> SendOut:
    return SendOut(
        id=v.id,
        status=v.status.value,
        subject=v.subject,
        created_at=v.created_at,
        expires_at=v.expires_at,
        download_limit=v.download_limit,
        verification=v.verification.value,
        files=[
            FileOut(
                id=f["id"],
                name=f["name"],
                media_type=f["type"],
                size=f["size"],
                scan=f["scan"],
                sha256=f["sha256"],
            )
            for f in v.files
        ],
        recipients=[
            RecipientOut(
                email=r.email,
                platform=r.platform,
                notified_at=r.notified_at,
                notify_failed=r.notify_failed,
                opened_at=r.opened_at,
                verified_at=r.verified_at,
                downloaded_at=r.downloaded_at,
                locked=r.locked,
                reminded_at=r.reminded_at,
                openpgp=r.pgp,
                downloads=[DownloadOut(**d) for d in r.downloads],
            )
            for r in v.recipients
        ],
        phone_codes=phone_codes,
    )


def _file(item: FileIn, position: int) -> service.FileInput:
    if item.upload is not None:
        return service.FileInput(upload_id=item.upload)
    try:
        content = base64.b64decode(item.content or "", validate=True)
    except binascii.Error:
        raise ValidationFailed(
            "Contenu de fichier invalide : base64 attendu.",
            errors=[{"field": f"files.{position}.content", "message": "base64 invalide"}],
        ) from None
    return service.FileInput(name=item.name or "", media_type=item.media_type, content=content)


@bp.operation(
    "/sends",
    "POST",
    summary="Envoyer un pli confidentiel",
    response=SendOut,
    status=201,
    body=SendIn,
    auth=Auth.USER,
    errors=(403, 404, 410, 422, 507),
)
def create_send(body: SendIn) -> tuple[SendOut, int, dict[str, str]]:
    """Crée le pli et le met en préparation (antivirus s'il est configuré, copies
    OpenPGP, puis un e-mail par destinataire, qui porte le lien mais jamais le code).
    Suivez-le avec `GET /sends/{id}`."""
    _sender()
    user = current_api_user()
    pli, phone_codes = service.send(
        db(),
        state().vault,
        user,
        recipients=body.recipients,
        subject=body.subject,
        message=body.message,
        files=[_file(f, i) for i, f in enumerate(body.files)],
        expires_in_days=body.expires_in_days,
        download_limit=body.download_limit,
        verification=body.verification,
        source="api",
        now=now(),
        policy=service.ExchangePolicy.from_settings(state().settings),
    )
    db().commit()
    view = service.view(db(), state().vault, pli)
    return _out(view, phone_codes or None), 201, {"Location": f"/api/v1/sends/{pli.id}"}


@bp.operation(
    "/sends/<int:send_id>",
    summary="Suivre un pli : statut, et par destinataire notifié, ouvert, code vérifié, téléchargé",
    response=SendOut,
    auth=Auth.USER,
    errors=(403, 404),
)
def get_send(send_id: int) -> SendOut:
    """Un pli de la commune du titulaire du jeton (404 pour un autre). Chaque lecture
    est journalisée."""
    actor, _ = _sender()
    pli = _sent(send_id)
    view = service.read(db(), state().vault, pli, actor, now=now())
    db().commit()
    return _out(view)


@bp.operation(
    "/sends",
    summary="Les plis envoyés par la commune, du plus récent au plus ancien",
    response=SendList,
    auth=Auth.USER,
    errors=(403, 422),
)
def list_sends() -> SendList:
    """Les `limit` derniers plis envoyés (50 par défaut, 200 au plus)."""
    _sender()
    limit = query_int("limit", 50, 1, 200)
    views = service.list_for_staff(
        db(),
        state().vault,
        current_api_user(),
        direction=service.OUTGOING,
        limit=limit,
        with_downloads=True,
    )
    return SendList(sends=[_out(v) for v in views])


@bp.operation(
    "/sends/<int:send_id>",
    "DELETE",
    summary="Révoquer un pli : ses fichiers sont détruits sur-le-champ",
    status=204,
    auth=Auth.USER,
    errors=(403, 404, 410),
)
def revoke_send(send_id: int) -> None:
    """Les destinataires ne peuvent plus l'ouvrir ; les clés de ses fichiers sont
    détruites (effacement cryptographique). Le suivi reste consultable."""
    actor, _ = _sender()
    pli = _sent(send_id)
    gone = service.revoke(db(), state().vault, pli, actor, now=now())
    db().commit()
    for object_id in gone:
        with contextlib.suppress(FileNotFoundError):
            state().vault.blobs.delete(object_id)


def _upload_owner() -> tuple[Tenant, str]:
    user = _authenticate_user()
    if user.tenant is None or not service.staff_can_send(user):
        raise Forbidden("Les fichiers des plis sont téléversés par les agents d'une commune.")
    return user.tenant, f"user:{user.id}"


add_tus_routes(bp, "/uploads", _upload_owner, "api")
