"""Forms of the exchange's pages (Flask-WTF). The staff's forms carry a CSRF token; the
recipients' and depositors' forms do not (they have no session: the secret is the link
in the URL, see `securex.exchange.views`).

Limits and rules (days, downloads, addresses) are the service's: a form only turns the
posted text into values, and the service's `ValidationFailed` comes back next to the
field it names (`show_errors`).
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, MultipleFileField
from wtforms import EmailField, IntegerField, RadioField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from securex.errors import SecurexError
from securex.exchange import service
from securex.exchange.models import Verification


class WholeNumber(IntegerField):
    """An integer field whose parse error is a French sentence."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError("Indiquez un nombre entier.") from None


def _number(label: str) -> WholeNumber:
    return WholeNumber(label, validators=[Optional()], render_kw={"inputmode": "numeric", "min": 1})


class SendForm(FlaskForm):
    recipients = TextAreaField(
        "Destinataires",
        validators=[DataRequired("Indiquez au moins un destinataire.")],
        render_kw={"rows": 4, "autocomplete": "off", "spellcheck": "false"},
    )
    subject = StringField(
        "Objet",
        validators=[
            DataRequired("Donnez un objet au pli."),
            Length(max=service.MAX_SUBJECT, message="200 caractères au plus."),
        ],
        render_kw={"maxlength": service.MAX_SUBJECT},
    )
    message = TextAreaField(
        "Message (facultatif)",
        validators=[Length(max=service.MAX_MESSAGE, message="10 000 caractères au plus.")],
        render_kw={"rows": 6},
    )
    expires_in_days = _number("Durée de mise à disposition (jours)")
    download_limit = _number("Téléchargements autorisés par destinataire et par fichier")
    verification = RadioField(
        "Vérification du destinataire externe",
        choices=[SelectChoice(v.value, v.label) for v in Verification],
        default=Verification.EMAIL.value,
        validate_choice=False,  # the service says it in French
    )
    files = MultipleFileField("Fichiers")


class DepositForm(FlaskForm):
    label = StringField(
        "Intitulé",
        validators=[
            DataRequired("Donnez un intitulé au lien de dépôt."),
            Length(max=service.MAX_SUBJECT, message="200 caractères au plus."),
        ],
        render_kw={"maxlength": service.MAX_SUBJECT},
    )
    instructions = TextAreaField(
        "Instructions pour la personne (facultatif)",
        validators=[Length(max=service.MAX_MESSAGE, message="10 000 caractères au plus.")],
        render_kw={"rows": 4},
    )
    email = EmailField(
        "Adresse e-mail de la personne (facultatif)",
        validators=[Length(max=254, message="Adresse trop longue.")],
        render_kw={"autocomplete": "off"},
    )
    days = _number("Durée de validité (jours)")
    uses = _number("Nombre d'utilisations")


class KeyForm(FlaskForm):
    email = EmailField(
        "Adresse e-mail du destinataire",
        validators=[
            DataRequired("Indiquez l'adresse e-mail du destinataire."),
            Length(max=254, message="Adresse trop longue."),
        ],
        render_kw={"autocomplete": "off"},
    )
    key = TextAreaField(
        "Clé publique OpenPGP (texte)",
        render_kw={"rows": 8, "spellcheck": "false", "class": "mono"},
    )
    key_file = FileField("ou fichier de la clé publique (.asc, .gpg)")


class ActionForm(FlaskForm):
    """A button that only needs a CSRF token (revoke, unlock, open as a platform user)."""


# --- the public pages' forms (no session: no CSRF token) ------------------------------------


class ReplyForm(FlaskForm):
    class Meta:
        csrf = False

    message = TextAreaField(
        "Votre message",
        validators=[Length(max=service.MAX_MESSAGE, message="10 000 caractères au plus.")],
        render_kw={"rows": 5},
    )
    files = MultipleFileField("Fichiers à joindre")


class DepositUseForm(FlaskForm):
    class Meta:
        csrf = False

    name = StringField(
        "Votre nom",
        validators=[
            DataRequired("Indiquez votre nom."),
            Length(max=120, message="120 caractères au plus."),
        ],
        render_kw={"autocomplete": "name", "maxlength": 120},
    )
    email = EmailField(
        "Votre adresse e-mail",
        validators=[
            DataRequired("Indiquez votre adresse e-mail."),
            Length(max=254, message="Adresse trop longue."),
        ],
        render_kw={"autocomplete": "email"},
    )
    message = TextAreaField(
        "Message (facultatif)",
        validators=[Length(max=service.MAX_MESSAGE, message="10 000 caractères au plus.")],
        render_kw={"rows": 5},
    )
    files = MultipleFileField("Fichiers")


def show_errors(form: FlaskForm, error: SecurexError) -> None:
    """The service's message next to each field it names, or at the top of the form."""
    named = [
        str(item.get("field", ""))
        for item in error.extra.get("errors", [])
        if str(item.get("field", "")) in form._fields
    ]
    for name in dict.fromkeys(named):
        field = form._fields[name]
        field.errors = [*field.errors, error.detail]
    if not named:
        form.form_errors.append(error.detail)
