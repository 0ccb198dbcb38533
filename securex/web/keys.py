"""The commune administrator's page of the commune's key in the vault: its versions,
what each still protects, and the rotation (a background job, `securex.rotation`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm

from securex import rotation
from securex.errors import Conflict
from securex.web import roles
from securex.web.context import db, now, state

bp = Blueprint("keys", __name__)


@bp.route("/commune/cles", methods=["GET", "POST"])
@roles.admin_only
def tenant_key() -> Any:
    tenant = roles.current().tenant
    assert tenant is not None
    form = FlaskForm()
    if form.validate_on_submit():
        try:
            rotation.request_rotation(db(), tenant, actor=str(roles.actor()), now=now())
        except Conflict as exc:
            flash(exc.detail, "error")
        else:
            db().commit()
            flash(
                "Rotation demandée : les clés des documents sont re-chiffrées en arrière-plan.",
                "success",
            )
        return redirect(url_for(".tenant_key"), 303)
    return render_template(
        "keys/tenant.html",
        form=form,
        versions=state().vault.keyring.status(db(), tenant.insee)[::-1],  # newest first
        running=rotation.running(db(), tenant),
        last=rotation.last(db(), tenant),
    )
