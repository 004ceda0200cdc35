"""What every command needs: settings, the ledger, the mart, the vault, and a clean error exit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory, unit_of_work
from perkflow.errors import PerkflowError
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart, open_mart
from perkflow.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """Lazily opened stores of one home."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.ledger_url)

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
    return Context(settings=get_settings())


def handles_errors(fn: F) -> F:
    """Turn domain errors into a one-line message naming the field, and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PerkflowError as exc:
            where = escape(f" [{exc.field}]") if exc.field else ""
            err_console.print(f"[red]error[/red]{where}: {escape(exc.message)}")
            raise typer.Exit(code=2) from exc

    return wrapper  # type: ignore[return-value]
