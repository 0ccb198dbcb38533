"""Issue 10, the browser journeys: people use a real server (`securex init --demo`, then
`securex serve`, with an SMTP server) in Chromium, with the keyboard only and without
JavaScript, and axe-core finds no WCAG 2.1 A/AA violation on any page they reach
(tests/browser.py). Screenshots of the steps go to docs/screenshots/.

The journeys, in order, on one server for the module:

1. an officier of Mont-de-Marsan logs in with TOTP, signs twenty acts in one batch,
   downloads one and checks it on the public verification page (and `securex verify`);
2. a notary asks Dax for a copy through the API; an agent of Dax takes it from the
   queue and prepares the copy, Dax's officier signs it, the notary downloads it;
3. an agent sends a pli to an outside address; the recipient reads the e-mail, asks
   for a code, gets it by e-mail, opens the pli and downloads the file; the sender
   sees the receipt;
4. Mont-de-Marsan's administrator rotates the commune's key on its page; the instance
   is backed up, destroyed (folder and database) and restored: everything still opens;
5. anyone, without an account, checks the copy of journey 2 at its QR code's page.

Then the secrets scan of tests/test_secrets_scan.py, on what these journeys typed:
nothing of it is in clear in the instance folder, the logs, the database or a backup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Browser, Page

from securex.db import utcnow
from tests.browser import (
    check_accessibility,
    choose_file,
    chromium,
    download,
    follow,
    person,
    press,
    screenshot,
    tab_to,
    type_into,
)
from tests.conftest import ENGINE
from tests.smtp import SmtpServer
from tests.test_backup import Cli, _destroy_database
from tests.test_registry import presented
from tests.test_secrets_scan import _database_rows, _leaks, _variants
from tests.test_serve import free_port
from tests.test_two_nodes import Node, _securex, _stop, _wait_for, serve

MDM, DAX = "40192", "40088"

# What the journeys type about people: distinctive strings, searched for at rest at the
# end (the demo's own people are written by `init --demo`, not by the journeys).
BATCH_NOM = "Brizemontaigu"
BATCH_PRENOMS = [
    "Quirinelle", "Aubéronde", "Ysmérie", "Thélismar", "Orvandine",
    "Galswinthe", "Fulcranne", "Hermengaud", "Sidonelle", "Brunissende",
    "Tancrèdine", "Ursmarine", "Vivianor", "Wandrille-Oriane", "Zélindor",
    "Adalrune", "Cunégilde", "Domitrude", "Ermessinde", "Frothilde",
]  # fmt: skip
BATCH_PLACE = "Kerlaouénan-Plouvrézec"
BATCH_MOTHER = {"nom": "Trévidicquelin", "prenoms": "Maëlwenna", "sexe": "F"}
BATCH_FATHER_JOB = "luthier de vielles à roue"
NOTARY_PURPOSE = "Succession Morvandiau-Quellecanne"
NOTARY_REFERENCE = "ETUDE-JRNY-5527"
PLI_RECIPIENT = "maitre.ombrevallon@example.org"
PLI_SUBJECT = "Pièces du dossier Ysengrimaud-Pellevoisin"
PLI_MESSAGE = "Maître Castelbajacq, voici l'acte de notoriété Ghislarmont."
PLI_FILE_NAME = "notoriete-Hildebrandine-Vauquois.pdf"
FILE_MARKER = "CONTENU-PLI-Parathormonide-4417"
# The demo person of Dax the notary asks about (README, "Try it on the demo").
DEMO_PERSON = {
    "nom": "Dupont-Martin",
    "prenoms": "Léa Marie",
    "sexe": "F",
    "date": "1995-03-02",
    "lieu": "Dax",
}


def _typed() -> dict[str, str]:
    """Each datum the journeys typed, by what it is."""
    typed = {f"batch prénoms {i}": p for i, p in enumerate(BATCH_PRENOMS)}
    return typed | {
        "batch nom": BATCH_NOM,
        "batch birthplace": BATCH_PLACE,
        "batch mother's nom": BATCH_MOTHER["nom"],
        "batch mother's prénoms": BATCH_MOTHER["prenoms"],
        "batch father's profession": BATCH_FATHER_JOB,
        "notary's purpose": NOTARY_PURPOSE,
        "notary's reference": NOTARY_REFERENCE,
        "pli recipient": PLI_RECIPIENT,
        "pli subject": PLI_SUBJECT,
        "pli message": PLI_MESSAGE,
        "pli file name": PLI_FILE_NAME,
        "file marker": FILE_MARKER,
    }


# --- the server ---------------------------------------------------------------------


class Phone:
    """Each person's authenticator app. A code accepted once is refused after (and the
    signature queue wants a code other than the login's): each code is of a later
    30-second step than the last one given, within the server's one step of drift."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def code(self, secret: str) -> str:
        totp = pyotp.TOTP(secret)
        while True:
            current = totp.timecode(datetime.now(UTC))
            step = max(current, self.last.get(secret, current - 1) + 1)
            if step <= current + 1:
                break
            time.sleep(1)
        self.last[secret] = step
        return totp.generate_otp(step)


@dataclass
class Served:
    base: str
    node: Node
    env: dict[str, str]
    instance: Path
    database_url: str
    log: Path
    smtp: SmtpServer
    creds: dict[str, Any]
    phone: Phone = field(default_factory=Phone)
    # What a journey leaves for a later one (the copy of journey 2 for journey 5).
    kept: dict[str, Any] = field(default_factory=dict)

    def user(self, role: str, insee: str) -> dict[str, str]:
        found: dict[str, str] = next(
            u for u in self.creds["users"] if u["role"] == role and u["tenant"] == insee
        )
        return found

    def cli(self) -> Cli:
        """The `securex` command in process, on the served instance."""
        keys = {k: self.env[k] for k in ("SECUREX_MASTER_KEY_FILE",) if k in self.env}
        return Cli(self.instance, self.database_url, SECUREX_BASE_URL=self.base, **keys)

    def mail_to(self, address: str, count: int) -> Any:
        """The `count`-th message received by `address`, once it has arrived."""

        def arrived() -> list[Any]:
            found = [m for m in self.smtp.messages if address in m.recipients]
            return found if len(found) >= count else []

        return _wait_for(f"e-mail n° {count} to {address}", arrived, 60)[count - 1]


@pytest.fixture(scope="module")
def served(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("journeys")
    smtp = SmtpServer().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mail = {
        f"SECUREX_MAIL_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in smtp.mail_settings().items()
    }
    env = {
        **os.environ,
        "SECUREX_CONFIG": "",
        "SECUREX_INSTANCE": str(folder / "inst"),
        "SECUREX_DATABASE_URL": module_database_url,
        "SECUREX_BASE_URL": base,  # the links of the e-mails and QR codes
        **mail,
    }
    log = folder / "serve.log"
    served = None
    try:
        _securex(env, "init", "--demo")
        node = serve("journeys", env, port, log)
        creds = json.loads((folder / "inst" / "demo-credentials.json").read_text())
        served = Served(base, node, env, folder / "inst", module_database_url, log, smtp, creds)
        yield served
    finally:
        if served is not None:
            _stop(served.node.proc)  # journey 4 restarts it
        smtp.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


def log_in(served: Served, page: Page, user: dict[str, str], journey: str = "") -> None:
    """The login form and the second factor, by keyboard; axe on both pages."""
    page.goto("/login")
    check_accessibility(page, "connexion")
    type_into(page, page.locator("#email"), user["email"])
    type_into(page, page.locator("#password"), user["password"])
    follow(page, page.get_by_role("button", name="Se connecter"))
    assert page.url.endswith("/login/totp"), page.url
    check_accessibility(page, "second facteur")
    type_into(page, page.locator("#code"), served.phone.code(user["totp_secret"]))
    if journey:
        screenshot(page, journey, "1-second-facteur")
    follow(page, page.get_by_role("button", name="Valider"))
    assert page.url == served.base + "/", page.url
    check_accessibility(page, "tableau de bord")


def sign_batch(
    served: Served,
    page: Page,
    officer: dict[str, str],
    labels: re.Pattern[str],
    shot: tuple[str, str],
) -> int:
    """From the dashboard to the signature queue: tick each item whose label matches,
    confirm with a fresh code, then follow the batch's page until it is done. The
    number ticked."""
    follow(page, page.get_by_role("link", name="Actes et documents à signer"))
    check_accessibility(page, "file de signature")
    boxes = page.get_by_role("checkbox", name=labels).all()
    assert boxes, "nothing to sign"
    for box in boxes:
        press(page, box, "Space")
        assert box.is_checked()
    type_into(page, page.locator("#code"), served.phone.code(officer["totp_secret"]))
    screenshot(page, *shot)  # the items ticked
    follow(page, page.get_by_role("button", name="Signer la sélection"))
    assert re.search(r"/registre/signature/lots/\d+$", page.url), page.url
    check_accessibility(page, "lot de signatures")
    # Without JavaScript, the person follows the page's link until the batch is done.
    deadline = time.monotonic() + 120
    while not page.get_by_text("Lot terminé").count():
        assert time.monotonic() < deadline, "the batch did not end within 120 s"
        time.sleep(1)
        follow(page, page.get_by_role("link", name="Actualiser l'avancement"))
    check_accessibility(page, "lot de signatures terminé")
    return len(boxes)


def verify_pdf(served: Served, path: Path) -> str:
    """`securex verify`: exit 0 only if every signature is valid."""
    result = served.cli()("verify", str(path))
    return str(result.output)


# --- the journeys ---------------------------------------------------------------------


def signed_act(page: Page, prenoms: str, pdf: Path) -> None:
    """From the dashboard: find the act of journey 1 given its `prenoms` in the
    register, open it and download its signed PDF into `pdf`."""
    follow(page, page.get_by_role("link", name="Rechercher un acte, projets en cours"))
    check_accessibility(page, "registre")
    type_into(page, page.get_by_label("Nom (obligatoire)"), BATCH_NOM)
    type_into(page, page.get_by_label("Prénoms (obligatoires)"), prenoms)
    follow(page, page.get_by_role("button", name="Rechercher"))
    check_accessibility(page, "résultat de recherche")
    follow(page, page.get_by_role("link", name=re.compile(prenoms)))
    check_accessibility(page, "acte signé")
    download(page, page.get_by_role("link", name="Télécharger l'acte signé (PDF)")).save_as(pdf)


def open_pli(served: Served, page: Page, link: str, mail: int, journey: str = "") -> bytes:
    """The pli's recipient at `link` asks for a code, types the one the `mail`-th
    e-mail to them gives, opens the pli and downloads its file: the bytes."""
    page.goto(link)
    check_accessibility(page, "pli reçu, avant le code")
    follow(page, page.get_by_role("button", name="Recevoir un code par e-mail"))
    check_accessibility(page, "pli reçu, saisie du code")
    code = re.search(r"\b(\d{3}) ?(\d{3})\b", served.mail_to(PLI_RECIPIENT, mail).text)
    assert code
    type_into(page, page.locator("#code"), code.group(1) + code.group(2))
    if journey:
        screenshot(page, journey, "2-code")
    follow(page, page.get_by_role("button", name="Ouvrir le pli"))
    check_accessibility(page, "pli ouvert")
    assert page.get_by_role("heading", name=PLI_SUBJECT).is_visible()
    if journey:
        screenshot(page, journey, "3-pli-ouvert")
    return Path(download(page, page.get_by_role("link", name=PLI_FILE_NAME)).path()).read_bytes()


def test_the_checks_find_what_they_look_for(served: Served, browser: Browser) -> None:
    """A check that finds nothing proves nothing: a field stripped of its label fails
    axe, and a control whose focus is made invisible fails the keyboard check."""
    with person(browser, served.base) as page:
        page.goto("/login")
        page.evaluate("document.querySelector('label[for=email]').remove()")
        with pytest.raises(AssertionError, match="label"):
            check_accessibility(page, "connexion sans étiquette")
        page.evaluate("document.querySelector('#password').style.outline = 'none'")
        with pytest.raises(AssertionError, match="no visible focus"):
            tab_to(page, page.locator("#password"))


def _drafts(served: Served) -> list[int]:
    """Twenty births drafted by Mont-de-Marsan's agent and presented for signature."""
    born = (utcnow() - timedelta(days=2)).date().isoformat()
    father = {"nom": BATCH_NOM, "prenoms": "Gwenvaël", "sexe": "M", "profession": BATCH_FATHER_JOB}
    contents = [
        {
            "enfant": {"nom": BATCH_NOM, "prenoms": prenoms, "sexe": "MF"[n % 2]},
            "naissance": {"date": born, "heure": f"{n:02d}:30", "lieu": BATCH_PLACE},
            "parents": [father, BATCH_MOTHER],
        }
        for n, prenoms in enumerate(BATCH_PRENOMS)
    ]
    return presented(served.cli().app(), served.user("agent", MDM)["email"], MDM, contents)


def test_1_an_officer_signs_twenty_acts_in_one_batch(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    assert len(_drafts(served)) == 20
    officer = served.user("officer", MDM)
    journey = "1-signature"
    with person(browser, served.base) as page:
        log_in(served, page, officer, journey)
        assert (
            sign_batch(
                served,
                page,
                officer,
                re.compile(BATCH_NOM.upper()),
                (journey, "2-file-de-signature"),
            )
            == 20
        )
        assert page.get_by_text("20 / 20 signés, 0 échec").is_visible()
        screenshot(page, journey, "3-lot-termine")

        # The register: search one of them, open it, download its signed PDF.
        follow(page, page.get_by_role("link", name="Tableau de bord"))
        pdf = tmp_path / "acte.pdf"
        signed_act(page, BATCH_PRENOMS[7], pdf)
        assert pdf.read_bytes().startswith(b"%PDF")

        # The public verification page, reached from the foot of the page.
        follow(page, page.get_by_role("link", name="Vérifier un document signé"))
        check_accessibility(page, "vérifier un document")
        choose_file(page, page.locator("#document"), pdf)
        follow(page, page.get_by_role("button", name="Vérifier"))
        check_accessibility(page, "rapport de vérification")
        assert page.get_by_text("Toutes les signatures sont valides").is_visible()
        screenshot(page, journey, "4-verification")
    assert "VALIDE" in verify_pdf(served, pdf)


def test_2_a_notarys_request_is_taken_prepared_signed_and_downloaded(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    notary = next(c for c in served.creds["api_clients"] if c["category"] == "notaire")
    bearer = {"Authorization": f"Bearer {notary['token']}"}
    body = {
        "commune": DAX,  # Dax leaves every request to its agents
        "act_kind": "naissance",
        "delivery": "copie_integrale",
        "capacity": "notaire",
        "person": DEMO_PERSON,
        "parents": [{"nom": "Dupont", "prenoms": "Jean"}, {"nom": "Martin", "prenoms": "Sophie"}],
        "purpose": NOTARY_PURPOSE,
        "reference": NOTARY_REFERENCE,
    }
    answer = served.node.call(
        "POST",
        "/api/v1/act-requests",
        json.dumps(body).encode(),
        {**bearer, "Content-Type": "application/json", "Idempotency-Key": "journey-2"},
    )
    assert answer.status == 201, answer.text
    request_id = answer.json()["id"]
    journey = "2-demande"

    agent = served.user("agent", DAX)
    with person(browser, served.base) as page:
        log_in(served, page, agent)
        follow(page, page.get_by_role("link", name=re.compile("^Demandes en retard")))
        check_accessibility(page, "demandes à traiter")
        screenshot(page, journey, "1-demandes-a-traiter")
        follow(page, page.get_by_role("link", name=re.compile(rf"^{request_id}\b")))
        check_accessibility(page, "une demande")
        press(page, page.get_by_role("radio").first, "Space")
        screenshot(page, journey, "2-demande")
        follow(page, page.get_by_role("button", name=re.compile("^Préparer la copie")))
        check_accessibility(page, "copie préparée")
        assert page.get_by_text("La copie est préparée : elle attend").is_visible()

    officer = served.user("officer", DAX)
    with person(browser, served.base) as page:
        log_in(served, page, officer)
        assert (
            sign_batch(
                served,
                page,
                officer,
                re.compile("^Copie intégrale"),
                (journey, "3-file-de-signature"),
            )
            == 1
        )

    def issued() -> bool:
        status = served.node.call("GET", f"/api/v1/act-requests/{request_id}", None, bearer)
        return bool(status.json()["status"] == "issued")

    _wait_for("the request issued", issued, 30)
    copy = served.node.call("GET", f"/api/v1/act-requests/{request_id}/document", None, bearer)
    assert copy.status == 200 and copy.headers["Content-Type"] == "application/pdf"
    path = tmp_path / "copie.pdf"
    path.write_bytes(copy.body)
    assert "VALIDE" in verify_pdf(served, path)
    served.kept["copy"] = path.read_bytes()


def test_3_a_pli_is_sent_opened_with_a_code_and_downloaded(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    random_part = os.urandom(120_000)
    content = random_part[:60_000] + FILE_MARKER.encode() + random_part[60_000:]
    served.kept["random slice"] = random_part[90_000:90_064]
    upload = tmp_path / PLI_FILE_NAME
    upload.write_bytes(content)
    journey = "3-pli"

    agent = served.user("agent", MDM)
    with person(browser, served.base) as sender:
        log_in(served, sender, agent)
        follow(sender, sender.get_by_role("link", name="Envoyer un pli confidentiel"))
        check_accessibility(sender, "nouveau pli")
        type_into(sender, sender.locator("#recipients"), PLI_RECIPIENT)
        type_into(sender, sender.locator("#subject"), PLI_SUBJECT)
        type_into(sender, sender.locator("#message"), PLI_MESSAGE)
        choose_file(sender, sender.locator("#files"), upload)
        screenshot(sender, journey, "1-nouveau-pli")
        follow(sender, sender.get_by_role("button", name="Envoyer le pli"))
        check_accessibility(sender, "pli envoyé")
        detail = sender.url
        assert re.search(r"/plis/\d+$", detail), detail

        notice = served.mail_to(PLI_RECIPIENT, 1)
        assert PLI_SUBJECT not in notice.text and FILE_MARKER not in notice.text
        link = re.search(rf"{re.escape(served.base)}/\S+", notice.text)
        assert link, notice.text
        served.kept["pli"] = (link.group(0), content)
        with person(browser, served.base) as recipient:
            assert open_pli(served, recipient, link.group(0), 2, journey) == content

        def receipt() -> list[str]:
            """Notifié, Ouvert, Code vérifié, Tout téléchargé: each a date, once the
            server has recorded the end of the download (just after its last byte)."""
            sender.reload()
            row = sender.get_by_role("row", name=re.compile(re.escape(PLI_RECIPIENT)))
            cells = row.get_by_role("cell").all_inner_texts()
            return cells if all(re.search(r"\d{4}", c) for c in cells[:4]) else []

        _wait_for("the receipt on the pli's page", receipt, 10)
        check_accessibility(sender, "suivi du pli")
        screenshot(sender, journey, "4-suivi")


def _key_versions(page: Page) -> dict[str, str]:
    """The commune's key versions as its page lists them: version → state."""
    rows = page.locator("table tbody tr").all()
    return {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(2).inner_text() for row in rows
    }


def test_4_an_administrator_rotates_the_key_and_restores_a_backup(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    """The commune's administrator rotates its key from the web; the platform's
    administrator then backs the instance up, loses the instance folder and the
    database (ransomware), and restores them with the master key kept apart: the
    administrator's session, the pli of journey 3 and the acts of journey 1 open as
    before (journey 5 then checks journey 2's copy on the restored server)."""
    journey = "4-administration"
    admin = served.user("admin", MDM)
    with person(browser, served.base) as page:
        log_in(served, page, admin)
        follow(page, page.get_by_role("link", name="Clé de la commune : versions et rotation"))
        check_accessibility(page, "clé de la commune")
        assert _key_versions(page) == {"v1": "active"}
        screenshot(page, journey, "1-cle-de-la-commune")
        follow(page, page.get_by_role("button", name="Créer une nouvelle version de la clé"))
        check_accessibility(page, "rotation demandée")
        assert page.get_by_text("Rotation demandée").is_visible()
        deadline = time.monotonic() + 60
        while page.get_by_text("Rotation en cours").count():
            assert time.monotonic() < deadline, "the rotation did not end within 60 s"
            time.sleep(1)
            follow(page, page.get_by_role("link", name="Actualiser l'avancement"))
        versions = _key_versions(page)
        assert versions["v2"] == "active" and versions["v1"].startswith("retirée le"), versions
        check_accessibility(page, "rotation faite")
        screenshot(page, journey, "2-rotation-faite")

        # The backup, kept off site; the master key and the shred ledger kept apart.
        cli = served.cli()
        backup = tmp_path / "hors-site" / "instance.sxb"
        backup.parent.mkdir()
        cli("backup", "create", str(backup))
        verifier = cli("audit", "public-key").output.strip()
        escrow = tmp_path / "sequestre"
        escrow.mkdir()
        shutil.copy(served.instance / "keys" / "master.key", escrow / "master.key")
        ledger = served.instance / "keys" / "shred-ledger.jsonl"
        ledgers = ["--shred-ledger", str(shutil.copy(ledger, escrow))] if ledger.exists() else []

        # The attack: the server stops, the instance folder and the database are gone.
        _stop(served.node.proc)
        shutil.rmtree(served.instance)
        _destroy_database(served.database_url)
        served.instance = served.instance.with_name("reconstruite")
        served.env = {
            **served.env,
            "SECUREX_INSTANCE": str(served.instance),
            "SECUREX_MASTER_KEY_FILE": str(escrow / "master.key"),
        }
        restored = served.cli()("backup", "restore", str(backup), *ledgers, "--verifier", verifier)
        assert "journal d'audit intègre" in restored.output, restored.output
        served.node = serve("journeys", served.env, served.node.port, served.log)

        # The administrator's session outlived the attack; the rotation is still there.
        follow(page, page.get_by_role("link", name="Tableau de bord", exact=True))
        follow(page, page.get_by_role("link", name="Clé de la commune : versions et rotation"))
        assert _key_versions(page)["v2"] == "active"
        screenshot(page, journey, "3-apres-restauration")

    # Everything still opens: the pli's file for its recipient (a new code by e-mail),
    # a signed act for the commune's agent.
    link, content = served.kept["pli"]
    with person(browser, served.base) as page:
        assert open_pli(served, page, link, 3) == content
    pdf = tmp_path / "acte.pdf"
    with person(browser, served.base) as page:
        log_in(served, page, served.user("agent", MDM))
        signed_act(page, BATCH_PRENOMS[3], pdf)
    assert "VALIDE" in verify_pdf(served, pdf)


def test_5_anyone_checks_the_issued_copy_at_its_qr_codes_page(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    copy = tmp_path / "copie.pdf"
    copy.write_bytes(served.kept["copy"])
    # The QR code's target is also printed under it: "Vérifiez ce document sur <url>".
    text = subprocess.run(
        ["pdftotext", "-raw", str(copy), "-"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(rf"{re.escape(served.base)}/verifier/[A-Z0-9-]+", text)
    assert found, text
    journey = "5-verification-publique"
    with person(browser, served.base) as page:
        page.goto(found.group(0))
        check_accessibility(page, "document authentique")
        assert page.get_by_role(
            "heading", name="Document authentique délivré par securex"
        ).is_visible()
        assert page.get_by_text("Signature valide").is_visible()
        screenshot(page, journey, "1-document-authentique")
        choose_file(page, page.locator("#document"), copy)
        follow(page, page.get_by_role("button", name="Comparer"))
        check_accessibility(page, "exemplaire comparé")
        assert page.get_by_text("Votre exemplaire est identique").is_visible()
        screenshot(page, journey, "2-exemplaire-identique")


def test_nothing_the_journeys_typed_is_at_rest_in_clear(served: Served, tmp_path: Path) -> None:
    """tests/test_secrets_scan.py's scan, on the data of these journeys."""
    assert "random slice" in served.kept, "journey 3 did not run"
    markers = {v: what for what, typed in _typed().items() for v in _variants(typed)}
    markers[served.kept["random slice"]] = "64 bytes of the pli file's random content"
    # The scan finds what it looks for.
    assert _leaks(f"x{BATCH_NOM.upper()}y".encode(), markers) == {"batch nom"}
    backup = tmp_path / "instance.sxb"
    served.cli()("backup", "create", str(backup))

    leaks: dict[str, set[str]] = {}
    files = [p for p in sorted(served.instance.rglob("*")) if p.is_file()]
    assert any(p.name.endswith(".log") for p in files), "no log file written"
    for path in [*files, served.log, backup]:
        if found := _leaks(path.read_bytes(), markers):
            leaks[path.name] = found
    if ENGINE == "sqlite":
        db_file = Path(served.database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            part = db_file.with_name(db_file.name + suffix)
            if part.exists() and (found := _leaks(part.read_bytes(), markers)):
                leaks[part.name] = found
    rows = _database_rows(served.database_url)
    assert b"agent.dax@demo.securex.fr" in rows  # the dump reads the tables
    if found := _leaks(rows, markers):
        leaks["database rows"] = found
    assert not leaks, f"plain personal data or content at rest: {leaks}"
