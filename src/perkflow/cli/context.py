"""What every command needs: settings, the ledger, the mart, the vault, and a clean error exit."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, wraps
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from perkflow.cli.migrate import MIGRATIONS
from perkflow.db import make_engine, make_session_factory, unit_of_work
from perkflow.errors import PerkflowError, Unauthenticated
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart, open_mart
from perkflow.org.rules import SYSTEM, Actor
from perkflow.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class LedgerNotReady(PerkflowError):
    """The ledger was never migrated, or not to this version's schema."""

    status_code = 503
    code = "ledger_not_ready"


class SettingsInvalid(PerkflowError):
    """A PERKFLOW_* variable holds a value perkflow cannot use."""

    code = "settings_invalid"


def check_schema(engine: Engine) -> None:
    """Refuse a ledger whose schema is not this version's, saying what to run."""
    # Imported here: alembic is slow to import and only commands that open the ledger need it.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    where = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    script = ScriptDirectory(str(MIGRATIONS))
    if current == set(script.get_heads()):
        return
    if not current:
        raise LedgerNotReady(f"the ledger at {where} is not set up: run `perkflow db upgrade`")
    known = {rev.revision for rev in script.walk_revisions()}
    if current - known:
        raise LedgerNotReady(
            f"the ledger at {where} was migrated by a newer perkflow ({', '.join(sorted(current))})"
        )
    raise LedgerNotReady(f"the ledger at {where} is behind this version: run `perkflow db upgrade`")


@dataclass
class Context:
    """Lazily opened stores of one home."""

    settings: Settings

    @cached_property
    def ledger(self) -> Engine:
        """The ledger's engine, schema unchecked (what `db upgrade` migrates)."""
        return make_engine(self.settings.ledger_url)

    @cached_property
    def engine(self) -> Engine:
        """The ledger's engine once its schema is this version's."""
        # Checked once per command: a never-migrated home otherwise fails deep inside the first
        # query with "no such table".
        check_schema(self.ledger)
        return self.ledger

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def vault(self) -> Vault:
        return Vault(self.settings.master_secret)

    @cached_property
    def mart(self) -> Mart:
        return open_mart(self.settings)

    @contextmanager
    def uow(self) -> Iterator[Session]:
        """A unit of work: the command commits when its work is whole."""
        with unit_of_work(self.sessions) as session:
            yield session


def get_context() -> Context:
    """A context over the current settings."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PERKFLOW_" + "_".join(str(p) for p in first["loc"]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsInvalid(message, field=name) from exc
    return Context(settings=settings)


def exit_with(exc: PerkflowError) -> typer.Exit:
    """Print a domain error as one line naming the field; the exit to raise."""
    where = escape(f" [{exc.field}]") if exc.field else ""
    err_console.print(f"[red]error[/red]{where}: {escape(exc.message)}", soft_wrap=True)
    # 2 is a bad argument (as for click's usage errors); 1 is a home that cannot serve the command.
    return typer.Exit(code=1 if isinstance(exc, LedgerNotReady | SettingsInvalid) else 2)


def handles_errors(fn: F) -> F:
    """Turn domain errors into a one-line message naming the field, and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PerkflowError as exc:
            raise exit_with(exc) from exc

    return wrapper  # type: ignore[return-value]


def ledger_unusable(exc: OperationalError) -> typer.Exit:
    """The ledger cannot be used (a stopped server, a locked or foreign file): one line."""
    reason = str(exc.orig or exc).strip().splitlines()[0]
    err_console.print(
        f"[red]error[/red]: the ledger cannot be used: {escape(reason)}", soft_wrap=True
    )
    return typer.Exit(code=1)


PASSWORD_ENV = "PERKFLOW_PASSWORD"  # noqa: S105  (the variable's name, not a password)


def acting_as(session: Session, username: str | None) -> Actor:
    """The system, or a console user proven by their password, as at the console's sign-in."""
    # `--as USER` acts with that person's role and region, and the two-person rules (a campaign
    # approved by someone other than its author) are only as strong as that proof: the password
    # is asked for (hidden), or read from PERKFLOW_PASSWORD for scripts, and checked through the
    # same throttled sign-in as the console's. Without `--as` the command is the system's, and
    # the audit log says so (actor kind `system`).
    from perkflow.org import service as org  # imported here: argon2 is slow to set up

    if not username:
        return SYSTEM
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt(f"password for {username}", hide_input=True, err=True)
    settings = get_settings()
    # Both steps in their own transactions, committed whatever the command does next: the try
    # takes its turn before the password is verified (so guesses are limited), and the attempt
    # is recorded even if the command then fails.
    sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    with unit_of_work(sessions) as turns:
        turn = org.take_sign_in_turn(
            turns,
            username=username.strip(),
            ip=f"cli:{getpass.getuser()}",
            max_failures=settings.login_max_failures,
            window_s=settings.login_window_s,
        )
        turns.commit()
    with unit_of_work(sessions) as checking:
        result = org.sign_in(checking, turn=turn, password=password)
        checking.commit()
        if result.user is None:
            raise Unauthenticated(f"--as {username}: wrong username or password", field="as")
        return org.actor_for_staff(checking, user=result.user, ip=f"cli:{getpass.getuser()}")
