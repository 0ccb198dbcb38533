"""Who may open a page of a commune: view decorators for the commune's staff by role,
and the signed-in user's actor and commune. The platform's administrators have no
commune, so they get 403 on every commune page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort
from flask_login import current_user, login_required

from securex.accounts.models import Role, User
from securex.accounts.service import Actor

F = TypeVar("F", bound=Callable[..., Any])
STAFF = frozenset({Role.AGENT, Role.OFFICER, Role.ADMIN})


def current() -> User:
    user: User = current_user._get_current_object()
    return user


def commune_roles(*roles: Role) -> Callable[[F], F]:
    """Signed in, of a commune, with one of `roles` (else 403)."""
    wanted = frozenset(roles)

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current()
            if user.tenant is None or user.role_enum not in wanted:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, login_required(wrapped))

    return decorate


staff_only = commune_roles(*STAFF)
officer_only = commune_roles(Role.OFFICER)
admin_only = commune_roles(Role.ADMIN)


def actor() -> Actor:
    return Actor.for_user(current())


def insee() -> str:
    tenant = current().tenant
    assert tenant is not None  # checked by the decorators above
    return tenant.insee
