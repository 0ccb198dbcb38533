"""Who may obtain what, cell by cell: décret n° 2017-890 art. 30 and Code du patrimoine
L213-2 against `securex.comedec.rules`.

The EXPECTED table below is written from the domain page (`domain-etat-civil.md`,
"Who may obtain what"), not from the rules module: every act kind × every delivery the
schema allows for it × every capacity × justification given or not × legal reference
given or not is its own test case.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securex.comedec import rules
from securex.comedec.rules import (
    ART_30,
    ART_30_DECES,
    ART_30_EXTRAIT,
    CLIENT_CAPACITIES,
    L213_2,
    VERIFIERS,
    Capacity,
    Decision,
    Outcome,
    decide,
    deliverable,
    public_archive,
)
from securex.registry.schema import DELIVERIES, ActKind, DeliveryKind

TODAY = date(2026, 11, 30)
YOUNG = TODAY.year - 10  # an act well inside the 75 years

ALLOWED, REFUSED, REVIEW = Outcome.ALLOWED, Outcome.REFUSED, Outcome.REVIEW

# --- the domain page, written out -----------------------------------------------------

# Every capacity the domain page names, as strings: a capacity added to the enum without
# a row here fails `test_the_table_covers_every_capacity`.
CAPACITY_NAMES = {
    "titulaire",
    "titulaire_mineur",
    "ascendant",
    "descendant",
    "conjoint",
    "partenaire_pacs",
    "representant_legal",
    "mandataire",
    "heritier",
    "avocat",
    "genealogiste",
    "notaire",
    "procureur",
    "officier_etat_civil",
    "autorite_nationalite",
    "administration",
    "tiers",
}

# What may be delivered of each act (domain page, "What each delivery contains"):
# extraits with and without filiation exist for naissance and mariage; the CIEC
# plurilingual forms are A (birth), B (marriage), C (death); reconnaissance and enfant
# sans vie are delivered as copies intégrales only.
C, AF, SF, PL = (
    DeliveryKind.COPIE_INTEGRALE,
    DeliveryKind.EXTRAIT_AVEC_FILIATION,
    DeliveryKind.EXTRAIT_SANS_FILIATION,
    DeliveryKind.EXTRAIT_PLURILINGUE,
)
EXPECTED_DELIVERIES = {
    ActKind.NAISSANCE: {C, AF, SF, PL},
    ActKind.MARIAGE: {C, AF, SF, PL},
    ActKind.DECES: {C, PL},
    ActKind.RECONNAISSANCE: {C},
    ActKind.ENFANT_SANS_VIE: {C},
}

# The art. 30 table, for a copie intégrale / extrait avec filiation / extrait plurilingue
# of a naissance or mariage (first column) and a copie intégrale of a reconnaissance
# (second column). "admin" is decided by the legal reference: allowed with, refused
# without.
WITH_REF = "admin"
RESTRICTED: dict[str, tuple[Outcome | str, Outcome | str]] = {
    "titulaire": (ALLOWED, ALLOWED),
    "titulaire_mineur": (REFUSED, REFUSED),
    "ascendant": (REVIEW, REVIEW),
    "descendant": (REVIEW, REVIEW),
    "conjoint": (REVIEW, REVIEW),
    "partenaire_pacs": (REVIEW, REVIEW),
    "representant_legal": (REVIEW, REVIEW),
    "mandataire": (REVIEW, REVIEW),
    "heritier": (REFUSED, REVIEW),
    "avocat": (REVIEW, REVIEW),
    "genealogiste": (REVIEW, REVIEW),
    "notaire": (ALLOWED, ALLOWED),
    "procureur": (ALLOWED, ALLOWED),
    "officier_etat_civil": (ALLOWED, ALLOWED),
    "autorite_nationalite": (ALLOWED, ALLOWED),
    "administration": (WITH_REF, WITH_REF),
    "tiers": (REFUSED, REFUSED),
}


def expected(
    act: ActKind, delivery: DeliveryKind, capacity: Capacity, legal_reference: bool
) -> tuple[Outcome, str]:
    """The outcome and the article the domain page gives for an act under 75 years."""
    if act in (ActKind.DECES, ActKind.ENFANT_SANS_VIE):
        return ALLOWED, ART_30_DECES  # copie intégrale (and plurilingue) to anyone
    if delivery is SF:
        return ALLOWED, ART_30_EXTRAIT  # anyone, no justification
    column = 1 if act is ActKind.RECONNAISSANCE else 0
    outcome = RESTRICTED[capacity.value][column]
    if outcome == WITH_REF:
        outcome = ALLOWED if legal_reference else REFUSED
    assert isinstance(outcome, Outcome)
    return outcome, ART_30


def _case_id(
    act: ActKind, delivery: DeliveryKind, capacity: Capacity, justified: bool, ref: bool
) -> str:
    return "-".join(
        (
            act.value,
            delivery.value,
            capacity.value,
            "justified" if justified else "unjustified",
            "ref" if ref else "noref",
        )
    )


CELLS = [
    (act, delivery, capacity, justified, ref)
    for act in ActKind
    for delivery in DELIVERIES[act]
    for capacity in Capacity
    for justified in (True, False)
    for ref in (True, False)
]

# A reason in French: it has at least one French function word or elided article.
FRENCH = re.compile(r"\b(le|la|les|un|une|de|du|des|à|au|ne|est|et)\b|\b[dlnq][’']", re.I)


def _decide(
    act: ActKind,
    delivery: DeliveryKind,
    capacity: Capacity,
    *,
    act_year: int | None = YOUNG,
    today: date = TODAY,
    justified: bool = True,
    legal_reference: bool = False,
) -> Decision:
    return decide(
        act,
        delivery,
        capacity,
        act_year=act_year,
        today=today,
        justified=justified,
        legal_reference=legal_reference,
    )


# --- the table ------------------------------------------------------------------------


def test_the_table_covers_every_capacity() -> None:
    assert {c.value for c in Capacity} == CAPACITY_NAMES == set(RESTRICTED)
    assert set(Outcome) == {ALLOWED, REFUSED, REVIEW}


def test_the_product_is_what_the_schema_allows() -> None:
    assert {act: set(kinds) for act, kinds in DELIVERIES.items()} == EXPECTED_DELIVERIES
    assert len(CELLS) == 12 * len(Capacity) * 4


@pytest.mark.parametrize(
    ("act", "delivery", "capacity", "justified", "ref"),
    CELLS,
    ids=[_case_id(*cell) for cell in CELLS],
)
def test_every_cell(
    act: ActKind, delivery: DeliveryKind, capacity: Capacity, justified: bool, ref: bool
) -> None:
    decision = _decide(act, delivery, capacity, justified=justified, legal_reference=ref)
    outcome, basis = expected(act, delivery, capacity, ref)
    assert (decision.outcome, decision.legal_basis) == (outcome, basis), decision.reason
    assert decision.reason.strip()
    assert FRENCH.search(decision.reason), decision.reason
    if decision.outcome is REFUSED:
        assert decision.legal_basis.strip()
    if decision.outcome is REVIEW:
        if justified:
            assert "justificatif manquant" not in decision.reason
        else:
            assert "justificatif manquant" in decision.reason


def test_review_reasons_depend_only_on_the_justification() -> None:
    """Whether a justification came changes the reason, never the outcome: an agent
    checks the proof either way."""
    for act, delivery, capacity, _, ref in CELLS:
        with_proof = _decide(act, delivery, capacity, justified=True, legal_reference=ref)
        without = _decide(act, delivery, capacity, justified=False, legal_reference=ref)
        assert with_proof.outcome is without.outcome
        assert with_proof.legal_basis == without.legal_basis
        if with_proof.outcome is REVIEW:
            assert with_proof.reason != without.reason


# --- the 75-year rule (Code du patrimoine L213-2) --------------------------------------

RESTRICTED_REFUSALS = [
    (act, delivery, capacity, ref)
    for act in (ActKind.NAISSANCE, ActKind.MARIAGE)
    for delivery in (C, AF, PL)
    for capacity, ref in (
        (Capacity.TIERS, False),
        (Capacity.TITULAIRE_MINEUR, False),
        (Capacity.HERITIER, False),
        (Capacity.ADMINISTRATION, False),
    )
]


@pytest.mark.parametrize(
    ("act", "delivery", "capacity", "ref"),
    RESTRICTED_REFUSALS,
    ids=[f"{a.value}-{d.value}-{c.value}" for a, d, c, _ in RESTRICTED_REFUSALS],
)
def test_an_act_of_1950_opens_on_31_december_2025(
    act: ActKind, delivery: DeliveryKind, capacity: Capacity, ref: bool
) -> None:
    """The register of 1950 closed at the end of 1950: 75 years later, the act is
    public archives. Later mentions have no input here and do not move the date."""
    before = _decide(act, delivery, capacity, act_year=1950, today=date(2025, 12, 30))
    assert (before.outcome, before.legal_basis) == (REFUSED, ART_30)
    for today in (date(2025, 12, 31), date(2026, 1, 1), date(2100, 6, 15)):
        after = _decide(act, delivery, capacity, act_year=1950, today=today, legal_reference=ref)
        assert (after.outcome, after.legal_basis) == (ALLOWED, L213_2), today
        assert FRENCH.search(after.reason)


def test_public_archive_boundary() -> None:
    assert not public_archive(1950, date(2025, 12, 30))
    assert public_archive(1950, date(2025, 12, 31))
    assert public_archive(1950, date(2026, 1, 1))
    assert not public_archive(1951, date(2026, 1, 1))
    assert public_archive(1792, date(1867, 12, 31))
    assert not public_archive(1792, date(1867, 12, 30))


def test_an_unknown_year_is_never_public() -> None:
    """Without the act's year the 75-year rule cannot apply: art. 30 decides."""
    decision = _decide(ActKind.NAISSANCE, C, Capacity.TIERS, act_year=None, today=date(3000, 1, 1))
    assert (decision.outcome, decision.legal_basis) == (REFUSED, ART_30)


def _around_the_boundary() -> st.SearchStrategy[tuple[int, date]]:
    return st.integers(1792, 2100).flatmap(
        lambda year: st.tuples(
            st.just(year),
            st.integers(-3, 3).map(lambda days: date(year + 75, 12, 31) + timedelta(days=days)),
        )
    )


YEARS_AND_DAYS = st.one_of(
    st.tuples(st.integers(1792, 2100), st.dates(date(1792, 1, 1), date(2300, 12, 31))),
    _around_the_boundary(),
)


@settings(max_examples=150, deadline=None)
@given(YEARS_AND_DAYS)
def test_public_archive_property(year_and_day: tuple[int, date]) -> None:
    """Public iff 75 years have run since the end of the act's year; when public every
    capacity gets every available delivery, on L213-2; until then the act under 75
    years is decided exactly as the art. 30 table says."""
    act_year, today = year_and_day
    public = today >= date(act_year + 75, 12, 31)
    assert public_archive(act_year, today) is public
    for act, delivery, capacity, justified, ref in CELLS:
        decision = _decide(
            act,
            delivery,
            capacity,
            act_year=act_year,
            today=today,
            justified=justified,
            legal_reference=ref,
        )
        if public:
            assert (decision.outcome, decision.legal_basis) == (ALLOWED, L213_2)
        else:
            assert (decision.outcome, decision.legal_basis) == expected(
                act, delivery, capacity, ref
            )


# --- time is a parameter --------------------------------------------------------------


def test_time_is_an_input_and_decide_is_deterministic() -> None:
    """The same request on two dates gets two answers; on one date always the same
    one, whatever the real date is."""
    request = (ActKind.NAISSANCE, C, Capacity.TIERS)
    past, future = date(1960, 1, 1), date(3000, 1, 1)
    on_past = [_decide(*request, act_year=1950, today=past) for _ in range(2)]
    on_future = [_decide(*request, act_year=1950, today=future) for _ in range(2)]
    assert on_past[0] == on_past[1]
    assert on_future[0] == on_future[1]
    assert on_past[0].outcome is REFUSED
    assert on_future[0].outcome is ALLOWED
    # Either side of the boundary, one day apart.
    eve = _decide(*request, act_year=1950, today=date(2025, 12, 30))
    day = _decide(*request, act_year=1950, today=date(2025, 12, 31))
    assert (eve.outcome, day.outcome) == (REFUSED, ALLOWED)


def test_decide_never_reads_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoClock(date):
        @classmethod
        def today(cls) -> NoClock:
            raise AssertionError("rules read the clock")

    monkeypatch.setattr(rules, "date", NoClock)
    assert not hasattr(rules, "datetime")
    for act, delivery, capacity, justified, ref in CELLS:
        for today in (date(1960, 1, 1), date(3000, 1, 1)):
            _decide(
                act,
                delivery,
                capacity,
                act_year=1950,
                today=today,
                justified=justified,
                legal_reference=ref,
            )


# --- API clients and verifiers --------------------------------------------------------


def test_client_capacities() -> None:
    citizens = {
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
    assert dict(CLIENT_CAPACITIES) == {
        "notaire": {Capacity.NOTAIRE},
        "administration": {Capacity.ADMINISTRATION},
        "mairie": {Capacity.OFFICIER_ETAT_CIVIL},
        "guichet": citizens,
    }
    institutions = {
        Capacity.NOTAIRE,
        Capacity.PROCUREUR,
        Capacity.OFFICIER_ETAT_CIVIL,
        Capacity.AUTORITE_NATIONALITE,
        Capacity.ADMINISTRATION,
    }
    assert not CLIENT_CAPACITIES["guichet"] & institutions
    assert CLIENT_CAPACITIES["guichet"] | institutions == set(Capacity)


def test_verifiers_are_the_art_39_requesters() -> None:
    assert set(VERIFIERS) == {"notaire", "administration", "mairie"}
    assert set(CLIENT_CAPACITIES) - VERIFIERS == {"guichet"}


# --- deliverable ----------------------------------------------------------------------


@pytest.mark.parametrize("act", list(ActKind), ids=[a.value for a in ActKind])
def test_deliverable_agrees_with_deliveries(act: ActKind) -> None:
    for delivery in DeliveryKind:
        assert deliverable(act, delivery) is (delivery in DELIVERIES[act])
        assert deliverable(act, delivery) is (delivery in EXPECTED_DELIVERIES[act])
