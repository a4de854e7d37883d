"""Running an MLflow tracking server on loopback (``bdgen ui``, the team tests): its
command line, a free port, and waiting until it answers. The client side is
:mod:`bdgen.tracking.mlflow_tracker`."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bdgen.errors import BdgenError


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(uri: str, port: int, artifact_root: Path | None = None,
                   host: str = "127.0.0.1", workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line serving ``uri`` on loopback (one worker starts in
    ~10 s instead of ~20 s with the default four)."""
    import sys

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if artifact_root is not None:
        cmd += ["--artifacts-destination", Path(artifact_root).resolve().as_uri()]
    return cmd


def wait_for_server(url: str, proc: Any = None, timeout: float = 60.0) -> None:
    """Poll ``url/health`` until it answers; BdgenError when the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BdgenError(f"mlflow server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise BdgenError(f"mlflow server at {url} did not answer within {timeout:.0f} s")
