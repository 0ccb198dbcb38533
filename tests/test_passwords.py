"""Password policy and hashing."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from securex.accounts import service
from securex.errors import ValidationFailed

EMAIL = "jeanne.martin@mairie-dax.fr"


@pytest.mark.parametrize(
    "password,reason",
    [
        ("court", "au moins 12"),
        ("elevenchars", "au moins 12"),
        ("motdepasse123", "trop courant"),
        ("Azertyuiop123!", "trop courant"),
        ("MAIRIE2026!!!!", "trop courant"),
        ("aaaaaaaaaaaaaaaa", "trop courant"),
        ("abababababababab", "trop courant"),
        ("jeanne.martin-2026", "adresse e-mail"),
        ("Jeanne.Martin@Mairie-Dax.fr", "adresse e-mail"),
        ("xxJEANNE.MARTINxx99", "adresse e-mail"),
    ],
)
def test_refused(password, reason):
    with pytest.raises(ValidationFailed, match=reason):
        service.check_password(password, email=EMAIL, min_length=12)


@pytest.mark.parametrize(
    "password",
    [
        "cheval agrafe batterie correcte",
        "Les-Landes-sous-la-pluie-7",
        "Éléphant rose à Saint-Sever",
    ],
)
def test_accepted(password):
    service.check_password(password, email=EMAIL, min_length=12)


def test_hashes_are_argon2id_and_rehashed_when_parameters_change(make, keys, policy, clock):
    make.tenant()
    account = make.user("agent", totp=False)
    assert make.get_user(account.id).password_hash.startswith("$argon2id$")
    # Simulate an older, weaker parameter set.
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(account.password)
    from sqlalchemy import update

    from securex.accounts.models import User
    from securex.db import transaction

    with transaction(make.factory) as db:
        db.execute(update(User).where(User.id == account.id).values(password_hash=weak))
    with transaction(make.factory) as db:
        outcome = service.check_password_login(
            db,
            keys,
            email=account.email,
            password=account.password,
            address="127.0.0.1",
            now=clock(),
            policy=policy,
        )
        assert outcome.ok
    stored = make.get_user(account.id).password_hash
    assert stored != weak and "m=65536" in stored
