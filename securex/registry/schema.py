"""The content of an état-civil act and of a mention marginale, as data.

One pydantic model per act kind carries the fields the Code civil lists for it
(art. 34 for every act, 57 naissance, 62 reconnaissance, 76 mariage, 79 décès,
79-1 enfant sans vie). The content is stored sealed (one JSON document per act) and
rendered by `securex.registry.render`; nothing here touches the database.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class ActKind(StrEnum):
    NAISSANCE = "naissance"
    MARIAGE = "mariage"
    DECES = "deces"
    RECONNAISSANCE = "reconnaissance"
    ENFANT_SANS_VIE = "enfant_sans_vie"

    @property
    def label(self) -> str:
        return ACT_LABELS[self]

    @property
    def register(self) -> str:
        """The register whose yearly series numbers the act: an enfant sans vie is kept
        in the death register (Code civil 79-1)."""
        return ActKind.DECES.value if self is ActKind.ENFANT_SANS_VIE else self.value


ACT_LABELS = {
    ActKind.NAISSANCE: "Acte de naissance",
    ActKind.MARIAGE: "Acte de mariage",
    ActKind.DECES: "Acte de décès",
    ActKind.RECONNAISSANCE: "Acte de reconnaissance",
    ActKind.ENFANT_SANS_VIE: "Acte d'enfant sans vie",
}


class Sexe(StrEnum):
    M = "M"
    F = "F"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Person(_Model):
    """Anyone an act names (Code civil 34: prénoms, noms, profession, domicile). `nom`
    may hold a two-part name ("Dupont Martin"); `prenoms` in civil order."""

    nom: Text
    prenoms: Text
    sexe: Sexe | None = None
    date_naissance: dt.date | None = None
    lieu_naissance: Text | None = None
    profession: Text | None = None
    domicile: Text | None = None


class Parent(Person):
    """A parent named in the act. An unknown parent is simply not listed (art. 57)."""


class Spouse(Person):
    """A spouse at a marriage (art. 76): identity, parents, previous unions."""

    parents: list[Parent] = Field(default_factory=list, max_length=2)
    unions_precedentes: list[Text] = Field(default_factory=list, max_length=10)


class Contract(_Model):
    """Marriage contract (art. 76, 8°): whether there is one, its date and notary."""

    existe: bool = False
    date: dt.date | None = None
    notaire: Text | None = None

    @model_validator(mode="after")
    def _details_need_a_contract(self) -> Contract:
        if self.existe and not (self.date and self.notaire):
            raise ValueError("contrat de mariage : date et notaire obligatoires")
        return self


class Event(_Model):
    """When and where the event happened: the commune (and département or country)."""

    date: dt.date
    heure: dt.time | None = None
    lieu: Text


class Naissance(_Model):
    kind: Literal["naissance"] = "naissance"
    enfant: Person
    naissance: Event
    parents: list[Parent] = Field(default_factory=list, max_length=2)
    declarant: Person | None = None

    @model_validator(mode="after")
    def _child_has_a_sex(self) -> Naissance:
        if self.enfant.sexe is None:
            raise ValueError("naissance : le sexe de l'enfant est obligatoire (art. 57)")
        return self


class Reconnaissance(_Model):
    kind: Literal["reconnaissance"] = "reconnaissance"
    auteur: Person
    enfant: Person
    naissance_enfant: Event | None = None  # None for a reconnaissance before birth

    @model_validator(mode="after")
    def _born_child_has_a_sex(self) -> Reconnaissance:
        if self.naissance_enfant is not None and self.enfant.sexe is None:
            raise ValueError("reconnaissance : le sexe de l'enfant né est obligatoire (art. 62)")
        return self


class Mariage(_Model):
    kind: Literal["mariage"] = "mariage"
    epoux: list[Spouse] = Field(min_length=2, max_length=2)
    celebration: Event
    temoins: list[Person] = Field(default_factory=list, max_length=4)
    contrat: Contract = Field(default_factory=Contract)


class Deces(_Model):
    kind: Literal["deces"] = "deces"
    defunt: Person
    deces: Event
    parents: list[Parent] = Field(default_factory=list, max_length=2)
    conjoint: Person | None = None
    lien_conjoint: Literal["epoux", "partenaire_pacs", "veuf", "divorce"] | None = None
    declarant: Person | None = None


class EnfantSansVie(_Model):
    kind: Literal["enfant_sans_vie"] = "enfant_sans_vie"
    enfant: Person | None = None  # prénoms and nom are optional (art. 79-1)
    accouchement: Event
    parents: list[Parent] = Field(default_factory=list, max_length=2)
    declarant: Person | None = None


Content = Naissance | Reconnaissance | Mariage | Deces | EnfantSansVie
CONTENT_MODELS: dict[ActKind, type[_Model]] = {
    ActKind.NAISSANCE: Naissance,
    ActKind.RECONNAISSANCE: Reconnaissance,
    ActKind.MARIAGE: Mariage,
    ActKind.DECES: Deces,
    ActKind.ENFANT_SANS_VIE: EnfantSansVie,
}


def parse_content(kind: ActKind, data: dict[str, Any]) -> Content:
    """Validate `data` as the content of an act of `kind` (pydantic raises on error)."""
    model = CONTENT_MODELS[kind]
    parsed: Content = model.model_validate({**data, "kind": kind.value})  # type: ignore[assignment]
    return parsed


def main_event(content: Content) -> Event | None:
    """The event the act records."""
    if isinstance(content, Naissance):
        return content.naissance
    if isinstance(content, Mariage):
        return content.celebration
    if isinstance(content, Deces):
        return content.deces
    if isinstance(content, EnfantSansVie):
        return content.accouchement
    return content.naissance_enfant


def subjects(content: Content) -> list[Person]:
    """The persons an act is about (the ones it is searched and requested by)."""
    if isinstance(content, Naissance):
        return [content.enfant]
    if isinstance(content, Mariage):
        return list(content.epoux)
    if isinstance(content, Deces):
        return [content.defunt]
    if isinstance(content, EnfantSansVie):
        return [content.enfant] if content.enfant else []
    return [content.enfant, content.auteur]


# --- mentions marginales -------------------------------------------------------------


class MentionKind(StrEnum):
    MARIAGE = "mariage"
    DIVORCE = "divorce"
    SEPARATION_CORPS = "separation_corps"
    PACS = "pacs"
    PACS_MODIFICATION = "pacs_modification"
    PACS_DISSOLUTION = "pacs_dissolution"
    DECES = "deces"
    CHANGEMENT_NOM = "changement_nom"
    CHANGEMENT_PRENOM = "changement_prenom"
    CHANGEMENT_SEXE = "changement_sexe"
    RECONNAISSANCE = "reconnaissance"
    NATIONALITE = "nationalite"
    REPERTOIRE_CIVIL = "repertoire_civil"
    RECTIFICATION = "rectification"

    @property
    def label(self) -> str:
        return MENTION_LABELS[self]


MENTION_LABELS = {
    MentionKind.MARIAGE: "Mariage",
    MentionKind.DIVORCE: "Divorce",
    MentionKind.SEPARATION_CORPS: "Séparation de corps",
    MentionKind.PACS: "Pacte civil de solidarité",
    MentionKind.PACS_MODIFICATION: "Modification du PACS",
    MentionKind.PACS_DISSOLUTION: "Dissolution du PACS",
    MentionKind.DECES: "Décès",
    MentionKind.CHANGEMENT_NOM: "Changement de nom",
    MentionKind.CHANGEMENT_PRENOM: "Changement de prénom(s)",
    MentionKind.CHANGEMENT_SEXE: "Modification de la mention du sexe",
    MentionKind.RECONNAISSANCE: "Reconnaissance",
    MentionKind.NATIONALITE: "Nationalité",
    MentionKind.REPERTOIRE_CIVIL: "Répertoire civil",
    MentionKind.RECTIFICATION: "Rectification",
}

# Which mention goes on which act (Code civil 49 and the articles each line cites;
# the domain page's table). A rectification goes on the act it rectifies, whatever
# its kind (Code civil 99-1, 100).
MENTION_TARGETS: dict[MentionKind, frozenset[ActKind]] = {
    MentionKind.RECONNAISSANCE: frozenset({ActKind.NAISSANCE}),  # art. 62
    MentionKind.MARIAGE: frozenset({ActKind.NAISSANCE}),  # art. 76 al. 2
    MentionKind.PACS: frozenset({ActKind.NAISSANCE}),  # art. 515-3-1
    MentionKind.PACS_MODIFICATION: frozenset({ActKind.NAISSANCE}),  # art. 515-3-1
    MentionKind.PACS_DISSOLUTION: frozenset({ActKind.NAISSANCE}),  # art. 515-7
    MentionKind.CHANGEMENT_NOM: frozenset({ActKind.NAISSANCE}),  # art. 61-4
    MentionKind.CHANGEMENT_PRENOM: frozenset({ActKind.NAISSANCE}),  # art. 60
    MentionKind.CHANGEMENT_SEXE: frozenset({ActKind.NAISSANCE}),  # art. 61-7
    MentionKind.DECES: frozenset({ActKind.NAISSANCE}),  # art. 79 al. 2
    MentionKind.NATIONALITE: frozenset({ActKind.NAISSANCE}),  # art. 28
    MentionKind.REPERTOIRE_CIVIL: frozenset({ActKind.NAISSANCE}),  # art. 1059 CPC
    MentionKind.DIVORCE: frozenset({ActKind.MARIAGE, ActKind.NAISSANCE}),  # art. 262
    MentionKind.SEPARATION_CORPS: frozenset({ActKind.MARIAGE, ActKind.NAISSANCE}),
    MentionKind.RECTIFICATION: frozenset(ActKind),  # art. 99-1, 100
}

# Mentions an extrait carries (domain page, "Mentions on an extrait"): the marriage
# and what ends it, PACS and its dissolution, death, and répertoire civil decisions
# not struck out. Changes of name, prénoms or sexe and rectifications are not
# listed: the extrait shows the data as they now stand.
EXTRAIT_MENTIONS = frozenset(
    {
        MentionKind.MARIAGE,
        MentionKind.DIVORCE,
        MentionKind.SEPARATION_CORPS,
        MentionKind.PACS,
        MentionKind.PACS_MODIFICATION,
        MentionKind.PACS_DISSOLUTION,
        MentionKind.DECES,
        MentionKind.REPERTOIRE_CIVIL,
    }
)

# Fields a mention may change in what an extrait shows (the subject's current name,
# prénoms and sexe after a change or a rectification), by act kind.
CHANGEABLE_FIELDS = ("nom", "prenoms", "sexe")


class Decision(_Model):
    """A court or administrative decision behind a mention: nature, object, date,
    authority (domain page)."""

    nature: Text
    objet: Text | None = None
    date: dt.date
    autorite: Text


class MentionFacts(_Model):
    """The facts a mention records. `texte` is the mention as written in the margin;
    the structured fields let extraits and avis be derived from it."""

    texte: LongText
    evenement: Event | None = None
    decision: Decision | None = None
    # For a mariage or PACS: the other person.
    conjoint: Person | None = None
    # For an act received by a notaire (e.g. a PACS, a divorce by mutual consent).
    notaire: Text | None = None
    crpcen: Annotated[str, StringConstraints(pattern=r"^\d{5}$")] | None = None
    # Changes to the subject's identity as extraits must now show them.
    changements: dict[Literal["nom", "prenoms", "sexe"], Text] = Field(default_factory=dict)
    # Which subject of a marriage act the mention is about (0 or 1), if it matters.
    sujet: Literal[0, 1] | None = None

    @model_validator(mode="after")
    def _notary_needs_crpcen(self) -> MentionFacts:
        if bool(self.notaire) != bool(self.crpcen):
            raise ValueError("acte notarié : nom du notaire et numéro CRPCEN vont ensemble")
        if self.changements.get("sexe") not in (None, "M", "F"):
            raise ValueError("sexe : M ou F")
        return self


def mention_allowed(mention: MentionKind, act: ActKind) -> bool:
    return act in MENTION_TARGETS[mention]


# --- deliveries ----------------------------------------------------------------------


class DeliveryKind(StrEnum):
    COPIE_INTEGRALE = "copie_integrale"
    EXTRAIT_AVEC_FILIATION = "extrait_avec_filiation"
    EXTRAIT_SANS_FILIATION = "extrait_sans_filiation"
    EXTRAIT_PLURILINGUE = "extrait_plurilingue"

    @property
    def label(self) -> str:
        return DELIVERY_LABELS[self]


DELIVERY_LABELS = {
    DeliveryKind.COPIE_INTEGRALE: "Copie intégrale",
    DeliveryKind.EXTRAIT_AVEC_FILIATION: "Extrait avec filiation",
    DeliveryKind.EXTRAIT_SANS_FILIATION: "Extrait sans filiation",
    DeliveryKind.EXTRAIT_PLURILINGUE: "Extrait plurilingue",
}

# What may be delivered of each act kind. Extraits exist for naissance and mariage
# acts only (décret 2017-890 art. 30 and the domain page's table); the CIEC
# convention n° 16 has forms for birth (A), marriage (B) and death (C).
DELIVERIES: dict[ActKind, tuple[DeliveryKind, ...]] = {
    ActKind.NAISSANCE: tuple(DeliveryKind),
    ActKind.MARIAGE: tuple(DeliveryKind),
    ActKind.DECES: (DeliveryKind.COPIE_INTEGRALE, DeliveryKind.EXTRAIT_PLURILINGUE),
    ActKind.RECONNAISSANCE: (DeliveryKind.COPIE_INTEGRALE,),
    ActKind.ENFANT_SANS_VIE: (DeliveryKind.COPIE_INTEGRALE,),
}
CIEC_FORMS = {ActKind.NAISSANCE: "A", ActKind.MARIAGE: "B", ActKind.DECES: "C"}
