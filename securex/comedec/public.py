"""The citizens' counter (SVE): public pages, in French and without an account, where a
person asks a commune for a copy or an extrait of an act, gets the acknowledgement
of CRPA R112-11-1 on the page and by e-mail, follows the request through a link,
and downloads the signed copy with a code e-mailed to the address of the request.

The request joins the API's `guichet` rules and the agents' queue
(`service.submit_public`). The form asks exactly what décret 2017-890 art. 29
requires for the act kind and delivery chosen (`service.required_fields`).

No CSRF token and no session here, on purpose (like /verifier/<code>): an anonymous
visitor has no ambient authority for a forged cross-site POST to borrow. A request
is filed on what the form itself states; the follow-up POSTs need the secret link in
their URL, which another site does not know. What a token would add is done by the
form's challenge instead: an HMAC-signed question, bound to the form's address,
valid 15 minutes and used once, that a person answers without JavaScript. A session
would add a cookie and a database row for every anonymous visit, flood included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import unicodedata
from datetime import date
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from pydantic import ValidationError
from wtforms import EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import DateInput

from securex.accounts.service import list_tenants, throttle
from securex.comedec import service
from securex.comedec.models import RequestStatus
from securex.comedec.rules import CAPACITY_LABELS, CLIENT_CAPACITIES, Capacity
from securex.comedec.schema import ActRequestIn
from securex.errors import (
    ConfigError,
    Conflict,
    NotFound,
    RateLimited,
    SecurexError,
    ValidationFailed,
)
from securex.mail import MailError, MailSettings, send, valid_address
from securex.registry import service as registry
from securex.registry.forms import parse_date
from securex.registry.schema import DELIVERIES, ActKind, DeliveryKind
from securex.web.context import db, now, state

bp = Blueprint("sve", __name__, template_folder="templates")
bp.csrf_exempt = True  # type: ignore[attr-defined]  # see the module's docstring

log = logging.getLogger("securex.comedec.public")

# The kinds the public may ask for here (an enfant sans vie's act is asked at the mairie).
KINDS = (ActKind.NAISSANCE, ActKind.MARIAGE, ActKind.DECES, ActKind.RECONNAISSANCE)
KIND_PATH = "<any(naissance, mariage, deces, reconnaissance):act_kind>"
DELIVERY_PATH = (
    "<any(copie_integrale, extrait_avec_filiation, extrait_sans_filiation, "
    "extrait_plurilingue):delivery>"
)
CAPACITIES = [c for c in CAPACITY_LABELS if c in CLIENT_CAPACITIES["guichet"]]
MAGIC = (b"%PDF-", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # PDF, JPEG, PNG


def _policy() -> service.CounterPolicy:
    return service.CounterPolicy.from_settings(state().settings)


# --- the question against automated floods ---------------------------------------------

NUMBERS = [
    "zéro",
    "un",
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "neuf",
    "dix",
    "onze",
    "douze",
    "treize",
    "quatorze",
    "quinze",
    "seize",
    "dix-sept",
    "dix-huit",
    "dix-neuf",
    "vingt",
]
CHALLENGE_PURPOSE = "sve-challenge"


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return re.sub(r"[\s-]+", "-", "".join(c for c in decomposed if not unicodedata.combining(c)))


_WORDS = {_fold(word): n for n, word in enumerate(NUMBERS)}


def _number(answer: str) -> int | None:
    """The answer, typed in digits ("12") or in words ("douze")."""
    text = answer.strip()
    if text.isascii() and text.isdigit() and len(text) <= 3:
        return int(text)
    return _WORDS.get(_fold(text))


def _mac(key: bytes, *parts: object) -> str:
    message = "|".join(str(p) for p in parts).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _challenge_key() -> bytes:
    return state().vault.keyring.platform_secret(
        db(), CHALLENGE_PURPOSE, now=now(), actor=str(service.PUBLIC)
    )


def new_challenge(scope: str) -> tuple[str, str]:
    """A question and its token: issued time, nonce, a tag proving the token is ours,
    and an HMAC binding the answer (which the page never carries)."""
    a, b = 1 + secrets.randbelow(10), 1 + secrets.randbelow(10)
    issued, nonce = int(now().timestamp()), secrets.token_urlsafe(12)
    key = _challenge_key()
    tag = _mac(key, "token", issued, nonce, scope)
    answer = _mac(key, "answer", issued, nonce, scope, a + b)
    return f"Combien font {NUMBERS[a]} plus {NUMBERS[b]} ?", f"{issued}.{nonce}.{tag}.{answer}"


def challenge_error(token: str, answer: str, scope: str, ttl_seconds: int) -> str | None:
    """None when the answer is right; else what to tell the person. A token is used
    once, right or wrong (one guess per question); it is marked used before the
    answer is checked, in the rate-limit table (under a keyed hash)."""
    retry = "Répondez à la nouvelle question ci-dessous."
    parts = token.split(".")
    if len(parts) != 4 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 12:
        return f"La question anti-robots manque ou est invalide. {retry}"
    issued, nonce, tag, expected = int(parts[0]), parts[1], parts[2], parts[3]
    key = _challenge_key()
    if not hmac.compare_digest(_mac(key, "token", issued, nonce, scope), tag):
        return f"La question anti-robots est invalide. {retry}"
    age = now().timestamp() - issued
    if age > ttl_seconds or age < -60:
        return f"La question a expiré ({ttl_seconds // 60} minutes). {retry}"
    # Keyed by what the tag covers, not by the token's text: "01796…" is the same
    # question as "1796…" and must not earn a second guess.
    used = f"{issued}.{nonce}.{scope}"
    if throttle(
        db(), state().keys, "sve-challenge", used, limit=1, window_seconds=ttl_seconds, now=now()
    ):
        return f"Cette question a déjà servi. {retry}"
    value = _number(answer)
    if value is None or not hmac.compare_digest(
        _mac(key, "answer", issued, nonce, scope, value), expected
    ):
        return f"Réponse inexacte à la question anti-robots. {retry}"
    return None


# --- forms -----------------------------------------------------------------------------


class ChooseForm(FlaskForm):
    """The first page: sent by GET (a read), so no token either."""

    class Meta:
        csrf = False

    commune = SelectField("Commune qui détient l'acte", validate_choice=False)
    act_kind = SelectField(
        "Type d'acte",
        choices=[SelectChoice("", "Choisissez…"), *[SelectChoice(k.value, k.label) for k in KINDS]],
        validate_choice=False,
    )
    delivery = SelectField(
        "Document demandé",
        choices=[SelectChoice("", "Choisissez…")]
        + [SelectChoice(d.value, d.label) for d in DeliveryKind],
        validate_choice=False,
    )


NAME = [Length(max=200, message="200 caractères au plus.")]
# Labels of the person's four fields by act kind: `date` and `lieu` are the event's
# for a birth or a death, the person's birth for a marriage or a reconnaissance
# (`schema.PersonIn`).
PERSON_LABELS = {
    ActKind.NAISSANCE: (
        "Nom de naissance de la personne",
        "Prénoms de la personne",
        "Date de naissance",
        "Lieu de naissance (commune)",
    ),
    ActKind.DECES: (
        "Nom de la personne décédée",
        "Prénoms de la personne décédée",
        "Date du décès",
        "Lieu du décès (commune)",
    ),
    ActKind.MARIAGE: (
        "Nom de l'un des époux",
        "Prénoms de cet époux",
        "Date de naissance de cet époux",
        "Lieu de naissance de cet époux (commune ou pays)",
    ),
    ActKind.RECONNAISSANCE: (
        "Nom de l'enfant reconnu",
        "Prénoms de l'enfant reconnu",
        "Date de naissance de l'enfant",
        "Lieu de naissance de l'enfant (commune ou pays)",
    ),
}


class RequestForm(FlaskForm):
    class Meta:
        csrf = False

    nom = StringField("Nom", validators=NAME)
    prenoms = StringField("Prénoms", validators=NAME)
    capacity = SelectField(
        "Vous demandez cet acte en qualité de",
        choices=[
            SelectChoice("", "Choisissez…"),
            *[SelectChoice(c.value, c.label) for c in CAPACITIES],
        ],
        validate_choice=False,
    )
    proof = FileField("Justificatif (PDF, JPEG ou PNG)")
    purpose = TextAreaField(
        "Motif de la demande (facultatif)",
        validators=[Optional(), Length(max=1000, message="1 000 caractères au plus.")],
    )
    email = EmailField(
        "Adresse e-mail",
        validators=[
            DataRequired("Indiquez votre adresse e-mail."),
            Length(max=254, message="Adresse trop longue."),
        ],
        render_kw={"autocomplete": "email"},
    )
    email_confirm = EmailField(
        "Adresse e-mail (confirmation)",
        validators=[
            DataRequired("Confirmez votre adresse e-mail."),
            Length(max=254, message="Adresse trop longue."),
        ],
        render_kw={"autocomplete": "email"},
    )
    challenge = HiddenField()
    answer = StringField(
        "Réponse",
        validators=[
            DataRequired("Répondez à la question."),
            Length(max=20, message="Réponse trop longue."),
        ],
        render_kw={"autocomplete": "off", "inputmode": "numeric"},
    )


class PersonEventMixin(FlaskForm):
    """The date and place of the event, for the acts other than a marriage."""

    date = StringField("Date", widget=DateInput(), render_kw={"placeholder": "JJ/MM/AAAA"})
    lieu = StringField("Lieu", validators=NAME)


class ParentsMixin(FlaskForm):
    parent1_nom = StringField("Premier parent : nom", validators=NAME)
    parent1_prenoms = StringField("Premier parent : prénoms", validators=NAME)
    parent2_nom = StringField("Second parent : nom (s'il figure sur l'acte)", validators=NAME)
    parent2_prenoms = StringField("Second parent : prénoms", validators=NAME)


class MarriageMixin(FlaskForm):
    mariage_date = StringField(
        "Date du mariage", widget=DateInput(), render_kw={"placeholder": "JJ/MM/AAAA"}
    )
    mariage_lieu = StringField("Lieu du mariage (commune)", validators=NAME)


def request_form(act_kind: ActKind, delivery: DeliveryKind) -> RequestForm:
    """The form of exactly what art. 29 requires for this act kind and delivery."""
    required = service.required_fields(act_kind, delivery)
    bases: list[type[FlaskForm]] = []
    if "person.date" in required:
        bases.append(PersonEventMixin)
    if "parents" in required:
        bases.append(ParentsMixin)
    if "event.date" in required:
        bases.append(MarriageMixin)
    cls = type("PublicRequestForm", (RequestForm, *bases), {}) if bases else RequestForm
    form: RequestForm = cls()
    nom, prenoms, day, lieu = PERSON_LABELS[act_kind]
    form.nom.label.text, form.prenoms.label.text = nom, prenoms
    if "person.date" in required:
        form.date.label.text, form.lieu.label.text = day, lieu
    return form


# Where the service's field errors go on the page.
FIELD_OF = {
    "person.nom": "nom",
    "person.prenoms": "prenoms",
    "person.date": "date",
    "person.lieu": "lieu",
    "parents": "parent1_nom",
    "event.date": "mariage_date",
    "event.lieu": "mariage_lieu",
    "capacity": "capacity",
}


def _add_error(form: RequestForm, name: str, message: str) -> None:
    field = form._fields.get(name)
    if field is None:
        form.form_errors.append(message)
    else:
        field.errors = [*field.errors, message]


def _text(form: RequestForm, name: str) -> str:
    field = form._fields.get(name)
    return (field.data or "").strip() if field is not None else ""


def _required_text(form: RequestForm, name: str, message: str) -> str:
    value = _text(form, name)
    if not value:
        _add_error(form, name, message)
    return value


def _day(form: RequestForm, name: str, today: date) -> date | None:
    try:
        day = parse_date(_text(form, name))
    except ValueError:
        _add_error(form, name, "Date invalide : indiquez-la au format JJ/MM/AAAA.")
        return None
    if day is None:
        _add_error(form, name, "Indiquez la date : la loi l'exige pour cette demande.")
    elif day > today:
        _add_error(form, name, "Cette date est dans le futur.")
        return None
    return day


def _size(limit: int) -> str:
    return f"{limit / 2**20:g} Mio" if limit >= 2**20 else f"{limit / 2**10:g} Kio"


def _proof(form: RequestForm, limit: int) -> bytes | None:
    """The uploaded proof, in memory (see `securex.web.Request`), if it is a PDF, a
    JPEG or a PNG (by its first bytes, whatever its name says) within the limit."""
    upload = request.files.get("proof")
    if upload is None or not upload.filename:
        return None
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        _add_error(form, "proof", f"Justificatif trop volumineux (au plus {_size(limit)}).")
    elif not any(data.startswith(magic) for magic in MAGIC):
        _add_error(form, "proof", "Le justificatif doit être un fichier PDF, JPEG ou PNG.")
    else:
        return data
    return None


def _body(
    form: RequestForm, insee: str, act_kind: ActKind, delivery: DeliveryKind, today: date
) -> tuple[ActRequestIn | None, str, bytes | None]:
    """The request the form states, its address and proof; None when a field is wrong
    (each error next to its field)."""
    required = service.required_fields(act_kind, delivery)
    missing = "Obligatoire pour cette demande (décret n° 2017-890, art. 29)."
    person: dict[str, Any] = {
        "nom": _required_text(form, "nom", missing),
        "prenoms": _required_text(form, "prenoms", missing),
    }
    if "person.date" in required:
        person["date"] = _day(form, "date", today)
        person["lieu"] = _required_text(form, "lieu", missing)
    parents = []
    if "parents" in required:
        for n in (1, 2):
            nom, prenoms = _text(form, f"parent{n}_nom"), _text(form, f"parent{n}_prenoms")
            if n == 1 or nom or prenoms:
                nom = nom or _required_text(form, f"parent{n}_nom", missing)
                prenoms = prenoms or _required_text(form, f"parent{n}_prenoms", missing)
                parents.append({"nom": nom, "prenoms": prenoms})
    event: dict[str, Any] | None = None
    if "event.date" in required:
        event = {
            "date": _day(form, "mariage_date", today),
            "lieu": _required_text(form, "mariage_lieu", missing),
        }
    capacity = None
    try:
        capacity = Capacity(form.capacity.data or "")
    except ValueError:
        _add_error(form, "capacity", "Choisissez votre qualité.")
    if capacity is not None and capacity not in CAPACITIES:
        _add_error(form, "capacity", "Choisissez votre qualité.")
    email = _text(form, "email")
    if email and not valid_address(email):
        _add_error(form, "email", "Adresse e-mail invalide.")
    elif email and email.lower() != _text(form, "email_confirm").lower():
        _add_error(form, "email_confirm", "Les deux adresses e-mail ne sont pas identiques.")
    proof = _proof(form, _policy().max_proof_bytes)
    if capacity is not None and proof is None and not form.proof.errors:
        declared = event["date"] if event else person.get("date")
        if service.needs_proof(act_kind, delivery, capacity, declared=declared, today=today):
            _add_error(
                form,
                "proof",
                "Joignez un justificatif de votre qualité (livret de famille, acte prouvant "
                "le lien, mandat…) : la loi l'exige pour ce document.",
            )
    if form.errors or form.form_errors:
        return None, email, proof
    try:
        body = ActRequestIn.model_validate(
            {
                "commune": insee,
                "act_kind": act_kind.value,
                "delivery": delivery.value,
                "capacity": capacity,
                "person": person,
                "parents": parents,
                "event": event,
                "purpose": _text(form, "purpose") or None,
            }
        )
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            path = ".".join(str(p) for p in err["loc"])
            _add_error(form, FIELD_OF.get(path, ""), f"Valeur invalide ({err['msg']}).")
        return None, email, proof
    return body, email, proof


# --- pages -----------------------------------------------------------------------------


@bp.get("/demande-acte")
def choose() -> Any:
    """Choose the commune, the act and the document; then the form of what it needs."""
    tenants = list_tenants(db())
    form = ChooseForm(request.args)
    form.commune.choices = [
        SelectChoice("", "Choisissez…"),
        *[SelectChoice(t.insee, f"{t.name} ({t.insee})") for t in tenants],
    ]
    if not request.args:
        return render_template("comedec/sve_choose.html", form=form, deliveries=DELIVERIES)
    insee = form.commune.data or ""
    if insee not in {t.insee for t in tenants}:
        form.commune.errors = ["Choisissez la commune."]
    try:
        act_kind = ActKind(form.act_kind.data or "")
        if act_kind not in KINDS:
            raise ValueError
    except ValueError:
        form.act_kind.errors = ["Choisissez le type d'acte."]
        act_kind = None
    try:
        delivery = DeliveryKind(form.delivery.data or "")
    except ValueError:
        form.delivery.errors = ["Choisissez le document demandé."]
        delivery = None
    if act_kind and delivery and delivery not in DELIVERIES[act_kind]:
        form.delivery.errors = [
            f"Un {act_kind.label.lower()} ne se délivre pas en « {delivery.label.lower()} » : "
            f"choisissez {', '.join(d.label.lower() for d in DELIVERIES[act_kind])}."
        ]
    if form.commune.errors or form.act_kind.errors or form.delivery.errors:
        page = render_template("comedec/sve_choose.html", form=form, deliveries=DELIVERIES)
        return page, 422
    assert act_kind is not None and delivery is not None
    return redirect(
        url_for(".new_request", insee=insee, act_kind=act_kind.value, delivery=delivery.value)
    )


def _kind_and_delivery(
    insee: str, act_kind: str, delivery: str
) -> tuple[Any, ActKind, DeliveryKind]:
    kind, doc = ActKind(act_kind), DeliveryKind(delivery)
    if doc not in DELIVERIES[kind]:
        abort(404)
    try:
        tenant = registry.tenant_of(db(), insee)
    except NotFound:
        abort(404)
    return tenant, kind, doc


def _render_form(
    form: RequestForm, tenant: Any, act_kind: ActKind, delivery: DeliveryKind, status: int
) -> tuple[str, int]:
    question, token = new_challenge(f"{tenant.insee}/{act_kind.value}/{delivery.value}")
    form.challenge.data = token
    form.answer.data = ""
    form.answer.label.text = f"{question} (répondez en chiffres)"
    db().commit()  # the challenge key, made at the first visit
    policy = _policy()
    return render_template(
        "comedec/sve_form.html",
        form=form,
        tenant=tenant,
        act_kind=act_kind,
        delivery=delivery,
        required=service.required_fields(act_kind, delivery),
        question=question,
        max_proof=_size(policy.max_proof_bytes),
        challenge_minutes=policy.challenge_minutes,
    ), status


@bp.route(f"/demande-acte/<insee>/{KIND_PATH}/{DELIVERY_PATH}", methods=["GET", "POST"])
def new_request(insee: str, act_kind: str, delivery: str) -> Any:
    tenant, kind, doc = _kind_and_delivery(insee, act_kind, delivery)
    policy = _policy()
    if request.method == "GET":
        return _render_form(request_form(kind, doc), tenant, kind, doc, 200)
    st = state()
    wait = throttle(
        db(),
        st.keys,
        "sve",
        request.remote_addr or "",
        limit=policy.submissions_per_address,
        window_seconds=policy.window_seconds,
        now=now(),
    )
    db().commit()  # the count stays whatever follows (a body too large included)
    if wait:
        raise RateLimited(
            f"Trop de demandes envoyées depuis votre adresse : réessayez dans {wait // 60 + 1} min."
        )
    # Before the form reads the body: the proof and the fields, not the API's limit.
    request.max_content_length = policy.max_proof_bytes + 2**20
    form = request_form(kind, doc)
    form.validate()
    scope = f"{tenant.insee}/{kind.value}/{doc.value}"
    problem = challenge_error(
        form.challenge.data or "", form.answer.data or "", scope, policy.challenge_minutes * 60
    )
    if problem:
        form.answer.errors = [*form.answer.errors, problem]
    today = registry.paris_date(now())
    body, email, proof = _body(form, tenant.insee, kind, doc, today)
    db().commit()  # the challenge is used, right or wrong
    if body is None or problem:
        form.form_errors.append("La demande n'est pas envoyée : corrigez les champs signalés.")
        return _render_form(form, tenant, kind, doc, 422)
    try:
        filed, address = service.submit_public(
            db(), body=body, email=email, proof=proof, now=now(), vault=st.vault
        )
    except ValidationFailed as exc:
        db().rollback()
        for err in exc.extra.get("errors", []):
            _add_error(form, FIELD_OF.get(err.get("field", ""), ""), err.get("message", ""))
        form.form_errors.append(exc.detail)
        return _render_form(form, tenant, kind, doc, 422)
    db().commit()  # registered before anything is sent (R112-11-2: at once)
    mailed = _send(
        address,
        f"Accusé de réception de votre demande n° {filed.view.id} — {filed.commune_name}",
        "comedec/mail/sve_ack",
        filed,
    )
    log.info("sve request %s registered (acknowledgement mailed: %s)", filed.view.id, mailed)
    return render_template("comedec/sve_ack.html", mailed=mailed, **_follow(filed))


def next_steps(filed: service.PublicRequest) -> list[str]:
    """What happens next, in plain sentences (the page and both parts of the e-mail)."""
    view = filed.view
    due = view.due_on.strftime("%d/%m/%Y")
    later = (
        "Quand la copie sera délivrée, vous la téléchargerez depuis la page de suivi, avec un "
        "code envoyé à l'adresse e-mail de votre demande."
    )
    if view.status is RequestStatus.REFUSED:
        return [
            f"Votre demande est refusée : {view.reason}",
            f"Fondement juridique : {view.legal_basis}.",
            "Pour toute question, contactez le service indiqué ci-dessus.",
        ]
    if view.status is RequestStatus.NOT_FOUND:
        return [
            "Aucun acte ne correspond aux informations de votre demande dans les registres de "
            "la commune. Vérifiez-les et déposez une nouvelle demande, ou contactez le service.",
        ]
    if view.status is RequestStatus.ISSUED:
        return [
            "Votre copie est délivrée, signée électroniquement par la commune. Pour la "
            "télécharger, demandez un code sur la page de suivi : il est envoyé à l'adresse "
            "e-mail de votre demande.",
        ]
    if view.status is RequestStatus.RECEIVED:
        return [
            "Votre demande est acceptée : la copie est en cours d'établissement et de signature.",
            later,
        ]
    return [view.reason, f"Le service traite votre demande au plus tard le {due}.", later]


def _follow(filed: service.PublicRequest) -> dict[str, Any]:
    path = url_for(".follow", token=filed.link)
    view = filed.view
    return {
        "filed": filed,
        "document": f"{DeliveryKind(view.delivery).label} — {ActKind(view.act_kind).label.lower()}",
        "steps": next_steps(filed),
        "link_path": path,
        "link_url": str(state().settings["base_url"]).rstrip("/") + path,
    }


_CONTACT_ADDRESS = re.compile(r"[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[A-Za-z]{2,}")


def _send(
    address: str, subject: str, template: str, filed: service.PublicRequest, **extra: Any
) -> bool:
    """E-mail the person; False (and a line naming no one in the log) when it fails:
    the page then says so, and what was registered stays registered."""
    values = {**_follow(filed), **extra}
    contact = _CONTACT_ADDRESS.search(filed.service_contact)
    try:
        mail = MailSettings.from_settings(state().settings, os.environ)
        send(
            mail,
            to=address,
            subject=subject,
            text=render_template(f"{template}.txt", **values),
            html=render_template(f"{template}.html", **values),
            reply_to=contact.group(0) if contact and valid_address(contact.group(0)) else None,
            now=now(),
        )
    except (MailError, ConfigError) as exc:
        log.warning("sve request %s: e-mail not sent (%s)", filed.view.id, type(exc).__name__)
        return False
    return True


# --- follow-up and download ---------------------------------------------------------------


def _status_page(
    filed: service.PublicRequest,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    code_sent: bool = False,
) -> tuple[str, int]:
    return render_template(
        "comedec/sve_status.html",
        notice=notice,
        error=error,
        code_sent=code_sent,
        **_follow(filed),
    ), status


@bp.get("/demande-acte/suivi/<token>")
def follow(token: str) -> Any:
    """A read only: opening the link (a mail scanner does, before the person) changes
    nothing, not even a counter."""
    filed = service.public_status(db(), token, now=now(), vault=state().vault)
    return _status_page(filed)


@bp.post("/demande-acte/suivi/<token>/code")
def send_code(token: str) -> Any:
    st = state()
    try:
        filed, code, address = service.new_download_code(
            db(), st.keys, token, now=now(), vault=st.vault, policy=_policy()
        )
    except (RateLimited, Conflict) as exc:
        db().commit()  # the count of codes sent
        filed = service.public_status(db(), token, now=now(), vault=st.vault)
        return _status_page(filed, status=exc.status, error=exc.detail)
    db().commit()  # the code is valid before it leaves
    policy = _policy()
    mailed = _send(
        address,
        f"Code de téléchargement de votre copie — demande n° {filed.view.id}",
        "comedec/mail/sve_code",
        filed,
        code=code,
        minutes=policy.code_minutes,
    )
    if not mailed:
        return _status_page(
            filed,
            status=503,
            error="Le code n'a pas pu vous être envoyé par e-mail. Réessayez plus tard, ou "
            "contactez le service d'état civil.",
        )
    return _status_page(
        filed,
        code_sent=True,
        notice=f"Un code vient d'être envoyé à l'adresse e-mail de votre demande. Il est "
        f"valable {policy.code_minutes} minutes.",
    )


@bp.post("/demande-acte/suivi/<token>/copie")
def download(token: str) -> Any:
    st = state()
    code = (request.form.get("code") or "")[:20]
    try:
        data, name = service.public_document(
            db(), token, code, now=now(), vault=st.vault, policy=_policy()
        )
    except (ValidationFailed, RateLimited, Conflict) as exc:
        db().commit()  # the wrong entry counts
        filed = service.public_status(db(), token, now=now(), vault=st.vault)
        return _status_page(filed, status=exc.status, error=exc.detail)
    except SecurexError:
        db().rollback()
        raise
    db().commit()
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
