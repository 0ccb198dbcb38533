"""Encrypted columns and blind indexes: personal data never reaches the database in
clear, yet an act can be found by nom + prénoms + date."""

from __future__ import annotations

import pytest
from sqlalchemy import String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from securex.db import transaction
from securex.vault import BlindIndexer, IntegrityError, Sealed, column_keys, normalise


class ScratchBase(DeclarativeBase):
    pass


class Person(ScratchBase):
    __tablename__ = "test_people"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(5))
    nom: Mapped[str] = mapped_column(Sealed("person.nom"))
    prenoms: Mapped[str | None] = mapped_column(Sealed("person.prenoms"))
    search: Mapped[str] = mapped_column(String(32), index=True)


@pytest.fixture
def people(two_tenants, settings):
    engine = create_engine(settings.database_url)
    ScratchBase.metadata.create_all(engine)
    yield engine
    ScratchBase.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def two_tenants(make):
    make.tenant("40192", "Mont-de-Marsan")
    make.tenant("40088", "Dax")
    return make


def add(make, vault, tenant: str, nom: str, prenoms: str, date: str) -> int:
    with transaction(make.factory) as db, column_keys(db, vault.keyring, tenant):
        idx = BlindIndexer(db, vault.keyring, tenant)
        person = Person(
            tenant=tenant, nom=nom, prenoms=prenoms, search=idx.index("person", nom, prenoms, date)
        )
        db.add(person)
        db.flush()
        return person.id


def test_values_are_sealed_and_read_back(two_tenants, vault, people):
    make = two_tenants
    person_id = add(make, vault, "40192", "Dupont-Laborde", "Jeanne Marie", "2026-11-30")
    with people.connect() as conn:
        raw = conn.execute(text("SELECT nom, prenoms FROM test_people")).one()
    for column in raw:
        assert b"Dupont" not in bytes(column) and b"Jeanne" not in bytes(column)
    with make.session() as db, column_keys(db, vault.keyring, "40192"):
        person = db.get(Person, person_id)
        assert (person.nom, person.prenoms) == ("Dupont-Laborde", "Jeanne Marie")


def test_search_by_blind_index_folds_case_accents_and_spacing(two_tenants, vault, people):
    make = two_tenants
    wanted = add(make, vault, "40192", "Lafitte-Noël", "Hélène", "1990-05-02")
    add(make, vault, "40192", "Lafitte", "Hélène", "1990-05-02")
    with make.session() as db, column_keys(db, vault.keyring, "40192"):
        idx = BlindIndexer(db, vault.keyring, "40192")
        key = idx.index("person", "  LAFITTE noel ", "helene", "1990-05-02")
        found = db.scalars(select(Person).where(Person.search == key)).all()
        assert [p.id for p in found] == [wanted]
        assert found[0].nom == "Lafitte-Noël"


def test_indexes_differ_between_tenants_and_fields(two_tenants, vault):
    with two_tenants.session() as db:
        a = BlindIndexer(db, vault.keyring, "40192")
        b = BlindIndexer(db, vault.keyring, "40088")
        assert a.index("person", "Dupont") != b.index("person", "Dupont")
        assert a.index("person", "Dupont") != a.index("spouse", "Dupont")
        assert a.index("person", "Dupont") == a.index("person", "dupont")
        assert len(a.index("person", "Dupont")) == 32


def test_writing_outside_a_tenant_scope_fails_instead_of_writing_clear_text(two_tenants, people):
    with pytest.raises(Exception, match="column_keys"), Session(people) as db:
        db.add(Person(tenant="40192", nom="Martin", prenoms=None, search="x"))
        db.flush()
    with people.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM test_people")).scalar() == 0


def test_a_value_moved_to_another_field_or_tenant_does_not_open(two_tenants, vault, people):
    make = two_tenants
    person_id = add(make, vault, "40192", "Durand", "Paul", "2000-01-01")
    with people.begin() as conn:
        conn.execute(text("UPDATE test_people SET prenoms = nom"))
    with (
        make.session() as db,
        column_keys(db, vault.keyring, "40192"),
        pytest.raises(IntegrityError),
    ):
        db.get(Person, person_id)


def test_reading_another_tenants_rows_needs_its_key(two_tenants, vault, people):
    make = two_tenants
    person_id = add(make, vault, "40088", "Durand", "Paul", "2000-01-01")
    with (
        make.session() as db,
        column_keys(db, vault.keyring, "40192"),
        pytest.raises(RuntimeError, match="40088"),
    ):
        db.get(Person, person_id)


@pytest.mark.parametrize(
    "a,b",
    [
        ("Jean-Noël D'Arc", "jean noel d arc"),
        ("ÉLODIE", "elodie"),
        ("O’Neil", "o neil"),
        ("  Saint  Sever ", "saint sever"),
    ],
)
def test_normalise(a, b):
    assert normalise(a) == normalise(b)
