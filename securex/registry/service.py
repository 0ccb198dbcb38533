"""Business operations on the registry: drafting and sealing acts, mentions marginales
and avis de mention between communes, copies and extraits, search by blind index.

Every function takes an explicit actor, plain values and `now`; the caller owns the
transaction. Personal data are opened and sealed inside `column_keys` blocks here, so
what leaves this module is plain records (never ORM rows whose sealed columns would
be read again outside the keys' scope). Each operation writes its audit event.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, defer

from securex.accounts.models import Role, Tenant, User
from securex.accounts.service import Actor
from securex.audit.events import EventType
from securex.audit.log import record
from securex.errors import Conflict, Forbidden, NotFound, ValidationFailed
from securex.registry import render
from securex.registry.models import Act, ActIndex, ActScan, Avis, AvisStatus, Delivery, Mention
from securex.registry.models import Status as Status
from securex.registry.schema import (
    DELIVERIES,
    ActKind,
    Content,
    Deces,
    DeliveryKind,
    Mariage,
    MentionFacts,
    MentionKind,
    Person,
    Reconnaissance,
    main_event,
    mention_allowed,
    parse_content,
    subjects,
)
from securex.vault import Vault
from securex.vault.columns import BlindIndexer, column_keys, normalise

PARIS = ZoneInfo("Europe/Paris")
# An avis de mention is answered within 60 days (domain page: COMEDEC's avis flow).
AVIS_DEADLINE = timedelta(days=60)
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U


# --- records handed to callers --------------------------------------------------------


@dataclass(frozen=True)
class MentionRecord:
    id: int
    act_id: int
    status: str
    view: render.MentionView
    avis_id: int | None
    document_id: str | None


@dataclass(frozen=True)
class ActRecord:
    id: int
    status: str
    view: render.ActView
    imported: bool
    document_id: str | None
    mentions: list[MentionRecord] = field(default_factory=list)
    scans: list[int] = field(default_factory=list)

    @property
    def kind(self) -> ActKind:
        return self.view.kind

    @property
    def content(self) -> Content:
        return self.view.content

    @property
    def reference(self) -> str:
        """ "Acte de naissance n° 12/2026": no names, for job results and messages that
        are kept outside the sealed columns."""
        number = f" n° {self.view.number}/{self.view.year}" if self.view.number else " (projet)"
        return f"{self.view.kind.label}{number}"

    @property
    def title(self) -> str:
        """ "Acte de naissance n° 12/2026 — DUPONT Léa", for lists and avis."""
        number = f" n° {self.view.number}/{self.view.year}" if self.view.number else " (projet)"
        names = ", ".join(f"{p.nom.upper()} {p.prenoms}" for p in subjects(self.view.content))
        return f"{self.view.kind.label}{number} — {names}" if names else self.view.kind.label

    def signed_mentions(self) -> list[render.MentionView]:
        return [m.view for m in self.mentions if m.status == Status.SIGNED]


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    act_id: int
    kind: DeliveryKind
    code: str
    status: str
    requester: str
    purpose: str
    all_marriages: bool
    requested_at: datetime
    signed_at: datetime | None
    signer_name: str | None
    document_id: str | None


@dataclass(frozen=True)
class AvisRecord:
    id: int
    status: AvisStatus
    source_insee: str
    target_insee: str | None
    target_commune: str
    mention_kind: MentionKind
    sent_at: datetime | None
    due_on: date | None
    receipt_at: datetime | None
    reason: str | None
    source_act_id: int | None
    target_act_id: int | None
    document_id: str | None
    payload: dict[str, Any] | None  # None when the reader's commune cannot open it

    def overdue(self, today: date) -> bool:
        return self.status == AvisStatus.SENT and self.due_on is not None and self.due_on < today


# --- helpers -------------------------------------------------------------------------


def paris_date(moment: datetime) -> date:
    return moment.astimezone(PARIS).date()


def tenant_of(db: Session, insee: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.insee == insee))
    if tenant is None:
        raise NotFound(f"Commune inconnue : {insee}.")
    return tenant


@contextmanager
def _keys(db: Session, vault: Vault, insee: str, *also: str) -> Iterator[None]:
    with column_keys(db, vault.keyring, insee, *also):
        yield
        db.flush()  # seal what the block wrote while its keys are loaded


def _check_tenant(actor: Actor, insee: str) -> None:
    """A commune's staff reach its own acts only (décret 2017-890 art. 11)."""
    if actor.kind == "user" and actor.tenant != insee:
        raise NotFound("Acte introuvable.")


def validate_content(kind: ActKind, data: dict[str, Any]) -> Content:
    """The act content, or ValidationFailed listing each field's problem."""
    try:
        return parse_content(kind, data)
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(
            "Certains champs de l'acte sont invalides.", exc
        ) from None


def _kind(value: str) -> ActKind:
    try:
        return ActKind(value)
    except ValueError:
        names = ", ".join(k.value for k in ActKind)
        raise ValidationFailed(f"Type d'acte inconnu : {value!r} (attendu : {names}).") from None


def _load_act(db: Session, insee: str, act_id: int) -> Act:
    act = db.get(Act, act_id)
    if act is None or act.insee != insee:
        raise NotFound("Acte introuvable.")
    return act


def _mention_record(row: Mention, applied_place: str) -> MentionRecord:
    facts = MentionFacts.model_validate_json(row.facts)
    view = render.MentionView(
        kind=MentionKind(row.kind),
        facts=facts,
        applied_on=row.applied_on or paris_date(row.created_at),
        applied_place=applied_place,
        officer=row.officer_name or "",
        struck=False,
    )
    return MentionRecord(row.id, row.act_id, row.status, view, row.avis_id, row.document_id)


def _record(db: Session, act: Act, commune: str, *, light: bool = False) -> ActRecord:
    """The act with its mentions and scans (call inside the commune's keys); `light`:
    the content only."""
    kind = ActKind(act.kind)
    content = parse_content(kind, json.loads(act.content))
    view = render.ActView(
        kind=kind,
        insee=act.insee,
        commune=commune,
        year=act.year or paris_date(act.created_at).year,
        number=act.number,
        drawn_at=act.drawn_at,
        officer=act.officer_name,
        content=content,
    )
    if light:
        return ActRecord(act.id, act.status, view, act.imported, act.document_id)
    rows = list(
        db.scalars(
            select(Mention).where(Mention.act_id == act.id).order_by(Mention.applied_on, Mention.id)
        )
    )
    struck = {r.strikes_id for r in rows if r.strikes_id and r.status == Status.SIGNED}
    mentions = []
    for row in rows:
        rec = _mention_record(row, row.applied_place)
        if row.id in struck:
            rec = MentionRecord(
                rec.id,
                rec.act_id,
                rec.status,
                render.MentionView(**{**rec.view.__dict__, "struck": True}),
                rec.avis_id,
                rec.document_id,
            )
        mentions.append(rec)
    scans = list(db.scalars(select(ActScan.id).where(ActScan.act_id == act.id)))
    return ActRecord(act.id, act.status, view, act.imported, act.document_id, mentions, scans)


# --- blind indexes -------------------------------------------------------------------

INDEX_NP = "nom_prenoms"
INDEX_NPD = "nom_prenoms_date"
INDEX_NPDL = "nom_prenoms_date_lieu"


def _index_entries(indexer: BlindIndexer, content: Content) -> set[tuple[str, str]]:
    """Each subject is found by nom + prénoms, + a date (their birth, or the act's
    event), + that date's place."""
    event = main_event(content)
    entries: set[tuple[str, str]] = set()
    for person in subjects(content):
        entries.add((INDEX_NP, indexer.index(INDEX_NP, person.nom, person.prenoms)))
        pairs = [(person.date_naissance, person.lieu_naissance)]
        if event is not None:
            pairs.append((event.date, event.lieu))
        for day, place in pairs:
            if day is None:
                continue
            iso = day.isoformat()
            entries.add((INDEX_NPD, indexer.index(INDEX_NPD, person.nom, person.prenoms, iso)))
            if place:
                entries.add(
                    (INDEX_NPDL, indexer.index(INDEX_NPDL, person.nom, person.prenoms, iso, place))
                )
    return entries


def _reindex(db: Session, vault: Vault, act: Act, content: Content) -> None:
    indexer = BlindIndexer(db, vault.keyring, act.insee)
    db.execute(delete(ActIndex).where(ActIndex.act_id == act.id))
    for name, value in sorted(_index_entries(indexer, content)):
        db.add(ActIndex(act_id=act.id, tenant_id=act.tenant_id, name=name, value=value))


def _candidates(
    db: Session,
    vault: Vault,
    insee: str,
    *,
    nom: str,
    prenoms: str,
    day: date | None,
    lieu: str | None,
) -> list[int]:
    tenant = tenant_of(db, insee)
    indexer = BlindIndexer(db, vault.keyring, insee)
    if day and lieu:
        name, value = INDEX_NPDL, indexer.index(INDEX_NPDL, nom, prenoms, day.isoformat(), lieu)
    elif day:
        name, value = INDEX_NPD, indexer.index(INDEX_NPD, nom, prenoms, day.isoformat())
    else:
        name, value = INDEX_NP, indexer.index(INDEX_NP, nom, prenoms)
    return list(
        db.scalars(
            select(ActIndex.act_id)
            .where(ActIndex.tenant_id == tenant.id, ActIndex.name == name, ActIndex.value == value)
            .distinct()
            .order_by(ActIndex.act_id)
        )
    )


# --- acts ----------------------------------------------------------------------------


def create_act(
    db: Session,
    actor: Actor,
    *,
    insee: str,
    kind: str,
    content: dict[str, Any],
    now: datetime,
    vault: Vault,
) -> int:
    """A new draft (no number: numbers are given when the officier signs, so that the
    yearly series stays continuous)."""
    _check_tenant(actor, insee)
    act_kind = _kind(kind)
    parsed = validate_content(act_kind, content)
    tenant = tenant_of(db, insee)
    with _keys(db, vault, insee):
        act = Act(
            tenant_id=tenant.id,
            insee=insee,
            kind=act_kind.value,
            register=act_kind.register,
            status=Status.DRAFT.value,
            content=parsed.model_dump_json(),
            created_by=str(actor),
            created_at=now,
            updated_at=now,
        )
        db.add(act)
        db.flush()
        _reindex(db, vault, act, parsed)
    record(
        db,
        EventType.ACT_DRAFTED,
        actor=str(actor),
        subject=f"act:{act.id}",
        tenant=insee,
        details={"kind": act_kind.value},
        now=now,
    )
    return act.id


def update_draft(
    db: Session,
    actor: Actor,
    insee: str,
    act_id: int,
    *,
    content: dict[str, Any],
    now: datetime,
    vault: Vault,
) -> None:
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    if act.status == Status.SIGNED:
        raise Conflict(
            "Cet acte est signé : il ne se modifie plus. Ajoutez une mention marginale "
            "(rectification) à la place (Code civil 49)."
        )
    parsed = validate_content(ActKind(act.kind), content)
    with _keys(db, vault, insee):
        act.content = parsed.model_dump_json()
        act.status = Status.DRAFT.value  # an edit sends it back to drafting
        act.updated_at = now
        _reindex(db, vault, act, parsed)
    record(
        db, EventType.ACT_UPDATED, actor=str(actor), subject=f"act:{act.id}", tenant=insee, now=now
    )


def import_act(
    db: Session,
    actor: Actor,
    *,
    insee: str,
    kind: str,
    year: int,
    number: int,
    drawn_at: datetime,
    officer_name: str,
    content: dict[str, Any],
    now: datetime,
    vault: Vault,
) -> int:
    """An act of a paper register, digitised: already drawn up and signed on paper, so
    it enters sealed, with its own year and number (which must be free)."""
    _check_tenant(actor, insee)
    act_kind = _kind(kind)
    parsed = validate_content(act_kind, content)
    tenant = tenant_of(db, insee)
    if number < 1 or not 1792 <= year <= paris_date(now).year:
        raise ValidationFailed(f"Année ou numéro invalide : {year}/{number}.")
    taken = db.scalar(
        select(Act.id).where(
            Act.insee == insee,
            Act.year == year,
            Act.register == act_kind.register,
            Act.number == number,
        )
    )
    if taken:
        raise Conflict(f"Le registre {act_kind.register} {year} a déjà un acte n° {number}.")
    with _keys(db, vault, insee):
        act = Act(
            tenant_id=tenant.id,
            insee=insee,
            kind=act_kind.value,
            register=act_kind.register,
            year=year,
            number=number,
            status=Status.SIGNED.value,
            content=parsed.model_dump_json(),
            created_by=str(actor),
            created_at=now,
            updated_at=now,
            drawn_at=drawn_at,
            officer_name=officer_name.strip()[:120] or None,
            imported=True,
        )
        db.add(act)
        db.flush()
        _reindex(db, vault, act, parsed)
    record(
        db,
        EventType.ACT_IMPORTED,
        actor=str(actor),
        subject=f"act:{act.id}",
        tenant=insee,
        details={"kind": act_kind.value, "year": year, "number": number},
        now=now,
    )
    return act.id


def attach_scan(
    db: Session,
    actor: Actor,
    insee: str,
    act_id: int,
    *,
    filename: str,
    data: bytes,
    now: datetime,
    vault: Vault,
) -> int:
    """A scanned register page (PDF), encrypted into the vault like any document."""
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise ValidationFailed(f"{filename} : la numérisation doit être un fichier PDF.")
    object_id = _store(db, vault, insee, data, now)
    with _keys(db, vault, insee):
        scan = ActScan(
            act_id=act.id,
            object_id=object_id,
            filename=filename[-200:],
            created_by=str(actor),
            created_at=now,
        )
        db.add(scan)
    record(
        db,
        EventType.SCAN_ATTACHED,
        actor=str(actor),
        subject=f"act:{act.id}",
        tenant=insee,
        details={"scan": scan.id, "bytes": len(data)},
        now=now,
    )
    return scan.id


def submit_act(db: Session, actor: Actor, insee: str, act_id: int, *, now: datetime) -> None:
    """The agent asks the officier to review and sign."""
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    if act.status != Status.DRAFT:
        raise Conflict("Seul un projet d'acte peut être présenté à la signature.")
    act.status = Status.PENDING.value
    act.submitted_at = now
    record(
        db,
        EventType.ACT_SUBMITTED,
        actor=str(actor),
        subject=f"act:{act.id}",
        tenant=insee,
        now=now,
    )


def get_act(
    db: Session, actor: Actor, insee: str, act_id: int, *, now: datetime, vault: Vault
) -> ActRecord:
    """An act with its mentions; reading personal data is audited."""
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    tenant = tenant_of(db, insee)
    with _keys(db, vault, insee):
        rec = _record(db, act, tenant.name)
    record(
        db, EventType.ACT_VIEWED, actor=str(actor), subject=f"act:{act.id}", tenant=insee, now=now
    )
    return rec


def search(
    db: Session,
    actor: Actor,
    insee: str,
    *,
    nom: str,
    prenoms: str,
    day: date | None = None,
    lieu: str | None = None,
    kind: str | None = None,
    now: datetime,
    vault: Vault,
    audited: bool = True,
    light: bool = False,
) -> list[ActRecord]:
    """Acts whose subject has exactly this nom and prénoms (accents, case, hyphens and
    apostrophes folded), optionally born or concerned on `day`, at `lieu`. A caller
    whose own operation is audited with the search's outcome (a request matched
    against the registry) passes `audited=False`: one event per operation."""
    _check_tenant(actor, insee)
    if not normalise(nom) or not normalise(prenoms):
        raise ValidationFailed("Indiquez au moins le nom et les prénoms.")
    wanted = _kind(kind) if kind else None
    ids = _candidates(db, vault, insee, nom=nom, prenoms=prenoms, day=day, lieu=lieu)
    tenant = tenant_of(db, insee)
    found = []
    with _keys(db, vault, insee):
        for act in db.scalars(select(Act).where(Act.id.in_(ids)).order_by(Act.id)):
            if wanted is None or act.kind == wanted.value:
                found.append(_record(db, act, tenant.name, light=light))
    if not audited:
        return found
    record(
        db,
        EventType.ACT_SEARCHED,
        actor=str(actor),
        subject=f"tenant:{insee}",
        tenant=insee,
        details={"results": len(found), "with_date": day is not None, "with_place": bool(lieu)},
        now=now,
    )
    return found


def list_acts(db: Session, insee: str, *, status: str | None = None, limit: int = 50) -> list[Act]:
    """Rows for lists (kind, number, status, dates: nothing sealed is read)."""
    query = select(Act).where(Act.insee == insee)
    if status:
        query = query.where(Act.status == status)
    return list(db.scalars(query.order_by(Act.updated_at.desc(), Act.id.desc()).limit(limit)))


def _next_number(db: Session, act: Act, year: int) -> int:
    # The tenant row is locked so that two officers signing at once on PostgreSQL do
    # not both take the same number (SQLite serialises writers anyway).
    db.execute(select(Tenant.id).where(Tenant.id == act.tenant_id).with_for_update())
    last = db.scalar(
        select(func.max(Act.number)).where(
            Act.insee == act.insee, Act.year == year, Act.register == act.register
        )
    )
    return (last or 0) + 1


# --- mentions ------------------------------------------------------------------------


def _facts(data: dict[str, Any]) -> MentionFacts:
    try:
        return MentionFacts.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(
            "Certains champs de la mention sont invalides.", exc
        ) from None


def _mention_kind(value: str) -> MentionKind:
    try:
        return MentionKind(value)
    except ValueError:
        names = ", ".join(k.value for k in MentionKind)
        raise ValidationFailed(f"Mention inconnue : {value!r} (attendu : {names}).") from None


def add_mention(
    db: Session,
    actor: Actor,
    insee: str,
    act_id: int,
    *,
    kind: str,
    facts: dict[str, Any],
    now: datetime,
    vault: Vault,
    strikes: int | None = None,
    avis_id: int | None = None,
) -> int:
    """Append a mention to a signed act; it waits for the officier's signature. Which
    mention may go on which act: `schema.MENTION_TARGETS` (Code civil 49)."""
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    mention_kind = _mention_kind(kind)
    if act.status != Status.SIGNED:
        raise Conflict("Une mention s'appose sur un acte signé ; cet acte est encore un projet.")
    act_kind = ActKind(act.kind)
    if not mention_allowed(mention_kind, act_kind):
        raise ValidationFailed(
            f"Une mention « {mention_kind.label} » ne s'appose pas sur un "
            f"{act_kind.label.lower()} (Code civil 49)."
        )
    parsed = _facts(facts)
    if strikes is not None:
        target = db.get(Mention, strikes)
        if (
            target is None
            or target.act_id != act.id
            or target.kind != MentionKind.REPERTOIRE_CIVIL
            or mention_kind != MentionKind.REPERTOIRE_CIVIL
        ):
            raise ValidationFailed(
                "Seule une mention du répertoire civil peut en radier une autre du même acte."
            )
    tenant = tenant_of(db, insee)
    with _keys(db, vault, insee):
        mention = Mention(
            act_id=act.id,
            tenant_id=act.tenant_id,
            kind=mention_kind.value,
            facts=parsed.model_dump_json(),
            applied_place=tenant.name,
            status=Status.PENDING.value,
            created_by=str(actor),
            created_at=now,
            strikes_id=strikes,
            avis_id=avis_id,
        )
        db.add(mention)
    record(
        db,
        EventType.MENTION_DRAFTED,
        actor=str(actor),
        subject=f"mention:{mention.id}",
        tenant=insee,
        details={"act": act.id, "kind": mention_kind.value},
        now=now,
    )
    return mention.id


# --- avis de mention -----------------------------------------------------------------


def _commune_of(place: str | None) -> str:
    """ "Mont-de-Marsan (Landes)" -> "mont de marsan": the commune part of a place."""
    return normalise((place or "").split("(")[0])


def _tenant_for_place(db: Session, place: str | None) -> Tenant | None:
    """The commune on the platform a place names, when exactly one has that name: two
    communes of the same name (in different départements) are not told apart by a
    free-text place, so the avis then goes the safe way, as a PDF for the agent."""
    wanted = _commune_of(place)
    if not wanted:
        return None
    named = [t for t in db.scalars(select(Tenant)) if normalise(t.name) == wanted]
    return named[0] if len(named) == 1 else None


def _person_payload(person: Person) -> dict[str, Any]:
    return {
        "nom": person.nom,
        "prenoms": person.prenoms,
        "date_naissance": person.date_naissance.isoformat() if person.date_naissance else None,
        "lieu_naissance": person.lieu_naissance,
    }


def _derived_mentions(
    act: ActRecord, mention: MentionRecord | None
) -> list[tuple[Person, MentionKind, MentionFacts]]:
    """Mentions an event recorded here requires on birth acts (domain page: mariage,
    décès, reconnaissance on the birth act; divorce and séparation de corps on the
    marriage act and on the birth acts)."""
    content = act.content
    where = f"{act.view.commune}"
    out: list[tuple[Person, MentionKind, MentionFacts]] = []
    if mention is None:
        event = main_event(content)
        if isinstance(content, Mariage) and event:
            a, b = content.epoux
            for me, other in ((a, b), (b, a)):
                text = (
                    f"Marié(e) à {where} le {event.date:%d/%m/%Y} avec {other.prenoms} {other.nom}."
                )
                facts = MentionFacts(texte=text, evenement=event, conjoint=other)
                out.append((me, MentionKind.MARIAGE, facts))
        elif isinstance(content, Deces) and event:
            text = f"Décédé(e) à {event.lieu} le {event.date:%d/%m/%Y}."
            facts = MentionFacts(texte=text, evenement=event)
            out.append((content.defunt, MentionKind.DECES, facts))
        elif isinstance(content, Reconnaissance):
            author, drawn = content.auteur, act.view.drawn_at
            text = f"Reconnu(e) par {author.prenoms} {author.nom} à {where}" + (
                f" le {paris_date(drawn):%d/%m/%Y}." if drawn else "."
            )
            out.append((content.enfant, MentionKind.RECONNAISSANCE, MentionFacts(texte=text)))
        return out
    if mention.view.kind in (MentionKind.DIVORCE, MentionKind.SEPARATION_CORPS) and isinstance(
        content, Mariage
    ):
        for spouse in content.epoux:
            out.append((spouse, mention.view.kind, mention.view.facts))
    return out


def _send_avis(
    db: Session,
    actor: Actor,
    source: ActRecord,
    person: Person,
    kind: MentionKind,
    facts: MentionFacts,
    *,
    now: datetime,
    vault: Vault,
) -> int:
    """To the commune holding `person`'s birth act: its queue when it is on the
    platform (the same commune included), else a PDF for the officier to sign and
    send."""
    src_tenant = tenant_of(db, source.view.insee)
    target = _tenant_for_place(db, person.lieu_naissance)
    payload = {
        "facts": facts.model_dump(mode="json"),
        "subject": _person_payload(person),
        "source": {"commune": source.view.commune, "insee": source.view.insee},
        "source_act": source.title,
    }
    sealed_for = target.insee if target else source.view.insee
    with _keys(db, vault, sealed_for):
        avis = Avis(
            source_tenant_id=src_tenant.id,
            source_act_id=source.id,
            target_tenant_id=target.id if target else None,
            target_commune=target.name if target else (person.lieu_naissance or "inconnue"),
            mention_kind=kind.value,
            payload=json.dumps(payload, ensure_ascii=False),
            status=(AvisStatus.SENT if target else AvisStatus.TO_SIGN).value,
            created_at=now,
            sent_at=now if target else None,
            due_on=paris_date(now + AVIS_DEADLINE) if target else None,
        )
        db.add(avis)
    for insee in dict.fromkeys([source.view.insee, *([target.insee] if target else [])]):
        record(
            db,
            EventType.AVIS_SENT,
            actor=str(actor),
            subject=f"avis:{avis.id}",
            tenant=insee,
            details={"kind": kind.value, "on_platform": target is not None},
            now=now,
        )
    return avis.id


def _avis_record(db: Session, avis: Avis, readable: set[str]) -> AvisRecord:
    source = db.get(Tenant, avis.source_tenant_id)
    target = db.get(Tenant, avis.target_tenant_id) if avis.target_tenant_id else None
    assert source is not None
    sealed_for = target.insee if target else source.insee
    payload = json.loads(avis.payload) if sealed_for in readable else None
    return AvisRecord(
        id=avis.id,
        status=AvisStatus(avis.status),
        source_insee=source.insee,
        target_insee=target.insee if target else None,
        target_commune=avis.target_commune,
        mention_kind=MentionKind(avis.mention_kind),
        sent_at=avis.sent_at,
        due_on=avis.due_on,
        receipt_at=avis.receipt_at,
        reason=avis.reason,
        source_act_id=avis.source_act_id,
        target_act_id=avis.target_act_id,
        document_id=avis.document_id,
        payload=payload,
    )


def list_avis(
    db: Session, actor: Actor, insee: str, *, incoming: bool, now: datetime, vault: Vault
) -> list[AvisRecord]:
    """Avis received by the commune (incoming) or sent by it, newest first; the listing
    (which opens their payloads) is audited once."""
    _check_tenant(actor, insee)
    tenant = tenant_of(db, insee)
    column = Avis.target_tenant_id if incoming else Avis.source_tenant_id
    ids = list(db.scalars(select(Avis.id).where(column == tenant.id).order_by(Avis.id.desc())))
    found = [_avis(db, actor, insee, avis_id, vault=vault) for avis_id in ids]
    record(
        db,
        EventType.AVIS_LISTED,
        actor=str(actor),
        subject=f"tenant:{insee}",
        tenant=insee,
        details={"incoming": incoming, "count": len(found)},
        now=now,
    )
    return found


def get_avis(
    db: Session, actor: Actor, insee: str, avis_id: int, *, now: datetime, vault: Vault
) -> AvisRecord:
    """An avis the commune sent or received (audited)."""
    found = _avis(db, actor, insee, avis_id, vault=vault)
    record(
        db,
        EventType.AVIS_VIEWED,
        actor=str(actor),
        subject=f"avis:{avis_id}",
        tenant=insee,
        now=now,
    )
    return found


def _avis(db: Session, actor: Actor, insee: str, avis_id: int, *, vault: Vault) -> AvisRecord:
    """Its payload is sealed for one commune (the target, or the sender when the
    target is off the platform): the other sees the routing facts only."""
    _check_tenant(actor, insee)
    row = db.execute(
        select(Avis.target_tenant_id, Avis.source_tenant_id).where(Avis.id == avis_id)
    ).one_or_none()
    tenant = tenant_of(db, insee)
    if row is None or tenant.id not in (row.target_tenant_id, row.source_tenant_id):
        raise NotFound("Avis de mention introuvable.")
    readable = row.target_tenant_id == tenant.id or row.target_tenant_id is None
    with _keys(db, vault, insee):
        query = select(Avis).where(Avis.id == avis_id).execution_options(populate_existing=True)
        if not readable:
            query = query.options(defer(Avis.payload))
        avis = db.scalar(query)
        assert avis is not None
        return _avis_record(db, avis, {insee} if readable else set())


def avis_candidates(
    db: Session, actor: Actor, insee: str, avis_id: int, *, now: datetime, vault: Vault
) -> list[ActRecord]:
    """Birth acts of this commune matching the avis' subject (blind index)."""
    rec = _avis(db, actor, insee, avis_id, vault=vault)
    if rec.target_insee != insee or rec.payload is None:
        raise NotFound("Avis de mention introuvable.")
    subject = rec.payload["subject"]
    day = date.fromisoformat(subject["date_naissance"]) if subject["date_naissance"] else None
    return [
        act
        for act in search(
            db,
            actor,
            insee,
            nom=subject["nom"],
            prenoms=subject["prenoms"],
            day=day,
            now=now,
            vault=vault,
        )
        if act.status == Status.SIGNED and mention_allowed(rec.mention_kind, act.kind)
    ]


def apply_avis(
    db: Session, actor: Actor, insee: str, avis_id: int, act_id: int, *, now: datetime, vault: Vault
) -> int:
    """The receiving commune puts the avis' mention on its act; once the officier signs
    it, the avis is marked applied and the sender sees the receipt."""
    rec = _avis(db, actor, insee, avis_id, vault=vault)
    if rec.target_insee != insee or rec.payload is None:
        raise NotFound("Avis de mention introuvable.")
    if rec.status != AvisStatus.SENT:
        raise Conflict("Cet avis a déjà été traité.")
    if db.scalar(select(Mention.id).where(Mention.avis_id == avis_id)):
        raise Conflict("La mention de cet avis attend déjà la signature de l'officier.")
    mention_id = add_mention(
        db,
        actor,
        insee,
        act_id,
        kind=rec.mention_kind.value,
        facts=rec.payload["facts"],
        now=now,
        vault=vault,
        avis_id=avis_id,
    )
    avis = db.get(Avis, avis_id)
    assert avis is not None
    avis.target_act_id = act_id
    return mention_id


def reject_avis(
    db: Session, actor: Actor, insee: str, avis_id: int, *, reason: str, now: datetime, vault: Vault
) -> None:
    rec = _avis(db, actor, insee, avis_id, vault=vault)
    if rec.target_insee != insee:
        raise NotFound("Avis de mention introuvable.")
    if rec.status != AvisStatus.SENT:
        raise Conflict("Cet avis a déjà été traité.")
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Indiquez le motif du rejet (par exemple : acte introuvable).")
    avis = db.get(Avis, avis_id)
    assert avis is not None
    avis.status = AvisStatus.REJECTED.value
    avis.reason = reason[:300]
    avis.receipt_at = now
    for commune in dict.fromkeys([insee, rec.source_insee]):
        record(
            db,
            EventType.AVIS_REJECTED,
            actor=str(actor),
            subject=f"avis:{avis_id}",
            tenant=commune,
            now=now,
        )


# --- deliveries ----------------------------------------------------------------------


def new_code() -> str:
    """A short verification code: 12 Crockford base-32 characters (60 bits)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalise_code(code: str) -> str:
    raw = code.strip().upper().replace("-", "").replace(" ", "")
    raw = raw.translate(str.maketrans("OIL", "011"))  # Crockford: read as digits
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}" if len(raw) == 12 else raw


def request_delivery(
    db: Session,
    actor: Actor,
    insee: str,
    act_id: int,
    *,
    kind: str,
    requester: str,
    purpose: str,
    now: datetime,
    vault: Vault,
    all_marriages: bool = False,
    record_event: bool = True,
) -> int:
    """Ask for a copy or extrait; it waits for the officier's signature. Who may obtain
    what is decided before this call (comedec.rules for requests from outside). With
    `record_event=False` the caller records `delivery_requested` itself, later in the
    same transaction (an automatic issue does it after the slow signature, so that the
    audit log's head is not held meanwhile)."""
    _check_tenant(actor, insee)
    act = _load_act(db, insee, act_id)
    try:
        delivery_kind = DeliveryKind(kind)
    except ValueError:
        names = ", ".join(k.value for k in DeliveryKind)
        raise ValidationFailed(f"Délivrance inconnue : {kind!r} (attendu : {names}).") from None
    act_kind = ActKind(act.kind)
    if delivery_kind not in DELIVERIES[act_kind]:
        raise ValidationFailed(
            f"Un {act_kind.label.lower()} ne se délivre pas en « {delivery_kind.label} »."
        )
    if act.status != Status.SIGNED:
        raise Conflict("Seul un acte signé peut être délivré.")
    if not requester.strip() or not purpose.strip():
        raise ValidationFailed("Indiquez le demandeur et le motif de la délivrance.")
    with _keys(db, vault, insee):
        delivery = Delivery(
            tenant_id=act.tenant_id,
            act_id=act.id,
            kind=delivery_kind.value,
            all_marriages=all_marriages,
            code=new_code(),
            requester=requester.strip()[:500],
            purpose=purpose.strip()[:500],
            status=Status.PENDING.value,
            requested_by=str(actor),
            requested_at=now,
        )
        db.add(delivery)
        db.flush()
    if record_event:
        delivery_requested(db, actor, insee, delivery.id, now=now)
    return delivery.id


def delivery_requested(
    db: Session, actor: Actor, insee: str, delivery_id: int, *, now: datetime
) -> None:
    """The `registry:delivery:requested` event of a delivery."""
    delivery = db.get(Delivery, delivery_id)
    assert delivery is not None
    record(
        db,
        EventType.DELIVERY_REQUESTED,
        actor=str(actor),
        subject=f"delivery:{delivery.id}",
        tenant=insee,
        details={"act": delivery.act_id, "kind": delivery.kind},
        now=now,
    )


def _delivery_record(row: Delivery) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        act_id=row.act_id,
        kind=DeliveryKind(row.kind),
        code=row.code,
        status=row.status,
        requester=row.requester,
        purpose=row.purpose,
        all_marriages=row.all_marriages,
        requested_at=row.requested_at,
        signed_at=row.signed_at,
        signer_name=row.signer_name,
        document_id=row.document_id,
    )


def deliveries_of(
    db: Session, actor: Actor, insee: str, act_id: int, *, vault: Vault
) -> list[DeliveryRecord]:
    _check_tenant(actor, insee)
    _load_act(db, insee, act_id)
    with _keys(db, vault, insee):
        rows = db.scalars(
            select(Delivery).where(Delivery.act_id == act_id).order_by(Delivery.id.desc())
        )
        return [_delivery_record(r) for r in rows]


@dataclass(frozen=True)
class PublicCheck:
    """What the public verification page may say: nothing personal."""

    code: str
    kind: DeliveryKind
    act_kind: ActKind
    commune: str
    issued_on: date
    signer_name: str
    sha256: str
    document_id: str
    insee: str


def check_code(db: Session, code: str, *, now: datetime) -> PublicCheck:
    """The issued delivery behind a verification code (one answer for unknown and not
    yet issued); the lookup is audited without the caller's identity."""
    wanted = normalise_code(code)
    row = db.scalar(select(Delivery).where(Delivery.code == wanted))
    if row is None or row.status != Status.SIGNED or row.document_id is None:
        raise NotFound("Aucun document délivré ne porte ce code de vérification.")
    act = db.get(Act, row.act_id)
    tenant = db.get(Tenant, row.tenant_id)
    assert act is not None and tenant is not None and row.signed_at and row.sha256
    record(
        db,
        EventType.DELIVERY_VERIFIED,
        actor="anonymous",
        subject=f"delivery:{row.id}",
        tenant=tenant.insee,
        now=now,
    )
    return PublicCheck(
        code=row.code,
        kind=DeliveryKind(row.kind),
        act_kind=ActKind(act.kind),
        commune=tenant.name,
        issued_on=paris_date(row.signed_at),
        signer_name=row.signer_name or "",
        sha256=row.sha256,
        document_id=row.document_id,
        insee=tenant.insee,
    )


# --- the officier's queue and signing ------------------------------------------------

ITEM_KINDS = ("act", "mention", "delivery", "avis")


@dataclass(frozen=True)
class QueueItem:
    ref: str  # "act:12", "mention:3", "delivery:7", "avis:2"
    label: str
    since: datetime


MAX_ID = 2**31 - 1  # id columns are 32-bit integers on PostgreSQL


def parse_ref(ref: str, kinds: tuple[str, ...] = ITEM_KINDS) -> tuple[str, int]:
    """ "act:12" -> ("act", 12); an id no row can have is simply not found."""
    kind, _, ident = ref.partition(":")
    if kind not in kinds or not ident.isascii() or not ident.isdigit() or len(ident) > 40:
        raise ValidationFailed("Élément inconnu : attendu act:N, mention:N, delivery:N ou avis:N.")
    if int(ident) > MAX_ID:
        raise NotFound("Élément introuvable.")
    return kind, int(ident)


def signature_queue(
    db: Session, actor: Actor, insee: str, *, now: datetime, vault: Vault
) -> list[QueueItem]:
    """Everything of the commune waiting for the officier's signature, oldest first
    (the listing shows names: audited)."""
    _check_tenant(actor, insee)
    tenant = tenant_of(db, insee)
    items: list[QueueItem] = []
    with _keys(db, vault, insee):
        for act in db.scalars(select(Act).where(Act.insee == insee, Act.status == Status.PENDING)):
            rec = _record(db, act, tenant.name)
            items.append(QueueItem(f"act:{act.id}", rec.title, act.submitted_at or act.updated_at))
        for mention in db.scalars(
            select(Mention).where(Mention.tenant_id == tenant.id, Mention.status == Status.PENDING)
        ):
            target = db.get(Act, mention.act_id)
            assert target is not None
            title = _record(db, target, tenant.name).title
            label = f"Mention « {MentionKind(mention.kind).label} » sur {title}"
            items.append(QueueItem(f"mention:{mention.id}", label, mention.created_at))
        for delivery in db.scalars(
            select(Delivery).where(
                Delivery.tenant_id == tenant.id, Delivery.status == Status.PENDING
            )
        ):
            target = db.get(Act, delivery.act_id)
            assert target is not None
            title = _record(db, target, tenant.name).title
            label = f"{DeliveryKind(delivery.kind).label} de {title}"
            items.append(QueueItem(f"delivery:{delivery.id}", label, delivery.requested_at))
        for avis in db.scalars(
            select(Avis).where(
                Avis.source_tenant_id == tenant.id, Avis.status == AvisStatus.TO_SIGN
            )
        ):
            label = (
                f"Avis de mention « {MentionKind(avis.mention_kind).label} » à "
                f"{avis.target_commune}"
            )
            items.append(QueueItem(f"avis:{avis.id}", label, avis.created_at))
    record(
        db,
        EventType.QUEUE_VIEWED,
        actor=str(actor),
        subject=f"tenant:{insee}",
        tenant=insee,
        details={"count": len(items)},
        now=now,
    )
    order = {kind: n for n, kind in enumerate(ITEM_KINDS)}
    return sorted(items, key=lambda item: (item.since, order[parse_ref(item.ref)[0]], item.ref))


@dataclass
class OfficerSigning:
    """Who signs and with what: an officier's account — or, for automatic delivery,
    the commune's seal (`officer` None, `seal_of` the INSEE code) —, the signing
    setup, and how copies are checked (the public verification page's address)."""

    officer: User | None
    setup: Any  # securex.signing.pades.SigningSetup
    appearance: Any  # securex.signing.pades.Appearance
    verify_base: str
    quality: str = "Officier de l'état civil"
    seal_of: str | None = None
    seal_name: str = ""

    @property
    def insee(self) -> str:
        if self.officer is not None:
            return self.officer.tenant.insee if self.officer.tenant else ""
        return self.seal_of or ""

    @property
    def name(self) -> str:
        return self.officer.name if self.officer is not None else self.seal_name

    @property
    def user_id(self) -> int | None:
        return self.officer.id if self.officer is not None else None

    @property
    def actor(self) -> Actor:
        if self.officer is not None:
            return Actor.for_user(self.officer)
        return Actor("seal", self.insee, self.insee)


# Called in the signing transaction when a delivery is issued (db, delivery id, now):
# how a feature that asked for the copy (comedec) learns it is ready, without the
# registry knowing about it.
delivery_issued_hooks: list[Callable[[Session, int, datetime], None]] = []


def _sign_pdf(data: bytes, signing: OfficerSigning, reason: str, now: datetime) -> bytes:
    from dataclasses import replace

    from securex.signing import pades

    return pades.sign(data, signing.setup, replace(signing.appearance, reason=reason), now)


def _store(db: Session, vault: Vault, insee: str, data: bytes, now: datetime) -> str:
    return vault.put(db, insee, io.BytesIO(data), now=now).id


def _check_signatory(signing: OfficerSigning, kind: str) -> None:
    officer = signing.officer
    if officer is None:
        # The seal issues copies automatically; acts and mentions need an officier.
        if kind != "delivery":
            raise Forbidden("Le cachet de la commune ne signe que les copies et extraits.")
        return
    if officer.role != Role.OFFICER or officer.tenant is None:
        raise Forbidden("Seul un officier de l'état civil de la commune peut signer.")


def sign_item(
    db: Session,
    ref: str,
    *,
    signing: OfficerSigning,
    now: datetime,
    vault: Vault,
    before_events: Callable[[], None] | None = None,
) -> str:
    """Render, sign and store one waiting item; returns a French line saying what was
    signed. The caller commits (one transaction per item: each succeeds or fails on
    its own). `before_events` runs once the slow part is done, before the item's own
    audit events (a delivery only)."""
    kind, ident = parse_ref(ref)
    if before_events is not None and kind != "delivery":
        raise ValueError("before_events is for deliveries only")
    insee, actor = signing.insee, signing.actor
    _check_signatory(signing, kind)
    tenant = tenant_of(db, insee)
    with _keys(db, vault, insee):
        if kind == "act":
            return _sign_act(db, actor, tenant, ident, signing, now, vault)
        if kind == "mention":
            return _sign_mention(db, actor, tenant, ident, signing, now, vault)
        if kind == "delivery":
            return _sign_delivery(db, actor, tenant, ident, signing, now, vault, before_events)
        return _sign_avis(db, actor, tenant, ident, signing, now, vault)


def _pending(row: Any, what: str) -> None:
    if row is None:
        raise NotFound(f"{what} introuvable.")
    if row.status != Status.PENDING:
        raise Conflict(f"{what} n'attend pas de signature (déjà signé ou encore en projet).")


def _sign_act(
    db: Session,
    actor: Actor,
    tenant: Tenant,
    act_id: int,
    signing: OfficerSigning,
    now: datetime,
    vault: Vault,
) -> str:
    act = db.get(Act, act_id)
    if act is not None and act.insee != tenant.insee:
        act = None
    _pending(act, "Acte")
    assert act is not None
    year = paris_date(now).year
    act.year = year
    act.number = _next_number(db, act, year)
    act.drawn_at = now
    act.signed_by = signing.user_id
    act.officer_name = signing.name
    rec = _record(db, act, tenant.name)
    pdf = render.render_act(rec.view, [])
    signed = _sign_pdf(pdf, signing, f"Établissement de l'{rec.kind.label.lower()}", now)
    act.document_id = _store(db, vault, tenant.insee, signed, now)
    act.status = Status.SIGNED.value
    act.updated_at = now
    record(
        db,
        EventType.ACT_SIGNED,
        actor=str(actor),
        subject=f"act:{act.id}",
        tenant=tenant.insee,
        details={"kind": act.kind, "year": year, "number": act.number},
        now=now,
    )
    signed_rec = _record(db, act, tenant.name)
    for person, mention_kind, facts in _derived_mentions(signed_rec, None):
        _send_avis(db, actor, signed_rec, person, mention_kind, facts, now=now, vault=vault)
    return f"{signed_rec.reference} signé"


def _sign_mention(
    db: Session,
    actor: Actor,
    tenant: Tenant,
    mention_id: int,
    signing: OfficerSigning,
    now: datetime,
    vault: Vault,
) -> str:
    mention = db.get(Mention, mention_id)
    if mention is not None and mention.tenant_id != tenant.id:
        mention = None
    _pending(mention, "Mention")
    assert mention is not None
    act = db.get(Act, mention.act_id)
    assert act is not None
    mention.applied_on = paris_date(now)
    mention.officer_name = signing.name
    mention.signed_by = signing.user_id
    mention.signed_at = now
    rec = _record(db, act, tenant.name)
    this = next(m for m in rec.mentions if m.id == mention.id)
    pdf = render.render_mention(rec.view, this.view)
    signed = _sign_pdf(pdf, signing, f"Mention marginale : {this.view.kind.label}", now)
    mention.document_id = _store(db, vault, tenant.insee, signed, now)
    mention.status = Status.SIGNED.value
    record(
        db,
        EventType.MENTION_SIGNED,
        actor=str(actor),
        subject=f"mention:{mention.id}",
        tenant=tenant.insee,
        details={"act": act.id, "kind": mention.kind},
        now=now,
    )
    if mention.avis_id is not None:
        avis = db.get(Avis, mention.avis_id)
        assert avis is not None
        avis.status = AvisStatus.APPLIED.value
        avis.receipt_at = now
        source = db.get(Tenant, avis.source_tenant_id)
        assert source is not None
        for insee in dict.fromkeys([tenant.insee, source.insee]):
            record(
                db,
                EventType.AVIS_APPLIED,
                actor=str(actor),
                subject=f"avis:{avis.id}",
                tenant=insee,
                details={"mention": mention.id},
                now=now,
            )
    for person, kind, facts in _derived_mentions(rec, this):
        _send_avis(db, actor, rec, person, kind, facts, now=now, vault=vault)
    return f"Mention « {this.view.kind.label} » sur l'{rec.reference.lower()} signée"


def _sign_delivery(
    db: Session,
    actor: Actor,
    tenant: Tenant,
    delivery_id: int,
    signing: OfficerSigning,
    now: datetime,
    vault: Vault,
    before_events: Callable[[], None] | None = None,
) -> str:
    delivery = db.get(Delivery, delivery_id)
    if delivery is not None and delivery.tenant_id != tenant.id:
        delivery = None
    _pending(delivery, "Délivrance")
    assert delivery is not None
    act = db.get(Act, delivery.act_id)
    assert act is not None
    rec = _record(db, act, tenant.name)
    kind = DeliveryKind(delivery.kind)
    issue = render.Issue(
        delivered_on=paris_date(now),
        officer=signing.name,
        quality=signing.quality,
        verification_code=delivery.code,
        verify_url=f"{signing.verify_base.rstrip('/')}/verifier/{delivery.code}",
    )
    pdf = render.render_delivery(
        rec.view, rec.signed_mentions(), kind, issue, all_marriages=delivery.all_marriages
    )
    signed = _sign_pdf(pdf, signing, f"Délivrance : {kind.label.lower()}", now)
    delivery.document_id = _store(db, vault, tenant.insee, signed, now)
    delivery.sha256 = hashlib.sha256(signed).hexdigest()
    delivery.signed_by = signing.user_id
    delivery.signer_name = signing.name
    delivery.signed_at = now
    delivery.status = Status.SIGNED.value
    if before_events is not None:
        before_events()
    for hook in delivery_issued_hooks:
        hook(db, delivery.id, now)
    record(
        db,
        EventType.DELIVERY_ISSUED,
        actor=str(actor),
        subject=f"delivery:{delivery.id}",
        tenant=tenant.insee,
        details={"act": act.id, "kind": kind.value, "requested_by": delivery.requested_by},
        now=now,
    )
    return f"{kind.label} de l'{rec.reference.lower()} signée"


def _avis_pdf(avis: Avis, tenant: Tenant, officer: str, now: datetime) -> bytes:
    """The avis letter for a commune off the platform (inside the sender's keys)."""
    payload = json.loads(avis.payload)
    subject = payload["subject"]
    born = (
        f", né(e) le {date.fromisoformat(subject['date_naissance']):%d/%m/%Y}"
        if subject["date_naissance"]
        else ""
    )
    return render.render_avis(
        source_commune=tenant.name,
        source_insee=tenant.insee,
        target_commune=avis.target_commune,
        target_act=f"Acte de naissance de {subject['nom'].upper()} {subject['prenoms']}{born}",
        subject=f"{subject['nom'].upper()} {subject['prenoms']}",
        mention_kind=MentionKind(avis.mention_kind),
        facts=MentionFacts.model_validate(payload["facts"]),
        sent_on=paris_date(now),
        officer=officer,
        due_on=paris_date(now + AVIS_DEADLINE),
    )


def _sign_avis(
    db: Session,
    actor: Actor,
    tenant: Tenant,
    avis_id: int,
    signing: OfficerSigning,
    now: datetime,
    vault: Vault,
) -> str:
    avis = db.get(Avis, avis_id)
    if avis is None or avis.source_tenant_id != tenant.id or avis.status != AvisStatus.TO_SIGN:
        raise NotFound("Avis de mention à signer introuvable.")
    due = paris_date(now + AVIS_DEADLINE)
    pdf = _avis_pdf(avis, tenant, signing.name, now)
    signed = _sign_pdf(pdf, signing, "Avis de mention", now)
    avis.document_id = _store(db, vault, tenant.insee, signed, now)
    avis.status = AvisStatus.READY.value
    avis.sent_at = now
    avis.due_on = due
    record(
        db,
        EventType.AVIS_SIGNED,
        actor=str(actor),
        subject=f"avis:{avis.id}",
        tenant=tenant.insee,
        now=now,
    )
    return f"Avis de mention à {avis.target_commune} signé"


# --- documents -----------------------------------------------------------------------


def document(
    db: Session, actor: Actor, insee: str, ref: str, *, now: datetime, vault: Vault
) -> tuple[bytes, str]:
    """The signed PDF of an act, mention, delivery or avis of the commune, or a scanned
    register page (`scan:N`), with a file name; every download is audited."""
    _check_tenant(actor, insee)
    kind, ident = parse_ref(ref, (*ITEM_KINDS, "scan"))
    tenant = tenant_of(db, insee)
    query: Any
    if kind == "scan":
        query = (
            select(ActScan.object_id)
            .join(Act, Act.id == ActScan.act_id)
            .where(ActScan.id == ident, Act.tenant_id == tenant.id)
        )
    else:
        model: Any = {"act": Act, "mention": Mention, "delivery": Delivery, "avis": Avis}[kind]
        owner = model.source_tenant_id if kind == "avis" else model.tenant_id
        query = select(model.document_id).where(model.id == ident, owner == tenant.id)
    row = db.scalar(query)
    if row is None:
        raise NotFound("Document signé introuvable.")
    data = vault.read_all(db, insee, row)
    record(
        db,
        EventType.DOCUMENT_DOWNLOADED,
        actor=str(actor),
        subject=f"{kind}:{ident}",
        tenant=insee,
        now=now,
    )
    return data, f"{kind}-{ident}.pdf"


def preview(
    db: Session, actor: Actor, insee: str, ref: str, *, now: datetime, vault: Vault
) -> bytes:
    """The unsigned rendering of a waiting item, for the officier's review."""
    _check_tenant(actor, insee)
    kind, ident = parse_ref(ref)
    tenant = tenant_of(db, insee)
    with _keys(db, vault, insee):
        if kind == "act":
            rec = _record(db, _load_act(db, insee, ident), tenant.name)
            data = render.render_act(rec.view, rec.signed_mentions())
        elif kind == "mention":
            mention = db.get(Mention, ident)
            if mention is None or mention.tenant_id != tenant.id:
                raise NotFound("Mention introuvable.")
            rec = _record(db, _load_act(db, insee, mention.act_id), tenant.name)
            this = next(m for m in rec.mentions if m.id == ident)
            data = render.render_mention(rec.view, this.view)
        elif kind == "delivery":
            delivery = db.get(Delivery, ident)
            if delivery is None or delivery.tenant_id != tenant.id:
                raise NotFound("Délivrance introuvable.")
            rec = _record(db, _load_act(db, insee, delivery.act_id), tenant.name)
            issue = render.Issue(
                delivered_on=paris_date(now),
                officer="(aperçu — non signé)",
                quality="Officier de l'état civil",
                verification_code="APERCU",
                verify_url="aperçu non signé",
            )
            data = render.render_delivery(
                rec.view,
                rec.signed_mentions(),
                DeliveryKind(delivery.kind),
                issue,
                all_marriages=delivery.all_marriages,
            )
        else:
            avis = db.get(Avis, ident)
            if (
                avis is None
                or avis.source_tenant_id != tenant.id
                or avis.status != AvisStatus.TO_SIGN
            ):
                raise NotFound("Avis de mention à signer introuvable.")
            data = _avis_pdf(avis, tenant, "(aperçu — non signé)", now)
    record(
        db,
        EventType.ACT_VIEWED,
        actor=str(actor),
        subject=f"{kind}:{ident}",
        tenant=insee,
        details={"preview": True},
        now=now,
    )
    return data
