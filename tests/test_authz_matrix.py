"""The authorisation matrix: every route of the application and every operation of the
API, called as every kind of caller (anonymous; each role of Mont-de-Marsan, commune A,
and of Dax, commune B; the platform's administrator; each category of API client of
either commune; a revoked client token and a revoked personal token; the outside
recipient of a pli), with path parameters that name commune A's own objects. The
outcomes expected are declared in one table, `TABLE`; a route or an operation missing
from it fails the test, and so does a row whose route is gone. Apart from the table,
the property that nothing of commune A reaches commune B is asserted on its own.

The world is built once, in one test: commune A's acts (a draft, a signed act, an
issued copy and its verification code), an avis de mention it received, a batch of
signatures, requests for acts (a notary's, queued and issued, and a citizen's with a
proof), a pli sent to an outside address, deposit links and the pli one brought,
resumable uploads. Each call sends an empty or minimal body (with a valid CSRF token
from a browser), so that a 400 or a 422 shows the caller got past the authorisation.
Calls that use their object up get a fresh one each, and those that change what later
rows read run after them (`LATE`, `LAST`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import pytest
from sqlalchemy import func, select

from securex.accounts import service as accounts
from securex.accounts.models import ApiClient, ClientCategory, Role, Tenant, User
from securex.accounts.service import Actor
from securex.audit.models import AuditEvent
from securex.comedec import service as comedec
from securex.comedec import webhooks
from securex.comedec.models import CommuneSettings
from securex.comedec.schema import ActRequestIn
from securex.db import transaction
from securex.exchange import service as exchange
from securex.exchange import uploads
from securex.exchange.models import PliFile, Recipient
from securex.jobs.service import run_pending
from securex.registry import batch
from securex.registry import service as registry
from securex.registry.models import Avis, Delivery
from tests.conftest import Account, csrf_token
from tests.test_exchange_views import LEA, code_of, link_of, mails_to
from tests.test_login import login
from tests.test_registry_views import sign

A, B = "40192", "40088"  # Mont-de-Marsan, Dax
SETUP = Actor("test")
PDF = b"%PDF-1.7\n% a file of commune A\n%%EOF\n"

# What identifies commune A's objects: none of it may reach commune B (with the e-mail
# addresses of A's staff and the names of A's clients, added when they are made).
SIGNED_NOM, SIGNED_PRENOMS = "Etcheverrigaray", "Maialen"
DRAFT_NOM, DRAFT_PRENOMS = "Garrabos", "Ximun"
PARENT_NOM = "Zubiaurre"
PLI_SUBJECT = "Dossier Sagardoy"
PLI_FILE = "sagardoy-bulletin.pdf"
DEPOSIT_LABEL = "Pièces Urrutikoetxea"
DEPOSIT_FILE = "urrutikoetxea-cni.pdf"
UPLOAD_FILE = "idiazabal-releve.pdf"
REFERENCE = "DOSSIER-AMAIUR-7"
SECRETS = (
    f"{SIGNED_NOM} {SIGNED_PRENOMS}",  # as the titles of acts write a name
    f"{DRAFT_NOM} {DRAFT_PRENOMS}",
    SIGNED_NOM,
    SIGNED_PRENOMS,
    DRAFT_NOM,
    DRAFT_PRENOMS,
    PARENT_NOM,
    PLI_SUBJECT,
    PLI_FILE,
    DEPOSIT_LABEL,
    DEPOSIT_FILE,
    UPLOAD_FILE,
    REFERENCE,
)


def birth(nom: str, prenoms: str) -> dict[str, Any]:
    return {
        "enfant": {"nom": nom, "prenoms": prenoms, "sexe": "F"},
        "naissance": {"date": "2026-11-28", "heure": "10:30", "lieu": "Mont-de-Marsan (Landes)"},
        "parents": [{"nom": PARENT_NOM, "prenoms": "Oihana", "date_naissance": "1992-05-06"}],
    }


def wedding() -> dict[str, Any]:
    """Celebrated in Dax; one spouse was born in Mont-de-Marsan, which gets an avis."""
    return {
        "epoux": [
            {
                "nom": "Lafitte",
                "prenoms": "Pierre",
                "sexe": "M",
                "date_naissance": "1994-04-01",
                "lieu_naissance": "Mont-de-Marsan (Landes)",
            },
            {
                "nom": "Darrigrand",
                "prenoms": "Maite",
                "sexe": "F",
                "date_naissance": "1995-07-14",
                "lieu_naissance": "Bayonne (Pyrénées-Atlantiques)",
            },
        ],
        "celebration": {"date": "2026-11-28", "heure": "15:00", "lieu": "Dax"},
    }


# The capacity each category of client claims (`comedec.rules.CLIENT_CAPACITIES`).
CAPACITIES = {
    "notaire": "notaire",
    "administration": "administration",
    "mairie": "officier_etat_civil",
    "guichet": "titulaire",
}


def act_request(capacity: str = "notaire") -> dict[str, Any]:
    """A request for commune A's signed act."""
    return {
        "commune": A,
        "act_kind": "naissance",
        "delivery": "copie_integrale",
        "capacity": capacity,
        "person": {
            "nom": SIGNED_NOM,
            "prenoms": SIGNED_PRENOMS,
            "sexe": "F",
            "date": "2026-11-28",
            "lieu": "Mont-de-Marsan",
        },
        "parents": [{"nom": PARENT_NOM, "prenoms": "Oihana"}],
        "legal_reference": "Code civil, art. 730",
        "purpose": "Succession",
        "reference": REFERENCE,
    }


def request_as(who: str) -> dict[str, Any]:
    return act_request(CAPACITIES.get(who.partition("_")[2], "notaire"))


VERIFICATION = {
    "commune": A,
    "act_kind": "naissance",
    "person": {"nom": SIGNED_NOM, "prenoms": SIGNED_PRENOMS, "sexe": "F", "date": "2026-11-28"},
    "legal_reference": "Code de la sécurité sociale, art. L114-12",
    "person_informed": True,
}
SEND = {
    "recipients": [LEA],
    "subject": "Bulletin",
    "files": [{"name": "bulletin.txt", "content": base64.b64encode(b"bulletin").decode()}],
}


# --- outcomes ------------------------------------------------------------------------------

OK = "ok"  # 2xx, or a redirect that is neither to the login page nor back to a landing page
LOGIN = "login"  # 401, or a redirect to /login?next=… (login_required's answer)
LANDING = "landing"  # back to a pli's landing page: the access cookie is missing
FORBIDDEN = "forbidden"  # 403
HIDDEN = "hidden"  # 404: another commune's (or another caller's) object looks missing
BAD = "bad"  # past the authorisation, the empty or minimal request is refused
BAD_STATUSES = {400, 405, 409, 410, 412, 415, 422, 423}


def outcome(status: int, location: str | None) -> str:
    if 200 <= status < 300:
        return OK
    if 300 <= status < 400:
        target = urlsplit(location or "")
        if target.path == "/login" and "next=" in target.query:
            return LOGIN
        if "acces=expire" in target.query:
            return LANDING
        return OK  # a redirect to /login without `next`: a logout, or no login pending
    if status == 401:
        return LOGIN
    if status == 403:
        return FORBIDDEN
    if status == 404:
        return HIDDEN
    if status in BAD_STATUSES:
        return BAD
    return f"http {status}"  # never expected: 429, 5xx


# --- principals ----------------------------------------------------------------------------

CATEGORIES = tuple(c.value for c in ClientCategory)
A_STAFF = ("A_agent", "A_officer", "A_admin")
B_STAFF = ("B_agent", "B_officer", "B_admin")
A_CLIENTS = tuple(f"A_{c}" for c in CATEGORIES)
B_CLIENTS = tuple(f"B_{c}" for c in CATEGORIES)
PRINCIPALS = (
    "anon",
    *A_STAFF,
    *B_STAFF,
    "platform",
    *A_CLIENTS,
    *B_CLIENTS,
    "revoked_client",
    "revoked_personal",
    "recipient",  # an outside recipient of A's pli, holding its access cookie
)
GROUPS = {
    "users": (*A_STAFF, *B_STAFF, "platform"),
    "A": A_STAFF,
    "B": B_STAFF,
    "officers": ("A_officer", "B_officer"),
    "admins": ("A_admin", "B_admin"),
    "A_clients": A_CLIENTS,
    "B_clients": B_CLIENTS,
}
COMMUNE_B = frozenset((*B_STAFF, *B_CLIENTS))


def expect(default: str, **who: str) -> dict[str, str]:
    """`default` for everyone, then each group's or principal's outcome, in order."""
    table = dict.fromkeys(PRINCIPALS, default)
    for key, value in who.items():
        for name in GROUPS.get(key, (key,)):
            assert name in table, name
            table[name] = value
    return table


def public(value: str = OK) -> dict[str, str]:
    return expect(value)


def signed_in(value: str = OK, **who: str) -> dict[str, str]:
    """A page behind login_required only."""
    return expect(LOGIN, users=value, **who)


def staff(a: str = OK, b: str = OK, **who: str) -> dict[str, str]:
    """A commune's page for its agents, officiers and administrators (the platform's
    administrator has no commune: 403); `a` for commune A's staff, `b` for B's. The
    same for an operation that takes a personal token (`sxp_…`), which acts as its
    user; a client's token is unknown there."""
    return expect(LOGIN, platform=FORBIDDEN, A=a, B=b, **who)


def client(a: str = OK, b: str = OK, **who: str) -> dict[str, str]:
    """An operation that takes an API client's token (`sx_…`): a personal one is unknown."""
    return expect(LOGIN, A_clients=a, B_clients=b, **who)


def holder(value: str, others: str) -> dict[str, str]:
    """A pli's page that needs the access cookie its recipient got with the code."""
    return expect(others, recipient=value)


# --- the table -----------------------------------------------------------------------------

NORMAL, LATE, LAST = 0, 1, 2  # phases: calls that change state after those they would spoil


@dataclass(frozen=True)
class Row:
    expect: dict[str, str]
    at: dict[str, str] = field(default_factory=dict)  # rule variable → "{world value}" or text
    fresh: dict[str, str] = field(default_factory=dict)  # rule variable → maker, per call
    query: str = ""
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None  # or a function of the caller's name
    data: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    phase: int = NORMAL
    link: bool = False  # a capability URL: whoever holds the link is its audience
    relogin: bool = False  # in a session of its own (the call ends the user's sessions)
    of_a: bool | None = None  # names commune A's objects (by default: when it has `at`)

    @property
    def names_a(self) -> bool:
        return bool(self.at or self.fresh) if self.of_a is None else self.of_a


TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Upload-Offset": "0"}  # no bytes: the owner's PATCH changes nothing
OCTETS = "application/offset+octet-stream"
SIGNED = {"act_id": "{signed}"}
DRAFT = {"act_id": "{draft}"}
QUEUED = {"request_id": "{queued}"}
ISSUED = {"request_id": "{issued}"}
PLI = {"pli_id": "{pli}"}
LINK = {"token": "{link}"}
DEPOSIT = {"token": "{deposit}"}
SVE = {"token": "{sve}"}
SVE_FORM = (
    "/demande-acte/<insee>/<any(naissance, mariage, deces, reconnaissance):act_kind>/"
    "<any(copie_integrale, extrait_avec_filiation, extrait_sans_filiation, "
    "extrait_plurilingue):delivery>"
)
SVE_BIRTH = {"insee": A, "act_kind": "naissance", "delivery": "copie_integrale"}
REF = "<any(act, mention, delivery, avis):kind>:<int:ident>"

TABLE: dict[str, dict[str, Row | tuple[Row, ...]]] = {
    # --- accounts ----------------------------------------------------------------------
    "/": {"GET": Row(signed_in())},
    # Signed in, the login page sends to the dashboard; without a pending password
    # step, the second factor's and the enrolment's pages send back to /login.
    "/login": {"GET": Row(public()), "POST": Row(expect(BAD, users=OK))},
    "/login/totp": {"GET": Row(public()), "POST": Row(public())},
    "/login/enrol": {"GET": Row(public()), "POST": Row(public())},
    "/logout": {"POST": Row(signed_in(), phase=LAST)},
    "/logout/everywhere": {"POST": Row(signed_in(), phase=LAST, relogin=True)},
    "/compte": {"GET": Row(signed_in())},
    "/compte/jetons": {"POST": Row(signed_in(BAD))},
    # A personal token of commune A's agent: its owner alone revokes it.
    "/compte/jetons/<int:token_id>/revoquer": {
        "POST": Row(signed_in(HIDDEN, A_agent=OK), at={"token_id": "{spare_token}"})
    },
    # --- the API's plumbing, signing, the audit log, health ------------------------------
    "/api/v1/me": {"GET": Row(client())},
    "/api/v1/openapi.json": {"GET": Row(public())},
    "/api/v1/validate": {"POST": Row(client(), data=b"", content_type="application/pdf")},
    "/api/v1/audit/checkpoint": {"GET": Row(public())},
    "/api/v1/audit/consistency": {"GET": Row(public(), query="from={size}&to={size}")},
    # An event that A's notary caused: that client alone gets its proof.
    "/api/v1/audit/events/<int:event_id>/proof": {
        "GET": Row(client(HIDDEN, HIDDEN, A_notaire=OK), at={"event_id": "{event}"})
    },
    "/pki/root.crt": {"GET": Row(public())},
    "/pki/ca.crt": {"GET": Row(public())},
    "/pki/ca.crl": {"GET": Row(public())},
    "/pki/root.crl": {"GET": Row(public())},
    "/pki/ocsp": {"POST": Row(public())},
    "/pki/ocsp/<path:encoded>": {"GET": Row(public(), at={"encoded": "MAA="}, of_a=False)},
    "/pki/tsa": {"POST": Row(public())},
    "/verifier": {"GET": Row(public()), "POST": Row(public(BAD))},
    "/healthz": {"GET": Row(public())},
    "/readyz": {"GET": Row(public())},
    "/metrics": {"GET": Row(public(LOGIN))},  # behind metrics.token, which no caller holds
    # --- the registry ------------------------------------------------------------------
    "/registre": {"GET": Row(staff(), query=f"nom={SIGNED_NOM}&prenoms={SIGNED_PRENOMS}")},
    "/registre/actes/nouveau": {
        "GET": Row(staff(), query="type=naissance"),
        "POST": Row(staff(BAD, BAD), query="type=naissance"),
    },
    "/registre/actes/<int:act_id>": {"GET": Row(staff(OK, HIDDEN), at=SIGNED)},
    "/registre/actes/<int:act_id>/modifier": {
        "GET": Row(staff(OK, HIDDEN), at=DRAFT),
        "POST": Row(staff(BAD, HIDDEN), at=DRAFT),
    },
    "/registre/actes/<int:act_id>/presenter": {"POST": Row(staff(OK, HIDDEN), at=DRAFT)},
    "/registre/actes/<int:act_id>/mentions/nouvelle": {
        "GET": Row(staff(OK, HIDDEN), at=SIGNED),
        "POST": Row(staff(BAD, HIDDEN), at=SIGNED),
    },
    "/registre/actes/<int:act_id>/delivrances/nouvelle": {
        # GET only redirects to the act's page (#delivrer), reading nothing: the act's
        # page answers for the act (404 to B's staff).
        "GET": Row(staff(OK, OK), at=SIGNED, of_a=False),
        "POST": Row(staff(BAD, HIDDEN), at=SIGNED),
    },
    f"/registre/documents/{REF}": {
        "GET": (
            Row(staff(OK, HIDDEN), at={"kind": "act", "ident": "{signed}"}),
            Row(staff(OK, HIDDEN), at={"kind": "delivery", "ident": "{delivery}"}),
        )
    },
    f"/registre/apercu/{REF}": {
        "GET": (
            Row(staff(OK, HIDDEN), at={"kind": "act", "ident": "{draft}"}),
            Row(staff(OK, HIDDEN), at={"kind": "delivery", "ident": "{delivery}"}),
        )
    },
    "/registre/avis": {"GET": Row(staff())},
    # The avis that B's wedding sent to A, which A rejected: A's staff reach it (409,
    # already dealt with); B, its sender, neither applies nor rejects it.
    "/registre/avis/<int:avis_id>/appliquer": {
        "POST": Row(
            staff(BAD, HIDDEN), at={"avis_id": "{avis}"}, form={"avis{avis}-act": "{draft}"}
        )
    },
    "/registre/avis/<int:avis_id>/rejeter": {
        "POST": Row(
            staff(BAD, HIDDEN), at={"avis_id": "{avis}"}, form={"rejet{avis}-reason": "Inconnu"}
        )
    },
    "/registre/signature": {
        "GET": Row(staff(FORBIDDEN, FORBIDDEN, officers=OK)),
        "POST": Row(staff(FORBIDDEN, FORBIDDEN, officers=BAD)),
    },
    "/registre/signature/lots/<int:job_id>": {
        "GET": Row(
            staff(FORBIDDEN, FORBIDDEN, A_officer=OK, B_officer=HIDDEN), at={"job_id": "{job}"}
        )
    },
    "/verifier/code": {"GET": Row(public())},
    # The code printed on A's issued copy: whoever holds the copy may check it.
    "/verifier/<code>": {
        "GET": Row(public(), at={"code": "{code}"}, link=True),
        "POST": Row(public(BAD), at={"code": "{code}"}, link=True),
    },
    "/api/v1/acts": {"GET": Row(staff(), query=f"nom={SIGNED_NOM}&prenoms={SIGNED_PRENOMS}")},
    "/api/v1/registry/acts": {"GET": Row(staff())},
    "/api/v1/acts/<int:act_id>": {"GET": Row(staff(OK, HIDDEN), at=SIGNED)},
    "/api/v1/acts/<int:act_id>/document": {"GET": Row(staff(OK, HIDDEN), at=SIGNED)},
    # --- requests for acts -------------------------------------------------------------
    "/demandes": {"GET": Row(staff())},
    "/demandes/<int:request_id>": {"GET": Row(staff(OK, HIDDEN), at=QUEUED)},
    "/demandes/<int:request_id>/preparer": {"POST": Row(staff(BAD, HIDDEN), at=QUEUED)},
    "/demandes/<int:request_id>/refuser": {"POST": Row(staff(BAD, HIDDEN), at=QUEUED)},
    "/demandes/<int:request_id>/introuvable": {
        "POST": Row(staff(OK, HIDDEN), at=QUEUED, phase=LATE)
    },
    "/demandes/<int:request_id>/justificatif": {
        "GET": Row(staff(OK, HIDDEN), at={"request_id": "{sve_id}"})
    },
    "/commune/parametres": {
        "GET": Row(staff(FORBIDDEN, FORBIDDEN, admins=OK)),
        "POST": Row(staff(FORBIDDEN, FORBIDDEN, admins=BAD)),
    },
    # Each administrator's POST queues the rotation of the key of their own commune.
    "/commune/cles": {
        "GET": Row(staff(FORBIDDEN, FORBIDDEN, admins=OK)),
        "POST": Row(staff(FORBIDDEN, FORBIDDEN, admins=OK), phase=LATE),
    },
    "/demande-acte": {"GET": Row(public())},
    SVE_FORM: {
        "GET": Row(public(), at=SVE_BIRTH, of_a=False),
        "POST": Row(public(BAD), at=SVE_BIRTH, of_a=False),
    },
    # The citizen's follow-up link; the copy is not issued yet (409).
    "/demande-acte/suivi/<token>": {"GET": Row(public(), at=SVE, link=True)},
    "/demande-acte/suivi/<token>/code": {"POST": Row(public(BAD), at=SVE, link=True)},
    "/demande-acte/suivi/<token>/copie": {"POST": Row(public(BAD), at=SVE, link=True)},
    # A body for commune A, with each category's capacity: B's clients are out of
    # scope (403); a guichet does not verify (403).
    "/api/v1/act-requests": {
        "POST": Row(client(OK, FORBIDDEN), json=request_as, of_a=True),
        "GET": Row(client()),
    },
    # The issued request of A's notary: another client's request looks missing.
    "/api/v1/act-requests/<int:request_id>": {
        "GET": Row(client(HIDDEN, HIDDEN, A_notaire=OK), at=ISSUED)
    },
    "/api/v1/act-requests/<int:request_id>/document": {
        "GET": Row(client(HIDDEN, HIDDEN, A_notaire=OK), at=ISSUED)
    },
    "/api/v1/act-requests/<int:request_id>/data": {
        "GET": Row(client(HIDDEN, HIDDEN, A_notaire=OK), at=ISSUED)
    },
    "/api/v1/act-requests/<int:request_id>/ack": {
        "POST": Row(client(HIDDEN, HIDDEN, A_notaire=OK), at=ISSUED)
    },
    "/api/v1/verifications": {
        "POST": Row(client(OK, FORBIDDEN, A_guichet=FORBIDDEN), json=VERIFICATION, of_a=True)
    },
    # Each client has a webhook of its own.
    "/api/v1/webhook": {
        "PUT": Row(client(BAD, BAD), json={}),
        "GET": Row(client()),
        "DELETE": Row(client(), phase=LATE),
    },
    # --- confidential exchange: the staff's pages ----------------------------------------
    "/plis": {"GET": Row(staff())},
    "/plis/nouveau": {"GET": Row(staff()), "POST": Row(staff(BAD, BAD))},
    "/plis/<int:pli_id>": {"GET": Row(staff(OK, HIDDEN), at=PLI)},
    "/plis/<int:pli_id>/destinataires/<int:recipient_id>/deverrouiller": {
        "POST": Row(staff(OK, HIDDEN), at={"pli_id": "{pli}", "recipient_id": "{rcpt}"})
    },
    "/plis/<int:pli_id>/revoquer": {
        "GET": Row(staff(OK, HIDDEN), at=PLI),
        "POST": Row(staff(OK, HIDDEN), fresh={"pli_id": "pli"}, phase=LATE),
    },
    # The files of a pli the commune received (the deposit's).
    "/plis/<int:pli_id>/fichiers/<int:file_id>": {
        "GET": Row(staff(OK, HIDDEN), at={"pli_id": "{incoming}", "file_id": "{incoming_file}"})
    },
    "/plis/<int:pli_id>/tout.zip": {"GET": Row(staff(OK, HIDDEN), at={"pli_id": "{incoming}"})},
    # A's pli went to an outside address, not to an account of the platform.
    "/plis/recus/<int:pli_id>": {"GET": Row(signed_in(HIDDEN), at=PLI)},
    "/plis/d/<token>/compte": {"POST": Row(signed_in(FORBIDDEN), at=LINK)},
    "/plis/cles": {"GET": Row(staff()), "POST": Row(staff(BAD, BAD))},
    "/plis/depots": {"GET": Row(staff()), "POST": Row(staff(BAD, BAD))},
    "/plis/depots/<int:deposit_id>/revoquer": {
        "POST": Row(staff(OK, HIDDEN), at={"deposit_id": "{spare_deposit}"})
    },
    # Resumable uploads (tus): an upload is its uploader's alone.
    "/plis/televersements": {"POST": Row(staff(BAD, BAD), headers=TUS)},
    "/plis/televersements/<upload_id>": {
        "PATCH": Row(
            staff(HIDDEN, HIDDEN, A_agent=OK),
            at={"upload_id": "{upload}"},
            headers=PATCH,
            data=b"",
            content_type=OCTETS,
        ),
        "DELETE": Row(
            staff(HIDDEN, HIDDEN, A_agent=OK), fresh={"upload_id": "upload"}, headers=TUS
        ),
    },
    # --- confidential exchange: whoever holds a link -------------------------------------
    "/plis/d/<token>": {"GET": Row(public(), at=LINK, link=True)},
    "/plis/d/<token>/code": {"POST": Row(public(), at=LINK, link=True)},
    "/plis/d/<token>/ouvrir": {"POST": Row(public(BAD), at=LINK, link=True)},
    "/plis/d/<token>/pli": {"GET": Row(holder(OK, LANDING), at=LINK, link=True)},
    "/plis/d/<token>/fichiers/<int:file_id>": {
        "GET": Row(holder(OK, LANDING), at={"token": "{link}", "file_id": "{pli_file}"}, link=True)
    },
    "/plis/d/<token>/tout.zip": {"GET": Row(holder(OK, LANDING), at=LINK, link=True)},
    "/plis/d/<token>/repondre": {"POST": Row(holder(BAD, LANDING), at=LINK, link=True)},
    "/plis/d/<token>/televersements": {
        "POST": Row(holder(BAD, FORBIDDEN), at=LINK, headers=TUS, link=True)
    },
    "/plis/d/<token>/televersements/<upload_id>": {
        "PATCH": Row(
            holder(OK, FORBIDDEN),
            at={"token": "{link}", "upload_id": "{reply_upload}"},
            headers=PATCH,
            data=b"",
            content_type=OCTETS,
            link=True,
        ),
        "DELETE": Row(
            holder(OK, FORBIDDEN),
            at=LINK,
            fresh={"upload_id": "reply_upload"},
            headers=TUS,
            link=True,
        ),
    },
    "/depot/<token>": {
        "GET": Row(public(), at=DEPOSIT, link=True),
        "POST": Row(public(BAD), at=DEPOSIT, link=True),
    },
    "/depot/<token>/televersements": {"POST": Row(public(BAD), at=DEPOSIT, headers=TUS, link=True)},
    "/depot/<token>/televersements/<upload_id>": {
        "PATCH": Row(
            public(),
            at={"token": "{deposit}", "upload_id": "{deposit_upload}"},
            headers=PATCH,
            data=b"",
            content_type=OCTETS,
            link=True,
        ),
        "DELETE": Row(
            public(), at=DEPOSIT, fresh={"upload_id": "deposit_upload"}, headers=TUS, link=True
        ),
    },
    # --- confidential exchange: the API (personal tokens) -------------------------------
    "/api/v1/sends": {"POST": Row(staff(), json=SEND), "GET": Row(staff())},
    "/api/v1/sends/<int:send_id>": {
        "GET": Row(staff(OK, HIDDEN), at={"send_id": "{pli}"}),
        "DELETE": Row(staff(OK, HIDDEN), fresh={"send_id": "pli"}, phase=LATE),
    },
    "/api/v1/uploads": {"POST": Row(staff(BAD, BAD), headers=TUS)},
    "/api/v1/uploads/<upload_id>": {
        "PATCH": Row(
            staff(HIDDEN, HIDDEN, A_agent=OK),
            at={"upload_id": "{upload}"},
            headers=PATCH,
            data=b"",
            content_type=OCTETS,
        ),
        "DELETE": Row(
            staff(HIDDEN, HIDDEN, A_agent=OK), fresh={"upload_id": "upload"}, headers=TUS
        ),
    },
}
IGNORED_ENDPOINTS = {"static"}  # Flask's static files


def variants(entry: Row | tuple[Row, ...]) -> tuple[Row, ...]:
    return entry if isinstance(entry, tuple) else (entry,)


# --- the world -----------------------------------------------------------------------------


@pytest.fixture
def _limits(settings: Any) -> None:
    """Counters that stop a person guessing would stop this matrix, which asks for a
    code and types a wrong one once per caller; /metrics gets a token; no worker runs
    in the test, so readiness does not wait for one."""
    settings.values["exchange"].update(codes_per_hour=1000, code_attempts=1000)
    settings.values["sve"].update(codes_per_hour=1000, code_attempts=1000)
    settings.values["metrics"]["token"] = "metrics-" + "x" * 32
    settings.values["jobs"]["in_process"] = False


@pytest.fixture
def app(_limits: None, mail_app: Any) -> Any:
    return mail_app


@dataclass
class Principal:
    name: str
    browser: Any
    csrf: str
    token: str | None = None
    account: Account | None = None


def user_of(db: Any, account: Account) -> User:
    user = db.get(User, account.id)
    assert user is not None
    return user


def tenant_a(db: Any) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.insee == A))
    assert tenant is not None
    return tenant


class World:
    """Commune A's objects by name (`values`), makers of fresh ones for the calls that
    use theirs up, and the callers."""

    def __init__(self, app: Any, make: Any, clock: Any, runtime: Any, smtp: Any) -> None:
        self.app, self.make, self.clock, self.runtime, self.smtp = app, make, clock, runtime, smtp
        self.values: dict[str, Any] = {}
        self.secrets: list[str] = list(SECRETS)
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, str] = {}
        self.clients: dict[str, int] = {}
        self.principals: dict[str, Principal] = {}
        self.makers: dict[str, Callable[[], Any]] = {
            "pli": self.new_pli,
            "upload": lambda: self.new_upload(f"user:{self.accounts['A_agent'].id}"),
            "deposit_upload": lambda: self.new_upload(f"deposit:{self.values['deposit_id']}"),
            "reply_upload": lambda: self.new_upload(f"recipient:{self.values['rcpt']}"),
        }
        self._addresses = iter(range(1, 255))

    def build(self) -> None:
        self.people()
        self.registry()
        self.requests()
        self.exchange()
        self.sign_in()

    @property
    def policy(self) -> exchange.ExchangePolicy:
        return exchange.ExchangePolicy.from_settings(self.runtime.settings)

    def actor(self, name: str) -> Actor:
        return Actor.for_user(self.make.get_user(self.accounts[name].id))

    def browser(self) -> Any:
        browser = self.app.test_client()
        # An address per caller: the counters per address (login, verification, the
        # citizens' counter) count each caller apart.
        browser.environ_base["REMOTE_ADDR"] = f"192.0.2.{next(self._addresses)}"
        return browser

    # --- people and tokens -------------------------------------------------------------

    def people(self) -> None:
        make, now = self.make, self.clock()
        make.tenant(A, "Mont-de-Marsan")
        make.tenant(B, "Dax")
        # Officers first: the shared demo PKI has certificates for officer1@… to 12.
        for name, role, insee in (
            ("A_officer", Role.OFFICER, A),
            ("B_officer", Role.OFFICER, B),
            ("A_agent", Role.AGENT, A),
            ("A_admin", Role.ADMIN, A),
            ("B_agent", Role.AGENT, B),
            ("B_admin", Role.ADMIN, B),
            ("platform", Role.PLATFORM_ADMIN, None),
        ):
            self.accounts[name] = make.user(role.value, insee)
        self.secrets += [self.accounts[name].email for name in A_STAFF]
        with transaction(make.factory) as db:
            for name, account in self.accounts.items():
                _, self.tokens[name] = accounts.create_personal_token(
                    db, SETUP, user_of(db, account), name="Matrice", now=now
                )
            agent = user_of(db, self.accounts["A_agent"])
            revoked, self.tokens["revoked_personal"] = accounts.create_personal_token(
                db, SETUP, agent, name="Révoqué", now=now
            )
            accounts.revoke_personal_token(db, SETUP, revoked.id, now=now)
            spare, _ = accounts.create_personal_token(db, SETUP, agent, name="Autre", now=now)
            for insee, commune in ((A, "Mont-de-Marsan"), (B, "Dax")):
                for category in CATEGORIES:
                    name = f"{commune} — {category}"
                    row, token = accounts.create_client(
                        db, SETUP, name=name, category=category, communes=[insee], now=now
                    )
                    key = f"{'A' if insee == A else 'B'}_{category}"
                    self.clients[key], self.tokens[key] = row.id, token
                    if insee == A:
                        self.secrets.append(name)
            revoked_client, self.tokens["revoked_client"] = accounts.create_client(
                db, SETUP, name="Révoqué", category="notaire", communes=[A], now=now
            )
            accounts.revoke_client(db, SETUP, revoked_client.id, now=now)
        self.values["spare_token"] = spare.id

    # --- the registry --------------------------------------------------------------------

    def registry(self) -> None:
        make, clock, vault = self.make, self.clock, self.make.vault
        # Actors before transactions: SQLite has one writer at a time.
        officer, agent, dax = (
            self.actor("A_officer"),
            self.actor("A_agent"),
            self.actor("B_officer"),
        )
        with transaction(make.factory) as db:
            signed = registry.create_act(
                db,
                officer,
                insee=A,
                kind="naissance",
                content=birth(SIGNED_NOM, SIGNED_PRENOMS),
                now=clock(),
                vault=vault,
            )
            registry.submit_act(db, officer, A, signed, now=clock())
            draft = registry.create_act(
                db,
                agent,
                insee=A,
                kind="naissance",
                content=birth(DRAFT_NOM, DRAFT_PRENOMS),
                now=clock(),
                vault=vault,
            )
            wed = registry.create_act(
                db, dax, insee=B, kind="mariage", content=wedding(), now=clock(), vault=vault
            )
            registry.submit_act(db, dax, B, wed, now=clock())
        sign(make, self.runtime, self.accounts["A_officer"], f"act:{signed}")
        sign(make, self.runtime, self.accounts["B_officer"], f"act:{wed}")  # the avis to A
        with transaction(make.factory) as db:
            delivery = registry.request_delivery(
                db,
                officer,
                A,
                signed,
                kind="extrait_avec_filiation",
                requester=f"Mme Oihana {PARENT_NOM} (mère)",
                purpose="Passeport",
                now=clock(),
                vault=vault,
            )
        sign(make, self.runtime, self.accounts["A_officer"], f"delivery:{delivery}")
        with transaction(make.factory) as db:
            code = db.scalar(select(Delivery.code).where(Delivery.id == delivery))
            avis = db.scalar(select(Avis.id).where(Avis.source_act_id == wed))
            assert avis is not None
            registry.reject_avis(
                db, agent, A, avis, reason="Acte introuvable", now=clock(), vault=vault
            )
            # A batch of signatures, with a TOTP code the officer has not used yet.
            job = batch.start_batch(
                db,
                make.keys,
                make.policy,
                user_of(db, self.accounts["A_officer"]),
                [f"act:{draft}"],
                totp_code=self.accounts["A_officer"].code(clock()),
                now=clock(),
            )
        self.values.update(
            signed=signed, draft=draft, delivery=delivery, code=code, avis=avis, job=job
        )

    # --- requests for acts -----------------------------------------------------------------

    def requests(self) -> None:
        api = self.app.test_client()
        notary = {"Authorization": f"Bearer {self.tokens['A_notaire']}"}
        queued = api.post("/api/v1/act-requests", json=act_request(), headers=notary)
        assert queued.status_code == 201 and queued.json["status"] == "queued", queued.json
        self.auto_issue(True)
        issued = api.post("/api/v1/act-requests", json=act_request(), headers=notary)
        assert issued.status_code == 201, issued.json
        run_pending(self.runtime)
        self.auto_issue(False)
        status = api.get(f"/api/v1/act-requests/{issued.json['id']}", headers=notary).json
        assert status["status"] == "issued", status
        citizen = ActRequestIn.model_validate(
            {**act_request("ascendant"), "legal_reference": None}, strict=False
        )
        with transaction(self.make.factory) as db:
            filed, _ = comedec.submit_public(
                db,
                body=citizen,
                email="oihana@example.org",
                proof=PDF,
                now=self.clock(),
                vault=self.make.vault,
            )
            event = db.scalar(
                select(func.min(AuditEvent.id)).where(
                    AuditEvent.actor == f"client:{self.clients['A_notaire']}"
                )
            )
        self.values.update(
            queued=queued.json["id"],
            issued=issued.json["id"],
            sve_id=filed.view.id,
            sve=filed.link,
            event=event,
            size=api.get("/api/v1/audit/checkpoint").json["size"],
        )

    def auto_issue(self, on: bool) -> None:
        with transaction(self.make.factory) as db:
            db.merge(CommuneSettings(tenant_id=tenant_a(db).id, auto_issue=on, due_days=10))

    # --- confidential exchange -------------------------------------------------------------

    def new_pli(self) -> int:
        with transaction(self.make.factory) as db:
            pli, _ = exchange.send(
                db,
                self.make.vault,
                user_of(db, self.accounts["A_agent"]),
                recipients=[LEA],
                subject=PLI_SUBJECT,
                message="Bonjour,",
                files=[exchange.FileInput(PLI_FILE, "application/pdf", PDF)],
                expires_in_days=None,
                download_limit=None,
                verification="email",
                source="web",
                now=self.clock(),
                policy=self.policy,
            )
            return pli.id

    def new_upload(self, owner: str) -> str:
        with transaction(self.make.factory) as db:
            upload = uploads.create(
                db,
                self.make.vault,
                tenant_a(db),
                owner,
                length=len(PDF),
                metadata={"filename": UPLOAD_FILE},
                max_bytes=self.policy.max_file_bytes,
                ttl=timedelta(hours=24),
                now=self.clock(),
            )
            return upload.id

    def exchange(self) -> None:
        clock, vault, policy = self.clock, self.make.vault, self.policy
        pli = self.new_pli()
        with transaction(self.make.factory) as db:
            agent = user_of(db, self.accounts["A_agent"])
            deposits = [
                exchange.create_deposit(
                    db,
                    vault,
                    agent,
                    label=DEPOSIT_LABEL,
                    instructions="",
                    email="",
                    days=None,
                    uses=uses,
                    now=clock(),
                    policy=policy,
                )
                for uses in (20, 1)
            ]
        (deposit, token), (spare, _) = deposits
        with transaction(self.make.factory) as db:
            incoming = exchange.use_deposit(
                db,
                vault,
                token,
                name="Jon Urrutikoetxea",
                email="jon@example.org",
                message="Voici",
                files=[exchange.FileInput(DEPOSIT_FILE, "application/pdf", PDF)],
                now=clock(),
                policy=policy,
            )
        run_pending(self.runtime)  # the pli is sent, the deposit's is ready
        with self.make.session() as db:
            rcpt = db.scalar(select(Recipient.id).where(Recipient.pli_id == pli))
            pli_file = db.scalar(select(PliFile.id).where(PliFile.pli_id == pli))
            incoming_file = db.scalar(select(PliFile.id).where(PliFile.pli_id == incoming.id))
        (notice,) = mails_to(self.smtp, LEA)
        self.values.update(
            pli=pli,
            rcpt=rcpt,
            pli_file=pli_file,
            link=link_of(notice).removeprefix("/plis/d/"),
            deposit=token,
            deposit_id=deposit.id,
            spare_deposit=spare.id,
            incoming=incoming.id,
            incoming_file=incoming_file,
        )
        for name in ("upload", "deposit_upload", "reply_upload"):
            self.values[name] = self.makers[name]()
        v = self.values
        # Links to A's objects, which no page of B may hold.
        self.secrets += [
            f'href="/registre/actes/{v["signed"]}"',
            f'href="/registre/actes/{v["draft"]}"',
            f'href="/demandes/{v["queued"]}"',
            f'href="/demandes/{v["sve_id"]}"',
            f'href="/plis/{v["pli"]}"',
            f'href="/plis/{v["incoming"]}"',
        ]

    # --- callers -------------------------------------------------------------------------

    def sign_in(self) -> None:
        """Every caller in a browser of its own: the staff logged in with their password
        and TOTP code, the others with an anonymous session's CSRF token."""
        self.clock.advance(seconds=30)  # past the TOTP step the batch used
        for name in PRINCIPALS:
            browser = self.browser()
            account = self.accounts.get(name)
            if account is not None:
                login(browser, account, self.clock)
                page = browser.get("/compte")
            else:
                page = browser.get("/login")
            csrf = csrf_token(page.get_data(as_text=True))
            self.principals[name] = Principal(name, browser, csrf, self.tokens.get(name), account)
        # The recipient asks for a code, reads it in the mail and opens the pli.
        link = f"/plis/d/{self.values['link']}"
        recipient = self.principals["recipient"].browser
        assert recipient.post(f"{link}/code").status_code == 200
        code = code_of(mails_to(self.smtp, LEA)[-1])
        opened = recipient.post(f"{link}/ouvrir", data={"code": code})
        assert opened.status_code == 303, opened.get_data(as_text=True)
        # Last, so that nothing of the setup is delivered to them.
        with transaction(self.make.factory) as db:
            for client_id in self.clients.values():
                webhooks.register(
                    db,
                    db.get(ApiClient, client_id),
                    "https://hooks.example.org/securex",
                    now=self.clock(),
                    keyring=self.make.vault.keyring,
                )

    def relogin(self, principal: Principal) -> Principal:
        """A second session of the same user (the call will end the first)."""
        if principal.account is None:
            return principal
        self.clock.advance(seconds=30)  # a TOTP code serves once
        browser = self.browser()
        login(browser, principal.account, self.clock)
        csrf = csrf_token(browser.get("/compte").get_data(as_text=True))
        return Principal(principal.name, browser, csrf, principal.token, principal.account)


# --- calling ---------------------------------------------------------------------------------

VARIABLE = re.compile(r"<([^>]+)>")


def variable(match: re.Match[str]) -> str:
    return match.group(1).rsplit(":", 1)[-1]


def fill(rule: str, at: dict[str, str], values: dict[str, Any]) -> str:
    """The rule's path, each variable given by `at` (a template of the world's values),
    else by the world's value of the same name."""

    def given(match: re.Match[str]) -> str:
        name = variable(match)
        return at.get(name, "{" + name + "}").format(**values)

    return VARIABLE.sub(given, rule)


@dataclass
class Call:
    rule: str
    method: str
    row: Row
    principal: str
    url: str
    status: int
    got: str
    leaked: list[str]

    @property
    def wanted(self) -> str:
        return self.row.expect[self.principal]


def calls(world: World, rule: str, method: str, row: Row) -> Iterator[Call]:
    """The row's request, once as each principal."""
    for name in PRINCIPALS:
        principal = world.principals[name]
        if row.relogin:
            principal = world.relogin(principal)
        values = dict(world.values)
        for var, maker in row.fresh.items():
            values[var] = world.makers[maker]()
        path = fill(rule, row.at, values)
        url = path + ("?" + row.query.format(**values) if row.query else "")
        api = path.startswith("/api/") or path == "/metrics"
        headers = dict(row.headers)
        if api and principal.token:
            headers["Authorization"] = f"Bearer {principal.token}"
        if method != "GET" and not api:
            headers["X-CSRFToken"] = principal.csrf
        kwargs: dict[str, Any] = {"headers": headers}
        if row.json is not None:
            kwargs["json"] = row.json(name) if callable(row.json) else row.json
        elif row.data is not None:
            kwargs.update(data=row.data, content_type=row.content_type)
        elif method != "GET" and not api:
            form = {k.format(**values): v.format(**values) for k, v in row.form.items()}
            kwargs["data"] = {"csrf_token": principal.csrf, **form}
        response = principal.browser.open(url, method=method, **kwargs)
        body = html.unescape(response.get_data().decode("utf-8", "replace")).casefold()
        response.close()
        leaked = []
        if name in COMMUNE_B:
            # What the caller sent comes back in forms, redirects and problems.
            sent = (
                unquote_plus(url) + json.dumps(kwargs.get("json"), ensure_ascii=False)
            ).casefold()
            leaked = [s for s in world.secrets if s.casefold() in body and s.casefold() not in sent]
        got = outcome(response.status_code, response.headers.get("Location"))
        yield Call(rule, method, row, name, url, response.status_code, got, leaked)


def run(world: World) -> list[Call]:
    done: list[Call] = []
    for phase in (NORMAL, LATE, LAST):
        for rule, methods in TABLE.items():
            for method, entry in methods.items():
                for row in variants(entry):
                    if row.phase == phase:
                        done.extend(calls(world, rule, method, row))
    return done


# --- the tests -------------------------------------------------------------------------------


def openapi_path(rule: str) -> str:
    return VARIABLE.sub(lambda m: "{" + variable(m) + "}", rule)


def test_every_route_and_operation_is_in_the_table(app: Any, client: Any) -> None:
    present = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in IGNORED_ENDPOINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    declared = {(rule, method) for rule, methods in TABLE.items() for method in methods}
    missing, gone = sorted(present - declared), sorted(declared - present)
    assert not missing, f"routes missing from TABLE: {missing}"
    assert not gone, f"rows of TABLE whose route no longer exists: {gone}"
    document = client.get("/api/v1/openapi.json").json
    operations = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    assert operations, "no operation in the OpenAPI document"
    covered = {(openapi_path(rule), method) for rule, method in declared}
    unlisted = sorted(operations - covered)
    assert not unlisted, f"operations missing from TABLE: {unlisted}"


def test_every_caller_gets_what_the_table_says_and_nothing_of_a_reaches_b(
    app: Any, make: Any, clock: Any, runtime: Any, smtp: Any
) -> None:
    world = World(app, make, clock, runtime, smtp)
    world.build()
    done = run(world)
    assert len(done) == len(PRINCIPALS) * sum(
        len(variants(entry)) for methods in TABLE.values() for entry in methods.values()
    )

    # Commune B, staff or client, gets no 2xx (nor a redirect that says it is done) from
    # anything that names commune A's objects, and no answer to B carries what
    # identifies them. A capability link is its own authority (whoever holds it is its
    # audience), so links are left out here; the table says that B gets no more from
    # them than anyone holding the link.
    reached = [
        f"{c.principal}: {c.method} {c.url} → {c.status}"
        for c in done
        if c.principal in COMMUNE_B and c.row.names_a and not c.row.link and c.got == OK
    ]
    assert not reached, "commune B reaches commune A's objects:\n" + "\n".join(reached)
    leaked = [
        f"{c.principal}: {c.method} {c.url} → {c.status} shows {c.leaked}"
        for c in done
        if c.leaked and not c.row.link
    ]
    assert not leaked, "answers to commune B carry commune A's data:\n" + "\n".join(leaked)

    wrong = [
        f"{c.method} {c.rule} as {c.principal}: expected {c.wanted}, got {c.got} "
        f"({c.status} {c.url})"
        for c in done
        if c.got != c.wanted
    ]
    assert not wrong, f"{len(wrong)} outcomes differ from TABLE:\n" + "\n".join(wrong)
