"""A Typer group that imports a subcommand's module only when that subcommand is looked up.

``orch --help`` then loads none of the command modules and builds none of their Click commands (together
about half of its time before): it lists each subcommand from the summary given where it is registered,
the way Prefect's CLI registers its groups by import path (``prefect/cli/_app.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer.core import MarkupMode, TyperCommand, TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

if TYPE_CHECKING:
    from typer._click import Command, HelpFormatter  # Typer 0.29 carries its own copy of Click


@dataclass(frozen=True)
class Lazy:
    """One subcommand: ``target`` is ``"module:attribute"``, a ``typer.Typer`` (a group, registered as
    ``add_typer`` would) or a function (a command, as ``app.command()`` would); ``summary`` is the first
    paragraph of its help, what the parent's ``--help`` lists (tests/test_cli.py holds them equal)."""

    target: str
    summary: str

    def load(self, name: str, rich_markup_mode: MarkupMode) -> Command:
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if isinstance(found, typer.Typer):
            return get_group_from_info(TyperInfo(found, name=name), pretty_exceptions_short=True,
                                       suggest_commands=True, rich_markup_mode=rich_markup_mode)
        return get_command_from_info(CommandInfo(name=name, callback=found), pretty_exceptions_short=True,
                                     rich_markup_mode=rich_markup_mode)


class _Commands(MutableMapping[str, "Command"]):
    """The group's ``commands``: every name is there from the start (so Typer's "did you mean" still
    suggests them), and a lazy one is built the first time it is read."""

    def __init__(self, loaded: MutableMapping[str, Command], lazy: dict[str, Lazy],
                 rich_markup_mode: MarkupMode) -> None:
        self.loaded, self.lazy, self.rich_markup_mode = dict(loaded), lazy, rich_markup_mode

    def __getitem__(self, name: str) -> Command:
        if name not in self.loaded:
            if name not in self.lazy:
                raise KeyError(name)
            self.loaded[name] = self.lazy[name].load(name, self.rich_markup_mode)
        return self.loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        self.lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self.loaded
        yield from (name for name in self.lazy if name not in self.loaded)

    def __len__(self) -> int:
        return len(self.loaded.keys() | self.lazy.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.loaded or name in self.lazy


class LazyGroup(TyperGroup):
    """Subclass it with ``subcommands`` set and pass it as ``typer.Typer(cls=...)``."""

    subcommands: ClassVar[dict[str, Lazy]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.lazy_commands = _Commands(self.commands, dict(self.subcommands), self.rich_markup_mode)
        self.commands = self.lazy_commands

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(self.commands)  # the names only: TyperGroup's own reads every command

    def format_commands(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        """TyperGroup's listing, with the registered summary in place of a command not loaded yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.lazy_commands.loaded.get(name) or TyperCommand(name=name,
                                                                          help=self.subcommands[name].summary)
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
