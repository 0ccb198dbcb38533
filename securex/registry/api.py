"""Read and search API of the registry for the commune's own agents, officiers and
administrators, who call it with their personal tokens (`Auth.USER`): search by blind
index, the register's latest acts, one act with its mentions and deliveries, and its
signed PDF. A user reaches their own commune's acts only; reads are audited by the
service, in the transaction this module commits."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from flask import Response
from pydantic import BaseModel, Field

from securex.accounts.models import Role
from securex.accounts.service import Actor
from securex.errors import Forbidden, ValidationFailed
from securex.registry import service
from securex.registry.models import Act, Status
from securex.registry.schema import ActKind, Content, DeliveryKind, MentionKind
from securex.web.api import (
    ApiBlueprint,
    Auth,
    current_api_user,
    invalid_field,
    query_arg,
    query_date,
    query_int,
    query_param,
)
from securex.web.context import db, now, state

bp = ApiBlueprint("registry_api", __name__, tag="registre")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# The register's list is for recent acts (the search finds old ones); list_acts takes no
# offset, so a page past this many acts would read them all first.
MAX_OFFSET = 10_000


# --- models --------------------------------------------------------------------------


class ActSummary(BaseModel):
    """Un acte en résumé, tel qu'une liste de résultats le montre."""

    id: int = Field(description="Identifiant de l'acte (chemin `/acts/{id}`).")
    kind: ActKind = Field(description="Type d'acte.")
    year: int = Field(description="Année du registre (pour un projet : année de sa création).")
    number: int | None = Field(description="Numéro dans le registre de l'année ; null : projet.")
    status: Status = Field(description="`draft` projet, `pending` à signer, `signed` signé.")
    title: str = Field(description="« Acte de naissance n° 12/2026 — DUPONT Léa ».")
    drawn_at: datetime | None = Field(description="Date et heure où l'acte a été dressé (UTC).")
    imported: bool = Field(description="Acte d'un registre papier, numérisé.")


class ActList(BaseModel):
    """Les actes trouvés, par identifiant croissant."""

    acts: list[ActSummary]


class RegisterEntry(BaseModel):
    """Une ligne du registre : rien de personnel (ni nom ni titre), donc pas de lecture
    de données chiffrées ni d'événement d'audit."""

    id: int = Field(description="Identifiant de l'acte (chemin `/acts/{id}`).")
    kind: ActKind = Field(description="Type d'acte.")
    year: int | None = Field(description="Année du registre ; null : projet.")
    number: int | None = Field(description="Numéro dans le registre de l'année ; null : projet.")
    status: Status = Field(description="`draft` projet, `pending` à signer, `signed` signé.")
    drawn_at: datetime | None = Field(description="Date et heure où l'acte a été dressé (UTC).")
    updated_at: datetime = Field(description="Dernière modification (UTC).")
    imported: bool = Field(description="Acte d'un registre papier, numérisé.")


class RegisterPage(BaseModel):
    """Une page des actes de la commune, du plus récemment modifié au plus ancien."""

    acts: list[RegisterEntry]
    limit: int = Field(description="Taille de page demandée.")
    offset: int = Field(description="Nombre d'actes sautés.")


class MentionOut(BaseModel):
    """Une mention marginale de l'acte."""

    id: int = Field(description="Identifiant de la mention.")
    kind: MentionKind = Field(description="Type de mention.")
    label: str = Field(description="Libellé du type, en français.")
    texte: str = Field(description="Texte de la mention, tel qu'écrit en marge.")
    applied_on: date = Field(description="Date d'apposition (de création tant qu'à signer).")
    applied_place: str = Field(description="Commune où la mention est apposée.")
    officer: str | None = Field(description="Officier signataire ; null tant qu'à signer.")
    status: Status = Field(description="`pending` à signer, `signed` signée.")
    struck: bool = Field(description="Mention du répertoire civil radiée par une autre.")


class DeliveryOut(BaseModel):
    """Une copie ou un extrait demandé de l'acte (sans le demandeur ni le motif)."""

    id: int = Field(description="Identifiant de la délivrance.")
    kind: DeliveryKind = Field(description="Copie intégrale ou type d'extrait.")
    status: Status = Field(description="`pending` à signer, `signed` délivrée.")
    code: str = Field(description="Code de vérification imprimé sur le document.")
    requested_at: datetime = Field(description="Date de la demande (UTC).")
    signed_at: datetime | None = Field(description="Date de signature (UTC) ; null : à signer.")


class ActDetail(ActSummary):
    """Un acte complet : son contenu, ses mentions et ses délivrances."""

    insee: str = Field(description="Code INSEE de la commune.")
    commune: str = Field(description="Nom de la commune.")
    officer: str | None = Field(description="Officier qui a dressé l'acte.")
    has_document: bool = Field(description="Un PDF signé est disponible (`/acts/{id}/document`).")
    content: Annotated[Content, Field(discriminator="kind")] = Field(
        description="Contenu de l'acte ; sa forme dépend de `kind`."
    )
    mentions: list[MentionOut]
    deliveries: list[DeliveryOut]


# --- helpers -------------------------------------------------------------------------


def _staff() -> tuple[Actor, str]:
    """The caller as an actor of their commune; a platform administrator has none."""
    user = current_api_user()
    if user.role_enum is Role.PLATFORM_ADMIN or user.tenant is None:
        raise Forbidden("Le registre est réservé aux agents, officiers et administrateurs.")
    return Actor.for_user(user), user.tenant.insee


def _summary_fields(rec: service.ActRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "kind": rec.kind,
        "year": rec.view.year,
        "number": rec.view.number,
        "status": Status(rec.status),
        "title": rec.title,
        "drawn_at": rec.view.drawn_at,
        "imported": rec.imported,
    }


def _entry(act: Act) -> RegisterEntry:
    return RegisterEntry(
        id=act.id,
        kind=ActKind(act.kind),
        year=act.year,
        number=act.number,
        status=Status(act.status),
        drawn_at=act.drawn_at,
        updated_at=act.updated_at,
        imported=act.imported,
    )


def _mention(rec: service.MentionRecord) -> MentionOut:
    view = rec.view
    return MentionOut(
        id=rec.id,
        kind=view.kind,
        label=view.kind.label,
        texte=view.facts.texte,
        applied_on=view.applied_on,
        applied_place=view.applied_place,
        officer=view.officer or None,
        status=Status(rec.status),
        struck=view.struck,
    )


def _delivery(rec: service.DeliveryRecord) -> DeliveryOut:
    return DeliveryOut(
        id=rec.id,
        kind=rec.kind,
        status=Status(rec.status),
        code=rec.code,
        requested_at=rec.requested_at,
        signed_at=rec.signed_at,
    )


# --- operations ----------------------------------------------------------------------


@bp.operation(
    "/acts",
    summary="Rechercher des actes par nom, prénoms, date et lieu",
    response=ActList,
    auth=Auth.USER,
    errors=(403, 422),
    query=[
        query_param("nom", "Nom de la personne.", {"type": "string"}, required=True),
        query_param("prenoms", "Prénoms, dans l'ordre de l'état civil.", {"type": "string"}, True),
        query_param(
            "date",
            "Date de naissance de la personne ou de l'événement de l'acte.",
            {"type": "string", "format": "date"},
        ),
        query_param("lieu", "Lieu de cette date (seulement avec `date`).", {"type": "string"}),
        query_param("kind", "Type d'acte.", {"type": "string", "enum": [k.value for k in ActKind]}),
    ],
)
def search_acts() -> ActList:
    """Recherche exacte par index aveugle dans les actes de la commune du titulaire du
    jeton : majuscules, accents, traits d'union et apostrophes ne comptent pas, mais
    le nom et les prénoms doivent être complets. Chaque recherche est journalisée."""
    actor, insee = _staff()
    nom, prenoms, lieu = query_arg("nom"), query_arg("prenoms"), query_arg("lieu")
    if nom is None or prenoms is None:
        missing = [name for name, value in (("nom", nom), ("prenoms", prenoms)) if value is None]
        raise ValidationFailed(
            "Indiquez au moins le nom et les prénoms.",
            errors=[{"field": f, "message": "obligatoire", "type": "missing"} for f in missing],
        )
    day = query_date("date")
    if lieu is not None and day is None:
        # The blind index holds the place with a date only: a place alone would be
        # silently ignored.
        raise invalid_field("lieu", "Le lieu ne s'utilise qu'avec une date.")
    found = service.search(
        db(),
        actor,
        insee,
        nom=nom,
        prenoms=prenoms,
        day=day,
        lieu=lieu,
        kind=query_arg("kind"),
        now=now(),
        vault=state().vault,
    )
    db().commit()  # the search's audit event
    return ActList(acts=[ActSummary(**_summary_fields(rec)) for rec in found])


@bp.operation(
    "/registry/acts",
    summary="Derniers actes du registre de la commune",
    response=RegisterPage,
    auth=Auth.USER,
    errors=(403, 422),
    query=[
        query_param(
            "status",
            "Seulement les actes dans cet état.",
            {"type": "string", "enum": [s.value for s in Status]},
        ),
        query_param(
            "limit",
            f"Taille de page ({DEFAULT_LIMIT} par défaut).",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        ),
        query_param(
            "offset",
            "Nombre d'actes à sauter.",
            {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        ),
    ],
)
def register_acts() -> RegisterPage:
    """Les actes de la commune, du plus récemment modifié au plus ancien, sans donnée
    personnelle : pour suivre les projets et les actes à signer."""
    _, insee = _staff()
    status = query_arg("status")
    if status is not None and status not in {s.value for s in Status}:
        raise invalid_field(
            "status", f"État inconnu : {status!r} (attendu : draft, pending, signed)."
        )
    limit = query_int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = query_int("offset", 0, 0, MAX_OFFSET)
    rows = service.list_acts(db(), insee, status=status, limit=offset + limit)[offset:]
    return RegisterPage(acts=[_entry(act) for act in rows], limit=limit, offset=offset)


@bp.operation(
    "/acts/<int:act_id>",
    summary="Un acte, avec ses mentions et ses délivrances",
    response=ActDetail,
    auth=Auth.USER,
    errors=(403, 404),
)
def get_act(act_id: int) -> ActDetail:
    """Un acte d'une autre commune répond 404, comme un acte inexistant. Chaque lecture
    est journalisée."""
    actor, insee = _staff()
    vault = state().vault
    rec = service.get_act(db(), actor, insee, act_id, now=now(), vault=vault)
    deliveries = service.deliveries_of(db(), actor, insee, act_id, vault=vault)
    db().commit()  # the read's audit event
    return ActDetail(
        **_summary_fields(rec),
        insee=rec.view.insee,
        commune=rec.view.commune,
        officer=rec.view.officer,
        has_document=rec.document_id is not None,
        content=rec.content,
        mentions=[_mention(m) for m in rec.mentions],
        deliveries=[_delivery(d) for d in deliveries],
    )


@bp.operation(
    "/acts/<int:act_id>/document",
    summary="Le PDF signé de l'acte",
    raw_response="application/pdf",
    auth=Auth.USER,
    errors=(403, 404),
)
def act_document(act_id: int) -> Response:
    """Le PDF de l'acte tel que l'officier l'a signé (PAdES). 404 si l'acte n'a pas de
    PDF signé : projet, acte à signer, acte papier importé. Chaque téléchargement est
    journalisé."""
    actor, insee = _staff()
    data, filename = service.document(
        db(), actor, insee, f"act:{act_id}", now=now(), vault=state().vault
    )
    db().commit()  # the download's audit event
    return Response(
        data,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
