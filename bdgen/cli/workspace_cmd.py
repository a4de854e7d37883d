"""``bdgen init`` (create a workspace) and ``bdgen ui`` (browse its MLflow runs)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import click


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-dvc", is_flag=True, help="Do not make the workspace a git + DVC repository.")
@click.option("--remote", default=None, metavar="URL",
              help="DVC remote for checkpoints and samples (a directory, ssh://, s3://, ...): "
                   "`bdgen push` / `bdgen pull` move them (team mode, docs/TEAM.md).")
def init(directory: Path, no_dvc: bool, remote: str | None) -> None:
    """Create a bdgen workspace in DIRECTORY (default: here): results store, MLflow tracking
    store and a git + DVC repository for checkpoints and samples. Safe to re-run."""
    from bdgen.pipeline.workspace import init_workspace

    ws = init_workspace(directory, dvc=not no_dvc, remote=remote)
    click.echo(f"workspace ready at {ws.root}")
    click.echo(f"  store:  {ws.db_path}")
    click.echo(f"  mlflow: {ws.mlflow_db_path} (or $MLFLOW_TRACKING_URI); browse with: bdgen ui")
    if not no_dvc:
        click.echo("  dvc:    checkpoints and samples are `dvc add`-ed inside it")
    if remote:
        from bdgen.tracking.remote import remote_url

        click.echo(f"  remote: {remote_url(ws.root)} (bdgen push / bdgen pull)")


@click.command()
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback by default: the UI has no login).")
def ui(port: int | None, host: str) -> None:
    """Start the MLflow UI on this workspace's tracking store and print its URL (Ctrl-C stops)."""
    from bdgen.errors import BdgenError
    from bdgen.pipeline.workspace import Workspace
    from bdgen.tracking.mlflow_server import free_port, server_command, wait_for_server
    from bdgen.tracking.mlflow_tracker import default_tracking_uri

    ws = Workspace.find()
    uri = default_tracking_uri(ws.root)
    if uri.startswith(("http://", "https://")):
        click.echo(f"runs are tracked on a server: open {uri}")
        return
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    proc = subprocess.Popen(server_command(uri, port, ws.root / "mlartifacts", host=host))

    def _stop(*_: object) -> None:  # SIGTERM too stops the server (no orphan process)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        wait_for_server(url, proc)
        click.echo(f"MLflow UI for {ws.root}: {url}  (Ctrl-C to stop)")
        proc.wait()
    except BdgenError:
        proc.terminate()
        raise
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
