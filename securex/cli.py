"""The `securex` command. Every user mistake ends with a French message on stderr and a
non-zero exit code, never a traceback."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from securex import __version__
from securex.accounts import service as accounts
from securex.accounts.models import ClientCategory, Role
from securex.audit import EventType, record
from securex.config import Settings, load_settings
from securex.db import make_engine, make_sessionmaker, transaction, upgrade, utcnow
from securex.errors import ConfigError, NotFound, SecurexError
from securex.instance import SECRET_NAME, create_instance_secret, keys_dir, load_instance_secret
from securex.vault import MasterKeySource, Vault, master_key_source, open_vault
from securex.vault.models import VaultObject

DEMO_FILE = "demo-credentials.json"


def _prompt_passphrase() -> str:
    if not sys.stdin.isatty():
        raise ConfigError(
            "Phrase de passe maîtresse absente : définissez SECUREX_MASTER_PASSPHRASE."
        )
    creating = click.get_current_context().find_root().invoked_subcommand == "init"
    phrase: str = click.prompt(
        "Phrase de passe maîtresse", hide_input=True, confirmation_prompt=creating
    )
    return phrase


class Context:
    """What every command needs, built on first use."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def factory(self) -> Any:
        return make_sessionmaker(make_engine(self.settings.database_url))

    @cached_property
    def keys(self) -> accounts.AccountKeys:
        return accounts.AccountKeys(load_instance_secret(self.settings.instance))

    @cached_property
    def master_source(self) -> MasterKeySource:
        return master_key_source(self.settings, os.environ, prompt=_prompt_passphrase)

    @cached_property
    def vault(self) -> Vault:
        return open_vault(self.master_source, self.settings.instance)

    @cached_property
    def policy(self) -> accounts.SecurityPolicy:
        return accounts.SecurityPolicy.from_settings(self.settings)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        load_instance_secret(self.settings.instance)  # a clear message if not initialised
        try:
            with transaction(self.factory) as db:
                yield db
        except DBAPIError as exc:
            raise ConfigError(
                "Base de données injoignable ou non initialisée "
                f"({exc.orig.__class__.__name__}) : vérifiez SECUREX_DATABASE_URL puis lancez "
                "« securex db upgrade »."
            ) from None

    def close(self) -> None:
        if "factory" in self.__dict__:
            self.factory.kw["bind"].dispose()

    @property
    def actor(self) -> accounts.Actor:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = str(os.getuid())
        return accounts.Actor("cli", who)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        if ctx.obj is None:
            ctx.obj = Context()  # shared by every subcommand, closed below
        try:
            return super().invoke(ctx)
        except SecurexError as exc:
            click.secho(f"Erreur : {exc.detail}", fg="red", err=True)
            for item in exc.extra.get("errors", []):
                click.echo(f"  - {item}", err=True)
            sys.exit(exc.exit_code)
        finally:
            if isinstance(ctx.obj, Context):
                ctx.obj.close()


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="securex")
def main() -> None:
    """securex : actes d'état civil chiffrés, signatures et échanges confidentiels.

    L'instance est le dossier SECUREX_INSTANCE (./var par défaut)."""
    logging.getLogger("pyhanko").setLevel(logging.ERROR)  # reports say it in French


# --- instance ----------------------------------------------------------------------


@main.command()
@click.option("--demo", is_flag=True, help="Créer aussi les communes et comptes de démonstration.")
@pass_ctx
def init(ctx: Context, demo: bool) -> None:
    """Créer une instance : dossier, secret, base de données."""
    instance = ctx.settings.instance
    if (keys_dir(instance) / SECRET_NAME).exists():
        raise ConfigError(
            f"L'instance {instance} est déjà initialisée. Pour mettre la base à jour : "
            "« securex db upgrade »."
        )
    # The instance holds the database, keys and logs: readable by the service only.
    instance.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(instance, 0o700)
    for sub in ("blobs", "logs"):
        (instance / sub).mkdir(exist_ok=True, mode=0o700)
    _migrate(ctx.settings.database_url)  # before the keys: a failure here can be re-run
    with transaction(ctx.factory) as db:
        if accounts.get_meta(db, "demo") is not None:
            raise ConfigError(
                "Cette base de données appartient déjà à une instance initialisée. Pour un "
                "second nœud, copiez le dossier keys/ de la première instance au lieu de "
                "lancer « securex init »."
            )
    # The master key first: when it cannot be made (a key file already there, a short
    # passphrase, no PIN), nothing else exists yet and `init` can simply be run again.
    master = ctx.master_source.create()
    secret = None
    now = utcnow()
    try:
        secret = create_instance_secret(instance)
        with ctx.tx() as db:
            accounts.set_meta(db, "demo", "true" if demo else "false")
            record(
                db,
                EventType.INSTANCE_INITIALISED,
                actor=str(ctx.actor),
                subject="instance",
                details={"demo": demo},
                now=now,
            )
            from securex.seal import SEAL_PURPOSE

            ctx.vault.keyring.platform_secret(db, SEAL_PURPOSE, now=now, actor=str(ctx.actor))
            if demo:
                credentials = _create_demo(db, ctx, now)
    except BaseException:
        # Nothing was committed: leave the instance re-initialisable.
        if secret is not None:
            secret.unlink()
        ctx.master_source.discard(master)
        raise
    click.echo(f"Instance initialisée : {instance}")
    if demo:
        path = instance / DEMO_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(credentials, fh, ensure_ascii=False, indent=2)
        click.echo(f"Identifiants de démonstration : {path}")
        click.get_current_context().invoke(pki_init)  # officers' signing certificates


DEMO_TENANTS = [("40192", "Mont-de-Marsan", "mont-de-marsan"), ("40088", "Dax", "dax")]
DEMO_PEOPLE = {
    Role.OFFICER: ("officier", "Officier"),
    Role.AGENT: ("agent", "Agent"),
    Role.ADMIN: ("admin", "Administrateur"),
}


def _demo_password() -> str:
    return "-".join(secrets.token_urlsafe(6) for _ in range(3))


def _create_demo(db: Session, ctx: Context, now: Any) -> dict[str, Any]:
    creds: dict[str, Any] = {"tenants": [], "users": [], "api_clients": [], "platform_admins": []}

    def add_user(email: str, name: str, role: Role, insee: str | None) -> dict[str, Any]:
        password = _demo_password()
        user = accounts.create_user(
            db,
            ctx.actor,
            email=email,
            name=name,
            role=role.value,
            password=password,
            tenant_insee=insee,
            now=now,
            policy=ctx.policy,
        )
        secret = accounts.new_totp_secret()
        accounts.set_totp_secret(db, ctx.keys, user, secret)
        return {
            "email": email,
            "password": password,
            "totp_secret": secret,
            "role": role.value,
            "tenant": insee,
        }

    for insee, name, slug in DEMO_TENANTS:
        accounts.create_tenant(
            db, ctx.actor, insee=insee, name=name, now=now, keyring=ctx.vault.keyring
        )
        creds["tenants"].append({"insee": insee, "name": name})
        for role, (prefix, label) in DEMO_PEOPLE.items():
            creds["users"].append(
                add_user(f"{prefix}.{slug}@demo.securex.fr", f"{label} de {name}", role, insee)
            )
    creds["platform_admins"].append(
        add_user(
            "plateforme@demo.securex.fr", "Administrateur du syndicat", Role.PLATFORM_ADMIN, None
        )
    )
    every = [insee for insee, _, _ in DEMO_TENANTS]
    for name, category, scope in [
        ("Office notarial de Maître Lafitte, Mont-de-Marsan", ClientCategory.NOTAIRE, every),
        ("Préfecture des Landes — titres d'identité", ClientCategory.ADMINISTRATION, every),
        ("Guichet en ligne de Mont-de-Marsan", ClientCategory.GUICHET, ["40192"]),
    ]:
        _, token = accounts.create_client(
            db, ctx.actor, name=name, category=category.value, communes=scope, now=now
        )
        creds["api_clients"].append({"name": name, "category": category.value, "token": token})
    _demo_registry(db, ctx, now)
    return creds


# Fictional people of the demo registers: (nom, prénoms, sexe, birth date, father, mother).
DEMO_BIRTHS = [
    ("Lafitte", "Pierre Jean", "M", "1988-04-01", "Lafitte Michel", "Duprat Anne"),
    ("Etcheverry", "Maïté", "F", "1991-07-14", "Etcheverry Paul", "Larrieu Marie"),
    ("Dupont-Martin", "Léa Marie", "F", "1995-03-02", "Dupont Jean", "Martin Sophie"),
    ("Bordes", "Lucas", "M", "2001-11-20", "Bordes Alain", "Castaing Julie"),
]


def _demo_registry(db: Session, ctx: Context, now: Any) -> None:
    """A few digitised birth acts per commune (found by search, deliverable) and two
    drafts waiting for the officier's signature; Mont-de-Marsan issues clean requests
    automatically with its seal, so the API demo answers in seconds."""
    from securex.comedec.models import CommuneSettings
    from securex.registry import service as registry

    for insee, name, _ in DEMO_TENANTS:
        for number, (nom, prenoms, sexe, born, father, mother) in enumerate(DEMO_BIRTHS, 1):
            parents = []
            for parent, parent_sexe in ((father, "M"), (mother, "F")):
                parent_nom, parent_prenoms = parent.split(" ", 1)
                parents.append({"nom": parent_nom, "prenoms": parent_prenoms, "sexe": parent_sexe})
            content = {
                "enfant": {"nom": nom, "prenoms": prenoms, "sexe": sexe},
                "naissance": {"date": born, "heure": "09:15", "lieu": f"{name} (Landes)"},
                "parents": parents,
            }
            registry.import_act(
                db,
                ctx.actor,
                insee=insee,
                kind="naissance",
                year=int(born[:4]),
                number=number,
                drawn_at=datetime.fromisoformat(born + "T14:00:00+00:00"),
                officer_name=f"Officier de {name}",
                content=content,
                now=now,
                vault=ctx.vault,
            )
        for prenoms, sexe in (("Jade", "F"), ("Gabriel", "M")):
            act_id = registry.create_act(
                db,
                ctx.actor,
                insee=insee,
                kind="naissance",
                content={
                    "enfant": {"nom": "Lamarque", "prenoms": prenoms, "sexe": sexe},
                    "naissance": {"date": now.date().isoformat(), "lieu": f"{name} (Landes)"},
                    "parents": [{"nom": "Lamarque", "prenoms": "Hélène", "sexe": "F"}],
                },
                now=now,
                vault=ctx.vault,
            )
            registry.submit_act(db, ctx.actor, insee, act_id, now=now)
    tenant = accounts.get_tenant(db, "40192")
    db.add(
        CommuneSettings(
            tenant_id=tenant.id,
            auto_issue=True,
            not_found_at_once=False,
            due_days=3,
            service_name="Service de l'état civil de Mont-de-Marsan",
            service_contact="etat-civil@demo.securex.fr — 05 58 00 00 00",
        )
    )


@main.group()
def comedec() -> None:
    """Demandes d'actes et vérifications (échange de type COMEDEC)."""


@comedec.command("purge")
@pass_ctx
def comedec_purge(ctx: Context) -> None:
    """Supprimer les demandes et vérifications de plus d'un an (décret 2017-890 art. 29).
    Les workers le font d'eux-mêmes chaque heure."""
    from securex.comedec import service as comedec_service

    with ctx.tx() as db:
        count = comedec_service.purge(db, now=utcnow(), vault=ctx.vault)
    click.echo(f"{count} demande(s) ou vérification(s) supprimée(s).")


@main.command()
@click.option("--once", is_flag=True, help="Exécuter les tâches en attente puis s'arrêter.")
@pass_ctx
def worker(ctx: Context, once: bool) -> None:
    """Exécuter les tâches de fond (signature par lots, …). Plusieurs processus peuvent
    tourner à la fois : chaque tâche est prise par un seul. Arrêt : Ctrl-C ou SIGTERM."""
    import signal

    from securex import logs, tasks
    from securex.jobs.service import Runtime, WorkerThread, run_pending, run_periodic
    from securex.signing.setup import load_demo_pki

    tasks.load()

    rt = Runtime(
        settings=ctx.settings,
        sessions=ctx.factory,
        vault=ctx.vault,
        pki=load_demo_pki(ctx.settings.instance),
        clock=utcnow,
        environ=os.environ,
    )
    if once:
        with logs.installed(ctx.settings):  # the same lines as a web process's
            run_periodic(rt, {})
            count = run_pending(rt)
        click.echo(f"{count} tâche(s) exécutée(s).")
        return
    thread = WorkerThread(rt, float(ctx.settings["jobs.poll_seconds"]))
    signal.signal(signal.SIGTERM, lambda *_: thread.stop())
    click.echo("securex worker : en attente de tâches (Ctrl-C pour arrêter).")
    with logs.installed(ctx.settings):
        thread.start()
        try:
            while thread.is_alive():
                thread.join(timeout=1)
        except KeyboardInterrupt:
            thread.stop()
            thread.join()


def gunicorn_options(
    settings: Settings, host: str | None, port: int | None, workers: int | None
) -> dict[str, Any]:
    """gunicorn's settings for `securex serve` (threaded workers); None takes the
    configuration's value. Also used by bench/exchange.py, so that its reference server
    runs exactly like this one."""
    port = port or int(settings["server.port"])
    return {
        "bind": f"{host or settings['server.host']}:{port}",
        "workers": workers or max(2, int(settings["server.workers"])),
        # Threads, so that a long transfer (a large file to a slow recipient) neither
        # holds a whole process nor outlives the timeout: the worker's main thread
        # keeps telling the master it is alive while request threads stream.
        "worker_class": "gthread",
        "threads": int(settings["server.threads"]) or _default_threads(settings),
        # Only a worker whose main thread stops answering for this long is restarted;
        # a request may last longer (a large file on a slow line).
        "timeout": int(settings["server.timeout"]),
        "graceful_timeout": 20,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "securex",
        # gunicorn's control socket sits at one path per user ($HOME/.gunicorn): two
        # instances on a host would share it. securex has no use for it.
        "control_socket_disable": True,
        **_process_hooks(settings.instance / "run" / "metrics" / str(port)),
    }


def _process_hooks(metrics_dir: Path) -> dict[str, Callable[..., None]]:
    """gunicorn's hooks. Metrics: every worker process writes its counters to files in
    `metrics_dir` (prometheus_client's multiprocess mode), which the process answering
    /metrics adds up; the folder is one per port (two servers on one instance never
    share it), emptied once the port is bound, before the first fork. Jobs: a worker
    process that exits stops its job thread, which removes its heartbeat row."""
    import shutil

    def when_ready(server: Any) -> None:  # in the master, before any worker exists
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for folder in (metrics_dir.parent.parent, metrics_dir.parent, metrics_dir):
            folder.mkdir(exist_ok=True, mode=0o700)  # run/, run/metrics/, run/metrics/<port>/
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by workers

    def child_exit(server: Any, worker: Any) -> None:  # in the master
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(metrics_dir))

    def worker_exit(server: Any, worker: Any) -> None:  # in the worker, as it exits
        app = getattr(worker, "wsgi", None)
        thread = getattr(app, "extensions", {}).get("securex_worker")
        if thread is not None:
            thread.stop()
            thread.join(timeout=10)  # a job still running is taken up again later

    return {"when_ready": when_ready, "child_exit": child_exit, "worker_exit": worker_exit}


def _default_threads(settings: Settings) -> int:
    """SQLite has one writer at a time: request threads would queue on its lock in
    sleeps (measured: p99 of request submissions 85 ms with one thread per process,
    341 ms with two, 953 ms with eight). PostgreSQL takes several at once."""
    return 1 if settings.database_url.startswith("sqlite") else 8


def run_gunicorn(options: dict[str, Any], app_factory: Callable[[], Any]) -> None:
    """Serve `app_factory()`'s WSGI application with gunicorn until it is stopped. The
    factory is called in each worker, after the fork."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app_factory()

    Server().run()


def _create_app() -> Any:
    from securex.app import create_app

    return create_app()


@main.command()
@click.option("--host", default=None, help="Adresse d'écoute (défaut : configuration).")
@click.option("--port", type=int, default=None, help="Port (défaut : configuration).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processus gunicorn (défaut : configuration, au moins 2).",
)
@pass_ctx
def serve(ctx: Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Servir l'application web et l'API avec gunicorn."""
    load_instance_secret(ctx.settings.instance)
    options = gunicorn_options(ctx.settings, host, port, workers)
    click.echo(f"securex écoute sur http://{options['bind']}/")
    run_gunicorn(options, _create_app)


@main.group()
def db() -> None:
    """Base de données."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Appliquer les migrations en attente."""
    _migrate(ctx.settings.database_url)
    click.echo("Base de données à jour.")


def _migrate(url: str) -> None:
    try:
        upgrade(url)
    except DBAPIError as exc:
        raise ConfigError(
            f"Migration impossible, base injoignable ou refusée : {exc.orig}. Vérifiez "
            "SECUREX_DATABASE_URL."
        ) from None


# --- tenants and users -------------------------------------------------------------


@main.group()
def tenant() -> None:
    """Communes hébergées."""


@tenant.command("add")
@click.argument("insee")
@click.argument("name")
@pass_ctx
def tenant_add(ctx: Context, insee: str, name: str) -> None:
    """Ajouter la commune INSEE NOM."""
    with ctx.tx() as s:
        t = accounts.create_tenant(
            s, ctx.actor, insee=insee, name=name, now=utcnow(), keyring=ctx.vault.keyring
        )
    click.echo(f"Commune ajoutée : {t.insee} {t.name}")


@tenant.command("list")
@pass_ctx
def tenant_list(ctx: Context) -> None:
    """Lister les communes."""
    with ctx.tx() as s:
        for t in accounts.list_tenants(s):
            click.echo(f"{t.insee}\t{t.name}")


@main.group()
def user() -> None:
    """Comptes des agents, officiers et administrateurs."""


@user.command("add")
@click.option("--email", required=True)
@click.option("--name", required=True, help="Prénom et nom.")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--tenant", "tenant_insee", help="Code INSEE de la commune (sauf platform_admin).")
@click.option(
    "--password",
    prompt="Mot de passe",
    hide_input=True,
    confirmation_prompt=True,
    envvar="SECUREX_NEW_PASSWORD",
    help="Demandé s'il n'est pas donné.",
)
@pass_ctx
def user_add(
    ctx: Context, email: str, name: str, role: str, tenant_insee: str | None, password: str
) -> None:
    """Créer un compte."""
    with ctx.tx() as s:
        u = accounts.create_user(
            s,
            ctx.actor,
            email=email,
            name=name,
            role=role,
            password=password,
            tenant_insee=tenant_insee,
            now=utcnow(),
            policy=ctx.policy,
        )
    extra = (
        " Le second facteur sera demandé à la première connexion."
        if Role(role).requires_totp
        else ""
    )
    click.echo(f"Compte créé : {u.email} ({u.role}).{extra}")


@user.command("list")
@click.option("--tenant", "tenant_insee", help="Seulement cette commune.")
@pass_ctx
def user_list(ctx: Context, tenant_insee: str | None) -> None:
    """Lister les comptes."""
    with ctx.tx() as s:
        for u in accounts.list_users(s, tenant_insee):
            state = "actif" if u.active else "désactivé"
            totp = "2FA" if u.totp_enrolled else "sans 2FA"
            insee = u.tenant.insee if u.tenant else "-"
            click.echo(f"{u.email}\t{u.role}\t{insee}\t{totp}\t{state}")


@user.command("disable")
@click.argument("email")
@pass_ctx
def user_disable(ctx: Context, email: str) -> None:
    """Désactiver un compte et fermer ses sessions."""
    with ctx.tx() as s:
        accounts.disable_user(s, ctx.actor, email, now=utcnow())
    click.echo(f"Compte désactivé : {email}")


@user.command("enable")
@click.argument("email")
@pass_ctx
def user_enable(ctx: Context, email: str) -> None:
    """Réactiver un compte désactivé."""
    with ctx.tx() as s:
        accounts.enable_user(s, ctx.actor, email, now=utcnow())
    click.echo(f"Compte réactivé : {email}")


@user.command("reset-2fa")
@click.argument("email")
@pass_ctx
def user_reset_2fa(ctx: Context, email: str) -> None:
    """Effacer le second facteur : il sera de nouveau demandé à la connexion."""
    with ctx.tx() as s:
        accounts.reset_totp(s, ctx.actor, email, now=utcnow())
    click.echo(f"Second facteur réinitialisé : {email}")


@user.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice([Role.ADMIN.value, Role.OFFICER.value, Role.AGENT.value]))
@pass_ctx
def user_set_role(ctx: Context, email: str, role: str) -> None:
    """Changer le rôle d'un compte."""
    with ctx.tx() as s:
        accounts.change_role(s, ctx.actor, email, role, now=utcnow())
    click.echo(f"Rôle de {email} : {role}")


# --- API clients -------------------------------------------------------------------


@main.group()
def client() -> None:
    """Clients API des organismes demandeurs."""


@client.command("add")
@click.option("--name", required=True)
@click.option("--category", required=True, type=click.Choice([c.value for c in ClientCategory]))
@click.option(
    "--commune",
    "communes",
    multiple=True,
    required=True,
    help="Code INSEE d'une commune du périmètre (répétable).",
)
@pass_ctx
def client_add(ctx: Context, name: str, category: str, communes: tuple[str, ...]) -> None:
    """Créer un client API ; le jeton n'est affiché qu'une fois."""
    with ctx.tx() as s:
        c, token = accounts.create_client(
            s, ctx.actor, name=name, category=category, communes=list(communes), now=utcnow()
        )
    click.echo(f"Client n° {c.id} créé : {c.name} ({c.category}).")
    click.echo("Jeton (affiché une seule fois, à transmettre par un canal sûr) :")
    click.echo(token)


@client.command("list")
@pass_ctx
def client_list(ctx: Context) -> None:
    """Lister les clients API."""
    with ctx.tx() as s:
        for c in accounts.list_clients(s):
            state = "révoqué" if c.revoked_at else "actif"
            scope = ",".join(t.insee for t in c.communes)
            click.echo(f"{c.id}\t{c.category}\t{c.token_prefix}…\t{scope}\t{state}\t{c.name}")


@client.command("revoke")
@click.argument("client_id", type=int)
@pass_ctx
def client_revoke(ctx: Context, client_id: int) -> None:
    """Révoquer le jeton d'un client API."""
    with ctx.tx() as s:
        c = accounts.revoke_client(s, ctx.actor, client_id, now=utcnow())
    click.echo(f"Client n° {c.id} révoqué : {c.name}")


# --- personal API tokens -----------------------------------------------------------


@main.group()
def token() -> None:
    """Jetons d'API personnels des agents (chacun agit au nom de son titulaire)."""


@token.command("add")
@click.argument("email")
@click.option("--name", required=True, help="Ce qui utilisera le jeton (script, logiciel).")
@click.option(
    "--days",
    type=int,
    default=None,
    help=f"Validité en jours (défaut {accounts.PERSONAL_TOKEN_DAYS}, "
    f"au plus {accounts.PERSONAL_TOKEN_MAX_DAYS}).",
)
@pass_ctx
def token_add(ctx: Context, email: str, name: str, days: int | None) -> None:
    """Créer un jeton personnel ; il n'est affiché qu'une fois."""
    with ctx.tx() as s:
        user = accounts.get_user(s, email)
        t, secret = accounts.create_personal_token(
            s, ctx.actor, user, name=name, days=days, now=utcnow()
        )
        expires = t.expires_at.date().isoformat() if t.expires_at else "jamais"
    click.echo(f"Jeton n° {t.id} créé pour {user.email} : {t.name} (expire le {expires}).")
    click.echo("Jeton (affiché une seule fois, à transmettre par un canal sûr) :")
    click.echo(secret)


@token.command("list")
@click.argument("email", required=False)
@pass_ctx
def token_list(ctx: Context, email: str | None) -> None:
    """Lister les jetons personnels (de tous les comptes, ou d'un seul)."""
    now = utcnow()
    with ctx.tx() as s:
        user = accounts.get_user(s, email) if email else None
        for t in accounts.list_personal_tokens(s, user):
            state = accounts.personal_token_state(t, now)
            expires = t.expires_at.date().isoformat() if t.expires_at else "-"
            used = t.last_used_at.isoformat(timespec="minutes") if t.last_used_at else "-"
            click.echo(
                f"{t.id}\t{t.user.email}\t{t.token_prefix}…\t{state}\t{expires}\t{used}\t{t.name}"
            )


@token.command("revoke")
@click.argument("token_id", type=int)
@pass_ctx
def token_revoke(ctx: Context, token_id: int) -> None:
    """Révoquer un jeton personnel."""
    with ctx.tx() as s:
        t = accounts.revoke_personal_token(s, ctx.actor, token_id, now=utcnow())
        owner = t.user.email
    click.echo(f"Jeton n° {t.id} révoqué : {t.name} ({owner})")


# --- vault and keys ----------------------------------------------------------------


@main.group()
def vault() -> None:
    """Coffre chiffré : fichiers chiffrés, vérification, nettoyage."""


def _atomic_output(out: Path) -> Path:
    if out.exists():
        raise ConfigError(f"{out} existe déjà : choisissez un autre fichier de sortie.")
    return out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")


def _publish(tmp: Path, out: Path) -> None:
    """Give `tmp` its final name without ever replacing a file that appeared meanwhile."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise ConfigError(f"{out} existe déjà : choisissez un autre fichier de sortie.") from None
    except OSError:  # a share without hard links (SMB, some NFS): check, then rename
        if out.exists():
            raise ConfigError(
                f"{out} existe déjà : choisissez un autre fichier de sortie."
            ) from None
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _export_id(path: Path) -> str:
    """An export file is named in the audit log by its random salt, not by its file name
    (which may hold a person's name)."""
    from securex.vault.stream import read_header

    with path.open("rb") as fh:
        return read_header(fh).salt.hex()[:32]


@vault.command("encrypt")
@click.option("--tenant", "tenant_insee", required=True, help="Code INSEE de la commune.")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def vault_encrypt(ctx: Context, tenant_insee: str, source: Path, out: Path) -> None:
    """Chiffrer SOURCE dans OUT au format du coffre (export, réquisition)."""
    tmp = _atomic_output(out)
    try:
        with ctx.tx() as db:
            accounts.get_tenant(db, tenant_insee)
            with source.open("rb") as src, open(tmp, "xb") as dst:
                size = ctx.vault.encrypt_file(db, tenant_insee, src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            record(
                db,
                EventType.VAULT_FILE_ENCRYPTED,
                actor=str(ctx.actor),
                subject=f"export:{_export_id(tmp)}",
                tenant=tenant_insee,
                details={"bytes": size},
                now=utcnow(),
            )
        _publish(tmp, out)  # only once the event is committed
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"Chiffré : {out} ({size} octets en clair).")


@vault.command("decrypt")
@click.option("--tenant", "tenant_insee", required=True, help="Code INSEE de la commune.")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def vault_decrypt(ctx: Context, tenant_insee: str, source: Path, out: Path) -> None:
    """Déchiffrer SOURCE dans OUT ; rien n'est écrit si le fichier est altéré."""
    tmp = _atomic_output(out)
    try:
        with ctx.tx() as db:
            accounts.get_tenant(db, tenant_insee)
            with source.open("rb") as src:
                size = ctx.vault.decrypt_file(db, tenant_insee, src, tmp)
            record(
                db,
                EventType.VAULT_FILE_DECRYPTED,
                actor=str(ctx.actor),
                subject=f"export:{_export_id(source)}",
                tenant=tenant_insee,
                details={"bytes": size},
                now=utcnow(),
            )
        _publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"Déchiffré : {out} ({size} octets).")


def _check_vault(ctx: Context) -> tuple[int, list[Any]]:
    """Decrypt every live object, with a progress bar: (objects, damaged ones)."""
    live = VaultObject.wrapped_key.is_not(None)
    with ctx.tx() as db:
        total = db.scalar(select(func.coalesce(func.sum(VaultObject.stored_size), 0)).where(live))
        count = db.scalar(select(func.count()).select_from(VaultObject).where(live))
    with (
        ctx.factory() as db,
        click.progressbar(length=int(total or 0), label="Vérification", file=sys.stderr) as bar,
    ):
        damaged = ctx.vault.verify(db, progress=bar.update)
    return int(count or 0), damaged


@vault.command("verify")
@pass_ctx
def vault_verify(ctx: Context) -> None:
    """Vérifier l'intégrité de chaque objet stocké ; code de sortie 1 si l'un est abîmé."""
    count, damaged = _check_vault(ctx)
    if not damaged:
        click.echo(f"Coffre intègre : {count} objets vérifiés.")
        return
    click.secho(f"{len(damaged)} objet(s) abîmé(s) :", fg="red", err=True)
    for item in damaged:
        click.echo(f"  - {item.object_id} (commune {item.tenant})", err=True)
    sys.exit(1)


@vault.command("gc")
@click.option(
    "--grace",
    type=click.IntRange(0),
    default=3600,
    show_default=True,
    help="Âge minimal (secondes) d'un fichier orphelin avant suppression.",
)
@pass_ctx
def vault_gc(ctx: Context, grace: int) -> None:
    """Supprimer les fichiers que plus aucun objet ne référence."""
    with ctx.tx() as db:
        blobs, temps = ctx.vault.gc(db, grace_seconds=grace)
    click.echo(f"Supprimés : {blobs} fichier(s) orphelin(s), {temps} fichier(s) temporaire(s).")


@main.group()
def backup() -> None:
    """Sauvegardes chiffrées de l'instance : créer, vérifier, restaurer."""


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ConfigError(
            f"Sauvegarde {out} impossible ({exc.strerror or type(exc).__name__}) : disque "
            "plein, dossier en lecture seule, ou fichier de l'instance illisible ? Rien n'a "
            "été écrit."
        ) from None


def _bars(label: str, total: int) -> Any:
    return click.progressbar(length=max(total, 0), label=label, file=sys.stderr)


def _describe(summary: Any) -> str:
    checkpoint = (
        f"point de contrôle du journal : {summary.checkpoint_size} événements"
        if summary.checkpoint_size is not None
        else "aucun point de contrôle du journal"
    )
    return (
        f"sauvegarde {summary.backup_id} du {summary.created_at[:19].replace('T', ' ')} UTC : "
        f"{summary.rows} lignes dans {summary.tables} tables, {summary.objects} documents "
        f"({summary.object_bytes} octets chiffrés), {checkpoint}"
    )


@backup.command("create")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def backup_create(ctx: Context, out: Path) -> None:
    """Écrire dans OUT une sauvegarde chiffrée et signée de l'instance (base, documents,
    clés enveloppées) ; le service peut continuer de tourner. La clé maîtresse n'y est
    pas : gardez-la à part."""
    from securex import backup as backups

    load_instance_secret(ctx.settings.instance)
    if not out.parent.is_dir():
        raise ConfigError(
            f"Le dossier {out.parent} n'existe pas : créez-le ou choisissez-en un autre."
        )
    tmp = _atomic_output(out)
    now = utcnow()
    try:
        with _writing(out), open(tmp, "xb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            summary = backups.create(
                fh,
                settings=ctx.settings,
                sessions=ctx.factory,
                vault=ctx.vault,
                now=now,
                bars=_bars,
            )
            fh.flush()
            os.fsync(fh.fileno())
        with ctx.tx() as db:
            record(
                db,
                EventType.VAULT_BACKUP_CREATED,
                actor=str(ctx.actor),
                subject=f"backup:{summary.backup_id}",
                details={
                    "rows": summary.rows,
                    "objects": summary.objects,
                    "checkpoint": summary.checkpoint_size,
                },
                now=utcnow(),
            )
        _publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"Sauvegarde écrite : {out}")
    click.echo(f"  {_describe(summary)}.")
    click.echo(f"Vérifiez-la : securex backup verify {out}")


@backup.command("verify")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--verifier",
    "verifier",
    default=None,
    help="Clé de vérification attendue (sortie de « securex audit public-key »).",
)
@pass_ctx
def backup_verify(ctx: Context, source: Path, verifier: str | None) -> None:
    """Vérifier SOURCE sans la restaurer : déchiffrement complet avec la clé maîtresse,
    empreinte de chaque élément, signature du manifeste et point de contrôle du journal."""
    from securex import backup as backups

    summary = backups.verify(source, ctx.master_source, verifier=verifier, bars=_bars)
    click.echo(f"Sauvegarde intègre : {_describe(summary)}.")
    click.echo(f"Signée par : {summary.verifier}")


@backup.command("restore")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--shred-ledger",
    "ledgers",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Registre de destruction plus récent que la sauvegarde (keys/shred-ledger.jsonl "
    "de l'instance perdue, ou sa copie) : rejoué lui aussi. Répétable.",
)
@click.option(
    "--verifier",
    "verifier",
    default=None,
    help="Clé de vérification attendue (sortie de « securex audit public-key », publiée "
    "aux témoins) : une sauvegarde signée par une autre clé est refusée.",
)
@pass_ctx
def backup_restore(
    ctx: Context, source: Path, ledgers: tuple[Path, ...], verifier: str | None
) -> None:
    """Reconstruire l'instance depuis SOURCE dans un dossier SECUREX_INSTANCE vide et une
    base vide, rejouer les destructions, puis vérifier chaque document et le journal."""
    from securex import backup as backups
    from securex.audit.models import AuditCheckpoint

    now = utcnow()
    summary, vault = backups.restore(
        source,
        settings=ctx.settings,
        source=ctx.master_source,
        ledgers=list(ledgers),
        now=now,
        verifier=verifier,
        bars=_bars,
    )
    ctx.__dict__["vault"] = vault
    click.echo(f"Restaurée : {_describe(summary)}.")
    if verifier is None:
        click.echo(
            f"  Signée par {summary.verifier} : comparez-la à la clé publiée aux témoins "
            "(ou passez --verifier)."
        )
    click.echo(f"  {summary.shredded} document(s) détruit(s) de nouveau d'après le registre.")
    count, damaged = _check_vault(ctx)
    report, checkpoints = _check_audit(ctx)
    problems = [f"document {d.object_id} (commune {d.tenant}) illisible" for d in damaged]
    problems += report.problems
    if summary.checkpoint_size is not None:
        with ctx.tx() as db:
            row = db.scalar(
                select(AuditCheckpoint).where(AuditCheckpoint.size == summary.checkpoint_size)
            )
            if row is None or row.note != summary.checkpoint_note:
                problems.append("le point de contrôle du manifeste manque dans le journal")
    if problems:
        click.secho(f"Restauration INCOMPLÈTE ({len(problems)} anomalies) :", fg="red", err=True)
        for line in problems[:100]:
            click.echo(f"  - {line}", err=True)
        sys.exit(1)
    with ctx.tx() as db:
        record(
            db,
            EventType.VAULT_BACKUP_RESTORED,
            actor=str(ctx.actor),
            subject=f"backup:{summary.backup_id}",
            details={"objects": count, "reshredded": summary.shredded},
            now=now,
        )
    click.echo(
        f"Contrôles : {count} documents déchiffrés, journal d'audit intègre "
        f"({report.size} événements, {checkpoints} point(s) de contrôle)."
    )


@main.group()
def keys() -> None:
    """Clés du coffre : état et rotation."""


@keys.command("status")
@pass_ctx
def keys_status(ctx: Context) -> None:
    """Afficher les versions de clé de chaque commune et ce qui en dépend."""
    click.echo(
        f"Clé maîtresse : {ctx.vault.keyring.current.key_id} "
        f"(fournisseur {ctx.settings['master_key_provider']})"
    )
    with ctx.tx() as db:
        for st in ctx.vault.keyring.status(db):
            state = "retirée" if st.retired else "active"
            click.echo(
                f"{st.tenant}\tv{st.version}\t{state}\t{st.objects} objet(s)\t{st.master_key_id}"
            )


@keys.command("rotate-tenant")
@click.argument("insee")
@pass_ctx
def keys_rotate_tenant(ctx: Context, insee: str) -> None:
    """Nouvelle version de la clé de la commune ; les clés des objets sont re-chiffrées
    (les documents ne le sont pas)."""
    with ctx.tx() as db:
        accounts.get_tenant(db, insee)
        total = db.scalar(
            select(func.count())
            .select_from(VaultObject)
            .where(VaultObject.tenant == insee, VaultObject.wrapped_key.is_not(None))
        )
        with click.progressbar(
            length=int(total or 0), label="Re-chiffrement des clés", file=sys.stderr
        ) as bar:
            version = ctx.vault.keyring.rotate_tenant(
                db, insee, now=utcnow(), actor=str(ctx.actor), progress=bar.update
            )
    click.echo(f"Commune {insee} : clé version {version} active.")


@keys.command("rotate-master")
@pass_ctx
def keys_rotate_master(ctx: Context) -> None:
    """Nouvelle clé maîtresse ; les clés des communes sont re-chiffrées sous elle.
    Fournisseur « passphrase » : la nouvelle phrase vient de SECUREX_NEW_MASTER_PASSPHRASE
    (sinon, la phrase actuelle est conservée avec un nouveau sel)."""
    source = ctx.master_source
    keyring = ctx.vault.keyring
    old = list(source.load())
    new = source.begin_rotation(os.environ.get("SECUREX_NEW_MASTER_PASSPHRASE"))
    with ctx.tx() as db:
        total = len(keyring.status(db))
        with click.progressbar(length=total, label="Re-chiffrement", file=sys.stderr) as bar:
            count = keyring.rewrap_tenant_keys(
                db, new, now=utcnow(), actor=str(ctx.actor), progress=bar.update
            )
    source.finish_rotation(new, old)
    click.echo(f"Clé maîtresse renouvelée : {new.key_id} ({count} clé(s) de commune).")


# --- PKI, signing, validation -------------------------------------------------------


def _pki_folder(ctx: Context) -> Path:
    return ctx.settings.instance / "pki"


def _pki_password(ctx: Context) -> bytes:
    from securex.signing.setup import demo_pki_password

    return demo_pki_password(load_instance_secret(ctx.settings.instance))


def _load_pki(ctx: Context) -> Any:
    from securex.signing.pki import load_pki

    return load_pki(_pki_folder(ctx), _pki_password(ctx))


def _officer_identity(user: Any) -> Any:
    from securex.signing.pki import OfficerIdentity

    tenant = user.tenant
    return OfficerIdentity(
        email=user.email,
        name=user.name,
        commune=tenant.name if tenant else "",
        insee=tenant.insee if tenant else "",
    )


@main.group()
def pki() -> None:
    """PKI de démonstration : autorité, certificats des officiers, horodatage."""


@pki.command("init")
@click.option(
    "--base-url",
    default=None,
    help="Adresse publique servant CRL, OCSP et TSA (défaut : base_url de la configuration).",
)
@pass_ctx
def pki_init(ctx: Context, base_url: str | None) -> None:
    """Créer la PKI de démonstration et un certificat par officier."""
    from securex.signing.pki import init_pki

    with ctx.tx() as db:
        officers = [
            _officer_identity(u)
            for u in accounts.list_users(db)
            if u.role == Role.OFFICER.value and u.active
        ]
    made = init_pki(
        _pki_folder(ctx),
        base_url=base_url or ctx.settings["base_url"],
        now=utcnow(),
        officers=officers,
        password=_pki_password(ctx),
    )
    click.echo(f"PKI de démonstration créée : {made.folder} ({len(officers)} officier(s)).")


@pki.command("roots")
@pass_ctx
def pki_roots(ctx: Context) -> None:
    """Afficher les ancres de confiance (PEM)."""
    path = ctx.settings["signing.trust_anchors"]
    if path:
        click.echo(Path(path).read_text().strip())
        return
    click.echo(_load_pki(ctx).roots_pem().decode().strip())


@pki.command("issue")
@click.argument("email")
@click.option(
    "--key-type", type=click.Choice(["rsa3072", "ecdsa-p256"]), default="rsa3072", show_default=True
)
@pass_ctx
def pki_issue(ctx: Context, email: str, key_type: str) -> None:
    """(Re)délivrer le certificat de signature d'un officier."""
    with ctx.tx() as db:
        user = accounts.get_user(db, email)
        if user.role != Role.OFFICER.value:
            raise ConfigError(f"{email} n'est pas officier de l'état civil.")
        who = _officer_identity(user)
    cert = _load_pki(ctx).issue_officer(who, key_type=key_type, now=utcnow())
    with ctx.tx() as db:
        record(
            db,
            EventType.CERTIFICATE_ISSUED,
            actor=str(ctx.actor),
            subject=f"certificate:{cert.serial_number:x}",
            tenant=who.insee or None,
            details={"key_type": key_type},
            now=utcnow(),
        )
    click.echo(f"Certificat délivré à {email} (n° de série {cert.serial_number:x}).")


@pki.command("revoke")
@click.argument("email")
@pass_ctx
def pki_revoke(ctx: Context, email: str) -> None:
    """Révoquer le certificat de signature d'un officier."""
    authority = _load_pki(ctx)
    cert, _ = authority.officer(email)
    authority.revoke(cert.serial_number, now=utcnow())
    with ctx.tx() as db:
        record(
            db,
            EventType.CERTIFICATE_REVOKED,
            actor=str(ctx.actor),
            subject=f"certificate:{cert.serial_number:x}",
            now=utcnow(),
        )
    click.echo(f"Certificat de {email} révoqué (n° de série {cert.serial_number:x}).")


class _SignGroup(Group):
    """`securex sign FILE …` signs; `securex sign renew …` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if (
            args
            and (args[0] == "--batch" or args[0] not in self.commands)
            and args[0] not in ("-h", "--help")
        ):
            args = ["file", *args]
        return super().parse_args(ctx, args)


def _choose_signer(ctx: Context, email: str | None) -> tuple[str, str, str]:
    """(email, name, commune) of the officer who signs."""
    with ctx.tx() as db:
        if email:
            user = accounts.get_user(db, email)
            if user.role != Role.OFFICER.value or not user.active:
                raise ConfigError(f"{email} n'est pas un officier de l'état civil actif.")
        else:
            officers = [
                u for u in accounts.list_users(db) if u.role == Role.OFFICER.value and u.active
            ]
            demo = accounts.get_meta(db, "demo") == "true"
            if len(officers) == 1 or (officers and demo):
                user = sorted(officers, key=lambda u: u.id)[0]
            else:
                raise ConfigError("Plusieurs officiers (ou aucun) : précisez --signer EMAIL.")
        return user.email, user.name, user.tenant.name if user.tenant else ""


@main.group(cls=_SignGroup)
def sign() -> None:
    """Signer des PDF (PAdES) au nom d'un officier de l'état civil."""


@sign.command("file")
@click.argument("source", type=click.Path(exists=True, path_type=Path), required=False)
@click.option(
    "--batch",
    "batch",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Signer chaque PDF de ce dossier.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Fichier signé (ou dossier, avec --batch).",
)
@click.option("--level", default=None, help="B-B, B-T, B-LT ou B-LTA (défaut : configuration).")
@click.option("--signer", "signer_email", default=None, help="E-mail de l'officier signataire.")
@pass_ctx
def sign_file(
    ctx: Context,
    source: Path | None,
    batch: Path | None,
    output: Path,
    level: str | None,
    signer_email: str | None,
) -> None:
    """Signer SOURCE dans OUTPUT, ou tout un dossier avec --batch."""
    from securex.signing import batch as batch_signing
    from securex.signing.pades import Level

    if (source is None) == (batch is None):
        raise ConfigError("Donnez un fichier à signer, ou --batch DOSSIER.")
    chosen = Level.parse(level or ctx.settings["signing.level"])
    email, name, commune = _choose_signer(ctx, signer_email)
    job = batch_signing.Job(
        instance=str(ctx.settings.instance),
        email=email,
        officer=name,
        commune=commune,
        level=chosen.value,
    )
    if source is not None:
        if source.is_dir():
            raise ConfigError(f"{source} est un dossier : utilisez --batch.")
        result = batch_signing.sign_one(job, source, output)
        _record_signatures(ctx, [result], email)
        click.echo(f"Signé ({chosen.value}, {name}) : {output}")
        return
    assert batch is not None
    files = sorted(p for p in batch.iterdir() if p.is_file() and p.suffix.lower() == ".pdf")
    if not files:
        raise ConfigError(f"Aucun PDF dans {batch}.")
    output.mkdir(parents=True, exist_ok=True)
    results: list[Any] = []
    failures: list[Any] = []
    with click.progressbar(
        length=len(files), label=f"Signature {chosen.value}", file=sys.stderr
    ) as bar:
        for outcome in batch_signing.sign_many(job, files, output):
            bar.update(1)
            (results if outcome.ok else failures).append(outcome)
    _record_signatures(ctx, results, email)
    click.echo(f"{len(results)} PDF signé(s) dans {output}.")
    if failures:
        click.secho(f"{len(failures)} refusé(s) :", fg="red", err=True)
        for f in failures:
            click.echo(f"  - {f.source.name} : {f.error}", err=True)
        sys.exit(65)


def _record_signatures(ctx: Context, results: list[Any], email: str) -> None:
    with ctx.tx() as db:
        user = accounts.get_user(db, email)
        for r in results:
            record(
                db,
                EventType.DOCUMENT_SIGNED,
                actor=str(ctx.actor),
                subject=f"document:{r.digest}",
                tenant=user.tenant.insee if user.tenant else None,
                details={"level": r.level, "signer": f"user:{user.id}"},
                now=utcnow(),
            )


@sign.command("renew")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--margin-days",
    type=click.IntRange(0),
    default=365,
    show_default=True,
    help="Renouveler si le dernier horodatage expire dans ce délai.",
)
@click.option("--force", is_flag=True, help="Renouveler même si ce n'est pas nécessaire.")
@pass_ctx
def sign_renew(ctx: Context, files: tuple[Path, ...], margin_days: int, force: bool) -> None:
    """Ajouter un horodatage d'archivage frais aux PDF B-LTA (en place) avant que leur
    dernier horodatage n'expire."""
    from datetime import timedelta

    from securex.signing import pades
    from securex.signing.setup import timestamper, validation_context_factory

    if not files:
        raise ConfigError("Donnez les PDF à renouveler.")
    authority = None if ctx.settings["signing.tsa_url"] else _load_pki(ctx)
    now = utcnow()
    stamper = timestamper(ctx.settings, authority)
    # Every officer's OCSP answer and the CRLs, signed once for the whole run.
    material = authority.validation_material(now) if authority is not None else None
    renewed, refused = 0, 0
    for path in files:
        data = path.read_bytes()
        try:
            reason = pades.renewal_reason(data, now, timedelta(days=margin_days))
        except SecurexError as exc:
            click.echo(f"Refusé : {path} : {exc.detail}", err=True)
            refused += 1
            continue
        if reason is None and not force:
            click.echo(f"À jour : {path}")
            continue
        # Only this document's signer's revocation data goes into its DSS.
        signer = pades.signer_certificate(data)
        contexts = validation_context_factory(ctx.settings, authority, now, signer, material)
        try:
            fresh = pades.renew(data, stamper, contexts())
        except SecurexError as exc:
            click.echo(f"Refusé : {path} : {exc.detail}", err=True)
            refused += 1
            continue
        tmp = _atomic_output(path.with_name(path.name + ".renew"))
        with open(tmp, "xb") as fh:
            fh.write(fresh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        renewed += 1
        with ctx.tx() as db:
            record(
                db,
                EventType.DOCUMENT_RENEWED,
                actor=str(ctx.actor),
                subject=f"document:{hashlib.sha256(fresh).hexdigest()}",
                details={"reason": reason or "forcé"},
                now=now,
            )
        click.echo(f"Renouvelé ({reason or 'forcé'}) : {path}")
    click.echo(f"{renewed} document(s) renouvelé(s).")
    if refused:
        sys.exit(65)


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Rapport en JSON.")
@pass_ctx
def verify(ctx: Context, source: Path, as_json: bool) -> None:
    """Vérifier les signatures d'un PDF ; code 0 seulement si toutes sont intègres,
    valides et de confiance."""
    from securex.signing.setup import _trust_anchors
    from securex.signing.validate import render_text, validate_pdf

    authority = None if ctx.settings["signing.trust_anchors"] else _load_pki(ctx)
    report = validate_pdf(
        source.read_bytes(),
        trust_roots=_trust_anchors(ctx.settings, authority),
        other_certs=[authority.ca_cert] if authority else [],
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(render_text(report))
    sys.exit(0 if report.ok else 1)


# --- audit and demo helpers --------------------------------------------------------


@main.group()
def audit() -> None:
    """Journal d'audit."""


def _sealer(ctx: Context, db: Session) -> Any:
    from securex.seal import sealer
    from securex.signing.setup import load_demo_pki

    return sealer(
        ctx.settings, db, ctx.vault.keyring, load_demo_pki(ctx.settings.instance), utcnow()
    )


def _tsa_roots(ctx: Context) -> list[Any]:
    from securex.seal import tsa_roots
    from securex.signing.setup import load_demo_pki

    return tsa_roots(ctx.settings, load_demo_pki(ctx.settings.instance))


def _check_audit(ctx: Context) -> tuple[Any, int]:
    """The whole log's check: chaining, Merkle tree, every checkpoint's signature,
    consistency and timestamp. Returns (report, number of checkpoints)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from securex.audit import verify_chain
    from securex.audit.models import AuditCheckpoint
    from securex.audit.proofs import check_timestamps, verify_checkpoints

    load_instance_secret(ctx.settings.instance)
    with ctx.tx() as db:
        verifier = _sealer(ctx, db).verifier
    roots = [bytes(r.dump()) for r in _tsa_roots(ctx)]
    try:
        with ctx.factory() as s:  # no transaction begun: verify_chain takes one snapshot
            stamps = [
                (
                    row.size,
                    row.note,
                    None
                    if row.timestamp_token is None
                    else base64.b64encode(row.timestamp_token).decode(),
                )
                for row in s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size))
            ]
            s.rollback()
            # The timestamps (RFC 3161, slow to check) on the second core, meanwhile.
            # Spawned, not forked: a forked child would inherit (and on exit close) the
            # database connection this process is using.
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                timestamps = (
                    pool.submit(check_timestamps, stamps, verifier, roots)
                    if roots and stamps
                    else None
                )
                report = verify_chain(s, at_sizes={size for size, _, _ in stamps})
                report.problems += verify_checkpoints(
                    s, verifier, report.roots, log_size=report.size
                )
                if timestamps is not None:
                    report.problems += timestamps.result()
    except DBAPIError as exc:
        raise ConfigError(f"Base de données injoignable : {exc.orig.__class__.__name__}.") from None
    return report, len(stamps)


@audit.command("verify")
@pass_ctx
def audit_verify(ctx: Context) -> None:
    """Recalculer le chaînage et l'arbre de Merkle du journal, vérifier chaque point de
    contrôle (signature, horodatage, cohérence) ; code de sortie 1 à la moindre anomalie."""
    report, checkpoints = _check_audit(ctx)
    if report.ok:
        click.echo(
            f"Journal d'audit intègre : {report.size} événements, "
            f"{checkpoints} point(s) de contrôle vérifié(s)."
        )
        return
    click.secho(f"Journal d'audit ALTÉRÉ ({len(report.problems)} anomalies) :", fg="red", err=True)
    for line in report.problems[:100]:
        click.echo(f"  - {line}", err=True)
    sys.exit(1)


@audit.command("checkpoint")
@pass_ctx
def audit_checkpoint(ctx: Context) -> None:
    """Signer et horodater maintenant un point de contrôle du journal."""
    from securex.audit.proofs import create_checkpoint

    with ctx.tx() as db:
        row = create_checkpoint(db, _sealer(ctx, db), now=utcnow())
        if row is None:
            click.echo("Rien de nouveau depuis le dernier point de contrôle.")
            return
        click.echo(row.note, nl=False)


@audit.command("public-key")
@pass_ctx
def audit_public_key(ctx: Context) -> None:
    """Afficher la clé de vérification des points de contrôle (à remettre aux témoins)."""
    with ctx.tx() as db:
        click.echo(_sealer(ctx, db).verifier)


@audit.command("proof")
@click.argument("event_id", type=click.IntRange(1))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Écrire la preuve dans ce fichier (sinon : sortie standard).",
)
@pass_ctx
def audit_proof(ctx: Context, event_id: int, output: Path | None) -> None:
    """Preuve d'inclusion d'un événement dans le journal, vérifiable hors ligne."""
    from securex.audit.proofs import checkpoint_covering, create_checkpoint, event_proof

    with ctx.tx() as db:
        seal = _sealer(ctx, db)
        checkpoint = checkpoint_covering(db, event_id) or create_checkpoint(db, seal, now=utcnow())
        if checkpoint is None or checkpoint.size < event_id:
            raise NotFound(f"Aucun événement n° {event_id} dans le journal.")
        bundle = event_proof(db, event_id, checkpoint, seal.verifier)
    text = json.dumps(bundle, ensure_ascii=False, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"Preuve écrite : {output}")
    else:
        click.echo(text)


def _read_roots(path: Path | None) -> list[Any]:
    from asn1crypto import pem
    from asn1crypto import x509 as asn1_x509

    if path is None:
        return []
    try:
        return [
            asn1_x509.Certificate.load(der)
            for _, _, der in pem.unarmor(path.read_bytes(), multiple=True)
        ]
    except (ValueError, TypeError):
        raise ConfigError(f"{path} n'est pas un fichier PEM de certificats.") from None


def _offline_options(fn: Any) -> Any:
    """--key and --tsa-roots, shared by the offline checks."""
    fn = click.option(
        "--tsa-roots",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="PEM des racines de l'horodateur, pour vérifier aussi l'horodatage.",
    )(fn)
    return click.option(
        "--key",
        "key",
        default=None,
        help="Clé de vérification de la plateforme (« securex audit public-key »). "
        "Par défaut : celle de cette instance.",
    )(fn)


def _check_offline(
    path: Path, key: str | None, tsa_roots: Path | None, check: Any, what: str
) -> tuple[dict[str, Any], Any]:
    """Read a JSON proof document and verify it with `check(document, key, roots)`;
    exit 1 with a French message when it does not verify."""
    from securex.audit.merkle import ProofError

    if key is None:
        ctx = click.get_current_context().ensure_object(Context)
        with ctx.tx() as db:
            key = _sealer(ctx, db).verifier
    roots = _read_roots(tsa_roots)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return document, check(document, key, roots)
    except (ValueError, ProofError) as exc:
        click.secho(f"{what} INVALIDE : {exc}", fg="red", err=True)
        sys.exit(1)


@audit.command("check-proof")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_offline_options
def audit_check_proof(proof_file: Path, key: str | None, tsa_roots: Path | None) -> None:
    """Vérifier hors ligne une preuve avec le seul fichier et la clé publique."""
    from securex.audit.proofs import check_proof

    bundle, checkpoint = _check_offline(proof_file, key, tsa_roots, check_proof, "Preuve")
    event = json.loads(bundle["event"])
    click.echo(
        f"Preuve valide : l'événement n° {event['id']} ({event['action']}) figure dans "
        f"le journal « {checkpoint.origin} » de {checkpoint.size} événements."
    )


@audit.command("evidence")
@click.argument("subject")
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Dossier où écrire evidence.json et evidence.pdf.",
)
@pass_ctx
def audit_evidence(ctx: Context, subject: str, outdir: Path) -> None:
    """Dossier de preuve d'un sujet du journal (acte, demande, pli, document) : ses
    événements avec leurs preuves, en JSON et en PDF horodaté."""
    from securex.audit.evidence import build_evidence, render_pdf
    from securex.audit.proofs import create_checkpoint, latest_checkpoint
    from securex.seal import origin
    from securex.signing import pades

    now = utcnow()
    with ctx.tx() as db:
        seal = _sealer(ctx, db)
        create_checkpoint(db, seal, now=now)
        checkpoint = latest_checkpoint(db)
        if checkpoint is None:
            raise NotFound("Le journal est vide.")
        evidence = build_evidence(db, subject, checkpoint, seal.verifier, now)
        if not evidence["events"]:
            raise NotFound(f"Aucun événement pour « {subject} » dans le journal.")
        record(
            db,
            EventType.EVIDENCE_ISSUED,
            actor=str(ctx.actor),
            subject=subject,
            details={"events": len(evidence["events"]), "checkpoint": checkpoint.size},
            now=now,
        )
        pdf = render_pdf(evidence, origin(ctx.settings))
        if seal.timestamper is not None:
            pdf = pades.timestamp_document(pdf, seal.timestamper)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "evidence.json").write_text(
        json.dumps(evidence, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    (outdir / "evidence.pdf").write_bytes(pdf)
    click.echo(
        f"Dossier de preuve ({len(evidence['events'])} événement(s)) : "
        f"{outdir / 'evidence.pdf'} et {outdir / 'evidence.json'}"
    )


@audit.command("check-evidence")
@click.argument("evidence_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_offline_options
def audit_check_evidence(evidence_file: Path, key: str | None, tsa_roots: Path | None) -> None:
    """Vérifier hors ligne un dossier de preuve (evidence.json)."""
    from securex.audit.evidence import check_evidence

    evidence, checkpoint = _check_offline(evidence_file, key, tsa_roots, check_evidence, "Dossier")
    click.echo(
        f"Dossier valide : {len(evidence['events'])} événement(s) sur "
        f"« {evidence['subject']} » figurent dans le journal « {checkpoint.origin} » "
        f"({checkpoint.size} événements)."
    )


@main.command()
@click.argument("email")
@pass_ctx
def totp(ctx: Context, email: str) -> None:
    """Afficher le code TOTP actuel d'un compte (instances de démonstration seulement)."""
    with ctx.tx() as s:
        if accounts.get_meta(s, "demo") != "true":
            raise ConfigError("Cette commande n'existe que sur une instance de démonstration.")
        code = accounts.current_totp(ctx.keys, accounts.get_user(s, email), utcnow())
    click.echo(code)


# --- registry ------------------------------------------------------------------------


@main.group()
def registry() -> None:
    """Registres d'état civil : reprise des registres papier."""


@registry.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--commune", "insee", required=True, help="Code INSEE de la commune.")
@click.option(
    "--scans",
    "scans_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Dossier des numérisations PDF (défaut : celui du fichier).",
)
@click.option("--dry-run", is_flag=True, help="Vérifier seulement : rien n'est écrit.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Écrire aussi le rapport en JSON (lignes, champs, messages ; aucune donnée personnelle).",
)
@pass_ctx
def registry_import(
    ctx: Context,
    source: Path,
    insee: str,
    scans_dir: Path | None,
    dry_run: bool,
    report_path: Path | None,
) -> None:
    """Importer les actes d'un registre papier numérisé (SOURCE : .csv ou .json) :
    chaque ligne est vérifiée, puis tout est importé en une fois, ou rien. Format :
    docs/registry-import.md."""
    from securex.errors import ValidationFailed
    from securex.registry.importer import import_file
    from securex.registry.service import tenant_of

    with ctx.tx() as db:
        tenant_of(db, insee)  # an unknown commune, an instance not initialised: said here
    try:
        report = import_file(
            source,
            insee=insee,
            scans_dir=scans_dir,
            dry_run=dry_run,
            session_factory=ctx.factory,
            vault=ctx.vault,
            actor=ctx.actor,
            now=utcnow(),
            max_scan_bytes=int(ctx.settings["registry.max_scan_bytes"]),
            progress=lambda label, length: click.progressbar(
                length=length, label=label, file=sys.stderr
            ),
        )
    except DBAPIError as exc:
        raise ConfigError(
            f"Base de données : erreur pendant l'import ({exc.orig.__class__.__name__}) ; "
            "rien n'a été importé."
        ) from None
    if report_path is not None:
        report_path.write_text(
            json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    if not report.ok:
        click.secho(f"Erreur : {report.summary()}", fg="red", err=True)
        for line in report.text_lines():
            click.echo(f"  - {line}", err=True)
        sys.exit(ValidationFailed.exit_code)
    click.echo(report.summary())
