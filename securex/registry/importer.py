"""Import of digitised paper registers: a CSV or JSON file of acts already drawn up
and signed on paper, each with its year and number, optionally with a scanned page.

The file is read twice, streaming: a first pass validates every line and collects
every error (nothing is written); the second writes every act, and its scan, in one
transaction, which is rolled back whole if anything still fails. The report names
lines, fields and French messages only, never a value read from the file: the
values are personal data, and reports end up in terminals, logs and tickets.

The file format is specified in docs/registry-import.md.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Protocol, TextIO

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from securex.accounts.service import Actor
from securex.db import transaction
from securex.errors import Conflict, ValidationFailed
from securex.registry import service
from securex.registry.models import Act
from securex.registry.schema import CONTENT_MODELS, ActKind
from securex.vault import Vault

PARIS = service.PARIS
COMMON = ("kind", "year", "number", "drawn_at", "officer", "scan")
REQUIRED = ("kind", "year", "number", "drawn_at", "officer")
FIRST_YEAR = 1792  # the état civil is laïcised by the law of 20 September 1792
OFFICER_MAX = 120  # the width of acts.officer_name
# One act is a few kilobytes; a JSON value this large is a broken file, and reading
# on would pull the rest of it into memory to find out.
JSON_ITEM_MAX = 1 << 20
JSON_CHUNK = 1 << 16
PDF_MAGIC = b"%PDF-"


# --- the report -------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One error: where (line, field) and what, in French. Never a value of the file."""

    line: int | None  # None: the file as a whole
    field: str
    message: str


@dataclass
class ImportReport:
    insee: str
    commune: str
    unit: str  # "ligne" (CSV: physical line, header = 1) or "élément" (JSON: item index + 1)
    dry_run: bool
    acts: int = 0
    scans: int = 0
    imported: bool = False
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def add(self, line: int | None, field_name: str, message: str) -> None:
        self.issues.append(Issue(line, field_name, message))

    def sorted_issues(self) -> list[Issue]:
        return sorted(self.issues, key=lambda i: -1 if i.line is None else i.line)

    def text_lines(self) -> list[str]:
        """ "ligne 4, naissance.date : date invalide (attendu JJ/MM/AAAA)"."""
        out = []
        for issue in self.sorted_issues():
            where = "fichier" if issue.line is None else f"{self.unit} {issue.line}"
            if issue.field:
                where += f", {issue.field}"
            out.append(f"{where} : {issue.message}")
        return out

    def summary(self) -> str:
        n, k = self.acts, self.scans
        what = f"{n} acte{'s' if n > 1 else ''}"
        scans = f"dont {k} avec numérisation"
        if not self.ok:
            count = len(self.issues)
            lines = len({i.line for i in self.issues if i.line is not None})
            where = (
                f"sur {lines} {self.unit}{'s' if lines > 1 else ''}" if lines else "dans le fichier"
            )
            return f"{count} erreur{'s' if count > 1 else ''} {where} : rien n'a été importé."
        if self.dry_run:
            return f"Fichier valide : {what} ({scans}) ; rien n'a été importé (--dry-run)."
        done = f"{what} importé{'s' if n > 1 else ''}"
        return f"{done} dans le registre de {self.commune} ({scans})."

    def to_json(self) -> dict[str, Any]:
        return {
            "commune": self.insee,
            "dry_run": self.dry_run,
            "imported": self.imported,
            "acts": self.acts,
            "scans": self.scans,
            "errors": [
                {"line": i.line, "field": i.field, "message": i.message}
                for i in self.sorted_issues()
            ],
        }


class ProgressBar(Protocol):
    def update(self, n_steps: int) -> None: ...


Progress = Callable[[str, int], AbstractContextManager[ProgressBar]]


class _NoBar:
    def update(self, n_steps: int) -> None:
        pass


# --- values: dates, hours, yes/no -------------------------------------------------------

_DATE_FR = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_DATE_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2}))?|[hH](\d{2})?)")
_MOMENT = re.compile(r"(?P<date>[\d/-]+)(?:(?:[T ]|\s+à\s+)(?P<time>[\d:hH]+))?")
_YES = {"oui", "true", "1", "vrai"}
_NO = {"non", "false", "0", "faux"}

DATE_MESSAGE = "date invalide (attendu JJ/MM/AAAA ou AAAA-MM-JJ)"
TIME_MESSAGE = "heure invalide (attendu HH:MM ou HHhMM)"
BOOL_MESSAGE = "valeur invalide (attendu oui ou non)"


def parse_date(text: str) -> date | None:
    """`JJ/MM/AAAA` or `AAAA-MM-JJ`; None when it is neither or not a real day."""
    text = text.strip()
    try:
        if m := _DATE_FR.fullmatch(text):
            return date(int(m[3]), int(m[2]), int(m[1]))
        if m := _DATE_ISO.fullmatch(text):
            return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None
    return None


def parse_time(text: str) -> time | None:
    """`HH:MM`, `HH:MM:SS`, `HHhMM` or `HHh`; None otherwise."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        return None
    minutes = m[2] or m[4] or "0"
    try:
        return time(int(m[1]), int(minutes), int(m[3] or 0))
    except ValueError:
        return None


def parse_moment(text: str) -> datetime | None:
    """When an act was drawn up: a date with an optional hour, in Paris time unless the
    text carries an offset (ISO 8601). Returned aware."""
    text = text.strip()
    m = _MOMENT.fullmatch(text)
    if m is not None:
        day = parse_date(m["date"])
        hour = parse_time(m["time"]) if m["time"] else time(0, 0)
        if day is None or hour is None:
            return None
        return datetime.combine(day, hour, tzinfo=PARIS)
    try:  # the other ISO 8601 forms, e.g. with an offset
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=PARIS)


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X, `Annotated[X, ...]` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def leaf_type(kind: ActKind, path: list[str]) -> Any:
    """The schema's type at a dotted path of an act's content (None if there is no
    such field): read from the pydantic models, so a new date field needs no change
    here."""
    node: Any = CONTENT_MODELS[kind]
    for segment in path:
        node = _unwrap(node)
        if segment.isdigit():
            if typing.get_origin(node) is not list:
                return None
            node = typing.get_args(node)[0]
        elif isinstance(node, type) and issubclass(node, BaseModel):
            info = node.model_fields.get(segment)
            if info is None:
                return None
            node = info.annotation
        else:
            return None
    return _unwrap(node)


def _coerce(kind: ActKind, key: str, value: Any) -> tuple[Any, str | None]:
    """A cell's value as the schema's type wants it, or an error message. Dates are
    parsed here rather than by pydantic, which reads "12" as a Unix timestamp."""
    wanted = leaf_type(kind, key.split("."))
    if wanted is date:
        if isinstance(value, str) and (day := parse_date(value)):
            return day.isoformat(), None
        return None, DATE_MESSAGE
    if wanted is time:
        if isinstance(value, str) and (hour := parse_time(value)):
            return hour.isoformat(), None
        return None, TIME_MESSAGE
    if wanted is bool:
        if isinstance(value, bool):
            return value, None
        word = str(value).strip().lower()
        if word in _YES or word in _NO:
            return word in _YES, None
        return None, BOOL_MESSAGE
    return value, None


# --- flat dotted names <-> nested content -----------------------------------------------


class ShapeError(ValueError):
    """Dotted names that cannot be nested (a name used both as a value and as a group,
    list positions mixed with names). `problems` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f} : {m}" for f, m in problems))
        self.problems = problems


@dataclass
class Nested:
    data: dict[str, Any]
    # Where a list had gaps (only `parents.1` given), its items are renumbered from 0;
    # this maps such a new path back to the name in the file, for error messages.
    origin: dict[str, str]

    def field_in_file(self, path: str) -> str:
        parts = path.split(".") if path else []
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in self.origin:
                return ".".join([self.origin[prefix], *parts[cut:]])
        return path


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists -> {"parents.0.nom": ...}; empty containers vanish."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def unflatten(flat: Mapping[str, Any]) -> Nested:
    """{"parents.1.nom": "…"} -> {"parents": [{"nom": "…"}]}: a numeric segment makes a
    list, in the order of the numbers, without gaps. `None` values are absent."""
    tree: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in flat.items():
        if value is None:
            continue
        parts = key.split(".")
        if not all(parts):
            problems.append((key, "nom de champ invalide"))
            continue
        node = tree
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append((".".join(parts[: depth + 1]), "champ à la fois valeur et groupe"))
                break
            node = child
        else:
            if isinstance(node.get(parts[-1]), dict):
                problems.append((key, "champ à la fois valeur et groupe"))
            else:
                node[parts[-1]] = value
    origin: dict[str, str] = {}

    def join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def build(node: dict[str, Any], new: str, old: str) -> Any:
        keys = list(node)
        numeric = [k.isdigit() for k in keys]
        if any(numeric) and not all(numeric):
            problems.append((old, "positions de liste et noms de champs mélangés"))
            return None
        if keys and all(numeric):
            out = []
            for index, key in enumerate(sorted(keys, key=int)):
                new_path, old_path = join(new, str(index)), join(old, key)
                if new_path != old_path:
                    origin[new_path] = old_path
                child = node[key]
                out.append(build(child, new_path, old_path) if isinstance(child, dict) else child)
            return out
        return {
            k: build(v, join(new, k), join(old, k)) if isinstance(v, dict) else v
            for k, v in node.items()
        }

    data = build(tree, "", "")
    if problems:
        raise ShapeError(problems)
    if not isinstance(data, dict):  # the whole content was a list: not an act
        raise ShapeError([("", "le contenu de l'acte doit être un groupe de champs")])
    return Nested(data, origin)


# --- pydantic's errors, in French --------------------------------------------------------

_LIMIT = re.compile(r"\d+")


def _french(error: Mapping[str, Any]) -> str:
    """The service's field error (English pydantic text) as a French message. Only the
    type and the schema's own limits are used: pydantic was told not to include the
    input, and nothing of the file is repeated."""
    kind, text = str(error.get("type", "")), str(error.get("message", ""))
    limit = next(iter(_LIMIT.findall(text)), "")
    if kind == "missing":
        return "champ obligatoire manquant"
    if kind == "extra_forbidden":
        return "champ inconnu pour ce type d'acte"
    if kind == "string_too_short":
        return "ne doit pas être vide"
    if kind == "string_too_long":
        return f"texte trop long ({limit} caractères au plus)"
    if kind == "too_short":
        return f"au moins {limit} attendu(s)"
    if kind == "too_long":
        return f"au plus {limit} admis"
    if kind.startswith("date"):
        return DATE_MESSAGE
    if kind.startswith("time"):
        return TIME_MESSAGE
    if kind.startswith("bool"):
        return BOOL_MESSAGE
    if kind in ("enum", "literal_error") and text.startswith("Input should be "):
        # The allowed values come from the schema ("'M' or 'F'"), not from the file.
        allowed = text.removeprefix("Input should be ").replace(" or ", " ou ")
        return f"valeur non admise (attendu : {allowed})"
    if kind in ("value_error", "assertion_error"):
        # The schema's own validators speak French already.
        return text.split(", ", 1)[1] if ", " in text else "valeur invalide"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "un groupe de champs est attendu"
    if kind == "list_type":
        return "une liste est attendue"
    return "valeur invalide"


# --- reading the file ---------------------------------------------------------------------


@dataclass
class _Raw:
    """One act as read: its line, the common fields, the content as flat dotted names."""

    line: int
    common: dict[str, Any]
    flat: dict[str, Any]
    issues: list[tuple[str, str]] = field(default_factory=list)
    whole: bool = True  # False: not an act at all (a JSON item that is not an object)


class _FileProblem(Exception):
    """The file cannot be read on (a bad header, broken JSON): (field, message) pairs."""

    def __init__(self, line: int | None, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.line, self.problems = line, problems


def _position(fh: TextIO) -> int:
    # The binary position under the text layer: what the progress bar counts. It runs
    # ahead by the decoder's read-ahead, which is fine for a progress bar.
    return fh.buffer.tell()


def _csv_acts(fh: TextIO) -> Iterator[_Raw]:
    header_line = fh.readline()
    # The header names contain neither separator, so counting them there is reliable;
    # csv.Sniffer looks at the data too, where "Dax, Landes" misleads it.
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.reader(itertools.chain([header_line], fh), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise _FileProblem(1, [("", "ligne d'en-tête absente (noms des colonnes)")])
        names = [h.strip().lower() for h in header]
        seen: set[str] = set()
        problems = []
        for name in names:
            if not name:
                continue
            if name in seen:
                problems.append((name, "colonne en double"))
            elif name not in COMMON and not all(name.split(".")):
                problems.append((name, "nom de colonne invalide"))
            seen.add(name)
        problems += [(n, "colonne obligatoire absente") for n in REQUIRED if n not in seen]
        if problems:
            # Every line would fail the same way: the header's report is enough.
            raise _FileProblem(1, problems)
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank lines, often left at the end by spreadsheets
            raw = _Raw(line, {}, {})
            for index, cell in enumerate(cells):
                value = cell.strip() or None  # an empty cell is an absent field
                if index >= len(names) or not names[index]:
                    if value is not None and not raw.issues:
                        raw.issues.append(("", "valeur dans une colonne sans nom"))
                    continue
                target = raw.common if names[index] in COMMON else raw.flat
                target[names[index]] = value
            yield raw
    except csv.Error:
        raise _FileProblem(reader.line_num, [("", "ligne CSV illisible (guillemets ?)")]) from None


def _bad_utf8_line(path: Path) -> int:
    """The first line of `path` that is not UTF-8 (the text layer decodes by blocks, so
    its error does not say which line). A UTF-8 sequence never holds a newline byte,
    so decoding line by line is exact."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


class _JsonStream:
    """The items of a JSON list of acts (or of `{"acts": [...]}`), one at a time: the
    file is never held whole in memory, and is read again for the second pass."""

    def __init__(self, fh: TextIO, chunk: int = JSON_CHUNK) -> None:
        self.fh, self.chunk = fh, chunk
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()
        self.count = 0

    def _fill(self, wanted: int) -> bool:
        if self.eof:
            return False
        data = self.fh.read(wanted)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        return True

    def _peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill(self.chunk):
                return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def _take(self, allowed: str) -> str:
        char = self._peek()
        if not char or char not in allowed:
            raise self._broken()
        self.pos += 1
        return char

    def _value(self) -> Any:
        self._peek()
        while True:
            pending = len(self.buf) - self.pos
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                end = -1
            # A number cut by the buffer's end decodes fine ("12" of "123"): a value
            # that reaches the end is only trusted once the file has no more to say.
            if end != -1 and (end < len(self.buf) or self.eof):
                self.pos = end
                return value
            if pending > JSON_ITEM_MAX or not self._fill(max(self.chunk, pending)):
                if end != -1:
                    self.pos = end
                    return value
                raise self._broken()

    def _broken(self) -> _FileProblem:
        after = f" après l'élément {self.count}" if self.count else ""
        return _FileProblem(None, [("", f"JSON invalide{after} : lecture arrêtée")])

    def items(self) -> Iterator[Any]:
        first = self._take("[{")
        found = first == "["
        if found:
            yield from self._list()
        else:
            if self._peek() == "}":
                self.pos += 1
            else:
                while True:
                    key = self._value()
                    if not isinstance(key, str):
                        raise self._broken()
                    self._take(":")
                    if key == "acts" and not found:
                        found = True
                        self._take("[")
                        yield from self._list()
                    else:
                        self._value()  # other keys (a title, a source) are not read
                    if self._take(",}") == "}":
                        break
        if self._peek():
            raise self._broken()
        if not found:
            raise _FileProblem(None, [("", 'clé « acts » absente (attendu : {"acts": [...]})')])

    def _list(self) -> Iterator[Any]:
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            item = self._value()
            self.count += 1
            yield item
            if self._take(",]") == "]":
                return


def _json_acts(fh: TextIO) -> Iterator[_Raw]:
    for index, item in enumerate(_JsonStream(fh).items(), start=1):
        yield _json_raw(index, item)


def _json_raw(index: int, item: Any) -> _Raw:
    raw = _Raw(index, {}, {})
    if not isinstance(item, dict):
        raw.issues.append(("", "un objet JSON est attendu pour chaque acte"))
        raw.whole = False
        return raw
    for key, value in item.items():
        if key in COMMON:
            raw.common[key] = _blank_is_absent(value)
        elif key == "content":
            if not isinstance(value, dict):
                raw.issues.append(("content", "un objet JSON est attendu"))
                continue
            raw.flat = {k: _blank_is_absent(v) for k, v in flatten(value).items()}
        else:
            raw.issues.append((_safe_name(key), "champ inconnu"))
    return raw


def _blank_is_absent(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _safe_name(name: str) -> str:
    """A field name from the file, fit for the report: printable and short."""
    return "".join(c if c.isprintable() else "?" for c in str(name))[:60]


# --- one act, checked ---------------------------------------------------------------------


@dataclass
class _Checked:
    """One act after validation; the fields that failed are None and `issues` says
    why. Written only when `issues` is empty."""

    line: int
    issues: list[tuple[str, str]]
    kind: ActKind | None = None
    year: int | None = None
    number: int | None = None
    drawn_at: datetime | None = None
    officer: str | None = None
    content: dict[str, Any] | None = None
    scan: Path | None = None
    scan_name: str | None = None

    @property
    def key(self) -> tuple[int, str, int] | None:
        """The act's place in the commune's registers: (year, register, number)."""
        if self.kind is None or self.year is None or self.number is None:
            return None
        return (self.year, self.kind.register, self.number)


@dataclass(frozen=True)
class _Setup:
    scans_dir: Path
    max_scan_bytes: int
    now: datetime


_INTEGER = re.compile(r"[0-9]{1,9}")


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _check(raw: _Raw, setup: _Setup) -> _Checked:
    out = _Checked(raw.line, list(raw.issues))
    if not raw.whole:
        return out
    common = raw.common
    for name in REQUIRED:
        if common.get(name) is None:
            out.issues.append((name, "champ obligatoire manquant"))
    if (value := common.get("kind")) is not None:
        try:
            out.kind = ActKind(str(value).strip().lower())
        except ValueError:
            names = ", ".join(k.value for k in ActKind)
            out.issues.append(("kind", f"type d'acte inconnu (attendu : {names})"))
    last_year = setup.now.astimezone(PARIS).year
    if (value := common.get("year")) is not None:
        year = _integer(value)
        if year is None:
            out.issues.append(("year", "année invalide (attendu AAAA)"))
        elif not FIRST_YEAR <= year <= last_year:
            out.issues.append(("year", f"année hors des registres ({FIRST_YEAR} à {last_year})"))
        else:
            out.year = year
    if (value := common.get("number")) is not None:
        number = _integer(value)
        if number is None or number < 1:
            out.issues.append(("number", "numéro invalide (entier positif attendu)"))
        else:
            out.number = number
    if (value := common.get("drawn_at")) is not None:
        moment = parse_moment(value) if isinstance(value, str) else None
        if moment is None:
            out.issues.append(
                ("drawn_at", "date invalide (attendu JJ/MM/AAAA, heure HH:MM facultative)")
            )
        elif moment > setup.now:
            out.issues.append(("drawn_at", "date dans le futur"))
        elif out.year is not None and moment.astimezone(PARIS).year != out.year:
            # Inferred, not read: a register is yearly, so an act is drawn up during
            # the year of its register. A mismatch is a typo in one of the two.
            out.issues.append(("drawn_at", "ne tombe pas dans l'année du registre (year)"))
        else:
            out.drawn_at = moment
    if (value := common.get("officer")) is not None:
        if not isinstance(value, str):
            out.issues.append(("officer", "texte attendu"))
        elif len(value) > OFFICER_MAX:
            out.issues.append(("officer", f"nom trop long ({OFFICER_MAX} caractères au plus)"))
        else:
            out.officer = value
    if out.kind is not None:  # without a kind, the content has no schema to check
        out.content = _check_content(out.kind, raw.flat, out.issues)
    if (value := common.get("scan")) is not None:
        if not isinstance(value, str):
            out.issues.append(("scan", "nom de fichier attendu"))
        else:
            out.scan, problem = _check_scan(value, setup)
            out.scan_name = value
            if problem:
                out.issues.append(("scan", problem))
    return out


def _check_content(
    kind: ActKind, flat: Mapping[str, Any], issues: list[tuple[str, str]]
) -> dict[str, Any] | None:
    typed: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in flat.items():
        if value is None:
            continue
        if key == "kind":  # JSON content may repeat the kind: it must agree
            if value != kind.value:
                issues.append(("kind", "ne correspond pas au type de l'acte"))
            continue
        coerced, problem = _coerce(kind, key, value)
        if problem:
            issues.append((_safe_name(key), problem))
            failed.add(key)
        else:
            typed[key] = coerced
    try:
        nested = unflatten(typed)
    except ShapeError as exc:
        issues.extend((_safe_name(f), m) for f, m in exc.problems)
        return None
    try:
        service.validate_content(kind, nested.data)  # the very check import_act makes
    except ValidationFailed as exc:
        for error in exc.extra.get("errors", []):
            name = nested.field_in_file(str(error.get("field", "")))
            if any(_follows_from(name, error, f) for f in failed):
                continue
            issues.append((_safe_name(name), _french(error)))
        return None
    return nested.data


def _follows_from(name: str, error: Mapping[str, Any], failed: str) -> bool:
    """Whether a schema error only repeats a field already reported: a bad date is
    absent by now, so "missing" on it, or a group's own rule needing it ("contrat :
    date et notaire obligatoires"), says nothing new. The act's top-level rules are
    always reported: they may be about another field."""
    if name == failed or name.startswith(f"{failed}."):
        return True
    return bool(name) and failed.startswith(f"{name}.") and error.get("type") == "value_error"


def _check_scan(name: str, setup: _Setup) -> tuple[Path | None, str | None]:
    base = setup.scans_dir
    target = (base / name).resolve()
    # The file comes from outside (a digitisation contractor): it must not reach files
    # elsewhere on the server and have them sealed into the commune's vault.
    if not target.is_relative_to(base):
        return None, "le fichier doit se trouver dans le dossier des numérisations"
    try:
        if not target.is_file():
            return None, "fichier de numérisation introuvable"
        if target.stat().st_size > setup.max_scan_bytes:
            return None, f"numérisation trop volumineuse ({_size(setup.max_scan_bytes)} au plus)"
        with target.open("rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None, "fichier de numérisation illisible"
    if not head.lstrip().startswith(PDF_MAGIC):  # as service.attach_scan checks it
        return None, "la numérisation doit être un fichier PDF"
    return target, None


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} Mio" if n >= 1 << 20 else f"{n} octets"


# --- the two passes -----------------------------------------------------------------------


FORMATS: dict[str, tuple[str, Callable[[TextIO], Iterator[_Raw]]]] = {
    ".csv": ("ligne", _csv_acts),
    ".json": ("élément", _json_acts),
}


def _open(path: Path) -> TextIO:
    # utf-8-sig: the byte order mark spreadsheets write is skipped when present.
    return open(path, encoding="utf-8-sig", newline="")


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _bar(progress: Progress | None, label: str, length: int) -> AbstractContextManager[Any]:
    return progress(label, length) if progress else nullcontext(_NoBar())


def _read(path: Path, bar: ProgressBar, report: ImportReport) -> Iterator[_Raw]:
    """The file's acts; a problem that stops the reading goes into the report."""
    reader = FORMATS[path.suffix.lower()][1]
    with _open(path) as fh:
        done = 0
        try:
            for raw in reader(fh):
                yield raw
                position = _position(fh)
                bar.update(position - done)
                done = position
        except _FileProblem as exc:
            for name, message in exc.problems:
                report.add(exc.line, _safe_name(name), message)
        except UnicodeDecodeError:
            line = _bad_utf8_line(path)
            message = "texte non encodé en UTF-8 (enregistrez le fichier en UTF-8)"
            if report.unit == "ligne":
                report.add(line, "", message)
            else:
                report.add(None, "", f"{message}, ligne {line} du fichier")


def import_file(
    path: Path,
    *,
    insee: str,
    scans_dir: Path | None = None,
    dry_run: bool = False,
    session_factory: sessionmaker[Session],
    vault: Vault,
    actor: Actor,
    now: datetime,
    max_scan_bytes: int,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate every act of the CSV or JSON file at `path`, then (unless `dry_run`
    or any error) import them all into `insee`'s registers in one transaction. Scans
    are looked for in `scans_dir`, by default the file's folder. Raises NotFound for
    an unknown commune and ValidationFailed for a file that is neither CSV nor JSON;
    every other problem is in the report."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValidationFailed(
            f"Format de fichier non reconnu (« {_safe_name(suffix) or 'sans extension'} ») : "
            "donnez un fichier .csv ou .json."
        )
    base = (scans_dir or path.parent).resolve()
    if not base.is_dir():
        raise ValidationFailed("Le dossier des numérisations est introuvable.")
    with session_factory() as db:
        commune = service.tenant_of(db, insee).name
    report = ImportReport(insee, commune, FORMATS[suffix][0], dry_run)
    setup = _Setup(base, max_scan_bytes, now)
    stamp = _stamp(path)

    keys: dict[tuple[int, str, int], int] = {}
    with _bar(progress, "Vérification", stamp[0]) as bar:
        for raw in _read(path, bar, report):
            checked = _check(raw, setup)
            report.acts += 1
            report.scans += checked.scan is not None
            for name, message in checked.issues:
                report.add(raw.line, name, message)
            key = checked.key
            if key is None:
                continue
            if key in keys:
                report.add(
                    raw.line,
                    "number",
                    f"numéro déjà donné à un autre acte du même registre et de la même année "
                    f"({report.unit} {keys[key]})",
                )
            else:
                keys[key] = raw.line
    if keys:
        _numbers_taken(session_factory, insee, keys, report)
    if report.ok and not report.acts:
        report.add(None, "", "aucun acte dans le fichier")
    if not report.ok or dry_run:
        return report
    _write(path, report, setup, stamp, progress, session_factory, vault, actor)
    return report


TAKEN = "numéro déjà attribué dans le registre de la commune"


def _numbers_taken(
    session_factory: sessionmaker[Session],
    insee: str,
    keys: Mapping[tuple[int, str, int], int],
    report: ImportReport,
) -> None:
    """Numbers of the file that the commune's registers already hold. import_act checks
    it again at writing time; this is for a complete report before anything is written."""
    years = sorted({year for year, _, _ in keys})
    query = (
        select(Act.year, Act.register, Act.number)
        .where(Act.insee == insee, Act.year.in_(years), Act.number.is_not(None))
        .execution_options(yield_per=10_000)
    )
    with session_factory() as db:
        for year, register, number in db.execute(query):
            line = keys.get((int(year or 0), register, int(number or 0)))
            if line is not None:
                report.add(line, "number", TAKEN)


class _Abort(Exception):
    """Roll the import's transaction back."""


def _write(
    path: Path,
    report: ImportReport,
    setup: _Setup,
    stamp: tuple[int, int],
    progress: Progress | None,
    session_factory: sessionmaker[Session],
    vault: Vault,
    actor: Actor,
) -> None:
    acts = scans = 0
    now = setup.now
    try:
        with (
            _bar(progress, "Import", stamp[0]) as bar,
            transaction(session_factory) as db,
        ):
            for raw in _read(path, bar, report):
                checked = _check(raw, setup)
                if checked.issues:  # the file changed since the first pass
                    for name, message in checked.issues:
                        report.add(raw.line, name, message)
                    continue
                assert checked.kind and checked.year and checked.number and checked.drawn_at
                try:
                    act_id = service.import_act(
                        db,
                        actor,
                        insee=report.insee,
                        kind=checked.kind.value,
                        year=checked.year,
                        number=checked.number,
                        drawn_at=checked.drawn_at,
                        officer_name=checked.officer or "",
                        content=checked.content or {},
                        now=now,
                        vault=vault,
                    )
                    if checked.scan is not None and checked.scan_name is not None:
                        data = _read_scan(checked.scan, setup.max_scan_bytes)
                        if data is None:
                            report.add(raw.line, "scan", "fichier de numérisation modifié")
                            continue
                        service.attach_scan(
                            db,
                            actor,
                            report.insee,
                            act_id,
                            filename=checked.scan_name,
                            data=data,
                            now=now,
                            vault=vault,
                        )
                        scans += 1
                    acts += 1
                except Conflict:
                    report.add(raw.line, "number", TAKEN)
                except ValidationFailed as exc:
                    # The service's own message may quote a value: only field errors
                    # (translated) or a generic line go into the report.
                    errors = exc.extra.get("errors") or [{"field": "", "type": ""}]
                    for error in errors:
                        report.add(
                            raw.line, _safe_name(str(error.get("field", ""))), _french(error)
                        )
                except IntegrityError:
                    # Someone numbered an act in the same register meanwhile; the
                    # transaction is unusable now.
                    report.add(raw.line, "number", f"{TAKEN} (pendant l'import)")
                    raise _Abort from None
            if report.ok and (acts != report.acts or _stamp(path) != stamp):
                report.add(None, "", "le fichier a changé pendant l'import : relancez l'import")
            if not report.ok:
                raise _Abort
    except _Abort:
        return
    report.acts, report.scans, report.imported = acts, scans, True


def _read_scan(path: Path, limit: int) -> bytes | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit or not data.lstrip().startswith(PDF_MAGIC):
        return None
    return data
