"""The ``bdgen`` command line: a thin Click layer over :mod:`bdgen.pipeline`.

Sub-commands live in their own modules under ``bdgen/cli/`` and are imported lazily, so that
``bdgen --help`` and quick commands do not pay for importing torch, mlflow or dvc.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from bdgen.errors import BdgenError
from bdgen.util.logs import console_logging

# command name -> "module:attribute" (a click.Command or click.Group).
COMMANDS: dict[str, str] = {
    "init": "bdgen.cli.workspace_cmd:init",
    "data": "bdgen.cli.data:data",
    "train": "bdgen.cli.train:train",
    "generate": "bdgen.cli.generate:generate",
    "evaluate": "bdgen.cli.evaluate:evaluate",
    "db": "bdgen.cli.db:db",
    "import-legacy": "bdgen.cli.db:import_legacy",
    "leaderboard": "bdgen.cli.leaderboard:leaderboard",
    "compare": "bdgen.cli.leaderboard:compare",
    "report": "bdgen.cli.leaderboard:report",
    "check": "bdgen.cli.leaderboard:check",
    "sweep": "bdgen.cli.pipeline_cmd:sweep",
    "pipeline": "bdgen.cli.pipeline_cmd:pipeline",
    "ui": "bdgen.cli.workspace_cmd:ui",
    "push": "bdgen.cli.team_cmd:push",
    "pull": "bdgen.cli.team_cmd:pull",
    "constraints": "bdgen.cli.constraints:constraints",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = []
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.append(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        try:
            with console_logging():  # the library's messages as plain lines
                return super().invoke(ctx)
        except BdgenError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup)
@click.version_option(package_name="bdgen")
def cli() -> None:
    """bdgen: train, sample, evaluate and rank bubble-diagram diffusion models."""


def main() -> None:  # pragma: no cover - console entry point
    cli()
