"""The commune administrator's key page (`/commune/cles`): versions, and the rotation
run as a background job, after which every document still opens."""

from __future__ import annotations

from io import BytesIO

from sqlalchemy import select

from securex import rotation
from securex.audit.events import EventType
from securex.audit.models import AuditEvent
from securex.db import transaction
from securex.jobs.models import Job
from securex.jobs.service import run_pending
from tests.conftest import csrf_token
from tests.test_comedec_views import as_user, page, world  # noqa: F401 (fixture)

URL = "/commune/cles"


def rotate(browser) -> str:  # type: ignore[no-untyped-def]
    token = csrf_token(page(browser, URL))
    response = browser.post(URL, data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith(URL)
    return page(browser, URL)


def test_the_administrator_rotates_the_communes_key_and_documents_still_open(
    world,  # noqa: F811 (the fixture imported above)
    app,
    clock,
    factory,
    runtime,
    vault,
):
    agent = as_user(app, world["agent"], clock)
    page(agent, URL, 403)
    page(as_user(app, world["officer"], clock), URL, 403)
    with transaction(factory) as db:
        document = vault.put(db, "40192", BytesIO(b"%PDF-1.7 avant la rotation"), now=clock()).id
    admin = as_user(app, world["admin"], clock)
    assert f'href="{URL}"' in page(admin, "/")
    before = page(admin, URL)
    assert "<td>v1</td>" in before and "<td>active</td>" in before

    assert admin.post(URL, data={}).status_code == 400  # no CSRF token: nothing queued
    queued = rotate(admin)
    assert "Rotation demandée" in queued and "Rotation en cours" in queued
    assert "disabled" in queued
    again = rotate(admin)  # a second click while the first runs queues nothing
    assert "déjà en cours" in again
    with factory() as db:
        jobs = db.scalars(select(Job).where(Job.kind == rotation.KIND)).all()
        assert [job.status for job in jobs] == ["queued"]

    assert run_pending(runtime) == 1
    after = page(admin, URL)
    assert "Rotation en cours" not in after and "disabled" not in after
    assert "<td>v2</td>" in after and "retirée le" in after
    with factory() as db:
        event = db.scalars(
            select(AuditEvent).where(AuditEvent.action == EventType.VAULT_TENANT_KEY_ROTATED.value)
        ).one()
        assert event.actor.startswith("user:") and event.tenant == "40192"
    # A document and the act's sealed fields, encrypted under the old version, read as before.
    with factory() as db:
        assert vault.read_all(db, "40192", document) == b"%PDF-1.7 avant la rotation"
    assert "Dupont-Martin" in page(agent, f"/registre/actes/{world['act']}")
