"""Issue 10, "Secrets": after a realistic journey on an instance made with
`securex init --demo`, no plain personal datum and no document content is anywhere at
rest: not in the instance folder (database and its -wal/-shm, blobs, keys, logs, pki,
run/), not in the database of the run (its file on SQLite; every row of every table on
PostgreSQL), not in the log lines (the log file and what the app logged, captured), not
in the backup.

The journey: an agent drafts and an officier signs a birth act; a notary asks for a copy
of it through the API (issued automatically with the commune's seal) and for another
person's act; a person asks at the public counter /demande-acte; an agent sends a pli
(subject, message, a file of random bytes with a text marker in it) to an outside
address; an agent makes a deposit link; the jobs run, an audit checkpoint is made,
then `securex backup create`.

What is searched for: strings that only the journey's personal data and document
contents carry (names, places, purposes, references, e-mail addresses of the people,
the pli's subject, message and file name, the deposit's label and instructions, the
file's marker and a 64-byte slice of its random bytes), in UTF-8 as given, lower- and
upper-cased, accent-stripped, and folded as the blind indexes fold them
(`securex.vault.columns.normalise`).

What is legitimately clear, so not searched for: the staff's e-mail addresses and
names (accounts, audit actors) and the demo credentials in demo-credentials.json (made
for the demo by design, readable by the service only); INSEE codes, commune names,
act kinds, statuses, dates and sizes (the metadata the service works on); the demo
registers' fictional people (they are written by `init --demo`, not by this journey,
and are sealed like ours anyway; our markers are distinct from them).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select, text

from securex import logs
from securex.accounts.models import User
from securex.accounts.service import Actor
from securex.db import utcnow
from securex.jobs.service import run_pending
from securex.registry import service as registry
from securex.registry.batch import officer_signing
from securex.vault.columns import normalise
from tests.conftest import csrf_token
from tests.test_backup import Cli, _login
from tests.test_comedec_sve import challenge

MDM = "40192"

CHILD = {"nom": "Zyxwvutsrq", "prenoms": "Quetzalia Brunehilde", "sexe": "F"}
BIRTHPLACE = "Ploumanac'h"
FATHER = {"nom": "Zyxwvutsrq", "prenoms": "Théodulfe Anselmin", "sexe": "M"}
MOTHER = {"nom": "Vrillacquemont", "prenoms": "Éléonorine", "sexe": "F"}
FATHER_JOB = "souffleur de verre à Pleumeur-Bodou"
FATHER_HOME = "17 impasse des Goëmoniers, Trégastel"
NOTARY_PURPOSE = "Succession Kerdrévézec-Ollivro"
NOTARY_REFERENCE = "DOSSIER-QXWZ-4471"
# Someone the registers do not hold: the request itself is the only place this is.
ABSENT = {"nom": "Fnordqvist", "prenoms": "Ysaline Hortensia", "lieu": "Lampaul-Ouessanté"}
ABSENT_FATHER = {"nom": "Fnordqvist", "prenoms": "Aldebrand"}
ABSENT_MOTHER = {"nom": "Quillebeuf-Tranchemer", "prenoms": "Ermengarde"}
CITIZEN = {"nom": "Pfefferkornix", "prenoms": "Ombeline Séraphine", "lieu": "Brélévenez"}
CITIZEN_EMAIL = "ombeline.pfefferkornix@example.org"
CITIZEN_PURPOSE = "Dossier de mariage Vexqorlune"
PLI_SUBJECT = "Livret de famille Oquendowska-Brazzaville"
PLI_MESSAGE = "Madame Jovanoïc-Threlkeld, voici les pièces du dossier Ughtredsson."
PLI_RECIPIENT = "maitre.bzhovrant@example.org"
PLI_FILE_NAME = "livret-Aubrelinde-Quirinal.pdf"
FILE_MARKER = "MARQUEUR-CONTENU-Hexagrammonide-8813"
DEPOSIT_LABEL = "Justificatifs succession Gwendraëlle Palimpsestra"
DEPOSIT_INSTRUCTIONS = "Déposez l'acte de notoriété de Mme Xanthippa Morvrennec."


def _variants(marker: str) -> set[bytes]:
    bare = "".join(c for c in unicodedata.normalize("NFKD", marker) if not unicodedata.combining(c))
    forms = {marker, marker.lower(), marker.upper(), bare, bare.lower(), bare.upper()}
    forms |= {normalise(marker), normalise(marker).upper()}
    return {f.encode() for f in forms}


def _markers(random_slice: bytes) -> dict[bytes, str]:
    """Each searched byte string and the datum it stands for."""
    plain = {
        "child's nom": CHILD["nom"],
        "child's prénoms": CHILD["prenoms"],
        "birthplace": BIRTHPLACE,
        "father's prénoms": FATHER["prenoms"],
        "mother's nom": MOTHER["nom"],
        "mother's prénoms": MOTHER["prenoms"],
        "father's profession": FATHER_JOB,
        "father's domicile": FATHER_HOME,
        "notary's purpose": NOTARY_PURPOSE,
        "notary's reference": NOTARY_REFERENCE,
        "absent person's nom": ABSENT["nom"],
        "absent person's prénoms": ABSENT["prenoms"],
        "absent person's birthplace": ABSENT["lieu"],
        "absent person's father": ABSENT_FATHER["prenoms"],
        "absent person's mother": ABSENT_MOTHER["nom"],
        "absent person's mother's prénoms": ABSENT_MOTHER["prenoms"],
        "citizen's nom": CITIZEN["nom"],
        "citizen's prénoms": CITIZEN["prenoms"],
        "citizen's birthplace": CITIZEN["lieu"],
        "citizen's e-mail": CITIZEN_EMAIL,
        "citizen's purpose": CITIZEN_PURPOSE,
        "pli subject": PLI_SUBJECT,
        "pli message": PLI_MESSAGE,
        "pli recipient": PLI_RECIPIENT,
        "pli file name": PLI_FILE_NAME,
        "file marker": FILE_MARKER,
        "deposit label": DEPOSIT_LABEL,
        "deposit instructions": DEPOSIT_INSTRUCTIONS,
    }
    found = {v: what for what, marker in plain.items() for v in _variants(marker)}
    found[random_slice] = "64 bytes of the file's random content"
    return found


def _leaks(data: bytes, markers: dict[bytes, str]) -> set[str]:
    return {what for marker, what in markers.items() if marker in data}


def _database_rows(url: str) -> bytes:
    """Every value of every row of every table, as bytes (PostgreSQL: the file is not
    ours to read; its rows are what it keeps)."""
    engine = create_engine(url)
    chunks: list[bytes] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            chunks.append(bytes(value))
                        elif value is not None:
                            chunks.append(str(value).encode())
    finally:
        engine.dispose()
    return b"\x00".join(chunks)


def _sign_as_officer(app: Any, email: str, act_id: int) -> None:
    st = app.extensions["securex"]
    rt = st.runtime()
    with st.sessions() as db:
        officer = db.scalar(select(User).where(User.email == email))
        assert officer is not None
        signing = officer_signing(rt, officer, utcnow())
        registry.sign_item(db, f"act:{act_id}", signing=signing, now=utcnow(), vault=st.vault)
        db.commit()


def _journey(cli: Cli, content: bytes) -> None:
    creds = json.loads((cli.instance / "demo-credentials.json").read_text())

    def user(role: str) -> dict[str, Any]:
        return next(u for u in creds["users"] if u["role"] == role and u["tenant"] == MDM)

    agent, officer = user("agent"), user("officer")
    notary = next(c for c in creds["api_clients"] if c["category"] == "notaire")["token"]
    token = re.search(r"\bsxp_\S+", cli("token", "add", agent["email"], "--name", "scan").output)
    assert token, "no personal token printed"
    app = cli.app()
    st = app.extensions["securex"]
    born = (utcnow() - timedelta(days=3)).date().isoformat()

    # The registry: an agent drafts, the officier signs.
    with st.sessions() as db:
        agent_id = db.scalar(select(User.id).where(User.email == agent["email"]))
        actor = Actor("user", str(agent_id), MDM)
        act_id = registry.create_act(
            db,
            actor,
            insee=MDM,
            kind="naissance",
            content={
                "enfant": CHILD,
                "naissance": {"date": born, "heure": "04:12", "lieu": BIRTHPLACE},
                "parents": [
                    {
                        **FATHER,
                        "date_naissance": "1981-08-09",
                        "profession": FATHER_JOB,
                        "domicile": FATHER_HOME,
                    },
                    MOTHER,
                ],
                "declarant": {"nom": FATHER["nom"], "prenoms": FATHER["prenoms"]},
            },
            now=utcnow(),
            vault=st.vault,
        )
        registry.submit_act(db, actor, MDM, act_id, now=utcnow())
        db.commit()
    _sign_as_officer(app, officer["email"], act_id)

    web = app.test_client()
    # A notary asks for a copy of it (Mont-de-Marsan issues clean ones automatically),
    # and for the act of someone the registers do not hold.
    names = [{"nom": p["nom"], "prenoms": p["prenoms"]} for p in (FATHER, MOTHER)]
    for person, parents in (
        ({**CHILD, "date": born, "lieu": BIRTHPLACE}, names),
        ({**ABSENT, "sexe": "F", "date": "1961-07-19"}, [ABSENT_FATHER, ABSENT_MOTHER]),
    ):
        answer = web.post(
            "/api/v1/act-requests",
            json={
                "commune": MDM,
                "act_kind": "naissance",
                "delivery": "copie_integrale",
                "capacity": "notaire",
                "person": person,
                "parents": parents,
                "purpose": NOTARY_PURPOSE,
                "reference": NOTARY_REFERENCE,
            },
            headers={"Authorization": f"Bearer {notary}"},
        )
        assert answer.status_code == 201, answer.get_json()

    # A person at the public counter (acknowledged by e-mail).
    form = f"/demande-acte/{MDM}/naissance/copie_integrale"
    page = web.get(form)
    assert page.status_code == 200
    challenge_token, right = challenge(page.get_data(as_text=True))
    answer = web.post(
        form,
        data={
            "nom": CITIZEN["nom"],
            "prenoms": CITIZEN["prenoms"],
            "date": "14/02/1987",
            "lieu": CITIZEN["lieu"],
            "parent1_nom": CITIZEN["nom"],
            "parent1_prenoms": "Gaétan",
            "parent2_nom": "Durand",
            "parent2_prenoms": "Marie",
            "capacity": "titulaire",
            "purpose": CITIZEN_PURPOSE,
            "email": CITIZEN_EMAIL,
            "email_confirm": CITIZEN_EMAIL,
            "challenge": challenge_token,
            "answer": right,
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)[-2000:]

    # An agent sends a pli with a file, through the API.
    answer = web.post(
        "/api/v1/sends",
        json={
            "subject": PLI_SUBJECT,
            "message": PLI_MESSAGE,
            "recipients": [PLI_RECIPIENT],
            "files": [
                {
                    "name": PLI_FILE_NAME,
                    "media_type": "application/pdf",
                    "content": base64.b64encode(content).decode(),
                }
            ],
        },
        headers={"Authorization": f"Bearer {token.group(0)}"},
    )
    assert answer.status_code == 201, answer.get_json()

    # An agent, logged in, makes a deposit link.
    browser = app.test_client()
    _login(browser, agent)
    page = browser.get("/plis/depots").get_data(as_text=True)
    answer = browser.post(
        "/plis/depots",
        data={
            "csrf_token": csrf_token(page),
            "label": DEPOSIT_LABEL,
            "instructions": DEPOSIT_INSTRUCTIONS,
            "email": "",
            "days": "7",
            "uses": "1",
        },
    )
    assert answer.status_code == 200 and "/depot/" in answer.get_data(as_text=True)

    assert run_pending(st.runtime()) >= 2  # the copy issued, the pli prepared at least
    status = web.get("/api/v1/act-requests", headers={"Authorization": f"Bearer {notary}"})
    assert "issued" in {r["status"] for r in status.get_json()["requests"]}
    st.engine.dispose()
    cli("audit", "checkpoint")


def test_no_plain_personal_datum_or_content_at_rest(tmp_path, database_url, caplog, smtp):
    caplog.set_level(logging.DEBUG, logger=logs.LOGGER)
    mail = {
        f"SECUREX_MAIL_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in smtp.mail_settings().items()
    }
    cli = Cli(tmp_path / "inst", database_url, **mail)
    cli("init", "--demo")
    random_part = os.urandom(150_000)
    content = random_part[:70_000] + FILE_MARKER.encode() + random_part[70_000:]
    markers = _markers(random_part[100_000:100_064])
    # The search finds what it looks for (a scan that finds nothing proves nothing).
    assert _leaks(content, markers) == {"file marker", "64 bytes of the file's random content"}
    assert "citizen's nom" in _leaks(normalise(CITIZEN["nom"]).upper().encode(), markers)

    with logs.installed(cli.settings()):  # the log file a served instance writes
        _journey(cli, content)
    sent = {to for m in smtp.messages for to in m.recipients}
    assert sent >= {CITIZEN_EMAIL, PLI_RECIPIENT}  # the people were told by e-mail
    backup = tmp_path / "offsite" / "instance.sxb"
    backup.parent.mkdir()
    cli("backup", "create", str(backup))

    leaks: dict[str, set[str]] = {}
    files = [p for p in sorted(cli.instance.rglob("*")) if p.is_file()]
    assert any(p.name.endswith(".log") for p in files), "no log file written"
    assert any("blobs" in p.parts for p in files), "no blob in the vault"
    for path in [*files, backup]:
        if found := _leaks(path.read_bytes(), markers):
            leaks[str(path.relative_to(tmp_path))] = found
    if database_url.startswith("sqlite:///"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            part = db_file.with_name(db_file.name + suffix)
            if part.exists() and (found := _leaks(part.read_bytes(), markers)):
                leaks[part.name] = found
    rows = _database_rows(database_url)
    assert b"agent.mont-de-marsan@demo.securex.fr" in rows  # the dump reads the tables
    if found := _leaks(rows, markers):
        leaks["database rows"] = found
    if found := _leaks(caplog.text.encode(), markers):
        leaks["captured log lines"] = found
    assert not leaks, f"plain personal data or content at rest: {leaks}"
