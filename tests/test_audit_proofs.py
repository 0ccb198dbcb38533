"""The audit log's Merkle tree in the database, signed checkpoints, proofs over the API
and offline."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from securex.audit import EventType, record, verify_chain
from securex.audit.checkpoint import Checkpoint, open_note, sign_note, verifier_key
from securex.audit.log import canonical_encoding
from securex.audit.merkle import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
)
from securex.audit.models import AuditCheckpoint, AuditEvent, AuditNode
from securex.audit.proofs import (
    Sealer,
    check_proof,
    checkpoint_due,
    create_checkpoint,
    event_proof,
    verify_checkpoints,
)
from securex.audit.tree import consistency_proof_at, inclusion_proof_at, root_at
from securex.db import transaction
from tests.conftest import ENGINE


def fill(make, n: int, actor: str = "user:1") -> None:
    with transaction(make.factory) as db:
        for i in range(n):
            record(
                db,
                EventType.LOGIN_SUCCEEDED,
                actor=actor,
                subject=f"user:{i}",
                details={"n": i},
                now=make.clock.advance(seconds=1),
            )


def leaves(make) -> list[bytes]:
    with make.session() as db:
        return [
            leaf_hash(canonical_encoding(e))
            for e in db.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_seed("test.securex/audit", os.urandom(32), None)


def test_stored_tree_matches_the_reference_functions(make):
    fill(make, 37)
    hashes = leaves(make)
    with make.session() as db:
        for size in (1, 2, 3, 8, 17, 32, 36, 37):
            assert root_at(db, size) == root_hash(hashes[:size])
            for index in {0, size // 2, size - 1}:
                assert inclusion_proof_at(db, index, size) == inclusion_proof(hashes[:size], index)
            for old in {1, size // 3 or 1, size}:
                assert consistency_proof_at(db, old, size) == consistency_proof(hashes[:size], old)
        # two rows per event on average: the leaf and the subtrees it completes
        assert db.query(AuditNode).count() == 2 * 37 - bin(37).count("1")


def test_checkpoint_is_signed_and_consistent(make, sealer):
    fill(make, 5)
    with transaction(make.factory) as db:
        first = create_checkpoint(db, sealer, now=make.clock())
        assert create_checkpoint(db, sealer, now=make.clock()) is None  # nothing new
    assert first is not None
    cp = open_note(first.note, sealer.verifier)
    assert (cp.origin, cp.size, cp.root) == ("test.securex/audit", first.size, first.root)
    fill(make, 4)
    with transaction(make.factory) as db:
        second = create_checkpoint(db, sealer, now=make.clock())
    with make.session() as db:
        assert verify_checkpoints(db, sealer.verifier, {}) == []
        report = verify_chain(db, at_sizes={first.size, second.size})
    assert report.ok and report.roots[second.size] == second.root


def test_a_rewritten_history_is_refused_and_detected(make, sealer):
    fill(make, 6)
    with transaction(make.factory) as db:
        create_checkpoint(db, sealer, now=make.clock())
    with transaction(make.factory) as db:  # an attacker rewrites a leaf of the tree
        if ENGINE == "sqlite":
            db.execute(text("DROP TRIGGER audit_nodes_no_update"))
        else:
            db.execute(text("DROP TRIGGER audit_nodes_append_only ON audit_nodes"))
        db.execute(
            update(AuditNode)
            .where(AuditNode.level == 0, AuditNode.idx == 2)
            .values(hash=leaf_hash(b"forged"))
        )
        db.execute(
            update(AuditNode)
            .where(AuditNode.level == 2, AuditNode.idx == 0)
            .values(hash=leaf_hash(b"forged subtree"))
        )
    fill(make, 3)
    # The next checkpoint must extend the signed one: it is refused.
    with pytest.raises(ProofError), transaction(make.factory) as db:
        create_checkpoint(db, sealer, now=make.clock())
    with make.session() as db:
        report = verify_chain(db)
    assert any("feuille" in p for p in report.problems)


def test_forged_checkpoints_are_detected(make, sealer):
    fill(make, 3)
    with transaction(make.factory) as db:
        row = create_checkpoint(db, sealer, now=make.clock())
        if ENGINE == "sqlite":
            db.execute(text("DROP TRIGGER audit_checkpoints_no_update"))
        else:
            db.execute(text("DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints"))
        forged = row.note.replace(f"\n{row.size}\n", f"\n{row.size + 1}\n")
        db.execute(update(AuditCheckpoint).values(note=forged))
    with make.session() as db:
        problems = verify_checkpoints(db, sealer.verifier, {})
    assert problems and "signature" in problems[0]
    other = Sealer.from_seed("test.securex/audit", os.urandom(32), None)
    note = sign_note(
        Checkpoint("test.securex/audit", 3, os.urandom(32)), other.origin, other.private_key
    )
    with pytest.raises(ProofError):
        open_note(note, sealer.verifier)
    with pytest.raises(ProofError):
        open_note("garbage", sealer.verifier)
    with pytest.raises(ProofError):
        open_note(note, "not a key")


def test_verifier_key_format(sealer):
    name, kid, _key = sealer.verifier.split("+", 2)
    assert name == "test.securex/audit" and len(bytes.fromhex(kid)) == 4
    assert sealer.verifier == verifier_key(sealer.origin, sealer.private_key.public_key())


def test_proof_bundles_verify_offline_and_resist_tampering(make, sealer):
    fill(make, 11)
    with transaction(make.factory) as db:
        cp = create_checkpoint(db, sealer, now=make.clock())
        bundle = event_proof(db, 7, cp, sealer.verifier)
    bundle = json.loads(json.dumps(bundle))  # as if read from a file
    assert check_proof(bundle, sealer.verifier).size == 11
    tampered = []
    b = json.loads(json.dumps(bundle))
    b["event"] = b["event"].replace("user:6", "user:9")
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    b["inclusion"][0] = "00" * 32
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    b["inclusion"].append("11" * 32)
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    b["leaf_index"] = 5
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    b["tree_size"] = 12
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    b["checkpoint"]["note"] = b["checkpoint"]["note"].replace("11", "12", 1)
    tampered.append(b)
    b = json.loads(json.dumps(bundle))
    del b["inclusion"]
    tampered.append(b)
    for bad in tampered:
        with pytest.raises(ProofError):
            check_proof(bad, sealer.verifier)
    with pytest.raises(ProofError):
        check_proof(bundle, Sealer.from_seed("x", os.urandom(32), None).verifier)


def test_checkpoints_fall_due_by_count_and_by_time(make, sealer, clock):
    fill(make, 3)
    with make.session() as db:
        assert not checkpoint_due(db, every_events=10, every_minutes=60, now=clock())
        assert checkpoint_due(db, every_events=3, every_minutes=60, now=clock())
        assert checkpoint_due(
            db, every_events=10, every_minutes=60, now=clock() + timedelta(minutes=61)
        )


def test_timestamped_checkpoint_verifies_against_the_tsa(make, tmp_path):
    from datetime import UTC, datetime

    from securex.audit.proofs import check_timestamp
    from securex.signing.pki import init_pki
    from securex.signing.signers import to_asn1

    pki = init_pki(tmp_path / "pki", now=datetime.now(UTC) - timedelta(days=1), password=b"pw")
    stamped = Sealer.from_seed("t/audit", os.urandom(32), pki.timestamper())
    fill(make, 2)
    with transaction(make.factory) as db:
        row = create_checkpoint(db, stamped, now=make.clock())
        bundle = event_proof(db, 1, row, stamped.verifier)
    import base64

    roots = [to_asn1(pki.root_cert)]
    cp = check_proof(bundle, stamped.verifier, roots)
    assert check_timestamp(base64.b64encode(row.timestamp_token).decode(), cp, roots)
    wrong = Checkpoint(cp.origin, cp.size + 1, cp.root)
    with pytest.raises(ProofError):
        check_timestamp(base64.b64encode(row.timestamp_token).decode(), wrong, roots)


def test_api_checkpoint_proof_and_consistency(client, make, app):
    make.tenant()
    client_id, token = make.client()
    auth = {"Authorization": f"Bearer {token}"}
    fill(make, 3, actor=f"client:{client_id}")
    fill(make, 2, actor="user:5")
    published = client.get("/api/v1/audit/checkpoint")
    assert published.status_code == 200
    first = published.get_json()
    assert "\u2014 " in first["note"] and first["verifier_key"].count("+") >= 2
    with make.session() as db:
        mine = db.scalar(
            select(AuditEvent.id).where(AuditEvent.actor == f"client:{client_id}").limit(1)
        )
        others = db.scalar(select(AuditEvent.id).where(AuditEvent.actor == "user:5").limit(1))
    proof = client.get(f"/api/v1/audit/events/{mine}/proof", headers=auth)
    assert proof.status_code == 200
    check_proof(proof.get_json(), first["verifier_key"])
    assert client.get(f"/api/v1/audit/events/{others}/proof", headers=auth).status_code == 404
    assert client.get("/api/v1/audit/events/999999/proof", headers=auth).status_code == 404
    assert client.get(f"/api/v1/audit/events/{mine}/proof").status_code == 401
    fill(make, 4)
    with transaction(make.factory) as db:
        st = app.extensions["securex"]
        from securex.seal import sealer as make_sealer

        second = create_checkpoint(
            db, make_sealer(st.settings, db, st.vault.keyring, None, make.clock()), now=make.clock()
        )
    answer = client.get(f"/api/v1/audit/consistency?from={first['size']}&to={second.size}")
    assert answer.status_code == 200
    body = answer.get_json()
    from securex.audit.merkle import verify_consistency

    old = open_note(body["from"]["note"], first["verifier_key"])
    new = open_note(body["to"]["note"], first["verifier_key"])
    verify_consistency(
        old.size, new.size, old.root, new.root, [bytes.fromhex(p) for p in body["proof"]]
    )
    assert client.get("/api/v1/audit/consistency?from=2&to=1").status_code == 422
    assert client.get("/api/v1/audit/consistency?from=1&to=x").status_code == 422
    assert client.get("/api/v1/audit/consistency?from=1&to=2").status_code == 404


def test_checkpoints_are_append_only_and_one_past_the_end_is_flagged(make, sealer):
    from sqlalchemy.exc import DBAPIError

    fill(make, 4)
    with transaction(make.factory) as db:
        create_checkpoint(db, sealer, now=make.clock())
    with pytest.raises(DBAPIError, match="append-only"), transaction(make.factory) as db:
        db.execute(update(AuditCheckpoint).values(size=3))
    with make.session() as db:
        assert verify_checkpoints(db, sealer.verifier, {}, log_size=4) == []
        problems = verify_checkpoints(db, sealer.verifier, {}, log_size=3)
    assert problems and "au-delà de la fin du journal" in problems[0]
