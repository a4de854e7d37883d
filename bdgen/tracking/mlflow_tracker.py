"""MLflow behind one small interface: one tracked run per job, logged in batches.

Why a wrapper: only this package imports mlflow (the layers of docs/DEVELOPING.md), every
job must fail *before* doing work when the tracking server is down, and logging must be
batched (a single ``log_metric`` costs ~20 ms on SQLite, a 100-metric batch ~30 ms;
docs/PLATFORM.md, "MLflow").

Conventions (documented in README "Tracking"):

- Experiment per dataset: ``bdgen/<dataset_id>`` (e.g. ``bdgen/synthetic-0123abcd4567``), so
  runs of models trained on the same data are compared side by side; legacy imports go to
  ``bdgen/legacy-<schedule>``.
- Run name: short and readable (the jobs pass the method name, ``<method>/<seed>``, ...);
  the full identity ``<kind>:<identity>`` stays in the tag ``bdgen.identity``.
- Tags: ``bdgen.kind`` (train | generate | evaluate | result | legacy-import) plus the
  ``bdgen.*`` identity tags passed by the job (model id, method, seed, store row ids, artifact
  path and hashes), ``mlflow.source.git.commit`` / ``bdgen.git_commit`` for the code version,
  ``mlflow.source.name`` / ``mlflow.user``, and ``bdgen.host`` / ``bdgen.pid`` (who owns a
  RUNNING run: :meth:`Tracker.reap_dead_runs` marks those of dead processes KILLED).
- Nesting: a seed run carries ``mlflow.parentRunId`` of its result's parent run (made by
  :meth:`Tracker.create_parent_run`; which one is decided in ``bdgen.pipeline.mlflow_links``).

We use :class:`mlflow.MlflowClient` (no fluent API) so that several runs in one process and
several processes on one store never share hidden global state.
"""

from __future__ import annotations

import getpass
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bdgen.errors import BdgenError
from bdgen.util.mappings import flatten
from bdgen.util.provenance import code_version, git_commit, hostname

ENV_URI = "MLFLOW_TRACKING_URI"
TAG_PREFIX = "bdgen."
#: MLflow limits (3.x): 100 params / 1000 metrics / 100 tags per log_batch call;
#: param values up to 6000 chars; tag values up to 8000 chars.
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LEN = 6000
_REACH_TIMEOUT_S = 3.0
#: MLflow's limit on a dataset digest (``datasets.digest`` is VARCHAR(36)).
_MAX_DIGEST_LEN = 36
PARENT_TAG = "mlflow.parentRunId"
#: Open bdgen's experiments in the UI's "Model training" view (runs, charts), not GenAI's.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _quiet_env() -> None:
    """Telemetry off and no silent retries (an unreachable server must fail fast)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def default_tracking_uri(workspace_root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the workspace's SQLite store."""
    env = os.environ.get(ENV_URI)
    if env:
        return env
    return f"sqlite:///{(Path(workspace_root) / 'mlflow.db').resolve()}"


def experiment_name(dataset_id: str) -> str:
    """The experiment of every run on one dataset (see module docstring)."""
    return f"bdgen/{dataset_id}"


def check_reachable(uri: str, timeout: float = _REACH_TIMEOUT_S) -> None:
    """Raise :class:`BdgenError` quickly when the tracking store cannot be used.

    HTTP(S) servers are probed with one short GET (no retries); a local SQLite store only
    needs its directory to exist and be writable. Called before any job does work, so an
    unreachable server leaves no store rows behind.
    """
    hint = "; use --no-mlflow to run offline"
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status >= 500:
                    raise BdgenError(
                        f"MLflow tracking server at {uri} is unreachable: HTTP {resp.status}{hint}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BdgenError(f"MLflow tracking server at {uri} is unreachable: {reason}{hint}") \
                from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///"):]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise BdgenError(f"MLflow tracking store {uri} is unusable: {parent} is not a "
                             f"writable directory{hint}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def source_tags() -> dict[str, str]:
    """Who ran what, as MLflow's UI shows it (Source, User, Git commit columns), and the
    process that owns a run while it is RUNNING (host, pid)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    command = [a for a in sys.argv[1:2] if not a.startswith("-")]  # the subcommand
    return {"mlflow.source.name": " ".join([prog, *command])[:200],
            "mlflow.source.type": "LOCAL", "mlflow.user": _user(),
            "mlflow.source.git.commit": git_commit() or "unknown",
            f"{TAG_PREFIX}git_commit": code_version(),
            f"{TAG_PREFIX}host": hostname(), f"{TAG_PREFIX}pid": str(os.getpid())}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _param_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mlflow_metric_name(name: str) -> str:
    """A metric name MLflow accepts: its names allow only word characters and ``/.- :``, so
    the ``3+`` bin of ``constraint/violation_histogram_{c}/3+`` is logged as ``3plus``."""
    return name.replace("+", "plus")


class TrackedRun:
    """One open MLflow run. Every ``log_*`` call is one ``log_batch`` request (or a few, when
    MLflow's per-request limits are exceeded)."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self._client = client
        self.run_id: str | None = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in flatten(params, ".").items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[i: i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the numeric leaves of ``metrics`` (nested dicts flatten to ``a.b``); others are
        skipped (NaN/inf and non-numbers cannot be stored as MLflow metrics)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(mlflow_metric_name(k), float(v), ts, step or 0)
                 for k, v in flatten(metrics, ".").items() if _is_number(v)]
        self._log_metric_items(items)

    def log_metric_series(self, name: str, values: list[float] | list[tuple[int, float]]) -> None:
        """A curve (e.g. the training loss) as one metric with steps, in batches."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        pairs = [v if isinstance(v, tuple) else (i, v) for i, v in enumerate(values)]
        self._log_metric_items([Metric(name, float(v), ts, int(s)) for s, v in pairs
                                if _is_number(v)])

    def _log_metric_items(self, items: list) -> None:
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=items[i: i + _MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i: i + 100])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, dataset_id: str, source: str,
                    context: str = "training") -> None:
        """The dataset as an MLflow dataset input (the UI's Datasets column): ``digest`` is
        the dataset id (cut to MLflow's 36 characters; the full id is ``bdgen.dataset_id``)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=dataset_id[:_MAX_DIGEST_LEN], source_type="local",
                     source=json_source(source))
        self._client.log_inputs(self.run_id, datasets=[
            DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])


def json_source(uri: str) -> str:
    """MLflow's UI reads a dataset's source as JSON (``{"uri": ...}``)."""
    import json

    return json.dumps({"uri": uri})


class NullRun(TrackedRun):
    """``--no-mlflow``: the same calls, recording nothing; ``run_id`` is ``None``."""

    def __init__(self) -> None:  # noqa: D107 - nothing to hold
        self.run_id = None
        self.experiment_id = ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_metric_series(self, name: str, values: Any) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dataset(self, name: str, dataset_id: str, source: str,
                    context: str = "training") -> None:
        pass


class Tracker:
    """A connection to one MLflow tracking store.

    ``Tracker(uri)`` checks reachability at once (fast, before any work, without mlflow);
    the MLflow client (importing mlflow, ~1.3 s, and opening its store, ~1 s more on
    SQLite) is made on first use or by :meth:`connect`, which a job calls once it knows it
    has work, before claiming it: a job whose runs the store has already (a ``dvc repro``
    after a sweep) never imports mlflow. ``open_run(...)`` yields a :class:`TrackedRun`
    that ends FINISHED, or FAILED when the body raises.
    """

    enabled = True

    def __init__(self, uri: str, artifact_root: Path | None = None) -> None:
        _quiet_env()
        check_reachable(uri)
        self.uri = uri
        #: What names this tracking store in the store's links (:mod:`bdgen.store.links`):
        #: the URI, or "workspace" for a workspace's own mlflow.db (so that moving the
        #: workspace directory keeps its links).
        self.store_key = uri
        self._artifact_root = artifact_root
        self._mlflow_client: Any = None
        self._client_lock = threading.Lock()  # a sweep's sampler and eval threads share it
        self._experiments: dict[str, str] = {}

    @property
    def _client(self) -> Any:
        """The :class:`mlflow.MlflowClient`, made on first use (see the class docstring)."""
        if self._mlflow_client is None:
            with self._client_lock:
                if self._mlflow_client is None:
                    import mlflow

                    # Explicit URI on the client only: mlflow.set_tracking_uri() would also
                    # export MLFLOW_TRACKING_URI into this process's environment and leak
                    # into later work.
                    self._mlflow_client = mlflow.MlflowClient(tracking_uri=self.uri)
        return self._mlflow_client

    def connect(self) -> None:
        """Open the MLflow client now (import mlflow, open its store): a job calls this once
        it has work, so that a store MLflow cannot open fails before anything is claimed."""
        self._client  # noqa: B018 - made on access

    @classmethod
    def for_workspace(cls, root: Path, enabled: bool = True) -> Tracker:
        """The workspace's tracker (``--no-mlflow`` -> :class:`NullTracker`)."""
        if not enabled:
            return NullTracker()
        root = Path(root)
        uri = default_tracking_uri(root)
        local = not os.environ.get(ENV_URI)
        tracker = cls(uri, artifact_root=root / "mlartifacts" if local else None)
        if local:
            tracker.store_key = "workspace"
        return tracker

    def experiment_id(self, name: str) -> str:
        """Get or create the experiment ``name`` (race-safe between processes)."""
        if name in self._experiments:
            return self._experiments[name]
        from mlflow.exceptions import MlflowException

        exp = self._client.get_experiment_by_name(name)
        if exp is None:
            location = (self._artifact_root / name.replace("/", "_")).as_uri() \
                if self._artifact_root else None
            try:
                exp_id = self._client.create_experiment(name, artifact_location=location,
                                                        tags=EXPERIMENT_TAGS)
            except MlflowException:  # another process created it first
                exp = self._client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self._experiments[name] = exp_id
        self.reap_dead_runs(exp_id)
        return exp_id

    def reap_dead_runs(self, experiment_id: str) -> list[str]:
        """Mark KILLED the RUNNING runs of this experiment whose owning process (tags
        ``bdgen.host``/``bdgen.pid``) is dead on this host: a job killed with SIGKILL (or by
        the OOM killer) cannot close its run itself. Runs of other hosts are left alone
        (their liveness cannot be checked from here). Returns the run ids marked."""
        filt = f"attributes.status = 'RUNNING' and tags.`{TAG_PREFIX}host` = '{hostname()}'"
        reaped = []
        for run in self._client.search_runs([experiment_id], filter_string=filt,
                                            max_results=1000):
            pid = run.data.tags.get(f"{TAG_PREFIX}pid", "")
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                self._client.set_tag(run.info.run_id, f"{TAG_PREFIX}killed",
                                     f"owner process {pid} on {hostname()} died")
                self._client.set_terminated(run.info.run_id, "KILLED")
                reaped.append(run.info.run_id)
        return reaped

    def create_run(self, kind: str, name: str, experiment: str,
                   tags: Mapping[str, Any] | None = None, run_name: str | None = None,
                   parent: str | None = None) -> TrackedRun:
        """A new RUNNING run (close it with :meth:`end_run`); ``name`` is the identity
        (tag ``bdgen.identity``), ``run_name`` the short name shown (default
        ``<kind>:<name>``), ``parent`` the parent run id."""
        identity = f"{kind}:{name}"
        all_tags = {f"{TAG_PREFIX}kind": kind, f"{TAG_PREFIX}identity": identity,
                    **source_tags(), PARENT_TAG: parent, **(tags or {})}
        run = self._client.create_run(self.experiment_id(experiment),
                                      run_name=run_name or identity,
                                      tags={k: str(v) for k, v in all_tags.items()
                                            if v is not None and k != "mlflow.runName"})
        return TrackedRun(self._client, run.info.run_id, run.info.experiment_id)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status)

    @contextmanager
    def open_run(self, kind: str, name: str, experiment: str,
                 params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, *, run_name: str | None = None,
                 parent: str | None = None) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, FAILED when the body raises, KILLED when interrupted
        (Ctrl-C, SystemExit); one killed outright is reaped by the next job."""
        tracked = self.create_run(kind, name, experiment, tags, run_name, parent)
        assert tracked.run_id is not None
        run_id = tracked.run_id
        try:
            if params:
                tracked.log_params(params)
            yield tracked
        except (KeyboardInterrupt, SystemExit):
            self._client.set_terminated(run_id, "KILLED")
            raise
        except BaseException:
            self._client.set_terminated(run_id, "FAILED")
            raise
        self._client.set_terminated(run_id, "FINISHED")

    def create_parent_run(self, name: str, experiment: str, tags: Mapping[str, Any],
                          params: Mapping[str, Any] | None = None,
                          claim: str | None = None) -> str:
        """A result's parent run, created FINISHED at once (it never has work of its own, so
        it can never be left RUNNING; metrics may still be logged to it). ``claim``: the
        store claim it was made under (tag ``bdgen.claim``, to adopt it after a crash)."""
        tracked = self.create_run("result", name, experiment,
                                  {**tags, f"{TAG_PREFIX}claim": claim}, run_name=name)
        assert tracked.run_id is not None
        if params:
            tracked.log_params(params)
        self._client.set_terminated(tracked.run_id, "FINISHED")
        return tracked.run_id

    def run_for(self, run_id: str) -> TrackedRun:
        """A handle to log more to an existing run (e.g. a parent's aggregates)."""
        return TrackedRun(self._client, run_id, "")

    def run_status(self, run_id: str) -> str | None:
        """FINISHED | RUNNING | FAILED | KILLED, or None when the run does not exist or is
        deleted (a link to it is stale)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException:
            return None
        return None if run.info.lifecycle_stage == "deleted" else run.info.status

    def find_runs(self, experiment: str, tags: Mapping[str, str]) -> list[str]:
        """Run ids in ``experiment`` whose tags equal ``tags``, oldest first."""
        exp = self._client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self._client.search_runs([exp.experiment_id], filter_string=filt,
                                        max_results=1000,
                                        order_by=["attributes.start_time ASC"])
        return [r.info.run_id for r in runs]

    def tag_runs(self, run_ids: Iterable[str], tags: Mapping[str, Any]) -> None:
        """Set ``tags`` on existing runs (e.g. expectation verdicts), one batch per run."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for run_id in run_ids:
            for i in range(0, len(items), 100):
                self._client.log_batch(run_id, tags=items[i: i + 100])

    def get_run(self, run_id: str) -> Any:
        """The MLflow run entity (tests and checks read params/metrics/tags from it)."""
        return self._client.get_run(run_id)


class NullTracker(Tracker):
    """Records nothing (``--no-mlflow``); runs have ``run_id = None``."""

    enabled = False

    def __init__(self) -> None:  # noqa: D107 - no connection
        self.uri = self.store_key = ""

    def connect(self) -> None:
        pass

    @contextmanager
    def open_run(self, kind: str, name: str, experiment: str,
                 params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, *, run_name: str | None = None,
                 parent: str | None = None) -> Iterator[TrackedRun]:
        yield NullRun()

    def find_runs(self, experiment: str, tags: Mapping[str, str]) -> list[str]:
        return []

    def tag_runs(self, run_ids: Iterable[str], tags: Mapping[str, Any]) -> None:
        pass


def create_store(uri: str) -> None:
    """Create (migrate) an MLflow SQL tracking store now, so the first job pays nothing."""
    tracker = Tracker(uri)
    tracker._client.search_experiments(max_results=1)
