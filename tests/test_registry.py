"""The registry's business operations: drafting and sealing acts, continuous numbering,
blind-index search, mentions within and across communes (avis de mention and their
receipts), deliveries signed and verifiable, batch signing with one fresh TOTP code."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from securex.accounts import service as accounts
from securex.accounts.models import User
from securex.accounts.service import Actor
from securex.audit.models import AuditEvent
from securex.db import reading, transaction, utcnow
from securex.errors import AuthenticationFailed, Conflict, NotFound, ValidationFailed
from securex.jobs.models import Job
from securex.jobs.service import run_pending
from securex.registry import service
from securex.registry.batch import officer_signing, start_batch
from securex.registry.models import Act, ActIndex, Avis, AvisStatus, Delivery, Mention
from tests.conftest import pdfsig_against_demo_pki

MDM, DAX = "40192", "40088"


def naissance(nom: str = "Dupont-Martin", prenoms: str = "Léa Marie", day: str = "2026-11-27"):
    return {
        "enfant": {"nom": nom, "prenoms": prenoms, "sexe": "F"},
        "naissance": {"date": day, "heure": "10:30", "lieu": "Mont-de-Marsan (Landes)"},
        "parents": [
            {
                "nom": "Dupont",
                "prenoms": "Jean",
                "date_naissance": "1990-02-03",
                "lieu_naissance": "Dax (Landes)",
                "profession": "menuisier",
                "domicile": "12 rue des Arènes, Mont-de-Marsan",
            },
            {"nom": "Martin", "prenoms": "Sophie", "date_naissance": "1992-05-06"},
        ],
        "declarant": {"nom": "Dupont", "prenoms": "Jean"},
    }


def presented(
    app: Any, agent_email: str, insee: str, contents: Iterable[dict[str, Any]]
) -> list[int]:
    """Birth acts drafted by `agent_email` and presented for signature on `app`'s
    database, through the services the agent's pages call (no API drafts acts); the
    app's engine is disposed of at the end. Their ids."""
    st = app.extensions["securex"]
    ids = []
    try:
        with st.sessions() as db:
            agent_id = db.scalar(select(User.id).where(User.email == agent_email))
            actor = Actor("user", str(agent_id), insee)
            for content in contents:
                act_id = service.create_act(
                    db,
                    actor,
                    insee=insee,
                    kind="naissance",
                    content=content,
                    now=utcnow(),
                    vault=st.vault,
                )
                service.submit_act(db, actor, insee, act_id, now=utcnow())
                ids.append(act_id)
            db.commit()
    finally:
        st.engine.dispose()
    return ids


def mariage(born_a: str = "Dax (Landes)", born_b: str = "Bayonne (Pyrénées-Atlantiques)"):
    return {
        "epoux": [
            {
                "nom": "Lafitte",
                "prenoms": "Pierre",
                "sexe": "M",
                "date_naissance": "1994-04-01",
                "lieu_naissance": born_a,
            },
            {
                "nom": "Etcheverry",
                "prenoms": "Maïté",
                "sexe": "F",
                "date_naissance": "1995-07-14",
                "lieu_naissance": born_b,
            },
        ],
        "celebration": {"date": "2026-11-28", "heure": "15:00", "lieu": "Mont-de-Marsan"},
        "temoins": [{"nom": "Durand", "prenoms": "Paul"}],
        "contrat": {"existe": False},
    }


class Registry:
    """The commune(s), their staff and the signing runtime of a test."""

    def __init__(self, make: Any, factory: Any, vault: Any, clock: Any, runtime: Any) -> None:
        self.make, self.factory, self.vault, self.clock, self.rt = (
            make,
            factory,
            vault,
            clock,
            runtime,
        )
        make.tenant()
        self.agent = make.user("agent", MDM, totp=False)
        self.officer = make.user("officer", MDM)

    def actor(self, account: Any) -> Actor:
        return Actor("user", str(account.id), account.tenant)

    def draft(self, kind: str = "naissance", content: dict | None = None, insee: str = MDM):
        agent = self.agent if insee == MDM else self.make.user("agent", insee, totp=False)
        with transaction(self.factory) as db:
            act_id = service.create_act(
                db,
                self.actor(agent),
                insee=insee,
                kind=kind,
                content=content or naissance(),
                now=self.clock(),
                vault=self.vault,
            )
            service.submit_act(db, self.actor(agent), insee, act_id, now=self.clock())
        return act_id

    def sign(self, ref: str, officer: Any = None) -> str:
        user = self.make.get_user((officer or self.officer).id)
        signing = officer_signing(self.rt, user, self.clock())
        with transaction(self.factory) as db:
            return service.sign_item(db, ref, signing=signing, now=self.clock(), vault=self.vault)

    def batch(self, refs: list[str]) -> int:
        """Queue a batch confirmed by the officer's current TOTP code."""
        officer = self.make.get_user(self.officer.id)
        with transaction(self.factory) as db:
            return start_batch(
                db,
                self.make.keys,
                self.make.policy,
                officer,
                refs,
                totp_code=self.officer.code(self.clock()),
                now=self.clock(),
            )

    def act(self, act_id: int, insee: str = MDM) -> service.ActRecord:
        with transaction(self.factory) as db:
            return service.get_act(
                db, Actor("test"), insee, act_id, now=self.clock(), vault=self.vault
            )


@pytest.fixture
def reg(demo_pki, runtime, make, factory, vault, clock) -> Registry:
    return Registry(make, factory, vault, clock, runtime)


def events(factory, action: str) -> list[AuditEvent]:
    with factory() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# --- acts ----------------------------------------------------------------------------


def test_a_signed_act_is_numbered_sealed_and_never_edited(reg):
    first, second = reg.draft(), reg.draft(content=naissance("Bernard", "Tom"))
    reg.sign(f"act:{second}")
    reg.sign(f"act:{first}")
    a, b = reg.act(first), reg.act(second)
    # Numbers follow the order of signature in a continuous yearly series.
    assert (b.view.year, b.view.number) == (2026, 1)
    assert (a.view.year, a.view.number) == (2026, 2)
    assert a.status == "signed" and a.document_id and a.view.officer == "Officer 2"
    with transaction(reg.factory) as db, pytest.raises(Conflict, match="mention marginale"):
        service.update_draft(
            db,
            reg.actor(reg.agent),
            MDM,
            first,
            content=naissance("X", "Y"),
            now=reg.clock(),
            vault=reg.vault,
        )
    with pytest.raises(Conflict):
        reg.sign(f"act:{first}")  # signing twice is refused, not a second number
    assert [e.details for e in events(reg.factory, "registry:act:signed")] == [
        json.dumps({"kind": "naissance", "number": n, "year": 2026}, separators=(",", ":"))
        for n in (1, 2)
    ]


def test_enfant_sans_vie_is_numbered_in_the_death_register(reg):
    deces = {
        "defunt": {"nom": "Roux", "prenoms": "Marcel", "sexe": "M", "date_naissance": "1940-01-01"},
        "deces": {"date": "2026-11-28", "lieu": "Mont-de-Marsan"},
    }
    esv = {"accouchement": {"date": "2026-11-28", "lieu": "Mont-de-Marsan"}}
    ids = [reg.draft("deces", deces), reg.draft("enfant_sans_vie", esv)]
    for act_id in ids:
        reg.sign(f"act:{act_id}")
    assert [reg.act(i).view.number for i in ids] == [1, 2]


def test_personal_data_is_sealed_and_indexes_are_blind(reg):
    reg.draft(content=naissance("Dupont-Martin", "Léa Marie"))
    with reg.factory() as db:
        raw = db.execute(text("SELECT content FROM acts")).scalar_one()
        indexes = list(db.scalars(select(ActIndex.value)))
    assert b"Dupont" not in bytes(raw) and b"L\xc3\xa9a" not in bytes(raw)
    assert indexes and all(len(v) == 32 and "dupont" not in v for v in indexes)


@pytest.mark.parametrize(
    ("nom", "prenoms", "day", "lieu", "found"),
    [
        ("DUPONT MARTIN", "lea marie", None, None, True),
        ("dupont-martin", "Léa  Marie", "2026-11-27", None, True),
        ("Dupont Martin", "Léa Marie", "2026-11-27", "mont-de-marsan (landes)", True),
        ("Dupont Martin", "Léa Marie", "2026-11-26", None, False),
        ("Dupont Martin", "Léa", None, None, False),
        ("Dupont Martin", "Léa Marie", "2026-11-27", "Dax", False),
    ],
)
def test_search_folds_accents_case_and_hyphens(reg, nom, prenoms, day, lieu, found):
    from datetime import date

    act_id = reg.draft()
    with transaction(reg.factory) as db:
        hits = service.search(
            db,
            reg.actor(reg.agent),
            MDM,
            nom=nom,
            prenoms=prenoms,
            day=date.fromisoformat(day) if day else None,
            lieu=lieu,
            now=reg.clock(),
            vault=reg.vault,
        )
    assert [h.id for h in hits] == ([act_id] if found else [])


def test_another_commune_never_reaches_the_act(reg):
    act_id = reg.draft()
    reg.make.tenant(DAX, "Dax")
    stranger = reg.make.user("agent", DAX, totp=False)
    with transaction(reg.factory) as db:
        with pytest.raises(NotFound):
            service.get_act(db, reg.actor(stranger), MDM, act_id, now=reg.clock(), vault=reg.vault)
        with pytest.raises(NotFound):
            service.get_act(db, reg.actor(stranger), DAX, act_id, now=reg.clock(), vault=reg.vault)
        assert not service.search(
            db,
            reg.actor(stranger),
            DAX,
            nom="Dupont-Martin",
            prenoms="Léa Marie",
            now=reg.clock(),
            vault=reg.vault,
        )
    dax_officer = reg.make.user("officer", DAX)
    with pytest.raises(NotFound):
        reg.sign(f"act:{act_id}", officer=dax_officer)


def test_bad_content_is_refused_field_by_field_and_nothing_is_written(reg):
    bad = naissance()
    bad["enfant"].pop("sexe")
    bad["naissance"]["date"] = "2026-02-30"
    with transaction(reg.factory) as db, pytest.raises(ValidationFailed) as caught:
        service.create_act(
            db,
            reg.actor(reg.agent),
            insee=MDM,
            kind="naissance",
            content=bad,
            now=reg.clock(),
            vault=reg.vault,
        )
    fields = {e["field"] for e in caught.value.extra["errors"]}
    assert "naissance.date" in fields
    with reg.factory() as db:
        assert db.scalar(select(func.count()).select_from(Act)) == 0


# --- mentions and avis ---------------------------------------------------------------


def test_mention_rules_follow_the_code_civil(reg):
    act_id = reg.draft()
    with transaction(reg.factory) as db, pytest.raises(Conflict, match="projet"):
        service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="deces",
            facts={"texte": "Décédée."},
            now=reg.clock(),
            vault=reg.vault,
        )
    reg.sign(f"act:{act_id}")
    with transaction(reg.factory) as db, pytest.raises(ValidationFailed) as caught:
        service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="pacs",
            facts={"texte": "PACS.", "notaire": "Me Bordes"},
            now=reg.clock(),
            vault=reg.vault,
        )
    assert "CRPCEN" in caught.value.extra["errors"][0]["message"]
    wedding = reg.draft("mariage", mariage())
    reg.sign(f"act:{wedding}")
    with transaction(reg.factory) as db, pytest.raises(ValidationFailed, match="ne s'appose pas"):
        # A death goes on the birth act, not on the marriage act.
        service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            wedding,
            kind="deces",
            facts={"texte": "Décédé."},
            now=reg.clock(),
            vault=reg.vault,
        )


def test_a_signed_mention_is_its_own_signed_record(reg):
    act_id = reg.draft()
    reg.sign(f"act:{act_id}")
    with transaction(reg.factory) as db:
        mention_id = service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="pacs",
            facts={
                "texte": "PACS enregistré avec Paul Durand.",
                "notaire": "Me Anne Bordes",
                "crpcen": "40012",
            },
            now=reg.clock(),
            vault=reg.vault,
        )
    reg.sign(f"mention:{mention_id}")
    rec = reg.act(act_id)
    (mention,) = rec.mentions
    assert mention.status == "signed" and mention.document_id
    assert mention.view.applied_place == "Mont-de-Marsan"
    assert mention.view.facts.crpcen == "40012"
    # The act's own signed document is untouched by the mention (appended, not edited).
    assert rec.document_id and rec.document_id != mention.document_id


def test_marriage_sends_avis_to_birth_communes_and_receipts_return(reg):
    reg.make.tenant(DAX, "Dax")
    dax_agent = reg.make.user("agent", DAX, totp=False)
    dax_officer = reg.make.user("officer", DAX)
    with transaction(reg.factory) as db:
        birth = service.import_act(
            db,
            reg.actor(dax_agent),
            insee=DAX,
            kind="naissance",
            year=1994,
            number=88,
            drawn_at=reg.clock() - timedelta(days=365 * 32),
            officer_name="R. Lacoste",
            content={
                "enfant": {"nom": "Lafitte", "prenoms": "Pierre", "sexe": "M"},
                "naissance": {"date": "1994-04-01", "lieu": "Dax (Landes)"},
            },
            now=reg.clock(),
            vault=reg.vault,
        )
    wedding = reg.draft("mariage", mariage())
    reg.sign(f"act:{wedding}")

    with transaction(reg.factory) as db:
        sent = service.list_avis(
            db, reg.actor(reg.agent), MDM, incoming=False, now=reg.clock(), vault=reg.vault
        )
        received = service.list_avis(
            db, reg.actor(dax_agent), DAX, incoming=True, now=reg.clock(), vault=reg.vault
        )
    # Pierre was born in Dax (on the platform): into Dax's queue, due in 60 days.
    # Maïté was born in Bayonne (not on the platform): a PDF to sign and send.
    by_commune = {a.target_commune: a for a in sent}
    assert by_commune["Dax"].status is AvisStatus.SENT
    assert by_commune["Dax"].due_on == (reg.clock() + timedelta(days=60)).date()
    assert by_commune["Dax"].payload is None  # sealed for Dax: Mont-de-Marsan cannot read it
    off = by_commune["Bayonne (Pyrénées-Atlantiques)"]
    assert off.status is AvisStatus.TO_SIGN and off.payload["subject"]["nom"] == "Etcheverry"
    (incoming,) = received
    assert incoming.payload["subject"]["prenoms"] == "Pierre"

    with transaction(reg.factory) as db:
        candidates = service.avis_candidates(
            db, reg.actor(dax_agent), DAX, incoming.id, now=reg.clock(), vault=reg.vault
        )
        assert [c.id for c in candidates] == [birth]
        mention_id = service.apply_avis(
            db, reg.actor(dax_agent), DAX, incoming.id, birth, now=reg.clock(), vault=reg.vault
        )
        with pytest.raises(Conflict):
            service.apply_avis(
                db, reg.actor(dax_agent), DAX, incoming.id, birth, now=reg.clock(), vault=reg.vault
            )
    reg.clock.advance(days=3)
    reg.sign(f"mention:{mention_id}", officer=dax_officer)
    with transaction(reg.factory) as db:
        receipt = service.get_avis(
            db, reg.actor(reg.agent), MDM, incoming.id, now=reg.clock(), vault=reg.vault
        )
    assert receipt.status is AvisStatus.APPLIED and receipt.receipt_at == reg.clock()
    (mention,) = reg.act(birth, DAX).mentions
    assert mention.view.kind.value == "mariage" and "Maïté" in mention.view.facts.texte

    # The off-platform avis is signed by Mont-de-Marsan's officier and downloadable.
    reg.sign(f"avis:{off.id}")
    with transaction(reg.factory) as db:
        data, _ = service.document(
            db, reg.actor(reg.agent), MDM, f"avis:{off.id}", now=reg.clock(), vault=reg.vault
        )
    assert data.startswith(b"%PDF") and b"/ByteRange" in data
    # Both communes' trails hold the receipt.
    assert {e.tenant for e in events(reg.factory, "registry:avis:applied")} == {MDM, DAX}


def test_an_avis_can_be_rejected_with_a_reason(reg):
    reg.make.tenant(DAX, "Dax")
    dax_agent = reg.make.user("agent", DAX, totp=False)
    reg.sign(f"act:{reg.draft('mariage', mariage())}")
    with transaction(reg.factory) as db:
        (incoming,) = service.list_avis(
            db, reg.actor(dax_agent), DAX, incoming=True, now=reg.clock(), vault=reg.vault
        )
        with pytest.raises(ValidationFailed):
            service.reject_avis(
                db,
                reg.actor(dax_agent),
                DAX,
                incoming.id,
                reason=" ",
                now=reg.clock(),
                vault=reg.vault,
            )
        service.reject_avis(
            db,
            reg.actor(dax_agent),
            DAX,
            incoming.id,
            reason="Aucun acte de naissance",
            now=reg.clock(),
            vault=reg.vault,
        )
    with transaction(reg.factory) as db:
        rec = service.get_avis(
            db, reg.actor(reg.agent), MDM, incoming.id, now=reg.clock(), vault=reg.vault
        )
    assert rec.status is AvisStatus.REJECTED and rec.reason == "Aucun acte de naissance"


def test_divorce_on_a_marriage_act_goes_on_to_the_birth_acts(reg):
    wedding = reg.draft("mariage", mariage("Mont-de-Marsan (Landes)", "Mont-de-Marsan"))
    reg.sign(f"act:{wedding}")
    with transaction(reg.factory) as db:
        before = db.scalar(select(func.count()).select_from(Avis))
        mention_id = service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            wedding,
            kind="divorce",
            facts={
                "texte": "Divorcés par jugement du tribunal judiciaire de Mont-de-Marsan.",
                "decision": {
                    "nature": "jugement",
                    "date": "2026-11-20",
                    "autorite": "Tribunal judiciaire de Mont-de-Marsan",
                },
            },
            now=reg.clock(),
            vault=reg.vault,
        )
    reg.sign(f"mention:{mention_id}")
    with reg.factory() as db:
        kinds = list(db.scalars(select(Avis.mention_kind).order_by(Avis.id)))[before:]
    assert kinds == ["divorce", "divorce"]  # within the same commune: its own queue


# --- deliveries ----------------------------------------------------------------------


def _issue(reg, kind: str = "extrait_avec_filiation") -> tuple[int, bytes, str]:
    act_id = reg.draft()
    reg.sign(f"act:{act_id}")
    with transaction(reg.factory) as db:
        delivery_id = service.request_delivery(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind=kind,
            requester="Mme Martin (mère)",
            purpose="Dossier de passeport",
            now=reg.clock(),
            vault=reg.vault,
        )
    reg.sign(f"delivery:{delivery_id}")
    with transaction(reg.factory) as db:
        data, _ = service.document(
            db,
            reg.actor(reg.agent),
            MDM,
            f"delivery:{delivery_id}",
            now=reg.clock(),
            vault=reg.vault,
        )
        code = db.get(Delivery, delivery_id).code
    return delivery_id, data, code


def test_an_issued_extrait_is_pdfa_signed_b_lta_and_checkable_by_code(reg, tmp_path):
    _, data, code = _issue(reg)
    pdf = tmp_path / "extrait.pdf"
    pdf.write_bytes(data)
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True)
    rows = fonts.stdout.splitlines()[2:]
    # Columns: name type encoding emb sub uni object ID.
    assert rows and all(row.split()[-5] == "yes" for row in rows), fonts.stdout
    assert b"/OutputIntents" in data and b"pdfaid" in data
    assert b"/DocTimeStamp" in data  # B-LTA
    text_ = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert code in text_ and "Dupont" in text_
    with transaction(reg.factory) as db:
        check = service.check_code(db, code.lower().replace("-", ""), now=reg.clock())
    assert check.commune == "Mont-de-Marsan" and check.kind.value == "extrait_avec_filiation"
    import hashlib

    assert check.sha256 == hashlib.sha256(data).hexdigest()
    with transaction(reg.factory) as db, pytest.raises(NotFound):
        service.check_code(db, "ZZZZ-ZZZZ-ZZZZ", now=reg.clock())


def test_pdfsig_validates_an_issued_copy(reg, tmp_path, demo_pki, settings):
    _, data, _ = _issue(reg, "copie_integrale")
    pdf = tmp_path / "copie.pdf"
    pdf.write_bytes(data)
    out = pdfsig_against_demo_pki(settings, demo_pki, pdf, tmp_path)
    assert "Signature Validation: Signature is Valid." in out, out
    assert "Certificate Validation: Certificate is Trusted." in out, out
    assert "Signature Type: ETSI.CAdES.detached" in out, out


def test_delivery_kinds_follow_the_act_kind(reg):
    act_id = reg.draft(
        "deces",
        {
            "defunt": {"nom": "Roux", "prenoms": "Marcel", "sexe": "M"},
            "deces": {"date": "2026-11-28", "lieu": "Mont-de-Marsan"},
        },
    )
    with transaction(reg.factory) as db, pytest.raises(Conflict, match="signé"):
        service.request_delivery(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="copie_integrale",
            requester="x",
            purpose="y",
            now=reg.clock(),
            vault=reg.vault,
        )
    reg.sign(f"act:{act_id}")
    with transaction(reg.factory) as db, pytest.raises(ValidationFailed, match="ne se délivre pas"):
        service.request_delivery(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="extrait_avec_filiation",
            requester="x",
            purpose="y",
            now=reg.clock(),
            vault=reg.vault,
        )


# --- batch signing -------------------------------------------------------------------


def _login_step(reg, account) -> User:
    """The officer logged in with the current code: that step is now used."""
    with transaction(reg.factory) as db:
        outcome = accounts.check_second_factor(
            db,
            reg.make.keys,
            user_id=account.id,
            code=account.code(reg.clock()),
            address="192.0.2.1",
            now=reg.clock(),
            policy=reg.make.policy,
        )
        assert outcome.status is accounts.LoginStatus.OK
    return reg.make.get_user(account.id)


def test_batch_signing_with_one_fresh_totp_code(reg):
    acts = [reg.draft(content=naissance(prenoms=f"Enfant {n}")) for n in range(3)]
    officer = _login_step(reg, reg.officer)
    refs = [f"act:{a}" for a in acts] + ["act:999999"]
    with transaction(reg.factory) as db, pytest.raises(AuthenticationFailed):
        # The code of the login itself does not confirm a batch.
        start_batch(
            db,
            reg.make.keys,
            reg.make.policy,
            officer,
            refs,
            totp_code=reg.officer.code(reg.clock()),
            now=reg.clock(),
        )
    reg.clock.advance(seconds=30)
    job_id = reg.batch(refs)
    assert run_pending(reg.rt) == 1
    with reg.factory() as db:
        job = db.get(Job, job_id)
        lines = json.loads(job.result)
    assert (job.status, job.total, job.done, job.failed) == ("done", 4, 4, 1)
    assert [line["ok"] for line in lines] == [True, True, True, False]
    assert "introuvable" in lines[-1]["message"]
    assert sorted(reg.act(a).view.number for a in acts) == [1, 2, 3]
    assert len(events(reg.factory, "registry:act:signed")) == 3
    assert len(events(reg.factory, "registry:signature:failed")) == 1


def test_a_batch_interrupted_midway_resumes_without_signing_twice(reg):
    acts = [reg.draft(content=naissance(prenoms=f"Enfant {n}")) for n in range(2)]
    reg.clock.advance(seconds=30)
    job_id = reg.batch([f"act:{a}" for a in acts])
    # A worker signed the first item, then died: the job stays "running", heartbeat old.
    reg.sign(f"act:{acts[0]}")
    with transaction(reg.factory) as db:
        job = db.get(Job, job_id)
        job.status, job.heartbeat_at, job.attempts = "running", reg.clock(), 1
        job.result = json.dumps([{"ref": f"act:{acts[0]}", "ok": True, "message": "signé"}])
        job.done = 1
    assert run_pending(reg.rt) == 0  # a live worker's job is not stolen
    reg.clock.advance(minutes=6)
    assert run_pending(reg.rt) == 1
    with reg.factory() as db:
        job = db.get(Job, job_id)
        assert (job.status, job.done, job.failed) == ("done", 2, 0)
    assert len(events(reg.factory, "registry:act:signed")) == 2


def test_mentions_of_pending_items_are_listed_in_the_queue(reg):
    act_id = reg.draft()
    reg.sign(f"act:{act_id}")
    second = reg.draft(content=naissance("Bernard", "Tom"))
    with transaction(reg.factory) as db:
        service.add_mention(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="changement_prenom",
            facts={"texte": "Prénom changé en Léonie.", "changements": {"prenoms": "Léonie"}},
            now=reg.clock(),
            vault=reg.vault,
        )
        service.request_delivery(
            db,
            reg.actor(reg.agent),
            MDM,
            act_id,
            kind="copie_integrale",
            requester="Léa",
            purpose="mariage",
            now=reg.clock(),
            vault=reg.vault,
        )
        queue = service.signature_queue(
            db, reg.actor(reg.officer), MDM, now=reg.clock(), vault=reg.vault
        )
    assert [q.ref.split(":")[0] for q in queue] == ["act", "mention", "delivery"]
    assert queue[0].ref == f"act:{second}" and "BERNARD Tom" in queue[0].label
    with reg.factory() as db:
        assert db.scalar(select(func.count()).select_from(Mention)) == 1


def test_an_off_platform_avis_and_a_scan_can_be_previewed_and_downloaded(reg):
    wedding = reg.draft("mariage", mariage("Mont-de-Marsan", "Bayonne"))
    reg.sign(f"act:{wedding}")
    with transaction(reg.factory) as db:
        sent = service.list_avis(
            db, reg.actor(reg.agent), MDM, incoming=False, now=reg.clock(), vault=reg.vault
        )
        off = next(a for a in sent if a.target_commune == "Bayonne")
        preview = service.preview(
            db, reg.actor(reg.officer), MDM, f"avis:{off.id}", now=reg.clock(), vault=reg.vault
        )
        assert preview.startswith(b"%PDF") and b"/ByteRange" not in preview
        scan = b"%PDF-1.4\n% page 12 of the 1987 register\n%%EOF\n"
        scan_id = service.attach_scan(
            db,
            reg.actor(reg.agent),
            MDM,
            wedding,
            filename="p12.pdf",
            data=scan,
            now=reg.clock(),
            vault=reg.vault,
        )
        data, _ = service.document(
            db, reg.actor(reg.agent), MDM, f"scan:{scan_id}", now=reg.clock(), vault=reg.vault
        )
        assert data == scan
        with pytest.raises(NotFound):
            service.document(
                db, reg.actor(reg.agent), MDM, "act:99999999999", now=reg.clock(), vault=reg.vault
            )
        with pytest.raises(ValidationFailed):
            service.document(
                db, reg.actor(reg.agent), MDM, "nothing:1", now=reg.clock(), vault=reg.vault
            )
    assert events(reg.factory, "registry:avis:listed")[0].tenant == MDM


def test_the_worker_command_runs_queued_batches(reg, settings, monkeypatch):
    from click.testing import CliRunner

    from securex.cli import main

    act_id = reg.draft()
    reg.clock.advance(seconds=30)
    reg.batch([f"act:{act_id}"])
    with transaction(reg.factory) as db:  # the command runs on the real clock
        db.execute(update(Job).values(run_after=reg.clock() - timedelta(days=3)))
    monkeypatch.setenv("SECUREX_INSTANCE", str(settings.instance))
    monkeypatch.setenv("SECUREX_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "1 tâche(s) exécutée(s)." in result.output
    assert reg.act(act_id).status == "signed"


def test_a_worker_killed_mid_batch_loses_nothing_and_signs_nothing_twice(reg, settings):
    """The crash-and-retry drill with real processes: a `securex worker` is SIGKILLed
    while it signs a batch; another worker takes the job back once its heartbeat is
    stale, and every act ends up signed exactly once, numbers without a gap."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    total = 16
    acts = [reg.draft(content=naissance(prenoms=f"Enfant {n}")) for n in range(total)]
    reg.clock.advance(seconds=30)
    job_id = reg.batch([f"act:{a}" for a in acts])
    with transaction(reg.factory) as db:  # the workers run on the real clock
        db.execute(update(Job).values(run_after=reg.clock() - timedelta(days=3)))
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(settings.instance),
        "SECUREX_DATABASE_URL": settings.database_url,
        "SECUREX_JOBS_STALE_SECONDS": "3",
        "SECUREX_JOBS_POLL_SECONDS": "0.1",
        "SECUREX_CONFIG": "",
    }
    securex = str(Path(sys.executable).with_name("securex"))

    def job() -> Job:
        with reg.factory() as db:
            reading(db)  # SQLite: no write lock, or the worker's items starve this poll
            found = db.get(Job, job_id)
            assert found is not None
            db.expunge(found)
            return found

    def wait(condition: Any, what: str, seconds: float = 120) -> Job:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            current = job()
            if condition(current):
                return current
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {job().__dict__}")

    first = subprocess.Popen(
        [securex, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait(lambda j: j.done >= 3, "the first items")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    killed = job()
    assert killed.status == "running" and 3 <= killed.done < total, "killed mid-batch"
    second = subprocess.Popen(
        [securex, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        done = wait(lambda j: j.status == "done", "the second worker to finish")
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert (done.done, done.failed, done.attempts) == (total, 0, 2)
    assert len({line["ref"] for line in json.loads(done.result)}) == total
    signed = events(reg.factory, "registry:act:signed")
    assert sorted(json.loads(e.details)["number"] for e in signed) == list(range(1, total + 1))
    assert all(reg.act(a).status == "signed" for a in acts)


def test_a_live_worker_keeps_its_long_job_and_a_dead_one_loses_it(reg):
    """A job's heartbeat is renewed by its worker's heartbeat too, not only at each item:
    a single long step (a pli of several GiB) is not taken over while its worker lives."""
    from securex.jobs.service import beat, claim, stale_after

    act = reg.draft()
    reg.clock.advance(seconds=30)
    job_id = reg.batch([f"act:{act}"])
    stale = stale_after(reg.rt.settings)
    with transaction(reg.factory) as db:
        assert claim(db, "node-a:1:1", reg.clock(), stale) == job_id
    reg.clock.advance(minutes=4)
    beat(reg.rt, "node-a:1:1", reg.clock())
    reg.clock.advance(minutes=4)  # 8 minutes after the claim, 4 after the last beat
    with transaction(reg.factory) as db:
        assert claim(db, "node-b:2:2", reg.clock(), stale) is None
    reg.clock.advance(minutes=2)  # node A is silent for 6 minutes: dead
    with transaction(reg.factory) as db:
        assert claim(db, "node-b:2:2", reg.clock(), stale) == job_id
        assert db.get(Job, job_id).worker == "node-b:2:2"


def test_the_archive_renews_signed_acts_before_their_timestamp_expires(
    reg, settings, monkeypatch, caplog
):
    from pyhanko.pdf_utils.reader import PdfFileReader

    from securex.registry import renewal
    from securex.registry.models import Act
    from securex.signing import pades

    act_id = reg.draft()
    reg.sign(f"act:{act_id}")
    first = reg.act(act_id).document_id
    with reg.factory() as db:
        signed = reg.vault.read_all(db, MDM, first)
    expires = pades.archive_expiry(signed)
    margin = timedelta(days=int(settings["signing.renew_margin_days"]))
    # Not due: the demo TSA's certificate outlives the margin. Looked at once, then
    # not before the day after its expiry minus the margin.
    assert renewal.renew_documents(reg.rt) == 0
    with reg.factory() as db:
        act = db.get(Act, act_id)
        assert act.document_id == first
        assert act.renew_after == (expires - margin).date() + timedelta(days=1)
    assert renewal.renew_documents(reg.rt) == 0  # nothing due today

    def due_again() -> None:
        with transaction(reg.factory) as db:
            db.execute(update(Act).values(renew_after=reg.clock().date()))

    # Due (a margin longer than the certificate's life), but the only TSA's certificate
    # expires no later: a new copy would buy nothing. Said, and not tried for 30 days.
    settings.values["signing"]["renew_margin_days"] = 36500
    due_again()
    assert renewal.renew_documents(reg.rt) == 0
    assert "replace the TSA" in caplog.text
    with reg.factory() as db:
        act = db.get(Act, act_id)
        assert (act.document_id, act.renew_after) == (first, (reg.clock() + renewal.RETRY).date())
    # A document whose last timestamp expires sooner than a fresh one: renewed.
    real = renewal._status
    monkeypatch.setattr(
        renewal,
        "_status",
        lambda data, now, m: (lambda r, e: (r, e - timedelta(days=10)))(*real(data, now, m)),
    )
    due_again()
    assert renewal.renew_documents(reg.rt) == 1
    renewed = reg.act(act_id).document_id
    assert renewed != first
    with reg.factory() as db:
        fresh = reg.vault.read_all(db, MDM, renewed)
        act = db.get(Act, act_id)
        assert act.renew_after == (reg.clock() + renewal.RETRY).date()
        # The previous version stays in the vault, untouched.
        assert reg.vault.read_all(db, MDM, first) == signed
    assert fresh.startswith(signed)  # an incremental update: the signature still covers it
    stamps = [
        s
        for s in PdfFileReader(io.BytesIO(fresh)).embedded_signatures
        if s.sig_object.get("/Type") == "/DocTimeStamp"
    ]
    assert len(stamps) == 2
    (event,) = events(reg.factory, "signing:document:timestamp-renewed")
    assert event.tenant == MDM and event.actor == "system:archive"
    assert json.loads(event.details)["act"] == act_id
    assert renewal.renew_documents(reg.rt) == 0  # not again before RETRY


def test_a_failing_archive_renewal_waits_a_day_and_spares_the_others(reg, monkeypatch, caplog):
    from securex.registry import renewal
    from securex.registry.models import Act

    acts = [reg.draft(content=naissance(prenoms=f"Enfant {n}")) for n in range(2)]
    for act_id in acts:
        reg.sign(f"act:{act_id}")

    def broken(data, now, margin):
        raise OSError("TSA unreachable")

    monkeypatch.setattr(renewal, "_status", broken)
    assert renewal.renew_documents(reg.rt) == 0
    assert caplog.text.count("archive renewal of Act") == 2  # both tried, neither blocks
    with reg.factory() as db:
        for act_id in acts:
            assert db.get(Act, act_id).renew_after == reg.clock().date() + timedelta(days=1)
    caplog.clear()
    assert renewal.renew_documents(reg.rt) == 0  # claimed until tomorrow: not tried again
    assert "archive renewal" not in caplog.text


def test_a_revoked_officer_signs_nothing_at_any_level(reg, demo_pki, settings):
    settings.values["signing"]["level"] = "B-B"  # pyHanko itself checks only from B-LT
    act_id = reg.draft()
    cert = demo_pki.officer_cert(reg.make.get_user(reg.officer.id).email)
    demo_pki.revoke(cert.serial_number, now=reg.clock() - timedelta(hours=1))
    reg.clock.advance(seconds=30)
    job_id = reg.batch([f"act:{act_id}"])
    run_pending(reg.rt)
    with reg.factory() as db:
        job = db.get(Job, job_id)
        (line,) = json.loads(job.result)
    assert (job.done, job.failed) == (1, 1) and "révoqué" in line["message"]
    assert reg.act(act_id).status == "pending"


def test_job_results_name_acts_but_never_persons(reg):
    act_id = reg.draft(content=naissance("Zanetti", "Ornella"))
    reg.clock.advance(seconds=30)
    job_id = reg.batch([f"act:{act_id}"])
    run_pending(reg.rt)
    with reg.factory() as db:
        result = db.get(Job, job_id).result
    assert "Acte de naissance n° 1/2026 signé" in result
    assert "Zanetti" not in result and "Ornella" not in result and "ZANETTI" not in result


def test_two_communes_of_the_same_name_get_a_pdf_not_a_guess(reg):
    reg.make.tenant("64445", "Saint-Martin")
    reg.make.tenant("40270", "Saint-Martin")
    reg.sign(f"act:{reg.draft('mariage', mariage('Saint-Martin', 'Saint-Martin (Landes)'))}")
    with transaction(reg.factory) as db:
        sent = service.list_avis(
            db, reg.actor(reg.agent), MDM, incoming=False, now=reg.clock(), vault=reg.vault
        )
    assert {a.status for a in sent} == {AvisStatus.TO_SIGN}
    assert {a.target_insee for a in sent} == {None}
