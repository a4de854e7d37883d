"""``bdgen push`` / ``bdgen pull``: a workspace's artifacts through its DVC remote (team
mode, docs/TEAM.md)."""

from __future__ import annotations

import click


@click.command()
def push() -> None:
    """Send every DVC-tracked artifact of this workspace (dataset, checkpoints, samples) and
    its pointer to the workspace's DVC remote."""
    from bdgen.pipeline.team import push_workspace
    from bdgen.pipeline.workspace import Workspace

    sent = push_workspace(Workspace.find())
    click.echo(f"pushed {len(sent.paths)} artifact(s) ({sent.files_transferred} uploaded)")


@click.command()
def pull() -> None:
    """Fetch every artifact the workspace's DVC remote has, then check each file against
    the sha256 the results store recorded for it (refused on a mismatch)."""
    from bdgen.pipeline.team import pull_workspace
    from bdgen.pipeline.workspace import Workspace

    click.echo(pull_workspace(Workspace.find()).line())
