"""What a delivered copy or extrait of an act says, and the PDF/A documents built from acts.

This module owns two things, both pure (no database, no Flask):

- the *selection* of what each delivery contains (`delivery_lines`): which fields of an
  act, which mentions marginales, with the subject's identity as it now stands on an
  extrait (domain page, "What each delivery contains" and "Mentions on an extrait");
- the *layout* of every PDF the registry produces: a delivered copy or extrait
  (`render_delivery`), the act as drawn up (`render_act`), one mention marginale
  (`render_mention`) and an avis de mention to another commune (`render_avis`).

Every PDF is PDF/A-2b with DejaVu fonts embedded, A4 portrait, and leaves the rectangle
`SIGNATURE_BOX` of its last page empty: the PAdES module stamps the visible signature
there afterwards.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import Enum
from io import BytesIO
from typing import TypeVar
from zoneinfo import ZoneInfo

import qrcode
from fpdf import FPDF
from fpdf.enums import MethodReturnValue
from fpdf.fonts import FontFace

from securex.errors import ValidationFailed
from securex.fonts import font_path
from securex.registry.schema import (
    CIEC_FORMS,
    DELIVERIES,
    EXTRAIT_MENTIONS,
    ActKind,
    Content,
    Contract,
    Deces,
    DeliveryKind,
    EnfantSansVie,
    Event,
    Mariage,
    MentionFacts,
    MentionKind,
    Naissance,
    Parent,
    Person,
    Reconnaissance,
    Sexe,
    subjects,
)

__all__ = [
    "SIGNATURE_BOX",
    "ActView",
    "Delivery",
    "Issue",
    "MentionView",
    "delivery_lines",
    "render_act",
    "render_avis",
    "render_delivery",
    "render_mention",
]


# --- what the renderers are given ----------------------------------------------------


@dataclass(frozen=True)
class ActView:
    """An act as stored."""

    kind: ActKind
    insee: str
    commune: str
    year: int
    number: int | None  # None while a draft
    drawn_at: datetime | None  # aware UTC; None for a draft
    officer: str | None
    content: Content


@dataclass(frozen=True)
class MentionView:
    """A mention marginale as applied to an act."""

    kind: MentionKind
    facts: MentionFacts
    applied_on: date
    applied_place: str
    officer: str
    struck: bool = False  # a répertoire civil mention struck out (radiée)


@dataclass(frozen=True)
class Issue:
    """Who delivers a copy, and how anyone can check it."""

    delivered_on: date
    officer: str
    quality: str
    verification_code: str
    verify_url: str


@dataclass(frozen=True)
class Delivery:
    """What a delivery prints: labels and values as they appear, and the mention texts.
    `subtitle` names the document in the CIEC languages (plurilingual extraits only)."""

    title: str
    fields: list[tuple[str, str]]
    mentions: list[str]
    subtitle: str = ""


Field = tuple[str, str]
_P = TypeVar("_P", bound=Person)
PARIS = ZoneInfo("Europe/Paris")  # acts state the local time they were drawn up


# --- words ---------------------------------------------------------------------------

# Labels, in French first and then, where the word can appear on a plurilingual extrait,
# in English, German, Spanish and Italian (CIEC convention n° 16 prints each label in the
# languages of the contracting States; these five cover the brief). Words that only ever
# appear on French documents have the French form alone.
_WORDS: dict[str, tuple[str, ...]] = {
    "nom": ("Nom", "Surname", "Name", "Apellidos", "Cognome"),
    "prenoms": ("Prénoms", "Forenames", "Vornamen", "Nombre", "Nome"),
    "sexe": ("Sexe", "Sex", "Geschlecht", "Sexo", "Sesso"),
    "date_naissance": (
        "Date de naissance",
        "Date of birth",
        "Geburtsdatum",
        "Fecha de nacimiento",
        "Data di nascita",
    ),
    "heure_naissance": (
        "Heure de naissance",
        "Time of birth",
        "Geburtszeit",
        "Hora de nacimiento",
        "Ora di nascita",
    ),
    "lieu_naissance": (
        "Lieu de naissance",
        "Place of birth",
        "Geburtsort",
        "Lugar de nacimiento",
        "Luogo di nascita",
    ),
    "date_mariage": (
        "Date du mariage",
        "Date of marriage",
        "Datum der Eheschließung",
        "Fecha del matrimonio",
        "Data del matrimonio",
    ),
    "heure_mariage": ("Heure du mariage",),
    "lieu_mariage": (
        "Lieu du mariage",
        "Place of marriage",
        "Ort der Eheschließung",
        "Lugar del matrimonio",
        "Luogo del matrimonio",
    ),
    "date_deces": (
        "Date du décès",
        "Date of death",
        "Sterbedatum",
        "Fecha de defunción",
        "Data di morte",
    ),
    "heure_deces": ("Heure du décès",),
    "lieu_deces": (
        "Lieu du décès",
        "Place of death",
        "Sterbeort",
        "Lugar de defunción",
        "Luogo di morte",
    ),
    "date_accouchement": ("Date de l'accouchement",),
    "heure_accouchement": ("Heure de l'accouchement",),
    "lieu_accouchement": ("Lieu de l'accouchement",),
    "date_evenement": ("Événement — date",),
    "heure_evenement": ("Événement — heure",),
    "lieu_evenement": ("Événement — lieu",),
    "profession": ("Profession",),
    "domicile": ("Domicile",),
    "pere": ("Père", "Father", "Vater", "Padre", "Padre"),
    "mere": ("Mère", "Mother", "Mutter", "Madre", "Madre"),
    "parent": ("Parent", "Parent", "Elternteil", "Progenitor", "Genitore"),
    "epoux": ("Époux", "Spouse", "Ehegatte", "Cónyuge", "Coniuge"),
    "enfant": ("Enfant",),
    "auteur": ("Auteur de la reconnaissance",),
    "declarant": ("Déclarant",),
    "temoin": ("Témoin",),
    "conjoint": ("Conjoint ou partenaire",),
    "lien": ("Lien",),
    "union_precedente": ("Union précédente",),
    "naissance_enfant": ("Naissance de l'enfant",),
    "contrat": (
        "Contrat de mariage",
        "Marriage contract",
        "Ehevertrag",
        "Capitulaciones matrimoniales",
        "Convenzione matrimoniale",
    ),
    "oui": ("Oui", "Yes", "Ja", "Sí", "Sì"),
    "non": ("Non", "No", "Nein", "No", "No"),
    "dresse": ("Acte dressé le",),
    "officier": ("Officier de l'état civil",),
    "etat": ("État", "State", "Staat", "Estado", "Stato"),
    "service": (
        "Service de l'état civil",
        "Civil registry office",
        "Standesamt",
        "Registro civil",
        "Ufficio dello stato civile",
    ),
    "acte": ("Acte n°", "Record No.", "Eintrag Nr.", "Acta N.", "Atto N."),
    "mentions": ("Mentions marginales", "Annotations", "Randvermerke", "Notas", "Annotazioni"),
    "neant": ("Néant", "None", "Keine", "Ninguna", "Nessuna"),
    "apposee": (
        "Mention apposée le",
        "Entered on",
        "Eingetragen am",
        "Anotada el",
        "Annotata il",
    ),
}
_LANGUAGES = 5

# The extrait mentions in the five languages (plurilingual extraits only carry those).
_MENTION_WORDS: dict[MentionKind, tuple[str, ...]] = {
    MentionKind.MARIAGE: ("Mariage", "Marriage", "Eheschließung", "Matrimonio", "Matrimonio"),
    MentionKind.DIVORCE: ("Divorce", "Divorce", "Scheidung", "Divorcio", "Divorzio"),
    MentionKind.SEPARATION_CORPS: (
        "Séparation de corps",
        "Legal separation",
        "Trennung von Tisch und Bett",
        "Separación judicial",
        "Separazione personale",
    ),
    MentionKind.PACS: (
        "Pacte civil de solidarité",
        "Civil solidarity pact",
        "Ziviler Solidaritätspakt",
        "Pacto civil de solidaridad",
        "Patto civile di solidarietà",
    ),
    MentionKind.PACS_MODIFICATION: (
        "Modification du PACS",
        "Amendment of the PACS",
        "Änderung des PACS",
        "Modificación del PACS",
        "Modifica del PACS",
    ),
    MentionKind.PACS_DISSOLUTION: (
        "Dissolution du PACS",
        "Dissolution of the PACS",
        "Auflösung des PACS",
        "Disolución del PACS",
        "Scioglimento del PACS",
    ),
    MentionKind.DECES: ("Décès", "Death", "Tod", "Defunción", "Morte"),
    MentionKind.REPERTOIRE_CIVIL: (
        "Répertoire civil",
        "Civil directory",
        "Zivilverzeichnis",
        "Repertorio civil",
        "Repertorio civile",
    ),
}

# The CIEC forms' own names, in the five languages.
_CIEC_TITLES: dict[str, tuple[str, ...]] = {
    "A": (
        "Extrait d'acte de naissance",
        "Extract from a birth record",
        "Auszug aus dem Geburtseintrag",
        "Extracto de acta de nacimiento",
        "Estratto dell'atto di nascita",
    ),
    "B": (
        "Extrait d'acte de mariage",
        "Extract from a marriage record",
        "Auszug aus dem Heiratseintrag",
        "Extracto de acta de matrimonio",
        "Estratto dell'atto di matrimonio",
    ),
    "C": (
        "Extrait d'acte de décès",
        "Extract from a death record",
        "Auszug aus dem Sterbeeintrag",
        "Extracto de acta de defunción",
        "Estratto dell'atto di morte",
    ),
}

_LIENS_CONJOINT = {
    "epoux": "époux ou épouse",
    "partenaire_pacs": "partenaire de PACS",
    "veuf": "veuf ou veuve",
    "divorce": "divorcé(e)",
}


@dataclass(frozen=True)
class _Style:
    """How labels, dates and values are written: French, or the plurilingual form
    (labels in five languages, dates "DD MM YYYY", sexe as the code M / F)."""

    plurilingual: bool = False

    def join(self, words: tuple[str, ...], number: int | None = None) -> str:
        if self.plurilingual:
            # A word missing its translations would print French alone on a CIEC form.
            assert len(words) == _LANGUAGES, words
        chosen = words if self.plurilingual else words[:1]
        if number is not None:
            chosen = tuple(f"{word} {number}" for word in chosen)
        return " / ".join(chosen)

    def say(self, key: str, number: int | None = None) -> str:
        return self.join(_WORDS[key], number)

    def date(self, value: date) -> str:
        return f"{value:%d %m %Y}" if self.plurilingual else f"{value:%d/%m/%Y}"

    def hour(self, value: time) -> str:
        # "10 h 30" is the French way; the CIEC forms use numbers only.
        if self.plurilingual:
            return f"{value:%H:%M}"
        return f"{value.hour} h {value.minute:02d}"

    def sexe(self, value: Sexe) -> str:
        if self.plurilingual:
            return value.value
        return "masculin" if value is Sexe.M else "féminin"


_FRENCH = _Style()
_PLURILINGUAL = _Style(plurilingual=True)


def _noun(kind: ActKind) -> str:
    """The act's name in lower case ("acte de naissance"), to follow "d'" in a title."""
    label = kind.label
    return label[0].lower() + label[1:]


def _full_name(person: Person) -> str:
    return f"{person.nom} {person.prenoms}"


# --- fields of an act ----------------------------------------------------------------


class _Scope(Enum):
    """How much of an act a delivery shows."""

    FULL = "full"  # copie intégrale and the act itself
    FILIATION = "filiation"  # extrait avec filiation, extrait plurilingue
    SANS_FILIATION = "sans_filiation"


# Every field of a person an act may name (Code civil 34).
_EVERYTHING = (
    "nom",
    "prenoms",
    "sexe",
    "date_naissance",
    "lieu_naissance",
    "profession",
    "domicile",
)
# The subject of a birth: the birth itself comes from the act's event.
_CHILD = ("nom", "prenoms", "sexe", "profession", "domicile")
_IDENTITY = ("nom", "prenoms")
_IDENTITY_AND_BIRTH = ("nom", "prenoms", "date_naissance", "lieu_naissance")


def _label(role: Sequence[str], word: str) -> str:
    return " — ".join([*role, word])


def _person_value(s: _Style, person: Person, key: str) -> str | None:
    if key == "sexe":
        return s.sexe(person.sexe) if person.sexe else None
    if key == "date_naissance":
        return s.date(person.date_naissance) if person.date_naissance else None
    value: str | None = getattr(person, key)
    return value


def _person(s: _Style, role: Sequence[str], person: Person, keys: Sequence[str]) -> list[Field]:
    """The rows for the fields `keys` of `person` that are known."""
    rows = []
    for key in keys:
        value = _person_value(s, person, key)
        if value:
            rows.append((_label(role, s.say(key)), value))
    return rows


def _event(
    s: _Style, role: Sequence[str], event: Event, what: str, *, hour: bool = True
) -> list[Field]:
    rows = [(_label(role, s.say(f"date_{what}")), s.date(event.date))]
    if hour and event.heure is not None:
        rows.append((_label(role, s.say(f"heure_{what}")), s.hour(event.heure)))
    rows.append((_label(role, s.say(f"lieu_{what}")), event.lieu))
    return rows


def _parent_roles(s: _Style, parents: Sequence[Parent]) -> list[str]:
    """Each parent's role: "Père" / "Mère" when the sexe tells them apart, else
    "Parent 1" / "Parent 2"."""
    keys = ["pere" if p.sexe is Sexe.M else "mere" if p.sexe is Sexe.F else "" for p in parents]
    if "" in keys or len(set(keys)) < len(keys):
        return [s.say("parent", n) for n in range(1, len(parents) + 1)]
    return [s.say(key) for key in keys]


def _parents(
    s: _Style, role: Sequence[str], parents: Sequence[Parent], keys: Sequence[str]
) -> list[Field]:
    rows: list[Field] = []
    for parent_role, parent in zip(_parent_roles(s, parents), parents, strict=True):
        rows += _person(s, [*role, parent_role], parent, keys)
    return rows


def _numbered(s: _Style, word: str, people: Sequence[Person], keys: Sequence[str]) -> list[Field]:
    rows: list[Field] = []
    for n, person in enumerate(people, start=1):
        rows += _person(s, [s.say(word, n)], person, keys)
    return rows


def _contract(s: _Style, contract: Contract) -> str:
    if not contract.existe or contract.date is None or contract.notaire is None:
        return s.say("non")
    return f"{s.say('oui')} — {s.date(contract.date)} — {contract.notaire}"


def _declarant(s: _Style, declarant: Person | None) -> list[Field]:
    return _person(s, [s.say("declarant")], declarant, _EVERYTHING) if declarant else []


def _naissance(c: Naissance, s: _Style, scope: _Scope) -> list[Field]:
    # Code civil 57 for the act; the extraits keep the child's identity and birth and,
    # with filiation, each parent's identity and birth — never anything telling whether
    # the filiation comes from marriage or reconnaissance (domain page).
    full = scope is _Scope.FULL
    rows = _person(s, [], c.enfant, _CHILD if full else ("nom", "prenoms", "sexe"))
    rows += _event(s, [], c.naissance, "naissance")
    if full:
        rows += _parents(s, [], c.parents, _EVERYTHING)
        rows += _declarant(s, c.declarant)
    elif scope is _Scope.FILIATION:
        rows += _parents(s, [], c.parents, _IDENTITY_AND_BIRTH)
    return rows


def _mariage(c: Mariage, s: _Style, scope: _Scope) -> list[Field]:
    # Code civil 76 for the act; the extrait keeps the date and place, the spouses'
    # identity and births, their parents with filiation, and the contract.
    full = scope is _Scope.FULL
    rows = _event(s, [], c.celebration, "mariage", hour=full)
    for n, spouse in enumerate(c.epoux, start=1):
        role = [s.say("epoux", n)]
        rows += _person(s, role, spouse, _EVERYTHING if full else _IDENTITY_AND_BIRTH)
        if full:
            rows += [
                (_label(role, s.say("union_precedente")), u) for u in spouse.unions_precedentes
            ]
            rows += _parents(s, role, spouse.parents, _EVERYTHING)
        elif scope is _Scope.FILIATION:
            rows += _parents(s, role, spouse.parents, _IDENTITY)
    if full:
        rows += _numbered(s, "temoin", c.temoins, _EVERYTHING)
    rows.append((s.say("contrat"), _contract(s, c.contrat)))
    return rows


def _deces(c: Deces, s: _Style, scope: _Scope) -> list[Field]:
    # Code civil 79 for the act; CIEC form C keeps the deceased's identity, death,
    # birth and parents' names.
    if scope is not _Scope.FULL:
        rows = _person(s, [], c.defunt, ("nom", "prenoms", "sexe"))
        rows += _event(s, [], c.deces, "deces", hour=False)
        rows += _person(s, [], c.defunt, ("date_naissance", "lieu_naissance"))
        return rows + _parents(s, [], c.parents, _IDENTITY)
    rows = _person(s, [], c.defunt, _EVERYTHING)
    rows += _event(s, [], c.deces, "deces")
    rows += _parents(s, [], c.parents, _EVERYTHING)
    if c.conjoint:
        role = [s.say("conjoint")]
        rows += _person(s, role, c.conjoint, _EVERYTHING)
        if c.lien_conjoint:
            rows.append((_label(role, s.say("lien")), _LIENS_CONJOINT[c.lien_conjoint]))
    return rows + _declarant(s, c.declarant)


def _reconnaissance(c: Reconnaissance, s: _Style) -> list[Field]:
    # Code civil 62: the author's identity, birth and domicile; the child's birth.
    rows = _person(s, [s.say("auteur")], c.auteur, _EVERYTHING)
    role = [s.say("enfant")]
    rows += _person(s, role, c.enfant, _EVERYTHING)
    if c.naissance_enfant:
        rows += _event(s, role, c.naissance_enfant, "naissance")
    else:
        rows.append((s.say("naissance_enfant"), "à venir (reconnaissance avant la naissance)"))
    return rows


def _enfant_sans_vie(c: EnfantSansVie, s: _Style) -> list[Field]:
    # Code civil 79-1: prénoms and nom of the child are optional.
    rows = _person(s, [s.say("enfant")], c.enfant, _EVERYTHING) if c.enfant else []
    rows += _event(s, [], c.accouchement, "accouchement")
    rows += _parents(s, [], c.parents, _EVERYTHING)
    return rows + _declarant(s, c.declarant)


def _content_rows(content: Content, s: _Style, scope: _Scope) -> list[Field]:
    if isinstance(content, Naissance):
        return _naissance(content, s, scope)
    if isinstance(content, Mariage):
        return _mariage(content, s, scope)
    if isinstance(content, Deces):
        return _deces(content, s, scope)
    if isinstance(content, Reconnaissance):
        return _reconnaissance(content, s)
    return _enfant_sans_vie(content, s)


def _whole_act(act: ActView) -> list[Field]:
    """Every field of the act as drawn up, with when and by whom (Code civil 34)."""
    rows: list[Field] = []
    if act.drawn_at is not None:
        local = act.drawn_at.astimezone(PARIS)
        rows.append(
            (_FRENCH.say("dresse"), f"{_FRENCH.date(local)} à {_FRENCH.hour(local.time())}")
        )
    if act.officer:
        rows.append((_FRENCH.say("officier"), act.officer))
    return rows + _content_rows(act.content, _FRENCH, _Scope.FULL)


# --- mentions ------------------------------------------------------------------------

# Mentions whose `changements` change what an extrait shows of the subject.
_IDENTITY_CHANGES = frozenset(
    {
        MentionKind.CHANGEMENT_NOM,
        MentionKind.CHANGEMENT_PRENOM,
        MentionKind.CHANGEMENT_SEXE,
        MentionKind.RECTIFICATION,
    }
)
# Mentions that end a marriage.
_ENDINGS = frozenset({MentionKind.DIVORCE, MentionKind.SEPARATION_CORPS})


def _chronological(mentions: Sequence[MentionView]) -> list[MentionView]:
    # A stable sort: mentions applied on the same day keep the order they were given in.
    return sorted(mentions, key=lambda m: m.applied_on)


def _extrait_mentions(mentions: Sequence[MentionView], all_marriages: bool) -> list[MentionView]:
    """The mentions an extrait carries (domain page, "Mentions on an extrait"): only
    EXTRAIT_MENTIONS kinds, répertoire civil ones not struck out, and of the marriages
    only the last one unless all are asked for.

    A divorce or séparation de corps ends the marriage mentioned before it. With the last
    marriage only, those applied before the last marriage mention end an earlier union
    and are dropped with it; those applied after it are kept. Without any marriage
    mention (a marriage act, or a marriage never mentioned on this act) every divorce
    and séparation is kept, since nothing ties it to an earlier union."""
    kept = [
        m
        for m in _chronological(mentions)
        if m.kind in EXTRAIT_MENTIONS and not (m.kind is MentionKind.REPERTOIRE_CIVIL and m.struck)
    ]
    marriages = [i for i, m in enumerate(kept) if m.kind is MentionKind.MARIAGE]
    if all_marriages or not marriages:
        return kept
    last = marriages[-1]
    return [
        m
        for i, m in enumerate(kept)
        if not ((m.kind is MentionKind.MARIAGE or m.kind in _ENDINGS) and i < last)
    ]


def _with_changes(person: _P, changes: dict[str, str]) -> _P:
    update: dict[str, object] = dict(changes)
    if "sexe" in changes:
        update["sexe"] = Sexe(changes["sexe"])
    return person.model_copy(update=update)


def _current_identity(content: Content, mentions: Sequence[MentionView]) -> Content:
    """The content as an extrait shows it: the subject's nom, prénoms and sexe after the
    changes and rectifications mentioned (Code civil 60, 61-4, 61-7, 99-1), in order.
    Only naissance, mariage and décès acts have extraits."""
    for mention in _chronological(mentions):
        changes: dict[str, str] = {k: v for k, v in mention.facts.changements.items()}
        if mention.kind not in _IDENTITY_CHANGES or not changes:
            continue
        if isinstance(content, Naissance):
            content = content.model_copy(update={"enfant": _with_changes(content.enfant, changes)})
        elif isinstance(content, Deces):
            content = content.model_copy(update={"defunt": _with_changes(content.defunt, changes)})
        elif isinstance(content, Mariage):
            spouses = list(content.epoux)
            which = mention.facts.sujet or 0
            spouses[which] = _with_changes(spouses[which], changes)
            content = content.model_copy(update={"epoux": spouses})
    return content


def _mention_text(m: MentionView, s: _Style, *, show_struck: bool) -> str:
    if s.plurilingual:
        label = s.join(_MENTION_WORDS[m.kind])
        applied = f"{s.say('apposee')} {s.date(m.applied_on)}, {m.applied_place}, {m.officer}"
    else:
        label = m.kind.label
        applied = f"Mention apposée le {s.date(m.applied_on)} à {m.applied_place} par {m.officer}"
    struck = " (radiée)" if show_struck and m.struck else ""
    return f"{label} : {m.facts.texte} — {applied}{struck}"


# --- deliveries ----------------------------------------------------------------------


def _title(act: ActKind, kind: DeliveryKind) -> str:
    noun = _noun(act)
    if kind is DeliveryKind.COPIE_INTEGRALE:
        return f"Copie intégrale d'{noun}"
    if kind is DeliveryKind.EXTRAIT_PLURILINGUE:
        return f"Extrait plurilingue d'{noun} (formule {CIEC_FORMS[act]})"
    filiation = "avec" if kind is DeliveryKind.EXTRAIT_AVEC_FILIATION else "sans"
    return f"Extrait d'{noun} {filiation} filiation"


def _non_latin(text: str) -> str | None:
    for char in text:
        if char.isalpha() and not unicodedata.name(char, "").startswith("LATIN"):
            return char
    return None


def _check_latin(delivery: Delivery) -> None:
    """CIEC convention n° 16: plurilingual extraits are written in Latin characters
    (accented ones included). French acts are, so anything else is bad data."""
    texts = [delivery.subtitle, *(v for f in delivery.fields for v in f), *delivery.mentions]
    for text in texts:
        char = _non_latin(text)
        if char is not None:
            raise ValidationFailed(
                f"L'extrait plurilingue ne peut contenir que des caractères latins : "
                f"« {char} » dans « {text} »."
            )


def delivery_lines(
    act: ActView,
    mentions: Sequence[MentionView],
    kind: DeliveryKind,
    *,
    all_marriages: bool = False,
) -> Delivery:
    """What a delivery of `kind` of `act` prints; ValidationFailed when that delivery
    does not exist for the act's kind or the act is not signed."""
    if kind not in DELIVERIES[act.kind]:
        allowed = ", ".join(k.label.lower() for k in DELIVERIES[act.kind])
        raise ValidationFailed(
            f"Pas de « {kind.label.lower()} » pour un {_noun(act.kind)} "
            f"(délivrances possibles : {allowed})."
        )
    if act.number is None or act.drawn_at is None:
        raise ValidationFailed("Un projet d'acte non signé ne peut pas être délivré.")
    title = _title(act.kind, kind)
    if kind is DeliveryKind.COPIE_INTEGRALE:
        # The whole act and every mention, verbatim, struck ones marked (domain page).
        return Delivery(
            title,
            _whole_act(act),
            [_mention_text(m, _FRENCH, show_struck=True) for m in _chronological(mentions)],
        )
    content = _current_identity(act.content, mentions)
    selected = _extrait_mentions(mentions, all_marriages)
    if kind is DeliveryKind.EXTRAIT_PLURILINGUE:
        s = _PLURILINGUAL
        form = CIEC_FORMS[act.kind]
        header = [
            (s.say("etat"), "France"),
            (s.say("service"), f"{act.commune} ({act.insee})"),
            (s.say("acte"), f"{act.number} — {act.year}"),
        ]
        delivery = Delivery(
            title,
            header + _content_rows(content, s, _Scope.FILIATION),
            [_mention_text(m, s, show_struck=False) for m in selected],
            subtitle=f"{s.join(_CIEC_TITLES[form])} — CIEC 16 ({form})",
        )
        _check_latin(delivery)
        return delivery
    scope = (
        _Scope.FILIATION if kind is DeliveryKind.EXTRAIT_AVEC_FILIATION else _Scope.SANS_FILIATION
    )
    return Delivery(
        title,
        _content_rows(content, _FRENCH, scope),
        [_mention_text(m, _FRENCH, show_struck=False) for m in selected],
    )


# --- layout --------------------------------------------------------------------------

PAGE_HEIGHT = 841.89  # A4, in points
# Left for the visible PAdES signature on the last page: (x0, y0, x1, y1) in PDF
# coordinates, points from the bottom-left corner.
SIGNATURE_BOX = (330.0, 40.0, 560.0, 120.0)
_BOX_TOP = PAGE_HEIGHT - SIGNATURE_BOX[3]  # the same box, from the top as fpdf2 measures
_BOX_BOTTOM = PAGE_HEIGHT - SIGNATURE_BOX[1]
_LEFT, _RIGHT, _TOP, _BOTTOM = 50.0, 40.0, 40.0, 60.0
_CLOSING_BOTTOM = _BOX_TOP - 8  # the closing text ends just above the signature box
_FAMILY = "DejaVu"
_INK = (25, 55, 140)  # the seal's ink
_SEAL_RADIUS = 37.0
_QR_SIZE = 76.0
_LINE = 12.0


class _Sheet(FPDF):
    """A4 portrait PDF/A-2b page set in points, with a footer naming the document."""

    def __init__(self, footer: str) -> None:
        super().__init__(orientation="P", unit="pt", format="A4", enforce_compliance="PDF/A-2B")
        self.footer_text = footer

    def footer(self) -> None:
        self.set_y(-30)
        self.set_font(_FAMILY, "", 7)
        self.set_text_color(90)
        self.cell(0, 10, f"{self.footer_text} — page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


def _open(*, commune: str, insee: str, title: str, lines: Sequence[str], footer: str) -> _Sheet:
    """A new document with its heading: the Republic, the commune, the title, and the
    lines that identify what it is about."""
    pdf = _Sheet(footer)
    pdf.set_title(title)
    pdf.set_author(commune)
    pdf.set_creator("securex")
    pdf.set_lang("fr-FR")
    # DejaVu only: core fonts are not embedded, which PDF/A forbids.
    pdf.add_font(_FAMILY, "", font_path("DejaVuSans.ttf"))
    pdf.add_font(_FAMILY, "B", font_path("DejaVuSans-Bold.ttf"))
    pdf.set_margins(_LEFT, _TOP, _RIGHT)
    pdf.set_auto_page_break(auto=True, margin=_BOTTOM)
    pdf.add_page()
    _text(pdf, "République française", 12, bold=True, align="C")
    _text(pdf, f"Commune de {commune} — code INSEE {insee}", 9, align="C")
    pdf.ln(8)
    _text(pdf, title, 15, bold=True, align="C", height=18)
    for line in lines:
        _text(pdf, line, 10, align="C")
    pdf.ln(4)
    _rule(pdf)
    return pdf


def _text(
    pdf: FPDF,
    text: str,
    size: float = 9.5,
    *,
    bold: bool = False,
    align: str = "L",
    height: float = _LINE,
    color: tuple[int, int, int] = (0, 0, 0),
) -> None:
    pdf.set_font(_FAMILY, "B" if bold else "", size)
    pdf.set_text_color(*color)
    pdf.multi_cell(0, height, text, align=align, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)


def _rule(pdf: FPDF) -> None:
    pdf.set_draw_color(150)
    pdf.set_line_width(0.5)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(8)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(6)
    _text(pdf, text, 11, bold=True, height=16)


def _fields(pdf: FPDF, rows: Sequence[Field], *, label_share: int = 38) -> None:
    """Label / value rows, the labels taking `label_share` % of the width; a long table
    flows onto the next pages."""
    if not rows:
        return
    label_size = 8 if label_share <= 40 else 7
    label_style = FontFace(family=_FAMILY, emphasis="", size_pt=label_size, color=(70, 70, 70))
    value_style = FontFace(family=_FAMILY, emphasis="", size_pt=9.5, color=(0, 0, 0))
    with pdf.table(
        align="LEFT",
        width=pdf.epw,
        col_widths=(label_share, 100 - label_share),
        first_row_as_headings=False,
        borders_layout="NONE",
        cell_fill_color=(243, 243, 243),
        cell_fill_mode="ROWS",
        line_height=11,
        padding=(2, 4),
        text_align="LEFT",
        v_align="MIDDLE",
    ) as table:
        for label, value in rows:
            row = table.row()
            row.cell(label, style=label_style)
            row.cell(value, style=value_style)


def _mentions(pdf: FPDF, heading: str, texts: Sequence[str], empty: str) -> None:
    _heading(pdf, heading)
    if not texts:
        _text(pdf, empty)
    for n, text in enumerate(texts, start=1):
        _text(pdf, f"{n}. {text}", 9)
        pdf.ln(3)


def _wrap(pdf: FPDF, width: float, text: str) -> list[str]:
    """The lines `text` takes in the current font when wrapped to `width`."""
    lines = pdf.multi_cell(width, text=text, dry_run=True, output=MethodReturnValue.LINES)
    assert isinstance(lines, list)  # what output=LINES returns
    return lines


def _close(
    pdf: _Sheet,
    lines: Sequence[tuple[str, bool]],
    graphics: Callable[[FPDF], None] | None = None,
) -> bytes:
    """End the document: `lines` (text, bold) end just above the signature box of the
    last page, `graphics` draw in the strip left of it; a page is added when the body
    leaves no room, so the box stays empty for the signature stamp."""
    width = pdf.w - pdf.l_margin - pdf.r_margin
    height = 0.0
    for text, bold in lines:
        pdf.set_font(_FAMILY, "B" if bold else "", 9)
        height += len(_wrap(pdf, width, text)) * _LINE
    top = _CLOSING_BOTTOM - height
    if pdf.get_y() > top - 14:
        pdf.add_page()
    # From here everything is placed by hand below the usual page break line.
    pdf.set_auto_page_break(auto=False)
    pdf.set_y(top - 10)
    _rule(pdf)
    pdf.set_y(top)
    for text, bold in lines:
        _text(pdf, text, 9, bold=bold)
    if graphics is not None:
        graphics(pdf)
    return bytes(pdf.output())


def _break_name(pdf: FPDF, name: str, width: float) -> list[str]:
    """`name` in lines at most `width` wide in the current font where it can be, broken
    only after a space or a hyphen, as commune names are written."""
    lines: list[str] = []
    for token in re.split(r"(?<=[- ])", name):
        if lines and pdf.get_string_width(lines[-1] + token) <= width:
            lines[-1] += token
        else:
            lines.append(token)
    return [line.strip() for line in lines]


def _seal(pdf: FPDF, commune: str) -> None:
    """The commune's seal (décret 2017-890 art. 27), drawn: two rings and its name."""
    cx, cy, r = pdf.l_margin + _SEAL_RADIUS, _BOX_TOP + 4 + _SEAL_RADIUS, _SEAL_RADIUS
    pdf.set_draw_color(*_INK)
    pdf.set_text_color(*_INK)
    pdf.set_line_width(1.4)
    pdf.circle(cx, cy, r)
    pdf.set_line_width(0.5)
    pdf.circle(cx, cy, r - 4)
    inner = 2 * (r - 8)
    # Long commune names shrink, then take two or three lines, to stay inside the ring.
    for size in (7.0, 6.5, 6.0, 5.5, 5.0, 4.5):
        pdf.set_font(_FAMILY, "B", size)
        name = _break_name(pdf, commune, inner)
        if len(name) <= 2 and all(pdf.get_string_width(line) <= inner for line in name):
            break
    lines = [("Mairie de", "", 6.0), *((line, "B", size) for line in name), ("Cachet", "", 6.0)]
    y = cy - sum(height + 2 for _, _, height in lines) / 2
    for text, style, height in lines:
        pdf.set_font(_FAMILY, style, height)
        pdf.set_xy(cx - r, y)
        pdf.cell(2 * r, height + 2, text, align="C")
        y += height + 2
    pdf.set_text_color(0)
    pdf.set_draw_color(0)


def _qr(pdf: FPDF, url: str) -> None:
    """A QR code to the verification page, with a caption, right of the seal."""
    image = BytesIO()
    qrcode.make(url).save(image)  # a 1-bit PNG: no alpha channel, as PDF/A prefers
    image.seek(0)
    x = pdf.l_margin + 2 * _SEAL_RADIUS + 14
    pdf.image(image, x=x, y=_BOX_TOP + 3, w=_QR_SIZE, h=_QR_SIZE)
    caption_x = x + _QR_SIZE + 6
    pdf.set_xy(caption_x, _BOX_TOP + 20)
    pdf.set_font(_FAMILY, "", 7)
    pdf.multi_cell(
        SIGNATURE_BOX[0] - 8 - caption_x, 9, "Scannez ce code pour vérifier ce document", align="L"
    )


# --- the documents -------------------------------------------------------------------


def _act_heading(act: ActView) -> str:
    return f"Acte n° {act.number} — année {act.year}"


def _footer(act: ActView) -> str:
    number = "projet" if act.number is None else f"n° {act.number}"
    return f"{act.commune} ({act.insee}) — {act.kind.label} {number} — {act.year}"


def render_delivery(
    act: ActView,
    mentions: Sequence[MentionView],
    kind: DeliveryKind,
    issue: Issue,
    *,
    all_marriages: bool = False,
) -> bytes:
    """The delivered copy or extrait as a PDF/A-2b, with the delivery date, the officier
    and the commune's seal (décret 2017-890 art. 27) and a QR code to its verification
    page; the signature box of the last page is left for the officier's stamp."""
    delivery = delivery_lines(act, mentions, kind, all_marriages=all_marriages)
    s = _PLURILINGUAL if kind is DeliveryKind.EXTRAIT_PLURILINGUE else _FRENCH
    lines = [_act_heading(act)]
    if delivery.subtitle:
        lines.insert(0, delivery.subtitle)
    pdf = _open(
        commune=act.commune,
        insee=act.insee,
        title=delivery.title,
        lines=lines,
        footer=_footer(act),
    )
    # Five-language labels need most of the width; their values are short.
    _fields(pdf, delivery.fields, label_share=60 if s.plurilingual else 38)
    _mentions(pdf, s.say("mentions"), delivery.mentions, s.say("neant"))

    def stamp(pdf: FPDF) -> None:
        _seal(pdf, act.commune)
        _qr(pdf, issue.verify_url)

    return _close(
        pdf,
        [
            (f"Délivré le {_FRENCH.date(issue.delivered_on)}", True),
            (f"{issue.officer} — {issue.quality}", False),
            # Décret 2017-890 art. 28: a copy or extrait has no expiry; delivery is free.
            (
                "Document délivré gratuitement — sans date de validité (décret 2017-890 art. 28)",
                False,
            ),
            (f"Code de vérification : {issue.verification_code}", True),
            (f"Vérifiez ce document sur {issue.verify_url}", False),
        ],
        stamp,
    )


def render_act(act: ActView, mentions: Sequence[MentionView]) -> bytes:
    """The act as drawn up, with its mentions: what the officier signs, and its preview.
    A draft says so in red under the title."""
    if act.number is None:
        title, lines = f"{act.kind.label} (projet)", [f"Année {act.year}"]
    else:
        title, lines = f"{act.kind.label} n° {act.number}", [f"Année {act.year}"]
    pdf = _open(commune=act.commune, insee=act.insee, title=title, lines=lines, footer=_footer(act))
    if act.number is None or act.drawn_at is None:
        _text(pdf, "PROJET — non signé", 13, bold=True, align="C", height=18, color=(180, 0, 0))
        pdf.ln(4)
    _fields(pdf, _whole_act(act))
    texts = [_mention_text(m, _FRENCH, show_struck=True) for m in _chronological(mentions)]
    _mentions(pdf, _FRENCH.say("mentions"), texts, _FRENCH.say("neant"))
    if act.drawn_at is None:
        closing = [("Projet soumis à relecture — sans valeur tant qu'il n'est pas signé", True)]
    else:
        signed = act.drawn_at.astimezone(PARIS)
        closing = [(f"Fait à {act.commune}, le {_FRENCH.date(signed)}", False)]
    closing.append((f"L'officier de l'état civil : {act.officer or '—'}", True))
    return _close(pdf, closing)


def _facts_rows(facts: MentionFacts) -> list[Field]:
    """The structured facts of a mention (domain page: the event, or the decision; the
    notary and CRPCEN for an act received by a notaire; the identity changes)."""
    rows: list[Field] = [("Texte de la mention", facts.texte)]
    if facts.evenement:
        rows += _event(_FRENCH, [], facts.evenement, "evenement")
    if facts.decision:
        d = facts.decision
        rows += [("Décision — nature", d.nature)]
        rows += [("Décision — objet", d.objet)] if d.objet else []
        rows += [("Décision — date", _FRENCH.date(d.date)), ("Décision — autorité", d.autorite)]
    if facts.conjoint:
        rows += _person(_FRENCH, [_FRENCH.say("conjoint")], facts.conjoint, _EVERYTHING)
    if facts.notaire and facts.crpcen:
        rows += [("Notaire", facts.notaire), ("Numéro CRPCEN", facts.crpcen)]
    changes: dict[str, str] = {k: v for k, v in facts.changements.items()}
    if "sexe" in changes:
        changes["sexe"] = _FRENCH.sexe(Sexe(changes["sexe"]))
    rows += [(f"Désormais — {_FRENCH.say(key)}", value) for key, value in changes.items()]
    if facts.sujet is not None:
        rows.append(("Époux concerné", _FRENCH.say("epoux", facts.sujet + 1)))
    return rows


def render_mention(act: ActView, mention: MentionView) -> bytes:
    """One mention marginale as its own record, the page the officier signs."""
    number = "projet" if act.number is None else f"n° {act.number}"
    target = f"{act.kind.label} {number} — année {act.year} — {act.commune}"
    pdf = _open(
        commune=act.commune,
        insee=act.insee,
        title=f"Mention marginale : {mention.kind.label}",
        lines=[f"Sur l'{_noun(act.kind)} {number} — année {act.year}"],
        footer=f"{act.commune} ({act.insee}) — mention sur l'{_noun(act.kind)} {number}",
    )
    people = subjects(act.content)
    if isinstance(act.content, Mariage) and mention.facts.sujet is not None:
        people = [act.content.epoux[mention.facts.sujet]]
    rows: list[Field] = [("Acte", target), ("Commune", f"{act.commune} ({act.insee})")]
    rows += [("Nom et prénoms", _full_name(p)) for p in people]
    rows.append(("Nature de la mention", mention.kind.label))
    rows += _facts_rows(mention.facts)
    rows += [
        ("Apposée le", _FRENCH.date(mention.applied_on)),
        ("Lieu", mention.applied_place),
        (_FRENCH.say("officier"), mention.officer),
    ]
    if mention.struck:
        rows.append(("État", "radiée"))
    _fields(pdf, rows)
    return _close(
        pdf,
        [
            (
                f"Mention apposée le {_FRENCH.date(mention.applied_on)} à "
                f"{mention.applied_place} par {mention.officer}",
                False,
            ),
            (f"L'officier de l'état civil : {mention.officer}", True),
        ],
    )


def render_avis(
    *,
    source_commune: str,
    source_insee: str,
    target_commune: str,
    target_act: str,
    subject: str,
    mention_kind: MentionKind,
    facts: MentionFacts,
    sent_on: date,
    officer: str,
    due_on: date,
) -> bytes:
    """The avis de mention a commune sends to the one holding the target act (Code civil
    49), to apply the mention and return an accusé d'exécution."""
    pdf = _open(
        commune=source_commune,
        insee=source_insee,
        title="Avis de mention",
        lines=[f"À l'officier de l'état civil de {target_commune}"],
        footer=f"Avis de mention — {source_commune} → {target_commune}",
    )
    _text(
        pdf,
        f"L'officier de l'état civil de {source_commune} vous prie d'apposer la mention "
        f"ci-dessous en marge de l'acte désigné (Code civil, art. 49).",
    )
    pdf.ln(6)
    rows: list[Field] = [
        ("Commune émettrice", f"{source_commune} ({source_insee})"),
        ("Commune destinataire", target_commune),
        ("Acte à compléter", target_act),
        ("Personne concernée", subject),
        ("Mention à apposer", mention_kind.label),
        *_facts_rows(facts),
        ("Avis envoyé le", _FRENCH.date(sent_on)),
    ]
    _fields(pdf, rows)
    return _close(
        pdf,
        [
            (f"Merci de retourner l'accusé d'exécution avant le {_FRENCH.date(due_on)}", True),
            (f"Fait à {source_commune}, le {_FRENCH.date(sent_on)}", False),
            (f"{officer}, officier de l'état civil", True),
        ],
    )
