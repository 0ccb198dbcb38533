"""Account operations: tenants, users, passwords, TOTP, recovery codes, lockout, rate
limits, API clients, sessions. The only code that writes these tables. Functions take
a database session, an actor and plain values; callers own the transaction."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from securex.accounts.models import (
    ApiClient,
    ClientCategory,
    InstanceMeta,
    PersonalToken,
    RateLimit,
    RecoveryCode,
    Role,
    Tenant,
    User,
    WebSession,
)
from securex.audit import EventType, record
from securex.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    NotFound,
    ValidationFailed,
)
from securex.instance import derive_key
from securex.vault import Keyring

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Compared against when the e-mail is unknown, so that the answer takes as long."""
    return _hasher.hash("securex-no-such-user")


TOTP_PERIOD = 30
RATE_LIMIT_KEEP = timedelta(days=1)
RECOVERY_CODES = 10
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
INSEE_RE = re.compile(r"^(\d{5}|2[AB]\d{3})$")


@dataclass(frozen=True)
class Actor:
    """Who does something: `user:12`, `client:3`, `cli:root`, `system`."""

    kind: str
    ident: str = ""
    tenant: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.ident}" if self.ident else self.kind

    @classmethod
    def for_user(cls, user: User) -> Actor:
        return cls("user", str(user.id), user.tenant.insee if user.tenant else None)


SYSTEM = Actor("system")


@dataclass(frozen=True)
class SecurityPolicy:
    password_min_length: int = 12
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    attempts_per_address: int = 30
    window_seconds: int = 900
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12

    @classmethod
    def from_settings(cls, settings: Any) -> SecurityPolicy:
        return cls(
            password_min_length=settings["security.password_min_length"],
            lockout_threshold=settings["security.lockout_threshold"],
            lockout_minutes=settings["security.lockout_minutes"],
            attempts_per_address=settings["security.login_attempts_per_address"],
            window_seconds=settings["security.login_window_seconds"],
            session_idle_minutes=settings["security.session_idle_minutes"],
            session_absolute_hours=settings["security.session_absolute_hours"],
        )


class AccountKeys:
    """Purpose keys derived from the instance secret, used by this module only."""

    def __init__(self, instance_secret: bytes) -> None:
        self._totp = AESGCM(derive_key(instance_secret, "totp-secret-seal"))
        self._pseudonym = derive_key(instance_secret, "address-pseudonym")

    def seal_totp(self, user_id: int, secret: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._totp.encrypt(nonce, secret.encode(), f"user:{user_id}".encode())

    def unseal_totp(self, user_id: int, sealed: bytes) -> str:
        try:
            return self._totp.decrypt(sealed[:12], sealed[12:], f"user:{user_id}".encode()).decode()
        except InvalidTag:
            raise ValidationFailed("Le second facteur de ce compte est illisible.") from None

    def pseudonym(self, value: str) -> str:
        """A keyed hash, so that rate-limit rows never hold an address in clear."""
        return hmac.new(self._pseudonym, value.encode(), hashlib.sha256).hexdigest()[:40]


# --- tenants -----------------------------------------------------------------------


def create_tenant(
    db: Session, actor: Actor, *, insee: str, name: str, now: datetime, keyring: Keyring
) -> Tenant:
    insee = insee.strip().upper()
    if not INSEE_RE.match(insee):
        raise ValidationFailed(f"Code INSEE invalide : {insee!r} (5 caractères, ex. 40192).")
    if not name.strip():
        raise ValidationFailed("Le nom de la commune est obligatoire.")
    if db.scalar(select(Tenant).where(Tenant.insee == insee)):
        raise Conflict(f"La commune {insee} existe déjà.")
    tenant = Tenant(insee=insee, name=name.strip(), created_at=now)
    db.add(tenant)
    db.flush()
    keyring.ensure_tenant(db, insee, now=now, actor=str(actor))
    record(
        db,
        EventType.TENANT_CREATED,
        actor=str(actor),
        subject=f"tenant:{insee}",
        tenant=insee,
        now=now,
    )
    return tenant


def get_tenant(db: Session, insee: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.insee == insee.strip().upper()))
    if tenant is None:
        raise NotFound(f"Commune inconnue : {insee}.")
    return tenant


def list_tenants(db: Session) -> list[Tenant]:
    return list(db.scalars(select(Tenant).order_by(Tenant.insee)))


# --- passwords ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = resources.files("securex.data").joinpath("common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def check_password(password: str, *, email: str, min_length: int) -> None:
    """Raise ValidationFailed with a French reason when the password is not acceptable."""
    if len(password) < min_length:
        raise ValidationFailed(f"Le mot de passe doit contenir au moins {min_length} caractères.")
    folded = _fold(password)
    stem = re.sub(r"[\d\W_]+$", "", folded)
    common = _common_passwords()
    if folded in common or stem in common or len(set(folded)) <= 3:
        raise ValidationFailed(
            "Ce mot de passe est trop courant. Choisissez une phrase de plusieurs mots."
        )
    local = _fold(email.split("@")[0])
    if _fold(email) in folded or (len(local) >= 3 and local in folded):
        raise ValidationFailed("Le mot de passe ne doit pas contenir l'adresse e-mail.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# --- users -------------------------------------------------------------------------


def _normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise ValidationFailed(f"Adresse e-mail invalide : {email!r}.")
    return email


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValidationFailed(f"Rôle inconnu : {value!r} (attendu : {names}).") from None


def create_user(
    db: Session,
    actor: Actor,
    *,
    email: str,
    name: str,
    role: str,
    password: str,
    tenant_insee: str | None,
    now: datetime,
    policy: SecurityPolicy,
) -> User:
    email = _normalise_email(email)
    role_ = _role(role)
    if (role_ is Role.PLATFORM_ADMIN) != (tenant_insee is None):
        raise ValidationFailed(
            "Un administrateur de la plateforme n'a pas de commune ; tout autre rôle en a une."
        )
    tenant = get_tenant(db, tenant_insee) if tenant_insee else None
    check_password(password, email=email, min_length=policy.password_min_length)
    if db.scalar(select(User).where(User.email == email)):
        raise Conflict(f"Un compte existe déjà pour {email}.")
    user = User(
        email=email,
        name=name.strip() or email,
        role=role_.value,
        tenant=tenant,
        password_hash=hash_password(password),
        failed_logins=0,
        created_at=now,
    )
    db.add(user)
    db.flush()
    _audit(
        db, EventType.USER_CREATED, user, actor=str(actor), now=now, details={"role": role_.value}
    )
    return user


def get_user(db: Session, email: str) -> User:
    user = db.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"Aucun compte pour {email}.")
    return user


def list_users(db: Session, tenant_insee: str | None = None) -> list[User]:
    query = select(User).order_by(User.email)
    if tenant_insee:
        query = query.where(User.tenant_id == get_tenant(db, tenant_insee).id)
    return list(db.scalars(query))


def _tenant_of(user: User) -> str | None:
    return user.tenant.insee if user.tenant else None


def _audit(
    db: Session,
    action: EventType,
    user: User,
    *,
    actor: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an event about `user`, in their commune."""
    record(
        db,
        action,
        actor=actor,
        subject=f"user:{user.id}",
        tenant=_tenant_of(user),
        details=details,
        now=now,
    )


def disable_user(db: Session, actor: Actor, email: str, *, now: datetime) -> User:
    user = get_user(db, email)
    if user.disabled_at is None:
        user.disabled_at = now
        db.execute(delete(WebSession).where(WebSession.user_id == user.id))
        _audit(db, EventType.USER_DISABLED, user, actor=str(actor), now=now)
    return user


def enable_user(db: Session, actor: Actor, email: str, *, now: datetime) -> User:
    user = get_user(db, email)
    if user.disabled_at is not None or user.locked_until is not None:
        user.disabled_at = None
        user.failed_logins = 0
        user.locked_until = None
        _audit(db, EventType.USER_ENABLED, user, actor=str(actor), now=now)
    return user


def change_role(db: Session, actor: Actor, email: str, role: str, *, now: datetime) -> User:
    user = get_user(db, email)
    new = _role(role)
    if new is Role.PLATFORM_ADMIN or user.role_enum is Role.PLATFORM_ADMIN:
        raise ValidationFailed("Le rôle d'administrateur de la plateforme ne se change pas.")
    old = user.role
    if old != new.value:
        user.role = new.value
        _audit(
            db,
            EventType.USER_ROLE_CHANGED,
            user,
            actor=str(actor),
            now=now,
            details={"from": old, "to": new.value},
        )
    return user


# --- second factor -----------------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="securex")


def _totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (±1 around now) whose code matches, or None."""
    code = re.sub(r"\s", "", code)
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    match = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            match = step
    return match


def _hash_code(code: str) -> str:
    # Recovery codes carry 80 random bits, so a plain hash is as good as a slow one.
    return hashlib.sha256(code.replace("-", "").lower().encode()).hexdigest()


def _new_recovery_codes(db: Session, user: User) -> list[str]:
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = secrets.token_hex(10)
        code = "-".join(raw[i : i + 5] for i in range(0, 20, 5))
        codes.append(code)
        db.add(RecoveryCode(user_id=user.id, code_hash=_hash_code(code)))
    return codes


def enrol_totp(
    db: Session, keys: AccountKeys, user: User, *, secret: str, code: str, now: datetime
) -> list[str]:
    """Confirm enrolment with a first code; returns the ten recovery codes (shown once)."""
    step = _totp_step(secret, code, now)
    if step is None:
        raise ValidationFailed("Code incorrect. Vérifiez l'heure de votre téléphone et réessayez.")
    user.totp_sealed = keys.seal_totp(user.id, secret)
    user.totp_last_step = step
    codes = _new_recovery_codes(db, user)
    _audit(db, EventType.TOTP_ENROLLED, user, actor=f"user:{user.id}", now=now)
    return codes


def set_totp_secret(db: Session, keys: AccountKeys, user: User, secret: str) -> list[str]:
    """Enrol without a confirmation code: for `securex init --demo` and tests only."""
    user.totp_sealed = keys.seal_totp(user.id, secret)
    user.totp_last_step = None
    return _new_recovery_codes(db, user)


def reset_totp(db: Session, actor: Actor, email: str, *, now: datetime) -> User:
    user = get_user(db, email)
    user.totp_sealed = None
    user.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    _audit(db, EventType.TOTP_RESET, user, actor=str(actor), now=now)
    return user


def current_totp(keys: AccountKeys, user: User, now: datetime) -> str:
    if user.totp_sealed is None:
        raise ValidationFailed(f"{user.email} n'a pas de second facteur.")
    return pyotp.TOTP(keys.unseal_totp(user.id, user.totp_sealed)).at(now)


# --- login -------------------------------------------------------------------------


class LoginStatus(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad-credentials"
    LOCKED = "locked"
    RATE_LIMITED = "rate-limited"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class LoginOutcome:
    status: LoginStatus
    user: User | None = None
    retry_after: int = 0  # seconds

    @property
    def ok(self) -> bool:
        return self.status is LoginStatus.OK


def _hit_rate_limit(
    db: Session, key: str, *, limit: int, window_seconds: int, now: datetime
) -> int:
    """Count one attempt; returns 0 when allowed, else seconds until the window ends."""
    row = db.get(RateLimit, key, with_for_update=True)
    window = timedelta(seconds=window_seconds)
    if row is None:
        db.add(RateLimit(key=key, window_start=now, count=1))
        return 0
    if now - row.window_start >= window:
        row.window_start, row.count = now, 1
        return 0
    row.count += 1
    if row.count > limit:
        return max(1, int((row.window_start + window - now).total_seconds()))
    return 0


def _locked_for(user: User, now: datetime) -> int:
    if user.locked_until and user.locked_until > now:
        return max(1, int((user.locked_until - now).total_seconds()))
    return 0


def _register_failure(
    db: Session, user: User, policy: SecurityPolicy, now: datetime, factor: str
) -> LoginOutcome:
    user.failed_logins += 1
    _audit(
        db,
        EventType.LOGIN_FAILED,
        user,
        actor="anonymous",
        now=now,
        details={"factor": factor, "failures": user.failed_logins},
    )
    if user.failed_logins >= policy.lockout_threshold:
        user.locked_until = now + timedelta(minutes=policy.lockout_minutes)
        user.failed_logins = 0
        _audit(
            db,
            EventType.ACCOUNT_LOCKED,
            user,
            actor="system",
            now=now,
            details={"minutes": policy.lockout_minutes},
        )
        return LoginOutcome(LoginStatus.LOCKED, user, policy.lockout_minutes * 60)
    return LoginOutcome(LoginStatus.BAD_CREDENTIALS, user)


def _subscriber(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


def throttle(
    db: Session,
    keys: AccountKeys,
    scope: str,
    address: str,
    *,
    limit: int,
    window_seconds: int,
    now: datetime,
    event: EventType = EventType.ADDRESS_RATE_LIMITED,
) -> int:
    """Count one request of `address` in `scope` ("login", "verify", …); returns 0 when
    allowed, else the seconds to wait. The key is a keyed pseudonym of the address; the
    first refusal of a window is audited, not every one (a flood must not flood the
    log too). The caller commits whatever the outcome. An IPv6 address counts by its
    /64, the block one subscriber usually holds (else each of its addresses would get
    its own budget)."""
    key = f"{scope}:" + keys.pseudonym(_subscriber(address))
    wait = _hit_rate_limit(db, key, limit=limit, window_seconds=window_seconds, now=now)
    if wait:
        row = db.get(RateLimit, key)
        if row is not None and row.count == limit + 1:
            record(
                db,
                event,
                actor="anonymous",
                subject=f"address:{key[len(scope) + 1 : len(scope) + 17]}",
                details={"scope": scope},
                now=now,
            )
    return wait


def _address_allowed(
    db: Session, keys: AccountKeys, address: str, policy: SecurityPolicy, now: datetime
) -> LoginOutcome | None:
    wait = throttle(
        db,
        keys,
        "login",
        address,
        limit=policy.attempts_per_address,
        window_seconds=policy.window_seconds,
        now=now,
        event=EventType.LOGIN_RATE_LIMITED,
    )
    return LoginOutcome(LoginStatus.RATE_LIMITED, None, wait) if wait else None


def check_password_login(
    db: Session,
    keys: AccountKeys,
    *,
    email: str,
    password: str,
    address: str,
    now: datetime,
    policy: SecurityPolicy,
) -> LoginOutcome:
    """First factor. Failures are written to the session too: the caller must commit
    whatever the outcome."""
    limited = _address_allowed(db, keys, address, policy, now)
    if limited:
        return limited
    user = db.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.active:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password)
        return LoginOutcome(LoginStatus.BAD_CREDENTIALS)
    wait = _locked_for(user, now)
    if wait:
        return LoginOutcome(LoginStatus.LOCKED, user, wait)
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return _register_failure(db, user, policy, now, "password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return LoginOutcome(LoginStatus.OK, user)


def check_second_factor(
    db: Session,
    keys: AccountKeys,
    *,
    user_id: int,
    code: str,
    address: str,
    now: datetime,
    policy: SecurityPolicy,
) -> LoginOutcome:
    """Second factor: a TOTP code (±1 step, never the last accepted step again) or an
    unused recovery code. The caller must commit whatever the outcome."""
    limited = _address_allowed(db, keys, address, policy, now)
    if limited:
        return limited
    user = db.get(User, user_id)
    if user is None or not user.active or user.totp_sealed is None:
        return LoginOutcome(LoginStatus.BAD_CREDENTIALS)
    wait = _locked_for(user, now)
    if wait:
        return LoginOutcome(LoginStatus.LOCKED, user, wait)
    secret = keys.unseal_totp(user.id, user.totp_sealed)
    step = _totp_step(secret, code, now)
    if step is not None:
        if user.totp_last_step is not None and step <= user.totp_last_step:
            _audit(db, EventType.TOTP_REPLAY_REFUSED, user, actor="anonymous", now=now)
            outcome = _register_failure(db, user, policy, now, "totp-replay")
            if outcome.status is LoginStatus.BAD_CREDENTIALS:
                return LoginOutcome(LoginStatus.REPLAYED, user)
            return outcome
        user.totp_last_step = step
        return LoginOutcome(LoginStatus.OK, user)
    recovery = db.scalar(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _hash_code(re.sub(r"\s", "", code)),
            RecoveryCode.used_at.is_(None),
        )
    )
    if recovery is not None:
        recovery.used_at = now
        _audit(db, EventType.RECOVERY_CODE_USED, user, actor=f"user:{user.id}", now=now)
        return LoginOutcome(LoginStatus.OK, user)
    return _register_failure(db, user, policy, now, "totp")


def confirm_totp(
    db: Session,
    keys: AccountKeys,
    user: User,
    code: str,
    *,
    now: datetime,
    policy: SecurityPolicy,
) -> None:
    """A fresh TOTP code confirming a sensitive operation (batch signing): a step later
    than any accepted before, so neither the login code nor a replay passes; wrong
    codes count toward the lockout like a failed login (the caller commits whatever
    the outcome, so that they do). Recovery codes do not apply."""
    if user.totp_sealed is None:
        raise AuthenticationFailed("Ce compte n'a pas de second facteur : enrôlez-le d'abord.")
    wait = _locked_for(user, now)
    if wait:
        raise AccountLocked(f"Compte verrouillé : réessayez dans {wait} minute(s).")
    step = _totp_step(keys.unseal_totp(user.id, user.totp_sealed), code, now)
    if step is not None and (user.totp_last_step is None or step > user.totp_last_step):
        user.totp_last_step = step
        return
    if step is not None:
        _audit(db, EventType.TOTP_REPLAY_REFUSED, user, actor=f"user:{user.id}", now=now)
    _register_failure(db, user, policy, now, "totp-confirm")
    raise AuthenticationFailed(
        "Code de l'application d'authentification invalide ou déjà utilisé : "
        "saisissez le code suivant affiché par l'application."
    )


def complete_login(
    db: Session, user: User, *, now: datetime, method: str, policy: SecurityPolicy
) -> None:
    user.failed_logins = 0
    user.locked_until = None
    purge_expired(db, now=now, policy=policy)
    _audit(
        db,
        EventType.LOGIN_SUCCEEDED,
        user,
        actor=f"user:{user.id}",
        now=now,
        details={"method": method},
    )


def remaining_recovery_codes(db: Session, user: User) -> int:
    return len(
        list(
            db.scalars(
                select(RecoveryCode.id).where(
                    RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
                )
            )
        )
    )


def purge_expired(db: Session, *, now: datetime, policy: SecurityPolicy) -> None:
    """Drop sessions past their timeouts and finished rate-limit windows (done at each
    login, so the tables stay small without a scheduler)."""
    idle = now - timedelta(minutes=policy.session_idle_minutes)
    absolute = now - timedelta(hours=policy.session_absolute_hours)
    db.execute(
        delete(WebSession).where(
            or_(WebSession.last_seen_at < idle, WebSession.created_at < absolute)
        )
    )
    db.execute(
        delete(RateLimit).where(
            # Counters of other scopes (the citizens' counter, code lookups) have windows
            # of up to a day: keep every row that long, whatever the login window.
            RateLimit.window_start
            < now - max(timedelta(seconds=policy.window_seconds), RATE_LIMIT_KEEP)
        )
    )


# --- sessions ----------------------------------------------------------------------


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def logout(db: Session, user: User, session_hash: str | None, *, now: datetime) -> None:
    if session_hash:
        db.execute(delete(WebSession).where(WebSession.id_hash == session_hash))
    _audit(db, EventType.LOGOUT, user, actor=f"user:{user.id}", now=now)


def logout_everywhere(db: Session, user: User, *, now: datetime) -> int:
    result = db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    count = int(getattr(result, "rowcount", 0) or 0)
    _audit(
        db,
        EventType.LOGOUT_EVERYWHERE,
        user,
        actor=f"user:{user.id}",
        now=now,
        details={"sessions": count},
    )
    return count


# --- API clients -------------------------------------------------------------------

TOKEN_PREFIX = "sx_"  # noqa: S105 (marks our tokens in secret scanners)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_client(
    db: Session,
    actor: Actor,
    *,
    name: str,
    category: str,
    communes: list[str],
    now: datetime,
) -> tuple[ApiClient, str]:
    """Returns the client and its token; the token is never stored, only its hash."""
    try:
        category_ = ClientCategory(category)
    except ValueError:
        names = ", ".join(c.value for c in ClientCategory)
        raise ValidationFailed(f"Catégorie inconnue : {category!r} (attendu : {names}).") from None
    if not name.strip():
        raise ValidationFailed("Le nom du client est obligatoire.")
    if not communes:
        raise ValidationFailed("Indiquez au moins une commune (code INSEE) dans le périmètre.")
    tenants = [get_tenant(db, insee) for insee in dict.fromkeys(communes)]
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    client = ApiClient(
        name=name.strip(),
        category=category_.value,
        token_hash=_hash_token(token),
        token_prefix=token[:10],
        created_at=now,
        communes=tenants,
    )
    db.add(client)
    db.flush()
    record(
        db,
        EventType.CLIENT_CREATED,
        actor=str(actor),
        subject=f"client:{client.id}",
        details={"category": category_.value, "communes": [t.insee for t in tenants]},
        now=now,
    )
    return client, token


def list_clients(db: Session) -> list[ApiClient]:
    return list(db.scalars(select(ApiClient).order_by(ApiClient.id)))


def revoke_client(db: Session, actor: Actor, client_id: int, *, now: datetime) -> ApiClient:
    client = db.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"Aucun client API n° {client_id}.")
    if client.revoked_at is None:
        client.revoked_at = now
        record(
            db, EventType.CLIENT_REVOKED, actor=str(actor), subject=f"client:{client.id}", now=now
        )
    return client


def authenticate_client(db: Session, token: str) -> ApiClient:
    """The client a bearer token belongs to; one error for unknown and revoked."""
    client = db.scalar(select(ApiClient).where(ApiClient.token_hash == _hash_token(token)))
    if client is None or client.revoked_at is not None:
        raise AuthenticationFailed("Jeton d'accès inconnu ou révoqué.")
    return client


# Personal tokens: a user's own API token, acting as that user (see docs/api.md).
PERSONAL_TOKEN_PREFIX = "sxp_"  # noqa: S105 (told apart from a client's `sx_` by scanners and people)
PERSONAL_TOKEN_DAYS = 365
PERSONAL_TOKEN_MAX_DAYS = 730
# `last_used_at` tells the owner whether a token still serves; a minute's precision is
# enough for that, and spares a database write on every request of a busy script.
LAST_USED_PRECISION = timedelta(minutes=1)


def create_personal_token(
    db: Session,
    actor: Actor,
    user: User,
    *,
    name: str,
    now: datetime,
    days: int | None = None,
) -> tuple[PersonalToken, str]:
    """A token acting as `user`, valid `days` days (365 unless given, 730 at most).
    Returns the row and the token, which is never stored, only its hash."""
    name = name.strip()
    if not name:
        raise ValidationFailed("Donnez un nom au jeton (par exemple le script qui l'utilise).")
    if len(name) > 120:
        raise ValidationFailed("Le nom du jeton ne doit pas dépasser 120 caractères.")
    days = PERSONAL_TOKEN_DAYS if days is None else days
    if not 1 <= days <= PERSONAL_TOKEN_MAX_DAYS:
        raise ValidationFailed(
            f"Durée de validité invalide : de 1 à {PERSONAL_TOKEN_MAX_DAYS} jours."
        )
    if not user.active:
        raise ValidationFailed(f"Le compte {user.email} est désactivé.")
    token = PERSONAL_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = PersonalToken(
        user=user,
        name=name,
        token_hash=_hash_token(token),
        token_prefix=token[:12],
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    db.add(row)
    db.flush()
    _audit(
        db,
        EventType.PERSONAL_TOKEN_CREATED,
        user,
        actor=str(actor),
        now=now,
        details={"token": row.id, "days": days},
    )
    return row, token


def list_personal_tokens(db: Session, user: User | None = None) -> list[PersonalToken]:
    """Every user's tokens, or `user`'s, oldest first (revoked and expired included)."""
    query = select(PersonalToken).order_by(PersonalToken.id)
    if user is not None:
        query = query.where(PersonalToken.user_id == user.id)
    return list(db.scalars(query))


def personal_token_state(row: PersonalToken, now: datetime) -> str:
    """ "actif", "expiré" or "révoqué", for lists."""
    if row.revoked_at is not None:
        return "révoqué"
    if row.expires_at is not None and row.expires_at <= now:
        return "expiré"
    return "actif"


def revoke_personal_token(
    db: Session, actor: Actor, token_id: int, *, now: datetime, owner: User | None = None
) -> PersonalToken:
    """Revoke a token; with `owner`, only one of theirs (another's answers NotFound, like
    a missing one). Revoking twice changes nothing."""
    row = db.get(PersonalToken, token_id)
    if row is None or (owner is not None and row.user_id != owner.id):
        raise NotFound(f"Aucun jeton personnel n° {token_id}.")
    if row.revoked_at is None:
        row.revoked_at = now
        _audit(
            db,
            EventType.PERSONAL_TOKEN_REVOKED,
            row.user,
            actor=str(actor),
            now=now,
            details={"token": row.id},
        )
    return row


def authenticate_personal_token(db: Session, token: str, *, now: datetime) -> PersonalToken:
    """The personal token a bearer token is, with its user. Unknown, revoked, expired and
    a disabled owner all raise the same error as `authenticate_client`. Stamps
    `last_used_at` when it is a minute old or more: the caller commits then."""
    row = db.scalar(select(PersonalToken).where(PersonalToken.token_hash == _hash_token(token)))
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
        or not row.user.active
    ):
        raise AuthenticationFailed("Jeton d'accès inconnu ou révoqué.")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        row.last_used_at = now
    return row


# --- instance ----------------------------------------------------------------------


def set_meta(db: Session, key: str, value: str) -> None:
    db.merge(InstanceMeta(key=key, value=value))


def get_meta(db: Session, key: str) -> str | None:
    row = db.get(InstanceMeta, key)
    return row.value if row else None
