"""The registry renderers: what each delivery selects (fields and mentions), and the
PDF/A documents (fonts embedded, PDF/A identification, texts, an empty signature box)."""

from __future__ import annotations

import io
import subprocess
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pyhanko.pdf_utils.reader import PdfFileReader

from securex.errors import ValidationFailed
from securex.registry.render import (
    SIGNATURE_BOX,
    ActView,
    Delivery,
    Issue,
    MentionView,
    delivery_lines,
    render_act,
    render_avis,
    render_delivery,
    render_mention,
)
from securex.registry.schema import (
    DELIVERIES,
    ActKind,
    Content,
    Contract,
    Deces,
    Decision,
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
    Spouse,
)

COMMUNE, INSEE = "Mont-de-Marsan", "40192"
OFFICER = "Hélène Castaing"

# --- builders ------------------------------------------------------------------------


def mother() -> Parent:
    return Parent(
        nom="Dupont",
        prenoms="Camille Élise",
        sexe=Sexe.F,
        date_naissance=date(1992, 3, 14),
        lieu_naissance="Dax (Landes)",
        profession="infirmière",
        domicile="12 rue Léon Gambetta, 40000 Mont-de-Marsan",
    )


def father() -> Parent:
    return Parent(
        nom="Martin",
        prenoms="Jérôme",
        sexe=Sexe.M,
        date_naissance=date(1990, 7, 5),
        lieu_naissance="Bayonne (Pyrénées-Atlantiques)",
        profession="menuisier",
        domicile="12 rue Léon Gambetta, 40000 Mont-de-Marsan",
    )


def naissance() -> Naissance:
    return Naissance(
        enfant=Person(nom="Dupont Martin", prenoms="Léa Marie Anaïs", sexe=Sexe.F),
        naissance=Event(date=date(2024, 1, 2), heure=time(10, 30), lieu="Mont-de-Marsan (Landes)"),
        parents=[mother(), father()],
        declarant=Person(
            nom="Lefèvre",
            prenoms="Sophie",
            profession="sage-femme",
            domicile="Centre hospitalier Layné, Mont-de-Marsan",
        ),
    )


def mariage() -> Mariage:
    return Mariage(
        epoux=[
            Spouse(
                nom="Dupont Martin",
                prenoms="Léa Marie Anaïs",
                sexe=Sexe.F,
                date_naissance=date(1994, 1, 2),
                lieu_naissance="Mont-de-Marsan (Landes)",
                profession="avocate",
                domicile="4 place Saint-Roch, 40000 Mont-de-Marsan",
                parents=[mother(), father()],
                unions_precedentes=["divorcée de Karim Benali"],
            ),
            Spouse(
                nom="García López",
                prenoms="Mateo",
                sexe=Sexe.M,
                date_naissance=date(1992, 9, 21),
                lieu_naissance="Madrid (Espagne)",
                profession="ingénieur",
                domicile="4 place Saint-Roch, 40000 Mont-de-Marsan",
                parents=[
                    Parent(nom="García", prenoms="Luis", sexe=Sexe.M),
                    Parent(nom="López", prenoms="Carmen", sexe=Sexe.F),
                ],
            ),
        ],
        celebration=Event(date=date(2024, 6, 15), heure=time(11, 0), lieu="Mont-de-Marsan"),
        temoins=[
            Person(nom="Bénard", prenoms="Océane", profession="professeure", domicile="Dax"),
            Person(nom="Ibáñez", prenoms="Álvaro", profession="cuisinier", domicile="Pau"),
        ],
        contrat=Contract(
            existe=True, date=date(2024, 5, 20), notaire="Maître Anne Lefèvre, notaire à Dax"
        ),
    )


def deces() -> Deces:
    return Deces(
        defunt=Person(
            nom="Labarthe",
            prenoms="Pierre Jean",
            sexe=Sexe.M,
            date_naissance=date(1940, 11, 8),
            lieu_naissance="Saint-Sever (Landes)",
            profession="retraité",
            domicile="8 chemin de Thore, 40000 Mont-de-Marsan",
        ),
        deces=Event(date=date(2024, 3, 4), heure=time(6, 40), lieu="Mont-de-Marsan"),
        parents=[
            Parent(nom="Labarthe", prenoms="Joseph", sexe=Sexe.M),
            Parent(nom="Dufau", prenoms="Marie", sexe=Sexe.F),
        ],
        conjoint=Person(nom="Lacoste", prenoms="Yvette"),
        lien_conjoint="veuf",
        declarant=Person(nom="Labarthe", prenoms="Michel", profession="agriculteur"),
    )


def reconnaissance() -> Reconnaissance:
    return Reconnaissance(
        auteur=Person(
            nom="Martin",
            prenoms="Jérôme",
            sexe=Sexe.M,
            date_naissance=date(1990, 7, 5),
            lieu_naissance="Bayonne (Pyrénées-Atlantiques)",
            domicile="12 rue Léon Gambetta, 40000 Mont-de-Marsan",
        ),
        enfant=Person(nom="Dupont", prenoms="Léa Marie Anaïs", sexe=Sexe.F),
        naissance_enfant=Event(date=date(2024, 1, 2), lieu="Mont-de-Marsan (Landes)"),
    )


def enfant_sans_vie() -> EnfantSansVie:
    return EnfantSansVie(
        enfant=Person(nom="Dupont", prenoms="Jules"),
        accouchement=Event(date=date(2024, 2, 9), heure=time(23, 5), lieu="Mont-de-Marsan"),
        parents=[mother()],
        declarant=Person(nom="Martin", prenoms="Jérôme", profession="menuisier"),
    )


BUILDERS: dict[ActKind, Callable[[], Content]] = {
    ActKind.NAISSANCE: naissance,
    ActKind.MARIAGE: mariage,
    ActKind.DECES: deces,
    ActKind.RECONNAISSANCE: reconnaissance,
    ActKind.ENFANT_SANS_VIE: enfant_sans_vie,
}


def act(
    content: Content | None = None, kind: ActKind = ActKind.NAISSANCE, *, number: int | None = 12
) -> ActView:
    return ActView(
        kind=kind,
        insee=INSEE,
        commune=COMMUNE,
        year=2024,
        number=number,
        drawn_at=datetime(2024, 1, 3, 8, 15, tzinfo=UTC) if number else None,
        officer=OFFICER,
        content=content if content is not None else BUILDERS[kind](),
    )


def mention(kind: MentionKind, day: date, texte: str, **facts: Any) -> MentionView:
    struck = facts.pop("struck", False)
    return MentionView(
        kind=kind,
        facts=MentionFacts(texte=texte, **facts),
        applied_on=day,
        applied_place=COMMUNE,
        officer="Marc Dulau",
        struck=struck,
    )


def history() -> list[MentionView]:
    """A life on a birth act, given out of order: the renderers sort by applied_on."""
    m = MentionKind
    return [
        mention(m.DECES, date(2024, 9, 1), "Décédée à Pau le 28 août 2024."),
        mention(m.RECONNAISSANCE, date(2024, 1, 20), "Reconnue par Jérôme Martin."),
        mention(m.MARIAGE, date(2012, 7, 12), "Mariée à Dax avec Karim Benali."),
        mention(m.DIVORCE, date(2015, 4, 2), "Divorcée de Karim Benali."),
        mention(m.PACS, date(2016, 5, 3), "PACS enregistré avec Paul Roux."),
        mention(m.PACS_DISSOLUTION, date(2017, 6, 4), "PACS dissous."),
        mention(
            m.CHANGEMENT_NOM,
            date(2016, 9, 9),
            "Nom changé en Martin.",
            changements={"nom": "Martin"},
        ),
        mention(m.NATIONALITE, date(2017, 1, 5), "Acquisition de la nationalité."),
        mention(m.MARIAGE, date(2018, 8, 18), "Mariée à Mont-de-Marsan avec Mateo García López."),
        mention(
            m.RECTIFICATION,
            date(2019, 2, 2),
            "Prénoms rectifiés.",
            changements={"prenoms": "Léa Marie Anaïse"},
        ),
        mention(m.REPERTOIRE_CIVIL, date(2019, 10, 1), "Tutelle (RC 2019-11).", struck=True),
        mention(m.REPERTOIRE_CIVIL, date(2020, 3, 3), "Curatelle (RC 2020-42)."),
        mention(m.SEPARATION_CORPS, date(2022, 11, 30), "Séparation de corps prononcée."),
    ]


def labels(delivery: Delivery) -> list[str]:
    return [label for label, _ in delivery.fields]


def value(delivery: Delivery, label: str) -> str:
    return dict(delivery.fields)[label]


def everything(delivery: Delivery) -> str:
    return "\n".join(
        [delivery.title, *(f"{k}: {v}" for k, v in delivery.fields), *delivery.mentions]
    )


# --- delivery_lines: which pairs exist -------------------------------------------------

PAIRS = [(a, d) for a in ActKind for d in DeliveryKind]


@pytest.mark.parametrize(("act_kind", "kind"), PAIRS)
def test_every_pair_is_delivered_or_refused(act_kind: ActKind, kind: DeliveryKind) -> None:
    view = act(kind=act_kind)
    if kind in DELIVERIES[act_kind]:
        delivery = delivery_lines(view, history(), kind)
        assert delivery.fields
        assert delivery.title
    else:
        with pytest.raises(ValidationFailed, match="délivrances possibles"):
            delivery_lines(view, [], kind)


def test_a_draft_is_never_delivered() -> None:
    with pytest.raises(ValidationFailed, match="projet"):
        delivery_lines(act(number=None), [], DeliveryKind.EXTRAIT_SANS_FILIATION)


# --- delivery_lines: fields ------------------------------------------------------------


def test_naissance_extrait_avec_filiation() -> None:
    d = delivery_lines(act(), [], DeliveryKind.EXTRAIT_AVEC_FILIATION)
    assert d.title == "Extrait d'acte de naissance avec filiation"
    assert labels(d) == [
        "Nom",
        "Prénoms",
        "Sexe",
        "Date de naissance",
        "Heure de naissance",
        "Lieu de naissance",
        "Mère — Nom",
        "Mère — Prénoms",
        "Mère — Date de naissance",
        "Mère — Lieu de naissance",
        "Père — Nom",
        "Père — Prénoms",
        "Père — Date de naissance",
        "Père — Lieu de naissance",
    ]
    assert value(d, "Nom") == "Dupont Martin"
    assert value(d, "Sexe") == "féminin"
    assert value(d, "Date de naissance") == "02/01/2024"
    assert value(d, "Heure de naissance") == "10 h 30"
    assert value(d, "Père — Lieu de naissance") == "Bayonne (Pyrénées-Atlantiques)"
    assert d.mentions == []


def test_naissance_extrait_avec_filiation_never_tells_how_filiation_was_established() -> None:
    d = delivery_lines(act(), history(), DeliveryKind.EXTRAIT_AVEC_FILIATION)
    text = everything(d).lower()
    for word in ("reconnaissance", "reconnue", "légitime", "naturel", "profession", "domicile"):
        assert word not in text


def test_naissance_extrait_sans_filiation_has_no_parents() -> None:
    d = delivery_lines(act(), [], DeliveryKind.EXTRAIT_SANS_FILIATION)
    assert d.title == "Extrait d'acte de naissance sans filiation"
    assert labels(d) == [
        "Nom",
        "Prénoms",
        "Sexe",
        "Date de naissance",
        "Heure de naissance",
        "Lieu de naissance",
    ]
    text = everything(d)
    for name in ("Camille", "Jérôme", "Mère", "Père"):
        assert name not in text


def test_naissance_copie_integrale_has_the_whole_act() -> None:
    d = delivery_lines(act(), [], DeliveryKind.COPIE_INTEGRALE)
    assert d.title == "Copie intégrale d'acte de naissance"
    person = [
        "Nom",
        "Prénoms",
        "Sexe",
        "Date de naissance",
        "Lieu de naissance",
        "Profession",
        "Domicile",
    ]
    assert labels(d) == [
        "Acte dressé le",
        "Officier de l'état civil",
        "Nom",
        "Prénoms",
        "Sexe",
        "Date de naissance",
        "Heure de naissance",
        "Lieu de naissance",
        *(f"Mère — {x}" for x in person),
        *(f"Père — {x}" for x in person),
        "Déclarant — Nom",
        "Déclarant — Prénoms",
        "Déclarant — Profession",
        "Déclarant — Domicile",
    ]
    assert value(d, "Acte dressé le") == "03/01/2024 à 9 h 15"  # Paris time
    assert value(d, "Officier de l'état civil") == OFFICER
    assert value(d, "Mère — Profession") == "infirmière"
    assert value(d, "Père — Domicile") == "12 rue Léon Gambetta, 40000 Mont-de-Marsan"
    assert value(d, "Déclarant — Nom") == "Lefèvre"
    assert value(d, "Déclarant — Profession") == "sage-femme"


def test_mariage_extraits() -> None:
    avec = delivery_lines(act(kind=ActKind.MARIAGE), [], DeliveryKind.EXTRAIT_AVEC_FILIATION)
    assert avec.title == "Extrait d'acte de mariage avec filiation"
    spouse = ["Nom", "Prénoms", "Date de naissance", "Lieu de naissance"]
    assert labels(avec) == [
        "Date du mariage",
        "Lieu du mariage",
        *(f"Époux 1 — {x}" for x in spouse),
        "Époux 1 — Mère — Nom",
        "Époux 1 — Mère — Prénoms",
        "Époux 1 — Père — Nom",
        "Époux 1 — Père — Prénoms",
        *(f"Époux 2 — {x}" for x in spouse),
        "Époux 2 — Père — Nom",
        "Époux 2 — Père — Prénoms",
        "Époux 2 — Mère — Nom",
        "Époux 2 — Mère — Prénoms",
        "Contrat de mariage",
    ]
    assert value(avec, "Contrat de mariage") == (
        "Oui — 20/05/2024 — Maître Anne Lefèvre, notaire à Dax"
    )
    assert value(avec, "Époux 2 — Nom") == "García López"
    sans = delivery_lines(act(kind=ActKind.MARIAGE), [], DeliveryKind.EXTRAIT_SANS_FILIATION)
    assert labels(sans) == [
        "Date du mariage",
        "Lieu du mariage",
        *(f"Époux 1 — {x}" for x in spouse),
        *(f"Époux 2 — {x}" for x in spouse),
        "Contrat de mariage",
    ]
    assert "Carmen" not in everything(sans)
    for d in (avec, sans):
        assert "Bénard" not in everything(d)  # witnesses are on the copie intégrale only
        assert "divorcée de Karim" not in everything(d)


def test_mariage_without_contract_says_so() -> None:
    content = mariage().model_copy(update={"contrat": Contract()})
    d = delivery_lines(act(content, ActKind.MARIAGE), [], DeliveryKind.EXTRAIT_SANS_FILIATION)
    assert value(d, "Contrat de mariage") == "Non"


def test_mariage_copie_integrale() -> None:
    d = delivery_lines(act(kind=ActKind.MARIAGE), [], DeliveryKind.COPIE_INTEGRALE)
    assert value(d, "Heure du mariage") == "11 h 00"
    assert value(d, "Témoin 1 — Nom") == "Bénard"
    assert value(d, "Témoin 2 — Profession") == "cuisinier"
    assert value(d, "Époux 1 — Union précédente") == "divorcée de Karim Benali"
    assert value(d, "Époux 1 — Mère — Profession") == "infirmière"
    assert value(d, "Époux 2 — Profession") == "ingénieur"


def test_deces_copie_integrale() -> None:
    d = delivery_lines(act(kind=ActKind.DECES), [], DeliveryKind.COPIE_INTEGRALE)
    assert d.title == "Copie intégrale d'acte de décès"
    assert value(d, "Nom") == "Labarthe"
    assert value(d, "Heure du décès") == "6 h 40"
    assert value(d, "Conjoint ou partenaire — Nom") == "Lacoste"
    assert value(d, "Conjoint ou partenaire — Lien") == "veuf ou veuve"
    assert value(d, "Déclarant — Prénoms") == "Michel"
    assert value(d, "Mère — Nom") == "Dufau"


def test_reconnaissance_copie_integrale() -> None:
    d = delivery_lines(act(kind=ActKind.RECONNAISSANCE), [], DeliveryKind.COPIE_INTEGRALE)
    assert d.title == "Copie intégrale d'acte de reconnaissance"
    assert value(d, "Auteur de la reconnaissance — Nom") == "Martin"
    assert value(d, "Auteur de la reconnaissance — Date de naissance") == "05/07/1990"
    assert value(d, "Enfant — Prénoms") == "Léa Marie Anaïs"
    assert value(d, "Enfant — Date de naissance") == "02/01/2024"
    prenatal = reconnaissance().model_copy(update={"naissance_enfant": None})
    d = delivery_lines(act(prenatal, ActKind.RECONNAISSANCE), [], DeliveryKind.COPIE_INTEGRALE)
    assert "avant la naissance" in value(d, "Naissance de l'enfant")


def test_enfant_sans_vie_copie_integrale() -> None:
    d = delivery_lines(act(kind=ActKind.ENFANT_SANS_VIE), [], DeliveryKind.COPIE_INTEGRALE)
    assert d.title == "Copie intégrale d'acte d'enfant sans vie"
    assert value(d, "Enfant — Prénoms") == "Jules"
    assert value(d, "Date de l'accouchement") == "09/02/2024"
    assert value(d, "Heure de l'accouchement") == "23 h 05"
    assert value(d, "Mère — Nom") == "Dupont"
    assert value(d, "Déclarant — Nom") == "Martin"


def test_parents_of_the_same_sexe_are_numbered() -> None:
    content = naissance().model_copy(
        update={"parents": [mother(), mother().model_copy(update={"prenoms": "Inès"})]}
    )
    d = delivery_lines(act(content), [], DeliveryKind.EXTRAIT_AVEC_FILIATION)
    assert value(d, "Parent 1 — Prénoms") == "Camille Élise"
    assert value(d, "Parent 2 — Prénoms") == "Inès"


# --- delivery_lines: mentions ----------------------------------------------------------


def kinds_on(delivery: Delivery) -> list[str]:
    return [text.split(" : ", 1)[0] for text in delivery.mentions]


def test_extrait_keeps_the_last_marriage_and_what_followed_it() -> None:
    d = delivery_lines(act(), history(), DeliveryKind.EXTRAIT_AVEC_FILIATION)
    assert kinds_on(d) == [
        "Pacte civil de solidarité",
        "Dissolution du PACS",
        "Mariage",
        "Répertoire civil",
        "Séparation de corps",
        "Décès",
    ]
    text = everything(d)
    assert "García López" in text
    assert "Karim Benali" not in text  # the first marriage and its divorce
    assert "Tutelle" not in text  # struck out
    assert "Curatelle" in text
    assert "(radiée)" not in text


def test_extrait_with_all_marriages() -> None:
    d = delivery_lines(act(), history(), DeliveryKind.EXTRAIT_SANS_FILIATION, all_marriages=True)
    assert kinds_on(d) == [
        "Mariage",
        "Divorce",
        "Pacte civil de solidarité",
        "Dissolution du PACS",
        "Mariage",
        "Répertoire civil",
        "Séparation de corps",
        "Décès",
    ]


def test_divorce_without_a_marriage_mention_is_kept() -> None:
    # On a marriage act, the divorce is the only mention about the union.
    divorce = mention(MentionKind.DIVORCE, date(2030, 1, 1), "Divorce prononcé.")
    d = delivery_lines(act(kind=ActKind.MARIAGE), [divorce], DeliveryKind.EXTRAIT_AVEC_FILIATION)
    assert kinds_on(d) == ["Divorce"]


def test_extrait_never_carries_other_mentions() -> None:
    for kind in (DeliveryKind.EXTRAIT_AVEC_FILIATION, DeliveryKind.EXTRAIT_SANS_FILIATION):
        text = "\n".join(delivery_lines(act(), history(), kind).mentions)
        for label in ("Reconnaissance", "Changement de nom", "Rectification", "Nationalité"):
            assert label not in text


def test_copie_integrale_carries_every_mention_in_order() -> None:
    d = delivery_lines(act(), history(), DeliveryKind.COPIE_INTEGRALE)
    assert kinds_on(d) == [
        "Mariage",
        "Divorce",
        "Pacte civil de solidarité",
        "Changement de nom",
        "Nationalité",
        "Dissolution du PACS",
        "Mariage",
        "Rectification",
        "Répertoire civil",
        "Répertoire civil",
        "Séparation de corps",
        "Reconnaissance",
        "Décès",
    ]
    assert d.mentions[8] == (
        "Répertoire civil : Tutelle (RC 2019-11). — "
        "Mention apposée le 01/10/2019 à Mont-de-Marsan par Marc Dulau (radiée)"
    )
    assert d.mentions[9].endswith("par Marc Dulau")


def test_identity_changes_apply_on_extraits_only() -> None:
    extrait = delivery_lines(act(), history(), DeliveryKind.EXTRAIT_SANS_FILIATION)
    assert value(extrait, "Nom") == "Martin"
    assert value(extrait, "Prénoms") == "Léa Marie Anaïse"
    copie = delivery_lines(act(), history(), DeliveryKind.COPIE_INTEGRALE)
    assert value(copie, "Nom") == "Dupont Martin"
    assert value(copie, "Prénoms") == "Léa Marie Anaïs"
    assert any("Nom changé en Martin." in text for text in copie.mentions)


def test_identity_changes_follow_applied_order_and_the_named_spouse() -> None:
    changes = [
        mention(MentionKind.CHANGEMENT_SEXE, date(2030, 5, 1), "Sexe.", changements={"sexe": "F"}),
        mention(
            MentionKind.CHANGEMENT_PRENOM,
            date(2030, 5, 1),
            "Prénom.",
            changements={"prenoms": "Mattea"},
            sujet=1,
        ),
        mention(
            MentionKind.CHANGEMENT_PRENOM, date(2029, 1, 1), "Prénom.", changements={"prenoms": "X"}
        ),
    ]
    d = delivery_lines(act(kind=ActKind.MARIAGE), changes, DeliveryKind.EXTRAIT_SANS_FILIATION)
    assert value(d, "Époux 1 — Prénoms") == "X"
    assert value(d, "Époux 2 — Prénoms") == "Mattea"
    plurilingue = delivery_lines(act(), changes[:1], DeliveryKind.EXTRAIT_PLURILINGUE)
    assert value(plurilingue, "Sexe / Sex / Geschlecht / Sexo / Sesso") == "F"


# --- delivery_lines: plurilingual ------------------------------------------------------

NOM = "Nom / Surname / Name / Apellidos / Cognome"


def test_plurilingue_birth_form_a() -> None:
    d = delivery_lines(act(), history(), DeliveryKind.EXTRAIT_PLURILINGUE)
    assert d.title == "Extrait plurilingue d'acte de naissance (formule A)"
    assert "Extract from a birth record" in d.subtitle
    assert value(d, NOM) == "Martin"  # the current name
    assert (
        value(
            d,
            "Date de naissance / Date of birth / Geburtsdatum / Fecha de nacimiento / "
            "Data di nascita",
        )
        == "02 01 2024"
    )
    assert value(d, f"Mère / Mother / Mutter / Madre / Madre — {NOM}") == "Dupont"
    assert value(d, "État / State / Staat / Estado / Stato") == "France"
    assert "Marriage" in d.mentions[2] and "18 08 2018" in d.mentions[2]
    assert all("/" not in v for label, v in d.fields if label.startswith("Date"))
    for absent in ("Profession", "Domicile", "Déclarant", "Acte dressé"):
        assert absent not in everything(d)
    assert "Reconnaissance" not in everything(d)


def test_plurilingue_marriage_form_b_and_death_form_c() -> None:
    b = delivery_lines(act(kind=ActKind.MARIAGE), [], DeliveryKind.EXTRAIT_PLURILINGUE)
    assert b.title.endswith("(formule B)")
    assert (
        value(
            b,
            "Date du mariage / Date of marriage / Datum der Eheschließung / "
            "Fecha del matrimonio / Data del matrimonio",
        )
        == "15 06 2024"
    )
    assert (
        value(
            b,
            f"Époux 2 / Spouse 2 / Ehegatte 2 / Cónyuge 2 / Coniuge 2 — Mère / Mother / "
            f"Mutter / Madre / Madre — {NOM}",
        )
        == "López"
    )
    assert "20 05 2024" in value(
        b,
        "Contrat de mariage / Marriage contract / Ehevertrag / "
        "Capitulaciones matrimoniales / Convenzione matrimoniale",
    )
    c = delivery_lines(act(kind=ActKind.DECES), [], DeliveryKind.EXTRAIT_PLURILINGUE)
    assert c.title == "Extrait plurilingue d'acte de décès (formule C)"
    assert [label.split(" / ")[0] for label in labels(c)] == [
        "État",
        "Service de l'état civil",
        "Acte n°",
        "Nom",
        "Prénoms",
        "Sexe",
        "Date du décès",
        "Lieu du décès",
        "Date de naissance",
        "Lieu de naissance",
        "Père",
        "Père",
        "Mère",
        "Mère",
    ]
    assert (
        value(c, "Date du décès / Date of death / Sterbedatum / Fecha de defunción / Data di morte")
        == "04 03 2024"
    )
    assert "Lacoste" not in everything(c)


@pytest.mark.parametrize("act_kind", [ActKind.NAISSANCE, ActKind.MARIAGE, ActKind.DECES])
def test_plurilingue_is_in_latin_characters(act_kind: ActKind) -> None:
    d = delivery_lines(act(kind=act_kind), history(), DeliveryKind.EXTRAIT_PLURILINGUE)
    letters = {c for c in everything(d) + d.subtitle if c.isalpha()}
    assert {c for c in letters if not unicodedata.name(c).startswith("LATIN")} == set()
    assert {"é", "ß", "ó"} <= letters  # accented Latin letters are kept


def test_plurilingue_refuses_non_latin_characters() -> None:
    content = naissance().model_copy(
        update={"enfant": Person(nom="Иванова", prenoms="Анна", sexe=Sexe.F)}
    )
    with pytest.raises(ValidationFailed, match="caractères latins"):
        delivery_lines(act(content), [], DeliveryKind.EXTRAIT_PLURILINGUE)


# --- PDFs ----------------------------------------------------------------------------

ISSUE = Issue(
    delivered_on=date(2026, 11, 30),
    officer="Hélène Castaing",
    quality="Officier de l'état civil",
    verification_code="K7QF-2MXC-9TRA",
    verify_url="https://etat-civil.example.fr/v/K7QF-2MXC-9TRA",
)


def many_mentions(n: int = 30) -> list[MentionView]:
    return [
        mention(
            MentionKind.REPERTOIRE_CIVIL,
            date(2000 + i % 25, 1 + i % 12, 1 + i % 28),
            f"Décision n° {i} du juge des contentieux de la protection de Mont-de-Marsan, "
            "inscrite au répertoire civil, portant mesure de protection juridique.",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each renderer's output once, written to disk for the poppler tools."""
    facts = MentionFacts(
        texte="Mariée à Pau le 18/08/2030 avec Mateo García López.",
        evenement=Event(date=date(2030, 8, 18), lieu="Pau (Pyrénées-Atlantiques)"),
        conjoint=Person(nom="García López", prenoms="Mateo"),
        notaire="Maître Anne Lefèvre",
        crpcen="40012",
        decision=Decision(nature="jugement", date=date(2030, 7, 1), autorite="TJ de Pau"),
    )
    made = {
        "extrait": render_delivery(act(), history(), DeliveryKind.EXTRAIT_AVEC_FILIATION, ISSUE),
        "plurilingue": render_delivery(
            act(kind=ActKind.MARIAGE), [], DeliveryKind.EXTRAIT_PLURILINGUE, ISSUE
        ),
        "long": render_delivery(act(), many_mentions(), DeliveryKind.COPIE_INTEGRALE, ISSUE),
        "projet": render_act(act(number=None), []),
        "acte": render_act(act(kind=ActKind.DECES), history()[:2]),
        "mention": render_mention(
            act(), MentionView(MentionKind.MARIAGE, facts, date(2030, 8, 25), "Pau", "Marc Dulau")
        ),
        "avis": render_avis(
            source_commune="Pau",
            source_insee="64445",
            target_commune=COMMUNE,
            target_act="Acte de naissance de Dupont Martin Léa, né(e) le 02/01/2024",
            subject="Dupont Martin Léa Marie Anaïs",
            mention_kind=MentionKind.MARIAGE,
            facts=facts,
            sent_on=date(2030, 8, 19),
            officer="Marc Dulau",
            due_on=date(2030, 10, 18),
        ),
    }
    folder = tmp_path_factory.mktemp("pdfs")
    paths = {}
    for name, data in made.items():
        paths[name] = folder / f"{name}.pdf"
        paths[name].write_bytes(data)
    return paths


def run(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def pages(path: Path) -> int:
    info = run("pdfinfo", path)
    return int(next(line for line in info.splitlines() if line.startswith("Pages:")).split()[1])


def text(path: Path, page: int | None = None) -> str:
    span = ["-f", str(page), "-l", str(page)] if page else []
    return run("pdftotext", "-layout", *span, path, "-")


NAMES = ["extrait", "plurilingue", "long", "projet", "acte", "mention", "avis"]


@pytest.mark.parametrize("name", NAMES)
def test_pdf_fonts_are_all_embedded(pdfs: dict[str, Path], name: str) -> None:
    rows = run("pdffonts", pdfs[name]).splitlines()[2:]
    assert rows
    for row in rows:
        assert "DejaVu" in row
        # columns: name type encoding emb sub uni object ID
        assert row.split()[-5] == "yes", row


@pytest.mark.parametrize("name", NAMES)
def test_pdf_is_pdfa_2b(pdfs: dict[str, Path], name: str) -> None:
    reader = PdfFileReader(io.BytesIO(pdfs[name].read_bytes()))
    root = reader.root
    assert "/OutputIntents" in root
    xmp = root["/Metadata"].get_object().data.decode()
    assert "<pdfaid:part>2</pdfaid:part>" in xmp or 'pdfaid:part="2"' in xmp
    assert "<pdfaid:conformance>B</pdfaid:conformance>" in xmp or 'pdfaid:conformance="B"' in xmp
    assert str(root["/Lang"]) == "fr-FR"
    assert "Page size:       595.28 x 841.89 pts (A4)" in run("pdfinfo", pdfs[name])


@pytest.mark.parametrize("name", NAMES)
def test_pdf_leaves_the_signature_box_empty(
    pdfs: dict[str, Path], name: str, tmp_path: Path
) -> None:
    path, last = pdfs[name], pages(pdfs[name])
    x0, y0, x1, y1 = SIGNATURE_BOX
    top = 841.89 - y1
    crop = [
        "-x",
        str(int(x0)),
        "-y",
        str(int(top)),
        "-W",
        str(int(x1 - x0)),
        "-H",
        str(int(y1 - y0)),
    ]
    cropped = run("pdftotext", "-r", "72", *crop, "-f", str(last), "-l", str(last), path, "-")
    assert cropped.strip() == ""
    # Nothing drawn either: the rendered box is white.
    run(
        "pdftoppm",
        "-r",
        "72",
        "-gray",
        "-f",
        str(last),
        "-l",
        str(last),
        "-singlefile",
        path,
        tmp_path / "page",
    )
    with Image.open(tmp_path / "page.pgm") as image:
        box = image.crop((int(x0), int(top) + 1, int(x1), int(841.89 - y0)))
        low, _ = box.getextrema()
    assert low == 255, (name, low)


def test_extrait_pdf_text(pdfs: dict[str, Path]) -> None:
    content = text(pdfs["extrait"])
    for expected in (
        "République française",
        "Commune de Mont-de-Marsan — code INSEE 40192",
        "Extrait d'acte de naissance avec filiation",
        "Acte n° 12 — année 2024",
        "Martin",
        "Léa Marie Anaïse",
        "Camille Élise",
        "Délivré le 30/11/2026",
        "Hélène Castaing — Officier de l'état civil",
        "Code de vérification : K7QF-2MXC-9TRA",
        "Vérifiez ce document sur https://etat-civil.example.fr/v/K7QF-2MXC-9TRA",
        "sans date de validité (décret 2017-890 art. 28)",
        "Mairie de",
        "Cachet",
    ):
        assert expected in content, expected
    assert "Tutelle" not in content


def test_delivery_pdf_has_the_qr_code_image(pdfs: dict[str, Path]) -> None:
    reader = PdfFileReader(io.BytesIO(pdfs["extrait"].read_bytes()))
    kids = reader.root["/Pages"]["/Kids"]
    last = kids[len(kids) - 1].get_object()
    images = [
        obj.get_object()
        for obj in last["/Resources"]["/XObject"].values()
        if obj.get_object()["/Subtype"] == "/Image"
    ]
    assert images
    assert all("/SMask" not in image for image in images)


def test_plurilingue_pdf_text(pdfs: dict[str, Path]) -> None:
    content = text(pdfs["plurilingue"])
    assert "Extrait plurilingue d'acte de mariage (formule B)" in content
    assert "Surname" in content and "Cognome" in content
    assert "15 06 2024" in content
    assert "Délivré le 30/11/2026" in content


def test_long_delivery_flows_onto_pages_and_ends_with_the_delivery_block(
    pdfs: dict[str, Path],
) -> None:
    path = pdfs["long"]
    last = pages(path)
    assert last >= 3
    assert "Délivré le" not in text(path, 1)
    final = text(path, last)
    assert "Délivré le 30/11/2026" in final
    assert "K7QF-2MXC-9TRA" in final
    whole = text(path)
    assert "Décision n° 0 " in whole and "Décision n° 29 " in whole
    assert f"page {last}/{last}" in final


def test_act_pdfs(pdfs: dict[str, Path]) -> None:
    draft = text(pdfs["projet"])
    assert "PROJET — non signé" in draft
    assert "Acte de naissance (projet)" in draft
    assert "Code de vérification" not in draft
    signed = text(pdfs["acte"])
    assert "Acte de décès n° 12" in signed
    assert "PROJET" not in signed
    assert "Labarthe" in signed
    assert "(radiée)" not in signed
    assert "Fait à Mont-de-Marsan, le 03/01/2024" in signed
    reader = PdfFileReader(io.BytesIO(pdfs["acte"].read_bytes()))
    assert "/XObject" not in reader.root["/Pages"]["/Kids"][0].get_object()["/Resources"]


def test_mention_and_avis_pdfs(pdfs: dict[str, Path]) -> None:
    record = text(pdfs["mention"])
    for expected in (
        "Mention marginale : Mariage",
        "Acte de naissance n° 12 — année 2024 — Mont-de-Marsan",
        "Dupont Martin Léa Marie Anaïs",
        "Mariée à Pau le 18/08/2030",
        "40012",
        "Maître Anne Lefèvre",
        "TJ de Pau",
        "Mention apposée le 25/08/2030 à Pau par Marc Dulau",
    ):
        assert expected in record, expected
    avis = text(pdfs["avis"])
    for expected in (
        "Avis de mention",
        "Commune de Pau — code INSEE 64445",
        "À l'officier de l'état civil de Mont-de-Marsan",
        "Acte de naissance de Dupont Martin Léa, né(e) le 02/01/2024",
        "Merci de retourner l'accusé d'exécution avant le 18/10/2030",
    ):
        assert expected in avis, expected
