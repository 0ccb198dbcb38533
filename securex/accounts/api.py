"""API for requester organisations: who am I."""

from __future__ import annotations

from pydantic import BaseModel

from securex.web.api import ApiBlueprint, current_client

bp = ApiBlueprint("accounts_api", __name__, tag="compte")


class Commune(BaseModel):
    insee: str
    name: str


class Me(BaseModel):
    """The API client the bearer token belongs to."""

    id: int
    name: str
    category: str
    communes: list[Commune]


@bp.operation("/me", summary="Identité du client API authentifié", response=Me)
def me() -> Me:
    client = current_client()
    return Me(
        id=client.id,
        name=client.name,
        category=client.category,
        communes=[Commune(insee=t.insee, name=t.name) for t in client.communes],
    )
