"""Options every command spells the same way (README "Command-line conventions").

* Lists are repeatable options (``--method A --method B``, ``--seed 1 --seed 2``). A comma
  list (``--seeds 42,123``) is still accepted as a compatibility form, for values that cannot
  contain a comma themselves (seeds, method names, model ids; a checkpoint path that exists
  is never split).
* ``--device`` is one :class:`DeviceType`: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
* Every command that prints a table takes ``--format table|markdown|csv|json``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

DB_HELP = ("Store: a SQLAlchemy URL or a SQLite file path "
           "(default: $BDGEN_DB_URL, else the workspace's bdgen.db).")
FORMATS = ("table", "markdown", "csv", "json")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceType(click.ParamType):
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (availability is checked where it is used)."""

    name = "auto|cpu|cuda[:N]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not _DEVICE_RE.match(text):
            self.fail(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N", param, ctx)
        return text


def device_option(help: str = "Device.") -> Callable:
    return click.option("--device", type=DeviceType(), default="auto", show_default=True,
                        help=help)


def db_option(f: Callable) -> Callable:
    return click.option("--db", "db", default=None, metavar="URL-OR-PATH", help=DB_HELP)(f)


def format_option(choices: Sequence[str] = FORMATS) -> Callable:
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default="table",
                        show_default=True, help="Output format.")


def split_list(values: Sequence[str], paths: bool = False) -> list[str]:
    """Repeated option values, each optionally a comma list (duplicates dropped, order
    kept). With ``paths=True`` a value naming an existing file is kept whole."""
    out: list[str] = []
    for v in values:
        v = str(v)
        parts = [v] if paths and Path(v).exists() else v.split(",")
        for p in (p.strip() for p in parts):
            if p and p not in out:
                out.append(p)
    return out


def list_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]):
    return split_list(value)


def seeds_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]):
    seeds: list[int] = []
    for part in split_list(value):
        try:
            s = int(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a seed (an integer >= 0)") from None
        if s < 0:
            raise click.BadParameter(f"seeds must be >= 0, got {s}")
        if s not in seeds:
            seeds.append(s)
    return seeds


def _pipeline_generate():
    import bdgen.pipeline.generate as module

    return module


def seeds_option() -> Callable:
    """``--seed`` (repeatable; ``--seeds 42,123`` too), default the protocol's five seeds
    (:data:`bdgen.pipeline.generate.DEFAULT_SEEDS`)."""
    return click.option("--seed", "--seeds", "seeds", multiple=True, metavar="SEED",
                        cls=ConfigDefault, config=_pipeline_generate, field="DEFAULT_SEEDS",
                        callback=seeds_callback,
                        help="Seed (repeatable; a comma list is accepted too); one samples "
                             "file per seed.")


def color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def terminal_width() -> int | None:
    """Columns to fit a terminal table into: ``$COLUMNS``, else the terminal's; None (no
    limit) when printing to a pipe or a file (whole lines for grep and logs)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 20:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return None


def emit_table(table, fmt: str) -> None:
    """Print a :class:`bdgen.report.tables.Table` in ``fmt`` (terminal tables fit the width)."""
    from bdgen.report.tables import render

    click.echo(render(table, fmt, color(), width=terminal_width()), nl=False)


class ConfigDefault(click.Option):
    """An option whose default is a field of a config dataclass (one source of truth),
    read only when needed: the config's module (torch) is not imported for parsing a
    command line that gives the value, nor for other commands."""

    def __init__(self, *args: Any, config: Callable[[], Any], field: str, **kwargs: Any):
        self._config, self._field = config, field
        kwargs.setdefault("show_default", True)
        super().__init__(*args, default=lambda: getattr(self._config(), self._field), **kwargs)

    def get_help_record(self, ctx: click.Context):
        value = getattr(self._config(), self._field)
        lazy, self.default = self.default, (",".join(str(v) for v in value)
                                            if isinstance(value, (list, tuple)) else value)
        try:
            return super().get_help_record(ctx)
        finally:
            self.default = lazy
