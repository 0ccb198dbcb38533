"""Evidence files ("dossiers de preuve"): every event about one subject (an act, a
request, a pli, a document), each with its inclusion proof against one signed,
timestamped checkpoint. JSON for machines (format "securex-evidence/1"); a PDF for
people, with the JSON attached, which the shell then timestamps (PAdES document
timestamp) so that it is sealed too.

The evidence proves that each listed event is in the log; it cannot prove that no other
event about the subject exists (a log proves presence, not absence).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from asn1crypto import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from securex.audit.checkpoint import Checkpoint
from securex.audit.merkle import ProofError
from securex.audit.models import AuditCheckpoint, AuditEvent
from securex.audit.proofs import PROOF_FORMAT, check_proof, checkpoint_json, event_proof
from securex.fonts import font_path

EVIDENCE_FORMAT = "securex-evidence/1"
PARIS = ZoneInfo("Europe/Paris")


def build_evidence(
    db: Session, subject: str, checkpoint: AuditCheckpoint, verifier: str, now: datetime
) -> dict[str, Any]:
    ids = list(
        db.scalars(
            select(AuditEvent.id)
            .where(AuditEvent.subject == subject, AuditEvent.id <= checkpoint.size)
            .order_by(AuditEvent.id)
        )
    )
    events = []
    for event_id in ids:
        proof = event_proof(db, event_id, checkpoint, verifier)
        events.append({k: proof[k] for k in ("event", "leaf_index", "inclusion")})
    return {
        "format": EVIDENCE_FORMAT,
        "subject": subject,
        "generated_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "checkpoint": checkpoint_json(checkpoint, verifier),
        "events": events,
    }


def check_evidence(
    evidence: dict[str, Any], verifier: str, tsa_roots: Sequence[x509.Certificate] = ()
) -> Checkpoint:
    """Every event verifies against the checkpoint and is about the stated subject;
    ProofError otherwise."""
    try:
        if evidence.get("format") != EVIDENCE_FORMAT:
            raise ProofError("format de dossier inconnu")
        subject = evidence["subject"]
        events = evidence["events"]
        checkpoint_block = evidence["checkpoint"]
        if not events:
            raise ProofError("dossier sans événement")
        checkpoint: Checkpoint | None = None
        for item in events:
            bundle = {
                "format": PROOF_FORMAT,
                "event": item["event"],
                "leaf_index": item["leaf_index"],
                "inclusion": item["inclusion"],
                "tree_size": checkpoint_block["size"],
                "checkpoint": checkpoint_block,
            }
            checkpoint = check_proof(bundle, verifier, tsa_roots)
            if json.loads(item["event"])["subject"] != subject:
                raise ProofError("événement d'un autre sujet dans le dossier")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProofError("dossier mal formé") from None
    assert checkpoint is not None
    return checkpoint


def render_pdf(evidence: dict[str, Any], origin: str) -> bytes:
    """The dossier de preuve for people, in French, with the JSON attached."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(f"Dossier de preuve — {evidence['subject']}")
    pdf.set_author("securex")
    pdf.set_creator("securex")
    pdf.add_font("DejaVu", "", font_path("DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", font_path("DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: str, size: int = 10, bold: bool = False, height: float = 5.5) -> None:
        pdf.set_font("DejaVu", "B" if bold else "", size)
        pdf.multi_cell(width, height, text, align="L", new_x="LMARGIN", new_y="NEXT")

    generated = datetime.fromisoformat(evidence["generated_at"].replace("Z", "+00:00"))
    cp = evidence["checkpoint"]
    line("Dossier de preuve", 18, True, 9)
    line(f"Objet : {evidence['subject']}", 11, True)
    line(
        f"Établi le {generated.astimezone(PARIS):%d/%m/%Y à %H:%M} (heure de Paris) "
        f"à partir du journal d'audit « {origin} »."
    )
    pdf.ln(3)
    line(
        "Ce dossier atteste que chacun des événements ci-dessous figure dans le journal "
        "d'audit de la plateforme, tel qu'arrêté par un point de contrôle signé par la "
        "plateforme et horodaté par une autorité d'horodatage. Chaque événement est "
        "accompagné d'une preuve d'inclusion (RFC 9162) vérifiable sans accès à la base "
        "de données : le fichier evidence.json joint à ce PDF contient toutes les "
        "données nécessaires."
    )
    pdf.ln(2)
    line("Point de contrôle", 12, True, 7)
    line(f"Taille du journal : {cp['size']} événements")
    line(f"Racine : {cp['root']}")
    line(f"Clé de vérification de la plateforme : {cp['verifier_key']}", 8)
    pdf.ln(2)
    line(f"Événements ({len(evidence['events'])})", 12, True, 7)
    for item in evidence["events"]:
        event = json.loads(item["event"])
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).astimezone(PARIS)
        details = ", ".join(f"{k} = {v}" for k, v in event["details"].items()) or "—"
        line(f"N° {event['id']} — {at:%d/%m/%Y %H:%M:%S} — {event['action']}", 10, True)
        line(
            f"Acteur : {event['actor']} ; commune : {event['tenant'] or '—'} ; détails : {details}",
            9,
        )
        pdf.ln(1)
    pdf.ln(2)
    line("Vérifier ce dossier", 12, True, 7)
    line(
        "Avec securex : « securex audit check-evidence evidence.json --key <clé> » ; ou avec "
        "tout outil qui suit RFC 9162 et le format de note signée C2SP (voir "
        "docs/audit-format.md).",
        9,
    )
    pdf.embed_file(
        bytes=json.dumps(evidence, ensure_ascii=False, indent=2).encode(),
        basename="evidence.json",
        desc="Preuves (format securex-evidence/1)",
    )
    return bytes(pdf.output())
