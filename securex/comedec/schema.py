"""The shapes of a request for an act and of a verification request, as integrators
send them (`POST /api/v1/act-requests`, `POST /api/v1/verifications`) and as the
public counter builds them. Strict: unknown fields are refused, types not coerced."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from securex.comedec.rules import Capacity

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Insee = Annotated[str, StringConstraints(pattern=r"^(\d{5}|2[AB]\d{3})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _plausible(day: dt.date | None) -> dt.date | None:
    """Acts of the French état civil begin in 1792; nothing is dated after 2200."""
    if day is not None and not 1792 <= day.year <= 2200:
        raise ValueError("date hors des registres (1792 à aujourd'hui)")
    return day


Day = Annotated[dt.date, AfterValidator(_plausible)]


class PersonIn(_Strict):
    """The person the act is about. `date` and `lieu` are the date and place of the
    event for a naissance (birth) or a décès (death); for a mariage or a
    reconnaissance, the person's birth."""

    nom: Name
    prenoms: Name
    sexe: Literal["M", "F"] | None = None
    date: Day | None = None
    lieu: Name | None = None


class NameIn(_Strict):
    nom: Name
    prenoms: Name


class EventIn(_Strict):
    """The marriage's date and place."""

    date: Day
    lieu: Name


ActKindIn = Literal["naissance", "mariage", "deces", "reconnaissance"]
DeliveryIn = Literal[
    "copie_integrale", "extrait_avec_filiation", "extrait_sans_filiation", "extrait_plurilingue"
]


class ActRequestIn(_Strict):
    """Demande d'acte (copie intégrale ou extrait)."""

    commune: Insee = Field(description="Code INSEE de la commune qui détient l'acte.")
    act_kind: ActKindIn
    delivery: DeliveryIn
    capacity: Capacity = Field(description="Qualité du demandeur (décret 2017-890 art. 30).")
    person: PersonIn
    parents: list[NameIn] = Field(default_factory=list, max_length=2)
    spouse: NameIn | None = None
    event: EventIn | None = None
    legal_reference: Note | None = Field(
        default=None, description="Texte qui autorise une administration (obligatoire pour elle)."
    )
    justification: Note | None = Field(
        default=None, description="Justificatif du lien, du mandat, de l'autorisation."
    )
    purpose: Note | None = Field(default=None, description="Motif de la demande.")
    reference: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="Référence propre au demandeur (dossier)."
    )


class VerificationIn(_Strict):
    """Demande de vérification de données d'état civil (décret 2017-890 art. 39)."""

    commune: Insee
    act_kind: ActKindIn
    person: PersonIn
    parents: list[NameIn] = Field(default_factory=list, max_length=2)
    spouse: NameIn | None = None
    event: EventIn | None = None
    legal_reference: Note | None = None
    person_informed: bool = Field(
        description="La personne a été informée de la vérification (art. 40) : doit être vrai."
    )
    reference: Annotated[str, StringConstraints(max_length=100)] | None = None
