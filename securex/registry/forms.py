"""Forms of the registry's pages (Flask-WTF: every POST form carries a CSRF token, except
the public verification page's, which needs no session).

Acts and mentions are not written as one hand-made form per kind: each kind declares
which fields of its pydantic model (`securex.registry.schema`) the page shows, as dotted
paths (`enfant.nom`, `parents.1.prenoms`) with a French label, grouped in fieldsets.
The input type of each field comes from the schema's annotation (a date, an hour, a
choice, a yes/no, a list of lines), and so does whether it is required. Posted values
become the nested dict the service expects (empty -> absent; an entirely empty optional
block, a parent or a witness left blank, is omitted), and the service's field errors
come back next to the inputs they belong to.
"""

from __future__ import annotations

import datetime as dt
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from pydantic import BaseModel
from wtforms import (
    BooleanField,
    Field,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import DateInput, TimeInput

from securex.errors import ValidationFailed
from securex.registry.schema import (
    CONTENT_MODELS,
    DELIVERIES,
    ActKind,
    DeliveryKind,
    MentionFacts,
    MentionKind,
    Sexe,
    mention_allowed,
)

# --- declarations --------------------------------------------------------------------

PERSON = (
    ("nom", "Nom"),
    ("prenoms", "Prénoms"),
    ("sexe", "Sexe"),
    ("date_naissance", "Date de naissance"),
    ("lieu_naissance", "Lieu de naissance"),
    ("profession", "Profession"),
    ("domicile", "Domicile"),
)
EVENT = (("date", "Date"), ("heure", "Heure"), ("lieu", "Lieu (commune, département ou pays)"))
# A newborn's own birth is the act's event; a profession makes no sense there. Its sexe
# is required by a rule of the whole act (Code civil 57), not by the field's type.
NEWBORN = (
    ("nom", "Nom"),
    ("prenoms", "Prénoms"),
    ("sexe", "Sexe (obligatoire)"),
    ("domicile", "Domicile"),
)
CHILD = (("nom", "Nom"), ("prenoms", "Prénoms"), ("sexe", "Sexe"), ("domicile", "Domicile"))
STILLBORN = (("nom", "Nom (facultatif)"), ("prenoms", "Prénoms (facultatifs)"), ("sexe", "Sexe"))
WITNESS = (
    ("nom", "Nom"),
    ("prenoms", "Prénoms"),
    ("date_naissance", "Date de naissance"),
    ("lieu_naissance", "Lieu de naissance"),
    ("profession", "Profession"),
    ("domicile", "Domicile"),
)

# Labels of the values of choice fields (enums and literals of the schema).
CHOICE_LABELS: dict[str, str] = {
    "M": "Masculin",
    "F": "Féminin",
    "epoux": "Époux ou épouse",
    "partenaire_pacs": "Partenaire de PACS",
    "veuf": "Veuf ou veuve",
    "divorce": "Divorcé ou divorcée",
    "0": "Premier époux",
    "1": "Second époux",
}


@dataclass(frozen=True)
class Section:
    """A fieldset: the fields `inputs` (names relative to `prefix`) under `legend`.
    A required section is always sent, so that its missing fields are reported one by
    one; an optional one is left out when all its fields are empty."""

    prefix: str
    legend: str
    inputs: Sequence[tuple[str, str]]
    required: bool = False
    hint: str = ""


def _parents() -> list[Section]:
    hint = "Laissez vide un parent inconnu : il n'est pas mentionné (Code civil 57)."
    return [
        Section(f"parents.{n}", f"Parent {n + 1}", PERSON, hint="" if n else hint) for n in range(2)
    ]


def _spouse(n: int) -> list[Section]:
    base = f"epoux.{n}"
    who = "Premier époux" if n == 0 else "Second époux"
    return [
        Section(base, who, PERSON, required=True),
        *[Section(f"{base}.parents.{p}", f"{who} — parent {p + 1}", PERSON) for p in range(2)],
        Section(
            base,
            f"{who} — unions précédentes",
            (("unions_precedentes", "Unions précédentes (une par ligne)"),),
        ),
    ]


ACT_SECTIONS: dict[ActKind, list[Section]] = {
    ActKind.NAISSANCE: [
        Section("enfant", "Enfant", NEWBORN, required=True),
        Section("naissance", "Naissance", EVENT, required=True),
        *_parents(),
        Section("declarant", "Déclarant (s'il n'est pas l'un des parents)", PERSON),
    ],
    ActKind.MARIAGE: [
        Section("celebration", "Célébration", EVENT, required=True),
        *_spouse(0),
        *_spouse(1),
        *[Section(f"temoins.{n}", f"Témoin {n + 1}", WITNESS) for n in range(4)],
        Section(
            "contrat",
            "Contrat de mariage",
            (
                ("existe", "Un contrat de mariage a été reçu"),
                ("date", "Date du contrat"),
                ("notaire", "Notaire qui l'a reçu"),
            ),
        ),
    ],
    ActKind.DECES: [
        Section("deces", "Décès", EVENT, required=True),
        Section("defunt", "Défunt", PERSON, required=True),
        *_parents(),
        Section("conjoint", "Conjoint ou partenaire de PACS", PERSON),
        Section("", "Lien avec le défunt", (("lien_conjoint", "Lien avec le défunt"),)),
        Section("declarant", "Déclarant", PERSON),
    ],
    ActKind.RECONNAISSANCE: [
        Section("auteur", "Auteur de la reconnaissance", PERSON, required=True),
        Section("enfant", "Enfant reconnu", CHILD, required=True),
        Section(
            "naissance_enfant",
            "Naissance de l'enfant",
            EVENT,
            hint="Laissez vide pour une reconnaissance avant la naissance.",
        ),
    ],
    ActKind.ENFANT_SANS_VIE: [
        Section("accouchement", "Accouchement", EVENT, required=True),
        Section("enfant", "Enfant", STILLBORN),
        *_parents(),
        Section("declarant", "Déclarant", PERSON),
    ],
}

MENTION_SECTIONS: list[Section] = [
    Section(
        "",
        "Texte de la mention",
        (("texte", "Mention telle qu'elle sera portée en marge"),),
        required=True,
    ),
    Section("evenement", "Événement (s'il y a lieu)", EVENT),
    Section(
        "decision",
        "Décision de justice ou administrative (s'il y a lieu)",
        (("nature", "Nature"), ("objet", "Objet"), ("date", "Date"), ("autorite", "Autorité")),
    ),
    Section(
        "conjoint",
        "Autre personne (mariage, PACS)",
        (
            ("nom", "Nom"),
            ("prenoms", "Prénoms"),
            ("date_naissance", "Date de naissance"),
            ("lieu_naissance", "Lieu de naissance"),
        ),
    ),
    Section(
        "",
        "Acte reçu par un notaire",
        (("notaire", "Nom du notaire"), ("crpcen", "Numéro CRPCEN (5 chiffres)")),
    ),
    Section(
        "changements",
        "Identité modifiée (changement de nom, de prénoms, de sexe ou rectification)",
        (("nom", "Nouveau nom"), ("prenoms", "Nouveaux prénoms"), ("sexe", "Nouveau sexe")),
    ),
]
# The marriage act has two subjects: the mention says which one it is about.
MENTION_SUBJECT = Section("", "Époux concerné", (("sujet", "Époux concerné"),))


# --- what the schema says about a field ---------------------------------------------


@dataclass(frozen=True)
class Input:
    """One input: its dotted path in the content, label, widget and choices."""

    path: str
    label: str
    widget: str  # text, textarea, date, time, choice, bool, lines
    required: bool
    choices: tuple[tuple[Any, str], ...] = ()

    @property
    def name(self) -> str:
        return path_to_name(self.path)


def path_to_name(path: str) -> str:
    """`parents.1.nom` -> `parents-1-nom` (an HTML name and id without dots)."""
    return path.replace(".", "-")


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _unannotate(annotation: Any) -> tuple[Any, list[Any]]:
    annotation = _strip_optional(annotation)
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return _strip_optional(base), metadata
    return annotation, []


def _max_length(metadata: Sequence[Any]) -> int | None:
    for item in metadata:
        value = getattr(item, "max_length", None)
        if value is not None:
            return int(value)
    return None


def _widget(annotation: Any, metadata: Sequence[Any]) -> tuple[str, tuple[tuple[Any, str], ...]]:
    base, more = _unannotate(annotation)
    metadata = [*metadata, *more]
    if base is dt.date:
        return "date", ()
    if base is dt.time:
        return "time", ()
    if base is bool:
        return "bool", ()
    if isinstance(base, type) and issubclass(base, Enum):
        return "choice", tuple((m.value, CHOICE_LABELS.get(str(m.value), m.name)) for m in base)
    if get_origin(base) is Literal:
        return "choice", tuple((v, CHOICE_LABELS.get(str(v), str(v))) for v in get_args(base))
    if get_origin(base) is list:
        return "lines", ()
    length = _max_length(metadata)
    return ("textarea" if length and length > 200 else "text"), ()


def _submodel(annotation: Any) -> type[BaseModel] | None:
    base, _ = _unannotate(annotation)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base
    for arg in get_args(base):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _describe(model: type[BaseModel], path: str, label: str) -> Input:
    """What the schema says of `path` in `model` (KeyError when it has no such field:
    the declarations above are checked against the schema when the module loads)."""
    parts = path.split(".")
    current: type[BaseModel] = model
    while parts:
        name, *parts = parts
        info = current.model_fields[name]
        if not parts:
            widget, choices = _widget(info.annotation, info.metadata)
            return Input(path, label, widget, info.is_required(), choices)
        base, _ = _unannotate(info.annotation)
        if get_origin(base) is dict:  # changements: {"nom": …, "prenoms": …, "sexe": …}
            key_type, value_type = get_args(base)
            if parts[0] not in get_args(key_type) or len(parts) != 1:
                raise KeyError(path)
            # The new sexe is free text in the schema; offer the two values it accepts.
            widget, choices = _widget(Sexe if parts[0] == "sexe" else value_type, [])
            return Input(path, label, widget, False, choices)
        if get_origin(base) is list and parts[0].isdigit():
            parts = parts[1:]  # one item of a list: a parent, a witness
        sub = _submodel(info.annotation)
        if sub is None:
            raise KeyError(path)
        current = sub
    raise KeyError(path)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class Layout:
    """The fieldsets of a form and what each input is, derived from a schema model."""

    model: type[BaseModel]
    sections: list[tuple[Section, list[Input]]]
    required_blocks: frozenset[str]

    @property
    def inputs(self) -> list[Input]:
        return [i for _, inputs in self.sections for i in inputs]

    def section_of(self, path: str) -> Section | None:
        for section, _ in self.sections:
            if section.prefix and section.prefix == path:
                return section
        return None


def _layout(model: type[BaseModel], sections: Sequence[Section]) -> Layout:
    built = []
    for section in sections:
        inputs = []
        for name, label in section.inputs:
            item = _describe(model, _join(section.prefix, name), label)
            # A field of an optional block is required only once the block is filled:
            # the label does not say "obligatoire" there.
            if section.prefix and not section.required:
                item = Input(item.path, item.label, item.widget, False, item.choices)
            inputs.append(item)
        built.append((section, inputs))
    required = frozenset(s.prefix for s in sections if s.required and s.prefix)
    return Layout(model, built, required)


@cache
def act_layout(kind: ActKind) -> Layout:
    return _layout(CONTENT_MODELS[kind], ACT_SECTIONS[kind])


@cache
def mention_layout(with_subject: bool) -> Layout:
    sections = [*MENTION_SECTIONS, *([MENTION_SUBJECT] if with_subject else [])]
    return _layout(MentionFacts, sections)


# Fail at import, not in front of a user, when a declaration and the schema drift apart.
for _kind in ActKind:
    act_layout(_kind)
mention_layout(True)


# --- WTForms classes ------------------------------------------------------------------


class SchemaForm(FlaskForm):
    """A form built from a `Layout`; `section_errors` holds errors about a whole block
    (a contract without its date, a missing spouse)."""

    layout: Layout

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section_errors: dict[str, list[str]] = {}
        # Which form block each list item of the content came from (see `to_data`).
        self.remap: dict[str, str] = {}

    def sections(self) -> list[tuple[Section, list[Field], list[str]]]:
        """Each fieldset with its fields and the errors about the whole block (shown on
        the first fieldset of that block)."""
        out: list[tuple[Section, list[Field], list[str]]] = []
        seen: set[str] = set()
        for section, inputs in self.layout.sections:
            errors = [] if section.prefix in seen else self.section_errors.get(section.prefix, [])
            seen.add(section.prefix)
            out.append((section, [self[i.name] for i in inputs], errors))
        return out


def _field(item: Input) -> Field:
    label = f"{item.label} (obligatoire)" if item.required else item.label
    if item.widget == "bool":
        return BooleanField(label)
    if item.widget == "choice":
        choices = [SelectChoice("", "—"), *[SelectChoice(str(v), text) for v, text in item.choices]]
        return SelectField(label, choices=choices, validate_choice=False)
    if item.widget == "date":
        return StringField(label, widget=DateInput(), render_kw={"placeholder": "JJ/MM/AAAA"})
    if item.widget == "time":
        return StringField(label, widget=TimeInput(), render_kw={"placeholder": "HH:MM"})
    if item.widget in ("textarea", "lines"):
        return TextAreaField(label, render_kw={"rows": 3})
    return StringField(label)


def _form_class(name: str, layout: Layout, extra: Mapping[str, Any] | None = None) -> type[Any]:
    attrs: dict[str, Any] = {"layout": layout, **(extra or {})}
    for item in layout.inputs:
        attrs[item.name] = _field(item)
    return type(name, (SchemaForm,), attrs)


@cache
def act_form(kind: ActKind) -> type[Any]:
    return _form_class(f"ActForm_{kind.value}", act_layout(kind))


@cache
def _mention_form(kinds: tuple[MentionKind, ...], with_subject: bool) -> type[Any]:
    kind = SelectField(
        "Nature de la mention (obligatoire)",
        choices=[SelectChoice(k.value, k.label) for k in kinds],
        validate_choice=False,
    )
    return _form_class("MentionForm", mention_layout(with_subject), {"kind": kind})


def mention_form(act_kind: ActKind) -> type[Any]:
    """Only the mentions that go on this kind of act (Code civil 49)."""
    kinds = tuple(k for k in MentionKind if mention_allowed(k, act_kind))
    return _mention_form(kinds, act_kind is ActKind.MARIAGE)


def mention_kinds(act_kind: ActKind) -> list[MentionKind]:
    return [k for k in MentionKind if mention_allowed(k, act_kind)]


# --- posted values -> content, and back ------------------------------------------------

_FRENCH_DATE = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\s*$")


def _value(item: Input, raw: Any) -> Any:
    """One posted value as the schema wants it, or None when empty."""
    if item.widget == "bool":
        return True if raw else None
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    if item.widget == "lines":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines or None
    if item.widget == "date":
        # Browsers without a date picker send what the user typed: JJ/MM/AAAA.
        match = _FRENCH_DATE.match(text)
        if match:
            day, month, year = match.groups()
            return f"{year}-{int(month):02d}-{int(day):02d}"
    if item.widget == "choice":
        for value, _ in item.choices:
            if str(value) == text:
                return value
    return text


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _prune(
    node: Any, form_path: str, content_path: str, layout: Layout, remap: dict[str, str]
) -> Any:
    """None for what is to be left out: empty values and empty optional blocks (a
    required block stays, even empty, so that each of its missing fields is reported).
    {"0": .., "1": ..} becomes a list without holes; `remap` remembers which form block
    each list item came from, to put errors back where they belong."""
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        items: list[Any] = []
        for key in sorted(node, key=int):
            target = _join(content_path, str(len(items)))
            value = _prune(node[key], _join(form_path, key), target, layout, remap)
            if value is not None:
                remap[target] = _join(form_path, key)
                items.append(value)
        return items or None
    out = {}
    for key, value in node.items():
        pruned = _prune(value, _join(form_path, key), _join(content_path, key), layout, remap)
        if pruned is not None:
            out[key] = pruned
    if not out and form_path not in layout.required_blocks:
        return None
    return out


def to_data(form: SchemaForm) -> dict[str, Any]:
    """The nested dict the service validates, from the posted form."""
    layout = form.layout
    flat = {i.path: _value(i, form[i.name].data) for i in layout.inputs}
    remap: dict[str, str] = {}
    data = _prune(_nest(flat), "", "", layout, remap) or {}
    form.remap = remap
    return dict(data)


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(sub, _join(path, str(key)), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for n, sub in enumerate(value):
            _flatten(sub, _join(path, str(n)), out)
    elif isinstance(value, list):
        out[path] = "\n".join(str(v) for v in value)
    else:
        out[path] = value


def form_data(layout: Layout, content: BaseModel) -> dict[str, Any]:
    """Initial values of a form from stored content (editing a draft)."""
    flat: dict[str, Any] = {}
    _flatten(content.model_dump(mode="json", exclude={"kind"}), "", flat)
    data: dict[str, Any] = {}
    for item in layout.inputs:
        value = flat.get(item.path)
        if value is None:
            continue
        data[item.name] = value if item.widget == "bool" else str(value)
    return data


def _shown(item: Input, value: Any) -> str:
    if item.widget == "bool":
        return "Oui" if value else "Non"
    if item.widget == "date":
        return dt.date.fromisoformat(str(value)).strftime("%d/%m/%Y")
    if item.widget == "time":
        return str(value)[:5]
    if item.widget == "choice":
        return next((text for v, text in item.choices if str(v) == str(value)), str(value))
    if item.widget == "lines":
        return "; ".join(str(value).splitlines())
    return str(value)


def content_rows(layout: Layout, content: BaseModel) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the act page shows: each fieldset's legend with the known fields' labels and
    values (the same declaration as the form, so the page and the form never differ)."""
    flat: dict[str, Any] = {}
    _flatten(content.model_dump(mode="json", exclude={"kind"}), "", flat)
    out = []
    for section, inputs in layout.sections:
        rows = [
            (i.label.removesuffix(" (obligatoire)"), _shown(i, flat[i.path]))
            for i in inputs
            if flat.get(i.path) not in (None, "")
        ]
        if rows:
            out.append((section.legend, rows))
    return out


# --- errors from the service -------------------------------------------------------

MESSAGES = {
    "missing": "Ce champ est obligatoire.",
    "string_too_short": "Ce champ est obligatoire.",
    "string_too_long": "Ce texte est trop long.",
    "date_parsing": "Date invalide : indiquez-la au format JJ/MM/AAAA.",
    "date_from_datetime_parsing": "Date invalide : indiquez-la au format JJ/MM/AAAA.",
    "date_from_datetime_inexact": "Date invalide : indiquez-la au format JJ/MM/AAAA.",
    "date_type": "Date invalide : indiquez-la au format JJ/MM/AAAA.",
    "time_parsing": "Heure invalide : indiquez-la au format HH:MM.",
    "time_type": "Heure invalide : indiquez-la au format HH:MM.",
    "enum": "Choisissez une valeur de la liste.",
    "literal_error": "Choisissez une valeur de la liste.",
    "bool_parsing": "Valeur invalide.",
    "string_pattern_mismatch": "Format invalide.",
    "too_long": "Trop d'éléments.",
    "too_short": "Il manque des éléments.",
    "extra_forbidden": "Champ non prévu.",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in MESSAGES:
        return MESSAGES[kind]
    message = str(error.get("message", "Valeur invalide."))
    message = message.removeprefix("Value error, ")
    return message[:1].upper() + message[1:]


def _form_path(path: str, remap: Mapping[str, str]) -> str:
    parts = path.split(".") if path else []
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in remap:
            return ".".join([remap[head], *parts[n:]])
    return path


def show_errors(form: SchemaForm, error: ValidationFailed) -> None:
    """Put the service's field errors next to their inputs (or on their block, or at
    the top of the form when they concern the whole content)."""
    errors = error.extra.get("errors") or []
    names = {i.path: i.name for i in form.layout.inputs}
    remap = form.remap
    if not errors:
        form.form_errors.append(error.detail)
    for item in errors:
        path = _form_path(str(item.get("field", "")), remap)
        message = _message(item)
        if path in names:
            form[names[path]].errors = [*form[names[path]].errors, message]
        elif form.layout.section_of(path) is not None:
            form.section_errors.setdefault(path, []).append(message)
        else:
            form.form_errors.append(message)
    if errors and not form.form_errors:
        form.form_errors.append(f"{error.detail} Corrigez les champs signalés.")


# --- the other forms -----------------------------------------------------------------


class ActionForm(FlaskForm):
    """A button that only needs a CSRF token (present for signature)."""


class SearchForm(FlaskForm):
    """Searching is a read: sent by GET, so it needs no CSRF token."""

    class Meta:
        csrf = False

    nom = StringField("Nom (obligatoire)", validators=[Optional(), Length(max=200)])
    prenoms = StringField("Prénoms (obligatoires)", validators=[Optional(), Length(max=200)])
    date = StringField(
        "Date de l'événement ou de naissance",
        widget=DateInput(),
        render_kw={"placeholder": "JJ/MM/AAAA"},
    )
    lieu = StringField("Lieu de cette date", validators=[Optional(), Length(max=200)])
    type = SelectField(
        "Type d'acte",
        choices=[SelectChoice("", "Tous"), *[SelectChoice(k.value, k.label) for k in ActKind]],
        validate_choice=False,
    )


def parse_date(text: str | None) -> dt.date | None:
    """A date typed JJ/MM/AAAA or sent AAAA-MM-JJ by a date picker (ValueError if not)."""
    text = (text or "").strip()
    if not text:
        return None
    match = _FRENCH_DATE.match(text)
    if match:
        day, month, year = (int(g) for g in match.groups())
        return dt.date(year, month, day)
    return dt.date.fromisoformat(text)


class DeliveryForm(FlaskForm):
    kind = SelectField(
        "Document demandé",
        choices=[SelectChoice(k.value, k.label) for k in DeliveryKind],
        validate_choice=False,
    )
    requester = StringField(
        "Demandeur (nom et qualité)",
        validators=[DataRequired("Indiquez le demandeur."), Length(max=500)],
    )
    purpose = StringField(
        "Motif de la demande",
        validators=[DataRequired("Indiquez le motif."), Length(max=500)],
    )
    all_marriages = BooleanField("Extrait : mentionner toutes les unions (sinon la dernière)")


def delivery_form(act_kind: ActKind) -> DeliveryForm:
    """Only what may be delivered of this kind of act."""
    form = DeliveryForm()
    form.kind.choices = [SelectChoice(k.value, k.label) for k in DELIVERIES[act_kind]]
    return form


class ApplyAvisForm(FlaskForm):
    act = RadioField(
        "Acte sur lequel porter la mention",
        choices=[],
        validate_choice=False,
        validators=[DataRequired("Choisissez l'acte.")],
    )


class RejectAvisForm(FlaskForm):
    reason = StringField(
        "Motif du rejet",
        validators=[DataRequired("Indiquez le motif du rejet."), Length(max=300)],
    )


class BatchForm(FlaskForm):
    code = StringField(
        "Code de votre application d'authentification — un nouveau code, différent de "
        "celui de la connexion",
        validators=[DataRequired("Indiquez le code."), Length(max=10)],
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric", "spellcheck": "false"},
    )


class CodeLookupForm(FlaskForm):
    class Meta:
        csrf = False

    code = StringField(
        "Code de vérification imprimé sur le document",
        validators=[DataRequired("Indiquez le code."), Length(max=40)],
        render_kw={"spellcheck": "false", "autocapitalize": "characters"},
    )


class CompareForm(FlaskForm):
    class Meta:
        csrf = False

    document = FileField(
        "Votre exemplaire (PDF)", validators=[FileRequired("Choisissez un fichier PDF.")]
    )
