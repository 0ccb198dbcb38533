"""Login (password, then TOTP or a recovery code), TOTP enrolment, logout, dashboard,
the account page and its personal API tokens."""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import qrcode
import qrcode.image.svg
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from securex.accounts import service
from securex.accounts.forms import ActionForm, CodeForm, EnrolForm, LoginForm
from securex.accounts.models import Role, User
from securex.comedec import service as comedec
from securex.errors import ValidationFailed
from securex.web import login_manager
from securex.web.context import db, now, state

bp = Blueprint("accounts", __name__, template_folder="templates")

PENDING_TTL = timedelta(minutes=5)

CAPABILITIES: dict[Role, list[tuple[str, str]]] = {
    Role.OFFICER: [
        (
            "Signer les actes",
            "Relire et signer (PAdES) les actes préparés par les agents, un par un ou par lot.",
        ),
        (
            "Apposer les mentions",
            "Signer les mentions marginales et répondre aux avis de mention des autres communes.",
        ),
        ("Délivrer les copies", "Signer les copies intégrales et extraits demandés."),
    ],
    Role.AGENT: [
        ("Rédiger les actes", "Préparer les actes et mentions pour la signature de l'officier."),
        (
            "Traiter les demandes",
            "Instruire les demandes d'actes des notaires, administrations et usagers.",
        ),
        (
            "Envoyer des plis confidentiels",
            "Transmettre des documents chiffrés au lieu d'un courriel.",
        ),
    ],
    Role.ADMIN: [
        (
            "Gérer les comptes",
            "Créer les comptes des agents et officiers, réinitialiser un second facteur.",
        ),
        ("Suivre le journal d'audit", "Consulter et prouver les opérations de la commune."),
    ],
    Role.PLATFORM_ADMIN: [
        ("Gérer les communes", "Ajouter les communes hébergées et leurs administrateurs."),
        ("Gérer les clients API", "Habiliter notaires et administrations, révoquer un jeton."),
        ("Exploiter la plateforme", "Sauvegardes, rotation des clés, vérification du journal."),
    ],
}


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    try:
        user = db().get(User, int(user_id))
    except ValueError:
        return None
    return user if user is not None and user.active else None


def _address() -> str:
    return request.remote_addr or "unknown"


def _wait_message(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"réessayez dans {minutes} minute{'s' if minutes > 1 else ''}"


def _pending_user() -> User | None:
    """The user between the password and the second factor, if still fresh."""
    user_id, started = session.get("pending_user"), session.get("pending_at")
    if user_id is None or started is None:
        return None
    if now() - datetime.fromisoformat(started) > PENDING_TTL:
        _clear_pending()
        return None
    user = db().get(User, int(user_id))
    return user if user is not None and user.active else None


def _clear_pending() -> None:
    for key in ("pending_user", "pending_at", "enrol_sealed"):
        session.pop(key, None)


def _local_path(target: str | None) -> str | None:
    """`target` if it is a path of this site (never another host: no open redirect)."""
    if not target or len(target) > 500 or "\\" in target or not target.startswith("/"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


def _finish_login(user: User, method: str) -> Response:
    service.complete_login(db(), user, now=now(), method=method, policy=state().policy)
    db().commit()
    target = _local_path(session.pop("next", None))
    _clear_pending()
    session.regenerate()  # type: ignore[attr-defined]
    login_user(user)
    flash(f"Bienvenue, {user.name}.", "success")
    # Back where the person was going (a pli's link, a page that asked to log in).
    return redirect(target or url_for("accounts.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("accounts.dashboard"))
    if request.method == "GET" and _local_path(request.args.get("next")):
        session["next"] = request.args["next"]
    form = LoginForm()
    if form.validate_on_submit():
        st = state()
        outcome = service.check_password_login(
            db(),
            st.keys,
            email=form.email.data or "",
            password=form.password.data or "",
            address=_address(),
            now=now(),
            policy=st.policy,
        )
        db().commit()  # failures, lockouts and rate limits are recorded whatever happens
        if outcome.status is service.LoginStatus.RATE_LIMITED:
            form.form_errors.append(
                f"Trop de tentatives depuis votre poste : {_wait_message(outcome.retry_after)}."
            )
            return render_template("accounts/login.html", form=form), 429
        if outcome.status is service.LoginStatus.LOCKED:
            form.form_errors.append(
                "Ce compte est verrouillé après plusieurs échecs : "
                f"{_wait_message(outcome.retry_after)}."
            )
            return render_template("accounts/login.html", form=form), 423
        if not outcome.ok or outcome.user is None:
            form.form_errors.append("Adresse e-mail ou mot de passe incorrect.")
            return render_template("accounts/login.html", form=form), 401
        user = outcome.user
        if not user.totp_enrolled and not user.role_enum.requires_totp:
            return _finish_login(user, "password")
        session["pending_user"] = user.id
        session["pending_at"] = now().isoformat()
        if user.totp_enrolled:
            return redirect(url_for("accounts.login_totp"))
        return redirect(url_for("accounts.enrol"))
    status = 400 if request.method == "POST" else 200
    return render_template("accounts/login.html", form=form), status


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp() -> Any:
    user = _pending_user()
    if user is None:
        flash("Votre session de connexion a expiré. Recommencez.", "warning")
        return redirect(url_for("accounts.login"))
    form = CodeForm()
    if form.validate_on_submit():
        st = state()
        outcome = service.check_second_factor(
            db(),
            st.keys,
            user_id=user.id,
            code=form.code.data or "",
            address=_address(),
            now=now(),
            policy=st.policy,
        )
        db().commit()
        if outcome.ok:
            return _finish_login(user, "totp")
        status = 401
        if outcome.status is service.LoginStatus.LOCKED:
            _clear_pending()
            flash(
                "Ce compte est verrouillé après plusieurs échecs : "
                f"{_wait_message(outcome.retry_after)}.",
                "error",
            )
            return redirect(url_for("accounts.login"))
        if outcome.status is service.LoginStatus.RATE_LIMITED:
            form.form_errors.append(
                f"Trop de tentatives depuis votre poste : {_wait_message(outcome.retry_after)}."
            )
            status = 429
        elif outcome.status is service.LoginStatus.REPLAYED:
            form.form_errors.append(
                "Ce code a déjà servi. Attendez le code suivant de votre application."
            )
        else:
            form.form_errors.append("Code incorrect.")
        return render_template("accounts/totp.html", form=form), status
    return render_template("accounts/totp.html", form=form)


def _qr_data_uri(uri: str) -> str:
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


@bp.route("/login/enrol", methods=["GET", "POST"])
def enrol() -> Any:
    """TOTP enrolment: during login (required roles) or from the account page."""
    user = current_user if current_user.is_authenticated else _pending_user()
    if user is None:
        flash("Votre session de connexion a expiré. Recommencez.", "warning")
        return redirect(url_for("accounts.login"))
    if user.totp_enrolled:
        # Replacing a second factor needs an administrator (`securex user reset-2fa`):
        # otherwise the password alone would be enough to enrol a new one and log in.
        if current_user.is_authenticated:
            flash("Votre second facteur est déjà activé.", "info")
            return redirect(url_for("accounts.account"))
        return redirect(url_for("accounts.login_totp"))
    keys = state().keys
    sealed = session.get("enrol_sealed")
    if sealed is None:
        secret = service.new_totp_secret()
        session["enrol_sealed"] = base64.b64encode(keys.seal_totp(user.id, secret)).decode()
    else:
        secret = keys.unseal_totp(user.id, base64.b64decode(sealed))
    form = EnrolForm()
    status = 200
    if form.validate_on_submit():
        try:
            codes = service.enrol_totp(
                db(), keys, user, secret=secret, code=form.code.data or "", now=now()
            )
        except ValidationFailed as exc:
            form.code.errors = [exc.detail]
            status = 422
        else:
            db().commit()
            session.pop("enrol_sealed", None)
            if not current_user.is_authenticated:
                service.complete_login(
                    db(), user, now=now(), method="totp-enrolment", policy=state().policy
                )
                db().commit()
                _clear_pending()
                session.regenerate()  # type: ignore[attr-defined]
                login_user(user)
            return render_template("accounts/recovery_codes.html", codes=codes)
    elif request.method == "POST":
        status = 400
    return render_template(
        "accounts/enrol.html",
        form=form,
        secret=secret,
        qr=_qr_data_uri(service.totp_uri(user, secret)),
    ), status


@bp.post("/logout")
@login_required
def logout() -> Response:
    if ActionForm().validate_on_submit():
        sid = getattr(session, "sid", None)
        service.logout(db(), current_user, service.hash_session_id(sid) if sid else None, now=now())
        db().commit()
        logout_user()
        session.destroy()  # type: ignore[attr-defined]
    return redirect(url_for("accounts.login"))


@bp.post("/logout/everywhere")
@login_required
def logout_everywhere() -> Response:
    if ActionForm().validate_on_submit():
        service.logout_everywhere(db(), current_user, now=now())
        db().commit()
        logout_user()
        session.destroy()  # type: ignore[attr-defined]
        flash("Toutes vos sessions ont été fermées.", "success")
    return redirect(url_for("accounts.login"))


@bp.get("/")
@login_required
def dashboard() -> str:
    user: User = current_user
    role = user.role_enum
    context: dict[str, Any] = {"capabilities": CAPABILITIES[role], "role": role}
    if role is Role.ADMIN and user.tenant is not None:
        context["users"] = service.list_users(db(), user.tenant.insee)
        context["clients"] = [
            c for c in service.list_clients(db()) if any(t.id == user.tenant_id for t in c.communes)
        ]
    if user.tenant is not None and role in (Role.AGENT, Role.OFFICER, Role.ADMIN):
        context["overdue"] = comedec.overdue_count(db(), user.tenant.insee, now=now())
    if role is Role.PLATFORM_ADMIN:
        context["tenants"] = service.list_tenants(db())
        context["clients"] = service.list_clients(db())
    return render_template("accounts/dashboard.html", action_form=ActionForm(), **context)


TOKEN_VALIDITY = [
    SelectChoice(30, "30 jours"),
    SelectChoice(90, "90 jours"),
    SelectChoice(180, "6 mois"),
    SelectChoice(365, "1 an"),
    SelectChoice(730, "2 ans"),
]


class TokenForm(FlaskForm):
    name = StringField(
        "Nom du jeton",
        validators=[DataRequired("Donnez un nom au jeton."), Length(max=120)],
        render_kw={"autocomplete": "off", "maxlength": 120},
    )
    days = SelectField("Validité", choices=TOKEN_VALIDITY, coerce=int, default=365)


def _account_page(
    form: TokenForm | None = None, new_token: dict[str, str] | None = None, status: int = 200
) -> tuple[str, int]:
    user: User = current_user
    page = render_template(
        "accounts/account_tokens.html",
        action_form=ActionForm(),
        recovery_left=service.remaining_recovery_codes(db(), user),
        token_form=form or TokenForm(formdata=None),
        tokens=[
            (t, service.personal_token_state(t, now()))
            for t in service.list_personal_tokens(db(), user)
        ],
        new_token=new_token,
    )
    return page, status


@bp.get("/compte")
@login_required
def account() -> tuple[str, int]:
    return _account_page()


@bp.post("/compte/jetons")
@login_required
def create_token() -> tuple[str, int]:
    """The token is in this one answer only (never in the session or a flash message):
    reloading the page does not show it again."""
    form = TokenForm()
    if not form.validate_on_submit():
        return _account_page(form, status=400)
    user: User = current_user
    try:
        row, token = service.create_personal_token(
            db(),
            service.Actor.for_user(user),
            user,
            name=form.name.data or "",
            days=form.days.data,
            now=now(),
        )
    except ValidationFailed as exc:
        form.form_errors.append(exc.detail)
        return _account_page(form, status=422)
    db().commit()
    return _account_page(new_token={"name": row.name, "secret": token}, status=201)


@bp.post("/compte/jetons/<int:token_id>/revoquer")
@login_required
def revoke_token(token_id: int) -> Response:
    if ActionForm().validate_on_submit():
        user: User = current_user
        row = service.revoke_personal_token(
            db(), service.Actor.for_user(user), token_id, now=now(), owner=user
        )
        db().commit()
        flash(f"Jeton « {row.name} » révoqué.", "success")
    return redirect(url_for("accounts.account") + "#jetons")
