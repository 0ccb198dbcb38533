"""Import of digitised paper registers (`securex registry import`): CSV and JSON, every
error of every line reported without a value of the file, all or nothing, scans."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from securex.accounts.service import Actor
from securex.cli import main
from securex.db import transaction
from securex.errors import NotFound, ValidationFailed
from securex.registry import importer, service
from securex.registry.importer import (
    DATE_MESSAGE,
    ImportReport,
    ShapeError,
    flatten,
    import_file,
    parse_date,
    parse_moment,
    parse_time,
    unflatten,
)
from securex.registry.models import Act, ActScan
from securex.vault.models import VaultObject

MDM = "40192"
ACTOR = Actor("cli", "registry-import")
PDF = b"%PDF-1.4\n% a scanned register page\n" + b"0" * 2000 + b"\n%%EOF\n"

NAISSANCE = {
    "kind": "naissance",
    "year": "1987",
    "number": "12",
    "drawn_at": "02/03/1987 10:00",
    "officer": "Jean Lartigue",
    "enfant.nom": "Dupont",
    "enfant.prenoms": "Léa Marie",
    "enfant.sexe": "F",
    "naissance.date": "01/03/1987",
    "naissance.heure": "22h15",
    "naissance.lieu": "Mont-de-Marsan, Landes",
    "parents.0.nom": "Dupont",
    "parents.0.prenoms": "Pierre",
    "parents.0.date_naissance": "1960-05-04",
    "parents.1.nom": "Martin",
    "parents.1.prenoms": "Sophie",
    "declarant.nom": "Dupont",
    "declarant.prenoms": "Pierre",
}
MARIAGE = {
    "kind": "mariage",
    "year": "1990",
    "number": "3",
    "drawn_at": "1990-06-16T11:30",
    "officer": "Jean Lartigue",
    "epoux.0.nom": "Lafitte",
    "epoux.0.prenoms": "Paul",
    "epoux.0.sexe": "M",
    "epoux.0.date_naissance": "12/04/1962",
    "epoux.0.parents.0.nom": "Lafitte",
    "epoux.0.parents.0.prenoms": "André",
    "epoux.1.nom": "Etcheverry",
    "epoux.1.prenoms": "Maïté",
    "epoux.1.sexe": "F",
    "epoux.1.date_naissance": "1964-07-14",
    "epoux.1.parents.0.nom": "Etcheverry",
    "epoux.1.parents.0.prenoms": "Ramuntcho",
    "celebration.date": "16/06/1990",
    "celebration.heure": "11:00",
    "celebration.lieu": "Mont-de-Marsan",
    "contrat.existe": "oui",
    "contrat.date": "02/05/1990",
    "contrat.notaire": "Maître Darrigade",
    "temoins.0.nom": "Durand",
    "temoins.0.prenoms": "Paul",
}
DECES = {
    "kind": "deces",
    "year": "1995",
    "number": "40",
    "drawn_at": "12/08/1995",
    "officer": "Marie Dubos",
    "defunt.nom": "Bordes",
    "defunt.prenoms": "Henri",
    "defunt.date_naissance": "03/01/1920",
    "deces.date": "11/08/1995",
    "deces.heure": "06:40",
    "deces.lieu": "Mont-de-Marsan",
    "conjoint.nom": "Bordes",
    "conjoint.prenoms": "Germaine",
    "lien_conjoint": "veuf",
}
RECONNAISSANCE = {
    "kind": "reconnaissance",
    "year": "2001",
    "number": "5",
    "drawn_at": "2001-09-10 09h15",
    "officer": "Marie Dubos",
    "auteur.nom": "Garcia",
    "auteur.prenoms": "Luis",
    "enfant.nom": "Garcia",
    "enfant.prenoms": "Inès",
    "enfant.sexe": "F",
    "naissance_enfant.date": "2001-08-30",
    "naissance_enfant.lieu": "Dax",
}
ENFANT_SANS_VIE = {
    "kind": "enfant_sans_vie",
    "year": "1995",
    "number": "41",
    "drawn_at": "20/08/1995",
    "officer": "Marie Dubos",
    "enfant.nom": "Lescout",
    "enfant.prenoms": "Jeanne",
    "accouchement.date": "18/08/1995",
    "accouchement.lieu": "Mont-de-Marsan",
    "parents.0.nom": "Lescout",
    "parents.0.prenoms": "Claire",
}
ALL_KINDS = [NAISSANCE, MARIAGE, DECES, RECONNAISSANCE, ENFANT_SANS_VIE]


def write_csv(
    path: Path, rows: list[dict[str, str]], delimiter: str = ",", bom: bool = False
) -> Path:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") for k in header])
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode())
    return path


def nested(row: dict[str, str]) -> dict[str, Any]:
    """The JSON form of a CSV row of this file."""
    common = {k: row[k] for k in importer.COMMON if k in row}
    content = unflatten({k: v for k, v in row.items() if k not in importer.COMMON}).data
    return {**common, "year": int(row["year"]), "number": int(row["number"]), "content": content}


class Importer:
    def __init__(self, settings: Any, factory: Any, vault: Any, clock: Any) -> None:
        self.settings, self.factory, self.vault, self.clock = settings, factory, vault, clock

    def __call__(self, path: Path, **options: Any) -> ImportReport:
        options.setdefault("max_scan_bytes", self.settings["registry.max_scan_bytes"])
        return import_file(
            path,
            insee=MDM,
            session_factory=self.factory,
            vault=self.vault,
            actor=ACTOR,
            now=self.clock(),
            **options,
        )

    def count(self, model: Any = Act) -> int:
        with self.factory() as db:
            return int(db.scalar(select(func.count()).select_from(model)) or 0)

    def search(self, nom: str, prenoms: str, day: date | None = None) -> list[Any]:
        with transaction(self.factory) as db:
            return service.search(
                db,
                ACTOR,
                MDM,
                nom=nom,
                prenoms=prenoms,
                day=day,
                now=self.clock(),
                vault=self.vault,
            )

    def existing(self, row: dict[str, str]) -> int:
        """An act already in the registers, entered by the service itself."""
        iso = {k: (d.isoformat() if (d := parse_date(v)) else v) for k, v in row.items()}
        data = nested({**iso, "drawn_at": row["drawn_at"]})
        with transaction(self.factory) as db:
            return service.import_act(
                db,
                ACTOR,
                insee=MDM,
                kind=data["kind"],
                year=data["year"],
                number=data["number"],
                drawn_at=parse_moment(data["drawn_at"]),
                officer_name=data["officer"],
                content=data["content"],
                now=self.clock(),
                vault=self.vault,
            )


@pytest.fixture
def imp(make: Any, settings: Any, factory: Any, vault: Any, clock: Any) -> Importer:
    make.tenant()
    return Importer(settings, factory, vault, clock)


def errors(report: ImportReport) -> set[tuple[int | None, str, str]]:
    return {(i.line, i.field, i.message) for i in report.issues}


# --- imports that succeed ---------------------------------------------------------------


def test_csv_with_every_kind_of_act(imp: Importer, tmp_path: Path) -> None:
    report = imp(write_csv(tmp_path / "registre.csv", ALL_KINDS))
    assert report.ok and report.imported, report.text_lines()
    assert (report.acts, report.scans) == (5, 0)
    assert report.summary() == (
        "5 actes importés dans le registre de Mont-de-Marsan (dont 0 avec numérisation)."
    )
    (birth,) = imp.search("Dupont", "Léa Marie", date(1987, 3, 1))
    assert (birth.kind, birth.view.year, birth.view.number) == ("naissance", 1987, 12)
    assert birth.imported and birth.status == "signed" and birth.view.officer == "Jean Lartigue"
    assert birth.view.drawn_at is not None
    assert birth.view.drawn_at.astimezone(service.PARIS).isoformat() == "1987-03-02T10:00:00+01:00"
    child = birth.content
    assert child.naissance.heure == time(22, 15)
    assert child.naissance.lieu == "Mont-de-Marsan, Landes"
    assert [p.prenoms for p in child.parents] == ["Pierre", "Sophie"]
    assert child.parents[0].date_naissance == date(1960, 5, 4)

    (wedding,) = imp.search("Etcheverry", "Maïté", date(1964, 7, 14))
    with transaction(imp.factory) as db:
        again = service.get_act(db, ACTOR, MDM, wedding.id, now=imp.clock(), vault=imp.vault)
    content = again.content.model_dump(mode="json")
    assert content["contrat"] == {
        "existe": True,
        "date": "1990-05-02",
        "notaire": "Maître Darrigade",
    }
    assert content["epoux"][1]["parents"] == [
        {
            "nom": "Etcheverry",
            "prenoms": "Ramuntcho",
            "sexe": None,
            "date_naissance": None,
            "lieu_naissance": None,
            "profession": None,
            "domicile": None,
        }
    ]
    assert content["celebration"] == {
        "date": "1990-06-16",
        "heure": "11:00:00",
        "lieu": "Mont-de-Marsan",
    }
    assert [a.kind for a in imp.search("Bordes", "Henri", date(1995, 8, 11))] == ["deces"]
    assert [a.kind for a in imp.search("Garcia", "Inès")] == ["reconnaissance"]
    (stillborn,) = imp.search("Lescout", "Jeanne", date(1995, 8, 18))
    # An enfant sans vie is numbered in the death register (Code civil 79-1).
    assert (stillborn.kind, stillborn.view.number) == ("enfant_sans_vie", 41)
    with imp.factory() as db:
        assert db.scalar(select(Act.register).where(Act.id == stillborn.id)) == "deces"


def test_json_list_and_acts_object(imp: Importer, tmp_path: Path) -> None:
    births = [nested(NAISSANCE), nested({**NAISSANCE, "number": "13", "enfant.prenoms": "Paul"})]
    births[1]["content"]["naissance"]["date"] = "1987-03-01"  # ISO in JSON too
    births[1]["drawn_at"] = "1987-03-02T10:00:00+01:00"
    listed = tmp_path / "naissances.json"
    listed.write_text(json.dumps(births, ensure_ascii=False, indent=2), encoding="utf-8")
    report = imp(listed)
    assert report.ok and report.imported and report.acts == 2, report.text_lines()
    assert report.unit == "élément"
    wrapped = tmp_path / "deces.json"
    wrapped.write_text(
        json.dumps({"source": {"registre": "décès 1995"}, "acts": [nested(DECES)], "n": 1}),
        encoding="utf-8",
    )
    report = imp(wrapped)
    assert report.ok and report.acts == 1, report.text_lines()
    assert [a.view.number for a in imp.search("Dupont", "Paul", date(1987, 3, 1))] == [13]
    assert len(imp.search("Bordes", "Henri")) == 1


@pytest.mark.parametrize("delimiter", [",", ";"])
@pytest.mark.parametrize("bom", [False, True])
def test_semicolon_or_comma_with_or_without_bom(
    imp: Importer, tmp_path: Path, delimiter: str, bom: bool
) -> None:
    # A place with a comma in it: the separator is read from the header, not guessed
    # from the data.
    row = {**NAISSANCE, "naissance.lieu": "Mont-de-Marsan, Landes"}
    report = imp(write_csv(tmp_path / "r.csv", [row], delimiter=delimiter, bom=bom))
    assert report.ok, report.text_lines()
    (act,) = imp.search("Dupont", "Léa Marie")
    assert act.content.naissance.lieu == "Mont-de-Marsan, Landes"
    assert act.view.year == 1987  # the BOM did not stick to the first column's name


def test_scans_are_sealed_in_the_vault(imp: Importer, tmp_path: Path) -> None:
    scans = tmp_path / "numerisations"
    scans.mkdir()
    (scans / "p12.pdf").write_bytes(PDF)
    rows = [{**NAISSANCE, "scan": "p12.pdf"}, {**DECES, "scan": ""}]
    report = imp(write_csv(tmp_path / "r.csv", rows), scans_dir=scans)
    assert report.ok and (report.acts, report.scans) == (2, 1), report.text_lines()
    assert report.summary().endswith("(dont 1 avec numérisation).")
    (act,) = imp.search("Dupont", "Léa Marie")
    assert len(act.scans) == 1
    with imp.factory() as db:
        object_id = db.scalar(select(ActScan.object_id).where(ActScan.act_id == act.id))
        assert object_id is not None
        assert imp.vault.read_all(db, MDM, object_id) == PDF


def test_scans_default_to_the_files_folder(imp: Importer, tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "p12.pdf").write_bytes(PDF)
    report = imp(write_csv(tmp_path / "r.csv", [{**NAISSANCE, "scan": "pages/p12.pdf"}]))
    assert report.ok and report.scans == 1, report.text_lines()


DOCS = Path(__file__).resolve().parent.parent / "docs" / "registry-import.md"


def test_the_documented_examples_import(imp: Importer, tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    examples = re.findall(r"```csv\n(.*?)```", text, re.S)
    assert len(examples) == 5
    for n, example in enumerate(examples):
        path = tmp_path / f"exemple{n}.csv"
        path.write_text(example, encoding="utf-8")
        report = imp(path)
        assert report.ok and report.acts == 1, (n, report.text_lines())
    (document,) = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if "kind" in b]
    (tmp_path / "naissances-1987").mkdir()
    (tmp_path / "naissances-1987" / "p13.pdf").write_bytes(PDF)
    path = tmp_path / "exemple.json"
    path.write_text(document, encoding="utf-8")
    report = imp(path)
    assert report.ok and (report.acts, report.scans) == (5, 1), report.text_lines()
    assert imp.count() == 10


# --- errors -----------------------------------------------------------------------------


def test_every_error_of_every_line_is_reported(imp: Importer, tmp_path: Path) -> None:
    imp.existing({**DECES, "number": "7"})
    (tmp_path / "note.pdf").write_text("pas un PDF")
    (tmp_path / "ok.pdf").write_bytes(PDF)
    rows = [
        NAISSANCE,  # line 2: fine
        {**NAISSANCE, "number": "13", "naissance.date": "31/02/1987"},  # 3
        {**NAISSANCE, "number": "14", "kind": "naisance"},  # 4
        {**NAISSANCE, "number": "15", "enfant.nom": ""},  # 5
        {**NAISSANCE, "enfant.prenoms": "Paul"},  # 6: number 12 again
        {**DECES, "number": "7"},  # 7: taken in the database
        {**NAISSANCE, "number": "16", "scan": "absent.pdf"},  # 8
        {**NAISSANCE, "number": "17", "scan": "note.pdf"},  # 9
        DECES,  # 10: fine, n° 40 of the death register
        # 11: three problems on one line
        {**NAISSANCE, "number": "18", "enfant.sexe": "X", "year": "1788", "scan": "../x.pdf"},
        {**NAISSANCE, "number": "19", "drawn_at": "02/03/1988"},  # 12
        {**MARIAGE, "contrat.date": "", "contrat.existe": "peut-être", "temoins.0.nom": ""},  # 13
        {**ENFANT_SANS_VIE, "number": "40"},  # 14: kept in the death register: n° 40 again
        {**DECES, "number": "42", "deces.heure": "25:00", "lien_conjoint": "ami"},  # 15
        {**NAISSANCE, "number": "20", "enfant.sexe": "", "scan": "ok.pdf"},  # 16
    ]
    report = imp(write_csv(tmp_path / "r.csv", rows))
    assert not report.ok and not report.imported
    same = "numéro déjà donné à un autre acte du même registre et de la même année"
    assert errors(report) == {
        (3, "naissance.date", DATE_MESSAGE),
        (
            4,
            "kind",
            "type d'acte inconnu (attendu : naissance, mariage, deces, reconnaissance, "
            "enfant_sans_vie)",
        ),
        (5, "enfant.nom", "champ obligatoire manquant"),
        (6, "number", f"{same} (ligne 2)"),
        (7, "number", "numéro déjà attribué dans le registre de la commune"),
        (8, "scan", "fichier de numérisation introuvable"),
        (9, "scan", "la numérisation doit être un fichier PDF"),
        (11, "year", "année hors des registres (1792 à 2026)"),
        (11, "enfant.sexe", "valeur non admise (attendu : 'M' ou 'F')"),
        (11, "scan", "le fichier doit se trouver dans le dossier des numérisations"),
        (12, "drawn_at", "ne tombe pas dans l'année du registre (year)"),
        (13, "contrat.existe", "valeur invalide (attendu oui ou non)"),
        (13, "temoins.0.nom", "champ obligatoire manquant"),
        (14, "number", f"{same} (ligne 10)"),
        (15, "deces.heure", "heure invalide (attendu HH:MM ou HHhMM)"),
        (
            15,
            "lien_conjoint",
            "valeur non admise (attendu : 'epoux', 'partenaire_pacs', 'veuf' ou 'divorce')",
        ),
        (16, "", "naissance : le sexe de l'enfant est obligatoire (art. 57)"),
    }
    assert imp.count() == 1  # the act that was already there, nothing else
    lines = report.text_lines()
    assert lines[0] == f"ligne 3, naissance.date : {DATE_MESSAGE}"
    assert "ligne 16 : naissance : le sexe de l'enfant est obligatoire (art. 57)" in lines
    assert report.summary() == "17 erreurs sur 13 lignes : rien n'a été importé."


def test_a_bad_value_is_reported_once(imp: Importer, tmp_path: Path) -> None:
    # The contract's date is unreadable: the contract's own rule (a date and a notary)
    # would only say it again.
    rows = [
        {**MARIAGE, "contrat.date": "mai 1990"},
        {**NAISSANCE, "naissance.date": "", "naissance.heure": "midi", "enfant.sexe": ""},
    ]
    report = imp(write_csv(tmp_path / "r.csv", rows))
    assert errors(report) == {
        (2, "contrat.date", DATE_MESSAGE),
        (3, "naissance.date", "champ obligatoire manquant"),
        (3, "naissance.heure", "heure invalide (attendu HH:MM ou HHhMM)"),
    }


def test_missing_columns_are_reported_once_on_the_header(imp: Importer, tmp_path: Path) -> None:
    rows = [{k: v for k, v in NAISSANCE.items() if k not in ("officer", "year")}] * 3
    path = write_csv(tmp_path / "r.csv", rows)
    path.write_text(path.read_text().replace("enfant.nom", "enfant..nom"))
    report = imp(path)
    assert errors(report) == {
        (1, "enfant..nom", "nom de colonne invalide"),
        (1, "year", "colonne obligatoire absente"),
        (1, "officer", "colonne obligatoire absente"),
    }


def test_lines_are_the_files_physical_lines(imp: Importer, tmp_path: Path) -> None:
    # A quoted cell over two lines, and a blank line: the error is on line 5.
    path = tmp_path / "r.csv"
    header = ",".join(NAISSANCE)
    good = ",".join(f'"{v}"' for v in NAISSANCE.values())
    bad = good.replace('"12"', '"13"').replace('"01/03/1987"', '"hier"')
    path.write_text(
        header + "\n" + good.replace("Jean Lartigue", "Jean\nLartigue") + "\n\n" + bad + "\n",
        encoding="utf-8",
    )
    report = imp(path)
    assert errors(report) == {(5, "naissance.date", DATE_MESSAGE)}


def test_a_list_with_a_gap_is_reported_by_its_names_in_the_file(
    imp: Importer, tmp_path: Path
) -> None:
    # Only the second parent is known: the list is renumbered, the report is not.
    row = {k: v for k, v in NAISSANCE.items() if not k.startswith("parents.")}
    row |= {"parents.1.nom": "Martin", "parents.1.prenoms": "", "parents.1.profession": "x" * 201}
    report = imp(write_csv(tmp_path / "r.csv", [row]))
    assert errors(report) == {
        (2, "parents.1.prenoms", "champ obligatoire manquant"),
        (2, "parents.1.profession", "texte trop long (200 caractères au plus)"),
    }
    row["parents.1.prenoms"], row["parents.1.profession"] = "Sophie", "sage-femme"
    assert imp(write_csv(tmp_path / "r.csv", [row])).ok
    (act,) = imp.search("Dupont", "Léa Marie")
    assert [p.nom for p in act.content.parents] == ["Martin"]


def test_scan_too_large(imp: Importer, tmp_path: Path) -> None:
    (tmp_path / "p.pdf").write_bytes(PDF)
    path = write_csv(tmp_path / "r.csv", [{**NAISSANCE, "scan": "p.pdf"}])
    report = imp(path, max_scan_bytes=1000)
    assert errors(report) == {(2, "scan", "numérisation trop volumineuse (1000 octets au plus)")}
    assert imp(path, max_scan_bytes=len(PDF)).ok


def test_json_errors_are_numbered_by_item(imp: Importer, tmp_path: Path) -> None:
    items: list[Any] = [nested(NAISSANCE), nested(DECES), "pas un acte", nested(MARIAGE)]
    items[1]["content"]["deces"]["date"] = "12"  # pydantic alone would take it for 1970
    items[1]["couleur"] = "bleu"
    items[3]["year"] = True
    items[3]["content"]["contrat"]["existe"] = "sans doute"
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"acts": items}), encoding="utf-8")
    report = imp(path)
    assert errors(report) == {
        (2, "deces.date", DATE_MESSAGE),
        (2, "couleur", "champ inconnu"),
        (3, "", "un objet JSON est attendu pour chaque acte"),
        (4, "year", "année invalide (attendu AAAA)"),
        (4, "contrat.existe", "valeur invalide (attendu oui ou non)"),
    }
    assert f"élément 2, deces.date : {DATE_MESSAGE}" in report.text_lines()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"kind": "naissance"}, ', "JSON invalide après l'élément 1 : lecture arrêtée"),
        ('{"acte": []}', 'clé « acts » absente (attendu : {"acts": [...]})'),
        ("42", "JSON invalide : lecture arrêtée"),
        ("[] []", "JSON invalide : lecture arrêtée"),
        ("[]", "aucun acte dans le fichier"),
    ],
)
def test_broken_json(imp: Importer, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    report = imp(path)
    assert (None, "", message) in errors(report)
    assert imp.count() == 0
    if text == "[]":
        assert report.summary() == "1 erreur dans le fichier : rien n'a été importé."


def test_not_utf8_is_reported_on_its_line(imp: Importer, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", [NAISSANCE] * 300)
    lines = path.read_bytes().split(b"\r\n")
    lines[250] = lines[250].replace("Léa".encode(), "Léa".encode("latin-1"))
    path.write_bytes(b"\r\n".join(lines))
    report = imp(path)
    assert (251, "", "texte non encodé en UTF-8 (enregistrez le fichier en UTF-8)") in errors(
        report
    )


def test_unknown_file_type_or_commune(imp: Importer, tmp_path: Path) -> None:
    path = tmp_path / "registre.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValidationFailed, match=r"\.xlsx.*\.csv ou \.json"):
        imp(path)
    csv_path = write_csv(tmp_path / "r.csv", [NAISSANCE])
    with pytest.raises(NotFound):
        import_file(
            csv_path,
            insee="99999",
            session_factory=imp.factory,
            vault=imp.vault,
            actor=ACTOR,
            now=imp.clock(),
            max_scan_bytes=1000,
        )


# --- all or nothing -------------------------------------------------------------------


def test_one_bad_line_and_nothing_is_imported(imp: Importer, tmp_path: Path) -> None:
    (tmp_path / "p.pdf").write_bytes(PDF)
    rows = [
        {**NAISSANCE, "scan": "p.pdf"},
        DECES,
        MARIAGE,
        {**RECONNAISSANCE, "auteur.nom": ""},
    ]
    objects = imp.count(VaultObject)
    report = imp(write_csv(tmp_path / "r.csv", rows))
    assert errors(report) == {(5, "auteur.nom", "champ obligatoire manquant")}
    assert (imp.count(), imp.count(ActScan), imp.count(VaultObject)) == (0, 0, objects)


def test_a_failure_while_writing_rolls_everything_back(
    imp: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another agent takes n° 40 between the check and the writing: the service refuses
    # it and the acts already written in the same transaction go too.
    (tmp_path / "p.pdf").write_bytes(PDF)
    path = write_csv(tmp_path / "r.csv", [{**NAISSANCE, "scan": "p.pdf"}, MARIAGE, DECES])
    real = importer._numbers_taken

    def meanwhile(*args: Any) -> None:
        real(*args)
        imp.existing(DECES)

    monkeypatch.setattr(importer, "_numbers_taken", meanwhile)
    report = imp(path)
    assert errors(report) == {(4, "number", "numéro déjà attribué dans le registre de la commune")}
    assert not report.imported
    assert (imp.count(), imp.count(ActScan)) == (1, 0)  # only the other agent's act


def test_dry_run_writes_nothing(imp: Importer, tmp_path: Path) -> None:
    (tmp_path / "p.pdf").write_bytes(PDF)
    objects = imp.count(VaultObject)
    report = imp(
        write_csv(tmp_path / "r.csv", [{**NAISSANCE, "scan": "p.pdf"}, DECES]), dry_run=True
    )
    assert report.ok and not report.imported and (report.acts, report.scans) == (2, 1)
    assert report.summary() == (
        "Fichier valide : 2 actes (dont 1 avec numérisation) ; rien n'a été importé (--dry-run)."
    )
    assert (imp.count(), imp.count(ActScan), imp.count(VaultObject)) == (0, 0, objects)


def test_the_progress_bars_cover_the_file(imp: Importer, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", ALL_KINDS)
    seen: dict[str, list[int]] = {}

    class Bar:
        def __init__(self, label: str, length: int) -> None:
            self.label, self.length = label, length
            seen[label] = [length, 0]

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n_steps: int) -> None:
            seen[self.label][1] += n_steps

    assert imp(path, progress=Bar).ok
    size = path.stat().st_size
    assert seen == {"Vérification": [size, size], "Import": [size, size]}


# --- the pieces -----------------------------------------------------------------------


def test_unflatten_makes_lists_from_numbers() -> None:
    got = unflatten(
        {
            "epoux.1.parents.3.nom": "B",
            "epoux.1.parents.0.nom": "A",
            "epoux.0.nom": "X",
            "contrat.existe": True,
            "vide": None,
        }
    )
    assert got.data == {
        "epoux": [{"nom": "X"}, {"parents": [{"nom": "A"}, {"nom": "B"}]}],
        "contrat": {"existe": True},
    }
    assert got.field_in_file("epoux.1.parents.1.nom") == "epoux.1.parents.3.nom"
    assert got.field_in_file("epoux.0.nom") == "epoux.0.nom"
    assert unflatten(flatten(got.data)).data == got.data


def test_unflatten_refuses_shapes_that_do_not_nest() -> None:
    with pytest.raises(ShapeError) as caught:
        unflatten({"enfant": "x", "enfant.nom": "y", "parents.0.nom": "a", "parents.nom": "b"})
    assert caught.value.problems == [
        ("enfant", "champ à la fois valeur et groupe"),
        ("parents", "positions de liste et noms de champs mélangés"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01/03/1987", date(1987, 3, 1)),
        ("1/3/1987", date(1987, 3, 1)),
        ("1987-03-01", date(1987, 3, 1)),
        ("29/02/1988", date(1988, 2, 29)),
        ("29/02/1987", None),
        ("1987-3-1", None),
        ("12", None),
        ("01.03.1987", None),
    ],
)
def test_parse_date(text: str, expected: date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:15", time(22, 15)),
        ("22h15", time(22, 15)),
        ("9H05", time(9, 5)),
        ("22h", time(22, 0)),
        ("22:15:30", time(22, 15, 30)),
        ("24:00", None),
        ("22.15", None),
    ],
)
def test_parse_time(text: str, expected: time | None) -> None:
    assert parse_time(text) == expected


def test_parse_moment_is_paris_time() -> None:
    winter = parse_moment("02/03/1987 10:00")
    summer = parse_moment("1987-07-02T10h00")
    assert winter is not None and winter.utcoffset().total_seconds() == 3600
    assert summer is not None and summer.utcoffset().total_seconds() == 7200
    assert parse_moment("1987-03-02T10:00:00+00:00").hour == 10
    assert parse_moment("02/03/1987").hour == 0
    assert parse_moment("hier") is None


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 16])
@pytest.mark.parametrize("wrapped", [False, True])
def test_json_stream_reads_what_json_loads_reads(chunk: int, wrapped: bool) -> None:
    acts = [nested(row) for row in ALL_KINDS] + [{"n": 12345678901234, "f": -1.5e-3, "x": None}]
    doc: Any = (
        {"titre": "registre", "nombres": [1, 22, 333], "acts": acts, "fin": 12345}
        if wrapped
        else acts
    )
    text = json.dumps(doc, ensure_ascii=False, indent=1 if chunk % 2 else None)
    stream = importer._JsonStream(io.StringIO(text), chunk=chunk)
    assert list(stream.items()) == acts


# --- the command ----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Any:
    env = {
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
        "SECUREX_CONFIG": "",
    }

    def invoke(*args: str) -> Any:
        result = CliRunner().invoke(main, list(args), env=env)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    assert invoke("init").exit_code == 0
    assert invoke("tenant", "add", MDM, "Mont-de-Marsan").exit_code == 0
    return invoke


def test_command_reports_errors_in_french_without_personal_data(cli: Any, tmp_path: Path) -> None:
    secret_name, secret_first = "Zyxwvutsrq", "Ombeline"
    rows = [
        NAISSANCE,
        DECES,
        {**NAISSANCE, "number": "13", "enfant.nom": secret_name, "naissance.date": "32/01/1987"},
        {**NAISSANCE, "number": "14", "kind": secret_first, "enfant.nom": secret_name},
        {**MARIAGE, "epoux.1.nom": secret_name, "epoux.1.sexe": secret_first},
        {**DECES, "number": "41", "scan": f"{secret_name}.pdf"},
    ]
    path = write_csv(tmp_path / "registre.csv", rows, delimiter=";")
    report_path = tmp_path / "rapport.json"
    result = cli("registry", "import", str(path), "--commune", MDM, "--report", str(report_path))
    assert result.exit_code == 65
    assert result.stdout == ""
    assert "Erreur : 4 erreurs sur 4 lignes : rien n'a été importé." in result.stderr
    assert f"  - ligne 4, naissance.date : {DATE_MESSAGE}" in result.stderr
    assert "  - ligne 5, kind : type d'acte inconnu" in result.stderr
    assert "  - ligne 6, epoux.1.sexe : valeur non admise (attendu : 'M' ou 'F')" in result.stderr
    assert "  - ligne 7, scan : fichier de numérisation introuvable" in result.stderr
    saved = json.loads(report_path.read_text(encoding="utf-8"))
    assert saved["imported"] is False and saved["commune"] == MDM
    assert saved["errors"][0] == {"line": 4, "field": "naissance.date", "message": DATE_MESSAGE}
    for text in (result.stderr, report_path.read_text(encoding="utf-8")):
        assert secret_name not in text and secret_first not in text
        assert "Dupont" not in text and "Lartigue" not in text


def test_command_imports_and_says_how_many(cli: Any, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "p12.pdf").write_bytes(PDF)
    path = write_csv(tmp_path / "registre.csv", [{**NAISSANCE, "scan": "p12.pdf"}, DECES])
    dry = cli("registry", "import", str(path), "--commune", MDM, "--scans", str(scans), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "rien n'a été importé (--dry-run)" in dry.stdout
    result = cli("registry", "import", str(path), "--commune", MDM, "--scans", str(scans))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "2 actes importés dans le registre de Mont-de-Marsan (dont 1 avec numérisation).\n"
    )
    again = cli("registry", "import", str(path), "--commune", MDM, "--scans", str(scans))
    assert again.exit_code == 65
    assert "ligne 2, number : numéro déjà attribué dans le registre de la commune" in again.stderr
    unknown = cli("registry", "import", str(path), "--commune", "99999")
    assert unknown.exit_code == 66 and "Commune inconnue" in unknown.stderr
    other = tmp_path / "registre.txt"
    other.write_text("x")
    wrong = cli("registry", "import", str(other), "--commune", MDM)
    assert wrong.exit_code == 65 and ".csv ou .json" in wrong.stderr
