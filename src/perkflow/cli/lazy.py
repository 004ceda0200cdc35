"""The top-level command group: subcommands named here, imported only when one is used.

`perkflow --help` lists every command from this table without importing the capabilities
behind them (SQLAlchemy, the services, argon2): it answers in the time Python, Typer and Rich
take to start. A command is imported when it runs or when its own `--help` is asked for.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module
from typing import Any, cast

import typer
from typer.core import TyperCommand, TyperGroup

# Typer's own command class (it carries a copy of Click): what its groups hold.
Command = TyperCommand | TyperGroup


@dataclass(frozen=True)
class Entry:
    """One subcommand: its name, its one-line help, and where it lives (``module:attribute``)."""

    name: str
    help: str
    target: str
    # Modules imported before the target, for commands they add to it (reports on `campaign`).
    extras: tuple[str, ...] = ()

    def load(self) -> Command:
        for module in self.extras:
            import_module(module)
        module_name, _, attribute = self.target.partition(":")
        obj: Any = getattr(import_module(module_name), attribute)
        command: Command
        if isinstance(obj, typer.Typer):  # a group, even of one subcommand (`db upgrade`)
            command = typer.main.get_group(obj)
        else:  # a plain function: a command of its own
            single = typer.Typer()
            single.command(self.name)(obj)
            # One command and no callback: Typer gives the command itself.
            command = cast(TyperCommand, typer.main.get_command(single))
        command.name = self.name
        return command


class LazyCommand(TyperCommand):
    """Stands in for a subcommand in the listing; becomes it when parsed."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(entry.name, help=entry.help, short_help=entry.help)
        self.entry = entry
        self._real: Command | None = None

    def real(self) -> Command:
        if self._real is None:
            self._real = self.entry.load()
        return self._real

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        # The context belongs to the real command, so the group invokes that one.
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        return self.real().invoke(ctx)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        return self.real().shell_complete(ctx, incomplete)


class PerkflowGroup(TyperGroup):
    """The top-level command: lazy subcommands, and no traceback for a user's or a home's error."""

    entries: tuple[Entry, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for entry in self.entries:
            self.add_command(LazyCommand(entry), entry.name)

    def invoke(self, ctx: Any) -> Any:
        from perkflow.errors import PerkflowError

        try:
            return super().invoke(ctx)
        except PerkflowError as exc:
            from perkflow.cli.context import exit_with

            raise exit_with(exc) from exc
        except Exception as exc:
            # SQLAlchemy is imported only by commands that open the ledger: if it is not loaded,
            # the error cannot be the ledger's.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is None or not isinstance(exc, sa_exc.OperationalError):
                raise
            from perkflow.cli.context import ledger_unusable

            raise ledger_unusable(exc) from exc


def group_with(entries: tuple[Entry, ...]) -> type[PerkflowGroup]:
    """The group class Typer builds for the top-level app, holding these subcommands."""
    return type("PerkflowRoot", (PerkflowGroup,), {"entries": entries})
