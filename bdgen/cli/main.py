"""The ``bdgen`` command line: a thin Click layer over :mod:`bdgen.pipeline`.

Sub-commands live in their own modules under ``bdgen/cli/`` and are imported lazily, so that
``bdgen --help`` and quick commands do not pay for importing torch, mlflow or dvc.

Exit statuses: 0 success; 1 the command's own "no" (``check`` found a failing metric,
``import-legacy`` a bad file); 2 bad input (a :class:`~bdgen.errors.BdgenError`, a usage
error, a full disk or unreadable file), one line on stderr; 3 an unexpected error (a bug),
one line plus "run with --debug for the traceback" (``--debug`` or ``BDGEN_DEBUG=1`` shows
it).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys

import click

from bdgen.errors import BdgenError
from bdgen.util.logs import console_logging

EXIT_BAD_INPUT = 2
EXIT_UNEXPECTED = 3
CONTEXT = {"help_option_names": ["-h", "--help"]}

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
    "runs": "bdgen.cli.listing:runs",
    "models": "bdgen.cli.listing:models",
    "sweep": "bdgen.cli.pipeline_cmd:sweep",
    "pipeline": "bdgen.cli.pipeline_cmd:pipeline",
    "ui": "bdgen.cli.workspace_cmd:ui",
    "push": "bdgen.cli.team_cmd:push",
    "pull": "bdgen.cli.team_cmd:pull",
    "constraints": "bdgen.cli.constraints:constraints",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use; a mistyped name gets the
    closest ones ("did you mean ...?")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(self.commands)
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.append(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)  # commands added in code (tests)
        module_name, attr = target.split(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"no such command {name!r}{hint}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            with console_logging():  # the library's messages as plain lines
                return super().invoke(ctx)
        except BdgenError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click.UsageError as exc:  # one line too, with where to find help
            cmd = exc.ctx.command_path if exc.ctx is not None else "bdgen"
            click.echo(f"error: {exc.format_message()} (see '{cmd} -h')", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `bdgen leaderboard | head`
            sys.stderr.close()
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into a line
            if ctx.params.get("debug") or _debugging():
                raise
            from bdgen.cli.failures import describe

            known, line = describe(exc)
            click.echo(f"error: {line}" + ("" if known else
                                           " (run with --debug for the traceback)"), err=True)
            sys.exit(EXIT_BAD_INPUT if known else EXIT_UNEXPECTED)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from bdgen import __version__
    from bdgen.store.schema import HEAD_REVISION

    click.echo(f"bdgen {__version__} (store schema revision {HEAD_REVISION})")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Print the version and the store schema revision it expects.")
@click.option("--debug", is_flag=True, envvar="BDGEN_DEBUG",
              help="Show the traceback of an unexpected error (also BDGEN_DEBUG=1).")
def cli(debug: bool) -> None:
    """bdgen: train, sample, evaluate and rank bubble-diagram diffusion models."""


def _debugging() -> bool:
    return os.environ.get("BDGEN_DEBUG", "") not in ("", "0")


def main() -> None:  # pragma: no cover - console entry point
    from bdgen.pipeline.stage_server import hand_off, is_warm_command  # stdlib only

    args = sys.argv[1:]
    if is_warm_command(args):  # a stage of dvc.yaml: run in a fork of the warm server
        code = hand_off(args, entry=f"{__name__}:cli")
        if code is not None:
            sys.exit(code)
    cli(prog_name="bdgen")
