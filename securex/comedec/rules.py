"""Who may obtain what: the entitlement rules of décret n° 2017-890 art. 30 and of the
Code du patrimoine L213-2, as data, each outcome with the article it rests on.

Pure functions of their inputs, time included: nothing here reads a clock, a
database or a request. The table is the domain page's (`domain-etat-civil.md`,
"Who may obtain what"); every cell has a test in `tests/test_comedec_rules.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from securex.registry.schema import DELIVERIES, ActKind, DeliveryKind

ART_30 = "Décret n° 2017-890 du 6 mai 2017, art. 30"
ART_30_EXTRAIT = "Décret n° 2017-890 du 6 mai 2017, art. 30, al. 2 (extrait sans filiation)"
ART_30_DECES = "Décret n° 2017-890 du 6 mai 2017, art. 30, al. 3 (actes de décès)"
L213_2 = "Code du patrimoine, art. L213-2 (actes de plus de 75 ans)"
ART_39 = "Décret n° 2017-890 du 6 mai 2017, art. 39 (vérification des données)"
ART_40 = "Décret n° 2017-890 du 6 mai 2017, art. 40 (information de la personne)"
ARCHIVES_YEARS = 75


class Capacity(StrEnum):
    TITULAIRE = "titulaire"
    TITULAIRE_MINEUR = "titulaire_mineur"
    ASCENDANT = "ascendant"
    DESCENDANT = "descendant"
    CONJOINT = "conjoint"
    PARTENAIRE_PACS = "partenaire_pacs"
    REPRESENTANT_LEGAL = "representant_legal"
    MANDATAIRE = "mandataire"
    HERITIER = "heritier"
    AVOCAT = "avocat"
    GENEALOGISTE = "genealogiste"
    NOTAIRE = "notaire"
    PROCUREUR = "procureur"
    OFFICIER_ETAT_CIVIL = "officier_etat_civil"
    AUTORITE_NATIONALITE = "autorite_nationalite"
    ADMINISTRATION = "administration"
    TIERS = "tiers"

    @property
    def label(self) -> str:
        return CAPACITY_LABELS[self]


CAPACITY_LABELS = {
    Capacity.TITULAIRE: "La personne concernée (majeure ou émancipée)",
    Capacity.TITULAIRE_MINEUR: "La personne concernée, mineure non émancipée",
    Capacity.ASCENDANT: "Un ascendant (parent, grand-parent)",
    Capacity.DESCENDANT: "Un descendant (enfant, petit-enfant)",
    Capacity.CONJOINT: "Le conjoint ou la conjointe",
    Capacity.PARTENAIRE_PACS: "Le ou la partenaire de PACS",
    Capacity.REPRESENTANT_LEGAL: "Le représentant légal",
    Capacity.MANDATAIRE: "Un mandataire (mandat écrit, habilitation familiale)",
    Capacity.HERITIER: "Un héritier",
    Capacity.AVOCAT: "L'avocat de la personne",
    Capacity.GENEALOGISTE: "Un généalogiste",
    Capacity.NOTAIRE: "Un notaire",
    Capacity.PROCUREUR: "Le procureur de la République",
    Capacity.OFFICIER_ETAT_CIVIL: "Un officier de l'état civil",
    Capacity.AUTORITE_NATIONALITE: "Une autorité chargée de la nationalité",
    Capacity.ADMINISTRATION: "Une administration",
    Capacity.TIERS: "Une autre personne",
}


class Outcome(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    # Allowed by the law once a justification is checked: an agent decides.
    REVIEW = "review"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    legal_basis: str
    reason: str  # French, for the requester and the agent


# The capacities an API client of each category may claim: a notary's software acts
# as a notary, an administration as an administration, another mairie as an officier
# de l'état civil; the commune's online counter files for citizens, with the capacity
# they declare (checked against their proof by an agent when the law asks for one).
CLIENT_CAPACITIES: dict[str, frozenset[Capacity]] = {
    "notaire": frozenset({Capacity.NOTAIRE}),
    "administration": frozenset({Capacity.ADMINISTRATION}),
    "mairie": frozenset({Capacity.OFFICIER_ETAT_CIVIL}),
    "guichet": frozenset(
        {
            Capacity.TITULAIRE,
            Capacity.TITULAIRE_MINEUR,
            Capacity.ASCENDANT,
            Capacity.DESCENDANT,
            Capacity.CONJOINT,
            Capacity.PARTENAIRE_PACS,
            Capacity.REPRESENTANT_LEGAL,
            Capacity.MANDATAIRE,
            Capacity.HERITIER,
            Capacity.AVOCAT,
            Capacity.GENEALOGISTE,
            Capacity.TIERS,
        }
    ),
}

# Art. 39: who may ask for a verification of civil-status data. Client categories.
VERIFIERS = frozenset({"notaire", "administration", "mairie"})

_ALWAYS = frozenset(
    {
        Capacity.TITULAIRE,
        Capacity.NOTAIRE,
        Capacity.PROCUREUR,
        Capacity.OFFICIER_ETAT_CIVIL,
        Capacity.AUTORITE_NATIONALITE,
    }
)
# Allowed once the proof of the link (or the mandate, the client's rights, the archives
# authorisation) is checked.
_WITH_PROOF = frozenset(
    {
        Capacity.ASCENDANT,
        Capacity.DESCENDANT,
        Capacity.CONJOINT,
        Capacity.PARTENAIRE_PACS,
        Capacity.REPRESENTANT_LEGAL,
        Capacity.MANDATAIRE,
        Capacity.AVOCAT,
        Capacity.GENEALOGISTE,
    }
)
PROOF_REASONS = {
    Capacity.ASCENDANT: "sur justification du lien de parenté",
    Capacity.DESCENDANT: "sur justification du lien de parenté",
    Capacity.CONJOINT: "sur justification du mariage",
    Capacity.PARTENAIRE_PACS: "sur justification du PACS",
    Capacity.REPRESENTANT_LEGAL: "sur justification de la représentation légale",
    Capacity.MANDATAIRE: "sur présentation du mandat, dans la limite des droits du mandant",
    Capacity.AVOCAT: "dans la limite de ce que son client peut obtenir",
    Capacity.GENEALOGISTE: "avec une autorisation des archives et un mandat",
}


def public_archive(act_year: int, today: date) -> bool:
    """Acts are public 75 years after their register closed, at the end of the act's
    year; later mentions do not move that date (Code du patrimoine L213-2)."""
    return today >= date(act_year + ARCHIVES_YEARS, 12, 31)


def deliverable(act_kind: ActKind, delivery: DeliveryKind) -> bool:
    return delivery in DELIVERIES[act_kind]


def decide(
    act_kind: ActKind,
    delivery: DeliveryKind,
    capacity: Capacity,
    *,
    act_year: int | None,
    today: date,
    justified: bool,
    legal_reference: bool,
) -> Decision:
    """The decision on a request for `delivery` of an act of `act_kind`. `act_year` is
    the act's year when known (the declared event's year before matching); `justified`
    says a justification came with the request; `legal_reference` that an
    administration named the text that authorises it."""
    if act_year is not None and public_archive(act_year, today):
        return Decision(Outcome.ALLOWED, L213_2, "Acte de plus de 75 ans : communicable à tous.")
    if act_kind in (ActKind.DECES, ActKind.ENFANT_SANS_VIE):
        return Decision(Outcome.ALLOWED, ART_30_DECES, "Acte de décès : délivré à toute personne.")
    if delivery is DeliveryKind.EXTRAIT_SANS_FILIATION:
        return Decision(
            Outcome.ALLOWED, ART_30_EXTRAIT, "Extrait sans filiation : délivré à toute personne."
        )
    # Copie intégrale, extrait avec filiation and extrait plurilingue (which only those
    # entitled to a copie intégrale obtain) of a naissance, mariage or reconnaissance.
    if capacity in _ALWAYS:
        return Decision(Outcome.ALLOWED, ART_30, f"{capacity.label} : droit ouvert.")
    if capacity is Capacity.TITULAIRE_MINEUR:
        return Decision(
            Outcome.REFUSED,
            ART_30,
            "Une personne mineure non émancipée obtient cet acte par son représentant légal.",
        )
    if capacity is Capacity.HERITIER:
        if act_kind is ActKind.RECONNAISSANCE:
            return _with_proof(capacity, justified, "sur justification de la qualité d'héritier")
        return Decision(
            Outcome.REFUSED,
            ART_30,
            "Un héritier n'obtient la copie intégrale que d'un acte de reconnaissance.",
        )
    if capacity is Capacity.ADMINISTRATION:
        if legal_reference:
            return Decision(
                Outcome.ALLOWED, ART_30, "Administration : texte l'autorisant référencé."
            )
        return Decision(
            Outcome.REFUSED,
            ART_30,
            "Une administration doit citer expressément le texte qui l'autorise "
            "(champ legal_reference).",
        )
    if capacity in _WITH_PROOF:
        return _with_proof(capacity, justified, PROOF_REASONS[capacity])
    return Decision(
        Outcome.REFUSED,
        ART_30,
        "Cette personne n'a pas droit à la copie intégrale ni à l'extrait avec filiation ; "
        "seul un extrait sans filiation peut lui être délivré.",
    )


def _with_proof(capacity: Capacity, justified: bool, condition: str) -> Decision:
    if justified:
        return Decision(
            Outcome.REVIEW, ART_30, f"{capacity.label} : droit ouvert {condition} (à vérifier)."
        )
    return Decision(
        Outcome.REVIEW,
        ART_30,
        f"{capacity.label} : droit ouvert {condition} ; justificatif manquant, un agent "
        "examine la demande.",
    )
