"""Pages of the exchange for the commune's staff (French): the queue of requests for
acts, one request with what it states, its candidate acts and the agent's decision,
the citizen's uploaded proof, and the commune's handling settings (its administrator's).

Views call `securex.comedec.service` (which audits what it reads and decides) and
commit; the commune is always the logged-in user's own, and another commune's request
answers 404 exactly like a missing one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, IntegerField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from securex.accounts.models import Role
from securex.audit.events import EventType
from securex.audit.log import record
from securex.comedec import rules, service
from securex.comedec.models import ActRequest, CommuneSettings, RequestStatus
from securex.errors import NotFound, SecurexError
from securex.registry.schema import ActKind, DeliveryKind
from securex.web import roles
from securex.web.context import db, now, state

bp = Blueprint("comedec", __name__, template_folder="templates")


# The queue's tabs: value in the URL -> (label, status shown; None for every status).
TABS: dict[str, tuple[str, str | None]] = {
    "a-traiter": ("À traiter", RequestStatus.QUEUED.value),
    "recues": ("Reçues", RequestStatus.RECEIVED.value),
    "toutes": ("Toutes", None),
}
OUTCOME_LABELS = {
    rules.Outcome.ALLOWED.value: "Droit ouvert",
    rules.Outcome.REFUSED.value: "Droit non ouvert",
    rules.Outcome.REVIEW.value: "Droit ouvert sous réserve du justificatif (à vérifier)",
}
SEXES = {"M": "Masculin", "F": "Féminin"}
# What an uploaded proof is, from its first bytes: the vault keeps no content type.
PROOF_TYPES = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
)


# --- who may do what -----------------------------------------------------------------


def _row(request_id: int) -> ActRequest:
    """The request's routing facts (no sealed data), if it is the user's commune's."""
    req = db().get(ActRequest, request_id)
    if req is None or req.tenant_id != roles.current().tenant_id:
        raise NotFound("Demande introuvable.")
    return req


def _waiting_signature(req: ActRequest) -> bool:
    return req.status == RequestStatus.QUEUED and req.delivery_id is not None


def _actionable(req: ActRequest) -> bool:
    """An agent decides a queued request with no copy prepared yet. A `received` one is
    being issued by the commune's seal (it comes back to `queued` if that fails)."""
    return req.status == RequestStatus.QUEUED and req.delivery_id is None


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "act_kind_label": lambda value: ActKind(value).label,
        "delivery_label": lambda value: DeliveryKind(value).label,
        "capacity_label": lambda value: rules.Capacity(value).label,
    }


# --- forms ---------------------------------------------------------------------------


class PrepareForm(FlaskForm):
    act = RadioField(
        "Acte à délivrer",
        choices=[],
        validate_choice=False,
        validators=[DataRequired("Choisissez l'acte à délivrer.")],
    )


class RefuseForm(FlaskForm):
    reason = TextAreaField(
        "Motif du refus (communiqué au demandeur)",
        validators=[
            DataRequired("Indiquez le motif du refus : il est communiqué au demandeur."),
            Length(max=400, message="Le motif tient en 400 caractères au plus."),
        ],
    )


class NotFoundForm(FlaskForm):
    """A button that only needs a CSRF token."""


class DaysField(IntegerField):
    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError("Indiquez un nombre entier de jours.") from None


class SettingsForm(FlaskForm):
    auto_issue = BooleanField("Délivrer automatiquement les demandes nettes")
    not_found_at_once = BooleanField("Répondre « acte introuvable » immédiatement")
    due_days = DaysField(
        "Délai de réponse, en jours (de 1 à 60)",
        validators=[
            InputRequired("Indiquez le délai de réponse."),
            NumberRange(1, 60, "Le délai de réponse va de 1 à 60 jours."),
        ],
        render_kw={"min": 1, "max": 60, "inputmode": "numeric"},
    )
    service_name = StringField(
        "Nom du service",
        validators=[
            DataRequired("Indiquez le nom du service."),
            Length(max=200, message="200 caractères au plus."),
        ],
    )
    service_contact = TextAreaField(
        "Contacts du service (adresse, téléphone, adresse électronique)",
        validators=[Length(max=300, message="300 caractères au plus.")],
    )


# --- the queue -----------------------------------------------------------------------


@bp.get("/demandes")
@roles.staff_only
def queue() -> Any:
    tab = request.args.get("etat", "a-traiter")
    if tab not in TABS:
        abort(404)
    items = service.agent_queue(db(), roles.actor(), roles.insee(), now=now(), status=TABS[tab][1])
    ids = [item.view.id for item in items]
    waiting = set(
        db().scalars(
            select(ActRequest.id).where(
                ActRequest.id.in_(ids),
                ActRequest.delivery_id.is_not(None),
                ActRequest.status == RequestStatus.QUEUED.value,
            )
        )
        if ids
        else []
    )
    return render_template(
        "comedec/queue.html",
        items=items,
        waiting=waiting,
        tabs=TABS,
        tab=tab,
        is_admin=roles.current().role_enum is Role.ADMIN,
    )


# --- one request ---------------------------------------------------------------------


def _day(value: Any) -> str:
    try:
        return dt.date.fromisoformat(str(value)).strftime("%d/%m/%Y")
    except ValueError:
        return str(value)


def _name(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return f"{str(value.get('nom') or '').upper()} {value.get('prenoms') or ''}".strip()


def stated(act_kind: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    """What the request states, as (label, value) lines; what it leaves out is not
    listed. `date` and `lieu` are the event's for a birth or a death, the person's
    birth otherwise (see `PersonIn`)."""
    event = {
        ActKind.NAISSANCE.value: ("Date de naissance", "Lieu de naissance"),
        ActKind.DECES.value: ("Date du décès", "Lieu du décès"),
    }.get(act_kind, ("Date de naissance de la personne", "Lieu de naissance de la personne"))
    person = data.get("person") or {}
    lines: list[tuple[str, Any]] = [
        ("Nom", person.get("nom")),
        ("Prénoms", person.get("prenoms")),
        ("Sexe", SEXES.get(person.get("sexe") or "")),
        (event[0], person.get("date") and _day(person["date"])),
        (event[1], person.get("lieu")),
    ]
    for n, parent in enumerate(data.get("parents") or [], start=1):
        lines.append((f"Parent {n}", _name(parent)))
    lines.append(("Conjoint", _name(data.get("spouse"))))
    marriage = data.get("event") or {}
    lines += [
        ("Date du mariage", marriage.get("date") and _day(marriage["date"])),
        ("Lieu du mariage", marriage.get("lieu")),
        ("Texte qui autorise l'administration", data.get("legal_reference")),
        ("Justificatif indiqué", data.get("justification")),
        ("Motif de la demande", data.get("purpose")),
        ("Référence du demandeur", data.get("reference")),
        ("Adresse électronique du demandeur", data.get("email")),
    ]
    return [(label, str(value)) for label, value in lines if value]


def _examine(request_id: int) -> service.QueuedRequest:
    return service.examine(
        db(), roles.actor(), roles.insee(), request_id, now=now(), vault=state().vault
    )


def _render_request(
    request_id: int,
    *,
    prepare: PrepareForm | None = None,
    refuse: RefuseForm | None = None,
    seen: service.QueuedRequest | None = None,
    status: int = 200,
) -> tuple[str, int]:
    if seen is None:
        seen = _examine(request_id)
    req = _row(request_id)
    db().commit()  # the read is audited, whatever happens next
    candidates = seen.candidates or []
    prepare = prepare or PrepareForm(prefix="copie")
    prepare.act.choices = [(str(c.id), c.title) for c in candidates]
    if len(candidates) == 1 and not prepare.act.data:
        prepare.act.data = str(candidates[0].id)
    open_ = req.status in (RequestStatus.QUEUED, RequestStatus.RECEIVED)
    return render_template(
        "comedec/request.html",
        seen=seen,
        req=req,
        view=seen.view,
        stated=stated(req.act_kind, seen.data or {}),
        candidates=candidates,
        outcome_label=OUTCOME_LABELS.get(req.outcome, req.outcome),
        overdue=open_ and seen.overdue,
        actionable=_actionable(req),
        waiting_signature=_waiting_signature(req),
        prepare=prepare,
        refuse=refuse or RefuseForm(prefix="refus"),
        not_found=NotFoundForm(prefix="introuvable"),
    ), status


@bp.get("/demandes/<int:request_id>")
@roles.staff_only
def request_page(request_id: int) -> Any:
    return _render_request(request_id)


def _still_open(req: ActRequest) -> bool:
    if _actionable(req):
        return True
    if _waiting_signature(req):
        flash("La copie de cette demande attend déjà la signature de l'officier.", "error")
    elif req.status == RequestStatus.RECEIVED:
        flash("Cette demande est en cours de délivrance automatique.", "error")
    else:
        flash("Cette demande est déjà traitée.", "error")
    return False


@bp.post("/demandes/<int:request_id>/preparer")
@roles.staff_only
def prepare(request_id: int) -> Any:
    if not _still_open(_row(request_id)):
        return redirect(url_for(".request_page", request_id=request_id))
    form = PrepareForm(prefix="copie")
    form.act.choices = []
    if not form.validate_on_submit():
        return _render_request(request_id, prepare=form, status=400)
    # Only one of the acts the page offered: the service delivers any signed act.
    seen = _examine(request_id)
    offered = {str(c.id) for c in seen.candidates or []}
    if form.act.data not in offered:
        form.act.errors = ["Choisissez l'un des actes proposés."]
        return _render_request(request_id, prepare=form, seen=seen, status=400)
    try:
        service.prepare_delivery(
            db(),
            roles.actor(),
            roles.insee(),
            request_id,
            int(form.act.data or 0),
            now=now(),
            vault=state().vault,
        )
    except NotFound:
        raise
    except SecurexError as exc:
        db().rollback()
        form.form_errors.append(exc.detail)
        return _render_request(request_id, prepare=form, status=exc.status)
    db().commit()
    flash(
        "Copie préparée : elle attend la signature de l'officier de l'état civil (page « À "
        "signer »). La demande sera délivrée dès que la copie sera signée.",
        "success",
    )
    return redirect(url_for(".request_page", request_id=request_id))


@bp.post("/demandes/<int:request_id>/refuser")
@roles.staff_only
def refuse(request_id: int) -> Any:
    if not _still_open(_row(request_id)):
        return redirect(url_for(".request_page", request_id=request_id))
    form = RefuseForm(prefix="refus")
    if not form.validate_on_submit():
        return _render_request(request_id, refuse=form, status=400)
    try:
        service.refuse(
            db(), roles.actor(), roles.insee(), request_id, reason=form.reason.data or "", now=now()
        )
    except NotFound:
        raise
    except SecurexError as exc:
        db().rollback()
        form.form_errors.append(exc.detail)
        return _render_request(request_id, refuse=form, status=exc.status)
    db().commit()
    flash("Demande refusée : le demandeur voit le motif et son fondement juridique.", "success")
    return redirect(url_for(".request_page", request_id=request_id))


@bp.post("/demandes/<int:request_id>/introuvable")
@roles.staff_only
def not_found(request_id: int) -> Any:
    if not _still_open(_row(request_id)):
        return redirect(url_for(".request_page", request_id=request_id))
    if not NotFoundForm(prefix="introuvable").validate_on_submit():
        abort(400)
    try:
        service.confirm_not_found(db(), roles.actor(), roles.insee(), request_id, now=now())
    except NotFound:
        raise
    except SecurexError as exc:
        db().rollback()
        flash(exc.detail, "error")
    else:
        db().commit()
        flash("Réponse « acte introuvable » envoyée au demandeur.", "success")
    return redirect(url_for(".request_page", request_id=request_id))


@bp.get("/demandes/<int:request_id>/justificatif")
@roles.staff_only
def proof(request_id: int) -> Any:
    """The proof the citizen uploaded (a vault object, not a registry document)."""
    req = _row(request_id)
    if req.proof_id is None:
        raise NotFound("Cette demande n'a pas de justificatif.")
    insee = roles.insee()
    data = state().vault.read_all(db(), insee, req.proof_id)
    record(
        db(),
        EventType.DOCUMENT_DOWNLOADED,
        actor=str(roles.actor()),
        subject=f"act-request:{req.id}",
        tenant=insee,
        details={"document": "proof"},
        now=now(),
    )
    db().commit()
    mimetype, ext = "application/octet-stream", "bin"
    for magic, kind, suffix in PROOF_TYPES:
        if data.startswith(magic):
            mimetype, ext = kind, suffix
            break
    response = Response(data, mimetype=mimetype)
    name = f"justificatif-demande-{req.id}.{ext}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- the commune's settings ----------------------------------------------------------


@bp.route("/commune/parametres", methods=["GET", "POST"])
@roles.admin_only
def settings() -> Any:
    user = roles.current()
    assert user.tenant is not None
    current = service.settings_of(db(), user.tenant)
    if request.method == "GET":
        form = SettingsForm(
            data={
                "auto_issue": current.auto_issue,
                "not_found_at_once": current.not_found_at_once,
                "due_days": current.due_days,
                "service_name": current.service_name,
                "service_contact": current.service_contact,
            }
        )
        return render_template("comedec/settings.html", form=form)
    form = SettingsForm()
    if not form.validate_on_submit():
        return render_template("comedec/settings.html", form=form), 400
    insee = user.tenant.insee
    db().merge(
        CommuneSettings(
            tenant_id=user.tenant.id,
            auto_issue=bool(form.auto_issue.data),
            not_found_at_once=bool(form.not_found_at_once.data),
            due_days=int(form.due_days.data or 0),
            service_name=(form.service_name.data or "").strip(),
            service_contact=(form.service_contact.data or "").strip(),
        )
    )
    record(
        db(),
        EventType.COMMUNE_SETTINGS_CHANGED,
        actor=str(roles.actor()),
        subject=f"commune-settings:{insee}",
        tenant=insee,
        details={
            "auto_issue": bool(form.auto_issue.data),
            "not_found_at_once": bool(form.not_found_at_once.data),
            "due_days": int(form.due_days.data or 0),
        },
        now=now(),
    )
    db().commit()
    flash("Paramètres des demandes d'actes enregistrés.", "success")
    return redirect(url_for(".settings"))
