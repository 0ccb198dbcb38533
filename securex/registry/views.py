"""Pages of the registry for agents and officiers (French), and the public page that
answers for an issued copy's verification code.

Every page calls `securex.registry.service` (which audits what it reads and writes)
and commits; the commune is always the logged-in user's own. Errors the service raises
come back as form errors or flash messages, never as a 500.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from wtforms.fields.choices import SelectChoice

from securex.accounts.models import Role
from securex.accounts.service import throttle
from securex.errors import (
    AccountLocked,
    AuthenticationFailed,
    NotFound,
    RateLimited,
    SecurexError,
    ValidationFailed,
)
from securex.jobs.service import get_job
from securex.registry import batch, forms, service
from securex.registry.models import AvisStatus, Status
from securex.registry.schema import ActKind, DeliveryKind
from securex.web import csrf, roles
from securex.web.context import db, now, state
from securex.web.signing import validate_document

bp = Blueprint("registry", __name__, template_folder="templates")


# --- who may do what -----------------------------------------------------------------


def _vault() -> Any:
    return state().vault


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "status_label": lambda value: Status(value).label,
        "ref_args": ref_args,
        "ActKind": ActKind,
    }


# --- search and lists ----------------------------------------------------------------


@bp.get("/registre")
@roles.staff_only
def index() -> Any:
    form = forms.SearchForm(request.args)
    results = None
    status = 200
    if request.args:
        try:
            day = forms.parse_date(form.date.data)
        except ValueError:
            form.date.errors = ["Date invalide : indiquez-la au format JJ/MM/AAAA."]
            status = 422
        else:
            if form.validate():
                try:
                    results = service.search(
                        db(),
                        roles.actor(),
                        roles.insee(),
                        nom=form.nom.data or "",
                        prenoms=form.prenoms.data or "",
                        day=day,
                        lieu=(form.lieu.data or "").strip() or None,
                        kind=form.type.data or None,
                        now=now(),
                        vault=_vault(),
                    )
                except ValidationFailed as exc:
                    form.form_errors.append(exc.detail)
                    status = 422
                else:
                    db().commit()
            else:
                status = 422
    drafts = service.list_acts(db(), roles.insee(), status=Status.DRAFT.value)
    pending = service.list_acts(db(), roles.insee(), status=Status.PENDING.value)
    return render_template(
        "registry/index.html",
        form=form,
        results=results,
        drafts=drafts,
        pending=pending,
    ), status


# --- drafting ------------------------------------------------------------------------


def _act_kind(value: str | None) -> ActKind | None:
    if not value:
        return None
    try:
        return ActKind(value)
    except ValueError:
        abort(404)


@bp.route("/registre/actes/nouveau", methods=["GET", "POST"])
@roles.staff_only
def new_act() -> Any:
    kind = _act_kind(request.args.get("type"))
    if kind is None:
        return render_template("registry/choose_kind.html", kinds=list(ActKind))
    form = forms.act_form(kind)()
    status = 200
    if form.validate_on_submit():
        try:
            act_id = service.create_act(
                db(),
                roles.actor(),
                insee=roles.insee(),
                kind=kind.value,
                content=forms.to_data(form),
                now=now(),
                vault=_vault(),
            )
        except ValidationFailed as exc:
            forms.show_errors(form, exc)
            status = 422
        else:
            db().commit()
            flash("Projet d'acte enregistré.", "success")
            return redirect(url_for(".act", act_id=act_id))
    elif request.method == "POST":
        status = 400
    return render_template(
        "registry/act_form.html", form=form, kind=kind, act=None, editing=False
    ), status


@bp.route("/registre/actes/<int:act_id>/modifier", methods=["GET", "POST"])
@roles.staff_only
def edit_act(act_id: int) -> Any:
    rec = service.get_act(db(), roles.actor(), roles.insee(), act_id, now=now(), vault=_vault())
    db().commit()  # the read is audited, whatever happens next
    if rec.status == Status.SIGNED:
        flash(
            "Cet acte est signé : il ne se modifie plus. Ajoutez une mention marginale "
            "(rectification) à la place.",
            "warning",
        )
        return redirect(url_for(".act", act_id=act_id))
    cls = forms.act_form(rec.kind)
    if request.method == "GET":
        form = cls(data=forms.form_data(forms.act_layout(rec.kind), rec.content))
        return render_template(
            "registry/act_form.html", form=form, kind=rec.kind, act=rec, editing=True
        )
    form = cls()
    status = 400
    if form.validate_on_submit():
        try:
            service.update_draft(
                db(),
                roles.actor(),
                roles.insee(),
                act_id,
                content=forms.to_data(form),
                now=now(),
                vault=_vault(),
            )
        except ValidationFailed as exc:
            db().rollback()
            forms.show_errors(form, exc)
            status = 422
        except NotFound:
            raise
        except SecurexError as exc:  # signed meanwhile
            db().rollback()
            form.form_errors.append(exc.detail)
            status = exc.status
        else:
            db().commit()
            flash("Projet d'acte modifié.", "success")
            return redirect(url_for(".act", act_id=act_id))
    return render_template(
        "registry/act_form.html", form=form, kind=rec.kind, act=rec, editing=True
    ), status


@bp.post("/registre/actes/<int:act_id>/presenter")
@roles.staff_only
def submit_act(act_id: int) -> Any:
    if forms.ActionForm().validate_on_submit():
        try:
            service.submit_act(db(), roles.actor(), roles.insee(), act_id, now=now())
        except NotFound:
            raise
        except SecurexError as exc:
            flash(exc.detail, "error")
        else:
            db().commit()
            flash("L'acte est présenté à la signature de l'officier.", "success")
    return redirect(url_for(".act", act_id=act_id))


# --- an act --------------------------------------------------------------------------


def _render_act(
    act_id: int,
    *,
    delivery: forms.DeliveryForm | None = None,
    status: int = 200,
) -> tuple[str, int]:
    rec = service.get_act(db(), roles.actor(), roles.insee(), act_id, now=now(), vault=_vault())
    deliveries = service.deliveries_of(db(), roles.actor(), roles.insee(), act_id, vault=_vault())
    db().commit()
    if delivery is None:
        delivery = forms.delivery_form(rec.kind)
    else:
        delivery.kind.choices = forms.delivery_form(rec.kind).kind.choices
    return render_template(
        "registry/act.html",
        act=rec,
        rows=forms.content_rows(forms.act_layout(rec.kind), rec.content),
        deliveries=deliveries,
        action_form=forms.ActionForm(),
        delivery_form=delivery,
        mention_kinds=forms.mention_kinds(rec.kind),
        can_sign=roles.current().role_enum is Role.OFFICER,
    ), status


@bp.get("/registre/actes/<int:act_id>")
@roles.staff_only
def act(act_id: int) -> Any:
    return _render_act(act_id)


@bp.route("/registre/actes/<int:act_id>/mentions/nouvelle", methods=["GET", "POST"])
@roles.staff_only
def new_mention(act_id: int) -> Any:
    rec = service.get_act(db(), roles.actor(), roles.insee(), act_id, now=now(), vault=_vault())
    db().commit()
    if rec.status != Status.SIGNED:
        flash("Une mention s'appose sur un acte signé ; cet acte est encore un projet.", "warning")
        return redirect(url_for(".act", act_id=act_id))
    form = forms.mention_form(rec.kind)()
    if request.method == "GET" and request.args.get("type"):
        form.kind.data = request.args["type"]
    status = 200
    if form.validate_on_submit():
        try:
            service.add_mention(
                db(),
                roles.actor(),
                roles.insee(),
                act_id,
                kind=form.kind.data or "",
                facts=forms.to_data(form),
                now=now(),
                vault=_vault(),
            )
        except ValidationFailed as exc:
            forms.show_errors(form, exc)
            status = 422
        except NotFound:
            raise
        except SecurexError as exc:
            form.form_errors.append(exc.detail)
            status = exc.status
        else:
            db().commit()
            flash("Mention enregistrée : elle attend la signature de l'officier.", "success")
            return redirect(url_for(".act", act_id=act_id))
    elif request.method == "POST":
        status = 400
    return render_template("registry/mention_form.html", form=form, act=rec), status


@bp.route("/registre/actes/<int:act_id>/delivrances/nouvelle", methods=["GET", "POST"])
@roles.staff_only
def new_delivery(act_id: int) -> Any:
    if request.method == "GET":
        return redirect(url_for(".act", act_id=act_id, _anchor="delivrer"))
    form = forms.DeliveryForm()
    if form.validate_on_submit():
        try:
            service.request_delivery(
                db(),
                roles.actor(),
                roles.insee(),
                act_id,
                kind=form.kind.data or "",
                requester=form.requester.data or "",
                purpose=form.purpose.data or "",
                all_marriages=bool(form.all_marriages.data),
                now=now(),
                vault=_vault(),
            )
        except NotFound:
            raise
        except SecurexError as exc:
            db().rollback()
            form.form_errors.append(exc.detail)
            return _render_act(act_id, delivery=form, status=exc.status)
        db().commit()
        label = DeliveryKind(form.kind.data).label
        flash(f"{label} demandé(e) : elle attend la signature de l'officier.", "success")
        return redirect(url_for(".act", act_id=act_id))
    return _render_act(act_id, delivery=form, status=400)


# --- documents -----------------------------------------------------------------------


def _pdf(data: bytes, name: str, *, inline: bool) -> Response:
    response = Response(data, mimetype="application/pdf")
    disposition = "inline" if inline else "attachment"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    return response


# A reference to a signed or waiting item, "act:12": parts of the URL, so that the id
# goes through the application's bounded `int` converter (404 beyond a database id).
REF = "<any(act, mention, delivery, avis):kind>:<int:ident>"


def ref_args(ref: str) -> dict[str, Any]:
    """url_for arguments of an item reference ("delivery:3")."""
    kind, ident = service.parse_ref(ref)
    return {"kind": kind, "ident": ident}


@bp.get(f"/registre/documents/{REF}")
@roles.staff_only
def document(kind: str, ident: int) -> Any:
    ref = f"{kind}:{ident}"
    data, name = service.document(
        db(), roles.actor(), roles.insee(), ref, now=now(), vault=_vault()
    )
    db().commit()
    return _pdf(data, name, inline=False)


@bp.get(f"/registre/apercu/{REF}")
@roles.staff_only
def preview(kind: str, ident: int) -> Any:
    ref = f"{kind}:{ident}"
    data = service.preview(db(), roles.actor(), roles.insee(), ref, now=now(), vault=_vault())
    db().commit()
    return _pdf(data, f"apercu-{kind}-{ident}.pdf", inline=True)


# --- avis de mention -----------------------------------------------------------------


@bp.get("/registre/avis")
@roles.staff_only
def avis() -> Any:
    return _render_avis()


def _render_avis(
    forms_for: dict[int, tuple[forms.ApplyAvisForm, forms.RejectAvisForm]] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    actor, insee, vault = roles.actor(), roles.insee(), _vault()
    incoming = service.list_avis(db(), actor, insee, incoming=True, now=now(), vault=vault)
    sent = service.list_avis(db(), actor, insee, incoming=False, now=now(), vault=vault)
    pending: list[dict[str, Any]] = []
    done = []
    for rec in incoming:
        # Applied but its mention not yet signed: waiting for the officier, not for us.
        if rec.status != AvisStatus.SENT or rec.payload is None or rec.target_act_id:
            done.append(rec)
            continue
        candidates = service.avis_candidates(db(), actor, insee, rec.id, now=now(), vault=vault)
        apply_form, reject_form = (forms_for or {}).get(rec.id) or (
            forms.ApplyAvisForm(prefix=f"avis{rec.id}"),
            forms.RejectAvisForm(prefix=f"rejet{rec.id}"),
        )
        apply_form.act.choices = [SelectChoice(str(c.id), c.title) for c in candidates]
        if len(candidates) == 1 and not apply_form.act.data:
            apply_form.act.data = str(candidates[0].id)
        pending.append(
            {"avis": rec, "candidates": candidates, "apply": apply_form, "reject": reject_form}
        )
    db().commit()
    return render_template(
        "registry/avis.html",
        pending=pending,
        done=done,
        sent=sent,
        today=service.paris_date(now()),
    ), status


@bp.post("/registre/avis/<int:avis_id>/appliquer")
@roles.staff_only
def apply_avis(avis_id: int) -> Any:
    form = forms.ApplyAvisForm(prefix=f"avis{avis_id}")
    form.act.choices = []
    if form.validate_on_submit() and (form.act.data or "").isdigit():
        try:
            service.apply_avis(
                db(),
                roles.actor(),
                roles.insee(),
                avis_id,
                int(form.act.data or 0),
                now=now(),
                vault=_vault(),
            )
        except SecurexError as exc:
            db().rollback()
            form.form_errors.append(exc.detail)
            return _render_avis(
                {avis_id: (form, forms.RejectAvisForm(prefix=f"rejet{avis_id}"))}, exc.status
            )
        db().commit()
        flash("Mention enregistrée : elle attend la signature de l'officier.", "success")
        return redirect(url_for(".avis"))
    if not form.act.errors:
        form.act.errors = ["Choisissez l'acte."]
    return _render_avis({avis_id: (form, forms.RejectAvisForm(prefix=f"rejet{avis_id}"))}, 400)


@bp.post("/registre/avis/<int:avis_id>/rejeter")
@roles.staff_only
def reject_avis(avis_id: int) -> Any:
    form = forms.RejectAvisForm(prefix=f"rejet{avis_id}")
    status = 400
    if form.validate_on_submit():
        try:
            service.reject_avis(
                db(),
                roles.actor(),
                roles.insee(),
                avis_id,
                reason=form.reason.data or "",
                now=now(),
                vault=_vault(),
            )
        except SecurexError as exc:
            db().rollback()
            form.form_errors.append(exc.detail)
            status = exc.status
        else:
            db().commit()
            flash("Avis rejeté : la commune qui l'a envoyé voit le motif.", "success")
            return redirect(url_for(".avis"))
    return _render_avis({avis_id: (forms.ApplyAvisForm(prefix=f"avis{avis_id}"), form)}, status)


# --- the officier's signature --------------------------------------------------------


@bp.route("/registre/signature", methods=["GET", "POST"])
@roles.officer_only
def queue() -> Any:
    items = service.signature_queue(db(), roles.actor(), roles.insee(), now=now(), vault=_vault())
    form = forms.BatchForm()
    selected: set[str] = set()
    status = 200
    if request.method == "POST":
        # "Tout signer" takes every item the page showed (not what arrived since).
        all_shown = request.form.get("action") == "all"
        refs = request.form.getlist("shown" if all_shown else "items")
        selected = set(refs)
        if form.validate_on_submit():
            try:
                job_id = batch.start_batch(
                    db(),
                    state().keys,
                    state().policy,
                    roles.current(),
                    refs,
                    totp_code=(form.code.data or "").strip(),
                    now=now(),
                )
            except SecurexError as exc:
                # A wrong or replayed code counts toward the lockout: keep that count.
                db().commit()
                if isinstance(exc, AuthenticationFailed | AccountLocked):
                    form.code.errors = [exc.detail]
                else:
                    form.form_errors.append(exc.detail)
                status = exc.status
            else:
                db().commit()
                return redirect(url_for(".job", job_id=job_id))
        else:
            status = 400
    return render_template("registry/queue.html", items=items, form=form, selected=selected), status


@bp.get("/registre/signature/lots/<int:job_id>")
@roles.officer_only
def job(job_id: int) -> Any:
    user = roles.current()
    found = get_job(db(), job_id, tenant_id=user.tenant_id)
    if found.kind != batch.KIND:
        raise NotFound("Tâche introuvable.")
    lines = json.loads(found.result)
    running = found.status in ("queued", "running")
    return render_template(
        "registry/job.html",
        job=found,
        lines=lines,
        running=running,
        signed=found.done - found.failed,
    )


# --- public verification of an issued copy -------------------------------------------


@bp.get("/verifier/code")
def lookup() -> Any:
    """Type the code printed on a copy by hand (the QR code leads to the page below)."""
    form = forms.CodeLookupForm(request.args)
    if "code" in request.args:
        if form.validate():
            return redirect(url_for(".check", code=service.normalise_code(form.code.data or "")))
        return render_template("registry/lookup.html", form=form), 400
    return render_template("registry/lookup.html", form=form)


@bp.route("/verifier/<code>", methods=["GET", "POST"])
@csrf.exempt
def check(code: str) -> Any:
    """What anyone holding a copy may learn from its code: that it was issued, by which
    commune, when and by whom, and whether its signature holds; never personal data.
    Nothing is written to the visitor's session (no CSRF token, no flash)."""
    st = state()
    wait = throttle(
        db(),
        st.keys,
        "verify",
        request.remote_addr or "",
        limit=int(st.settings["registry.verify_per_address"]),
        window_seconds=900,
        now=now(),
    )
    if wait:
        db().commit()
        raise RateLimited(
            f"Trop de vérifications depuis votre adresse : réessayez dans {wait // 60 + 1} min."
        )
    try:
        found = service.check_code(db(), code, now=now())
    except NotFound:
        db().commit()  # the rate-limit count
        lookup_form = forms.CodeLookupForm(formdata=None)
        return render_template("registry/check_unknown.html", form=lookup_form), 404
    data = _vault().read_all(db(), found.insee, found.document_id)
    db().commit()
    report = validate_document(data)
    limit = int(state().settings["signing.max_upload_bytes"])
    request.max_content_length = limit  # before the form reads the upload
    form = forms.CompareForm()
    identical = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            upload = form.document.data.read(limit + 1)
            if len(upload) > limit:
                form.document.errors = [
                    f"PDF trop volumineux (au plus {limit // (1024 * 1024)} Mio)."
                ]
                status = 413
            else:
                identical = hashlib.sha256(upload).hexdigest() == found.sha256
        else:
            status = 400
    return render_template(
        "registry/check.html",
        check=found,
        signature_ok=bool(report.ok),
        signer=found.signer_name,
        form=form,
        identical=identical,
    ), status
