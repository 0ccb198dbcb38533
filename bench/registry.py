"""An officier's Monday morning: forty acts signed in one batch, measured against the
bare PAdES signature of the same documents in the same run.

    .venv/bin/python bench/registry.py [--count 40] [--repeat 3] [--level B-LTA]

Builds a throwaway instance (SQLite, demo PKI with an RSA-3072 officer), drafts
--count naissance acts, then for each round:
- reference: `pades.sign` of each act's rendered PDF with the officer's setup (the
  signature alone: no numbering, vault, audit or job);
- securex: one batch job (`registry.batch_sign`) run by a worker: numbering, rendering
  to PDF/A, signing, encryption into the vault, audit event and progress per act.
Prints per-act medians over the rounds, the batch's total, and the ratio securex /
reference (the cost of everything around the signature).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--level", default="B-LTA")
    args = parser.parse_args()

    from securex.accounts import service as accounts
    from securex.config import load_settings
    from securex.db import make_engine, make_sessionmaker, transaction, upgrade
    from securex.instance import create_instance_secret, load_instance_secret
    from securex.jobs.service import Runtime, enqueue, run_pending
    from securex.registry import render, service
    from securex.registry.batch import KIND, officer_signing
    from securex.signing import pades
    from securex.signing.pki import OfficerIdentity, init_pki
    from securex.signing.setup import demo_pki_password
    from securex.vault import master_key_source, open_vault
    from securex.vault.master import create_key_file

    folder = Path(tempfile.mkdtemp(prefix="securex-bench-registry-"))
    instance = folder / "instance"
    instance.mkdir()
    create_instance_secret(instance)
    create_key_file(instance / "keys" / "master.key")
    settings = load_settings(
        environ={}, overrides={"instance": str(instance), "signing": {"level": args.level}}
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    vault = open_vault(master_key_source(settings, {}), instance)
    now = datetime.now(UTC)
    email = "officier@mont-de-marsan.example.fr"
    pki = init_pki(
        instance / "pki",
        now=now,
        password=demo_pki_password(load_instance_secret(instance)),
        officers=[OfficerIdentity(email, "Odile Officier", "Mont-de-Marsan", "40192")],
    )
    policy = accounts.SecurityPolicy()
    actor = accounts.Actor("bench")
    with transaction(sessions) as db:
        accounts.create_tenant(
            db, actor, insee="40192", name="Mont-de-Marsan", now=now, keyring=vault.keyring
        )
        officer = accounts.create_user(
            db,
            actor,
            email=email,
            name="Odile Officier",
            role="officer",
            password="correct horse battery staple",  # noqa: S106 (a throwaway bench account)
            tenant_insee="40192",
            now=now,
            policy=policy,
        )
        officer_id = officer.id
    rt = Runtime(settings, sessions, vault, pki, lambda: datetime.now(UTC), {})
    with sessions() as db:
        user = db.get(accounts.User, officer_id)
        assert user is not None
        signing = officer_signing(rt, user, now)

    def drafts() -> list[int]:
        ids = []
        with transaction(sessions) as db:
            for n in range(args.count):
                content = {
                    "enfant": {"nom": "Dupont", "prenoms": f"Enfant {n}", "sexe": "F"},
                    "naissance": {"date": "2026-11-27", "heure": "10:30", "lieu": "Mont-de-Marsan"},
                    "parents": [
                        {"nom": "Dupont", "prenoms": "Jean", "date_naissance": "1990-02-03"}
                    ],
                }
                act_id = service.create_act(
                    db,
                    actor,
                    insee="40192",
                    kind="naissance",
                    content=content,
                    now=now,
                    vault=vault,
                )
                service.submit_act(db, actor, "40192", act_id, now=now)
                ids.append(act_id)
        return ids

    reference, batch = [], []
    for _ in range(args.repeat):
        ids = drafts()
        with transaction(sessions) as db:
            views = [service.get_act(db, actor, "40192", i, now=now, vault=vault).view for i in ids]
        pdfs = [render.render_act(v, []) for v in views]
        start = time.perf_counter()
        for pdf in pdfs:
            pades.sign(pdf, signing.setup, signing.appearance, now)
        reference.append((time.perf_counter() - start) / len(pdfs))

        with transaction(sessions) as db:
            enqueue(
                db,
                KIND,
                {"officer": officer_id, "items": [f"act:{i}" for i in ids]},
                tenant_id=None,
                actor="bench",
                now=now,
                total=len(ids),
            )
        start = time.perf_counter()
        run_pending(rt)
        batch.append((time.perf_counter() - start) / len(ids))

    ref, sx = statistics.median(reference), statistics.median(batch)
    print(f"level {args.level}, {args.count} acts, {args.repeat} rounds (medians per act)")
    print(f"  reference pades.sign alone : {ref * 1000:7.1f} ms")
    print(
        f"  securex batch job          : {sx * 1000:7.1f} ms "
        f"(batch of {args.count}: {sx * args.count:.1f} s)"
    )
    print(f"  ratio securex / reference  : {sx / ref:.2f}")
    engine.dispose()


if __name__ == "__main__":
    main()
