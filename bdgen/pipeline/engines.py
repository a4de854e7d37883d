"""Engines that run a study's units (:mod:`bdgen.pipeline.units`): one interface, two kinds.

* :class:`LocalEngine`: this machine. Sampling units run one at a time on a thread of this
  process (the model stays loaded on the device), evaluation and denoising units on a pool
  of worker processes, so the CPU metrics of finished runs overlap with the sampling of the
  next batch.
* :class:`RayEngine`: a Ray cluster (``ray.init()`` here, or ``--address`` of a cluster
  started with ``ray start --head`` / ``ray start --address``). Each unit is a Ray task
  with its resources: ``num_gpus=1`` for sampling on CUDA (1 CPU on CPU), 1 CPU for an
  evaluation or a denoising. Ray retries a task whose worker died (``max_retries``); a
  unit that raised is not retried (a bad input stays bad).

Both return :class:`concurrent.futures.Future` objects (Ray's ``ObjectRef.future()``), so
the sweep (:mod:`bdgen.pipeline.sweep`) waits on either the same way. What an engine needs
from the cluster: every worker sees the workspace at the same path (a shared filesystem;
checked with a token file) and the same store and MLflow (``$BDGEN_DB_URL``,
``$MLFLOW_TRACKING_URI``, passed to every task); a cluster of several hosts needs a store
and MLflow that hosts share: PostgreSQL and an MLflow server (SQLite is refused there).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol

from bdgen.errors import BdgenError
from bdgen.pipeline.units import EvalUnit, SampleUnit, Unit, WorkerEnv, run_unit

ENGINES = ("local", "ray")
#: Attempts Ray makes after a task's worker died (a crash, SIGKILL, a lost node).
RAY_MAX_RETRIES = 3
#: Variables every Ray task gets from the driver: the store, MLflow, fault injection.
FORWARDED_ENV = ("BDGEN_FAULT", "BDGEN_FAULT_ONCE", "BDGEN_CLAIM_TTL_S",
                 "MLFLOW_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS")


class Engine(Protocol):
    """Runs units; ``sampling_slots``: sampling units it can run at once (GPUs, or CPU
    workers), which the sweep uses to claim only what is about to run."""

    name: str
    sampling_slots: int

    def submit(self, unit: Unit) -> Future: ...

    def close(self) -> None: ...


def _init_worker() -> None:
    """Pool workers: one torch thread each (the pool is the parallelism), and (Linux) killed
    with the sweep: a worker outliving its sweep could finish a run whose claim died with
    the sweep and that another sweep has taken over."""
    import torch

    torch.set_num_threads(1)
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalEngine:
    """This machine: sampling on one in-process thread, evaluations on worker processes
    (``eval_workers``; 0 = a second in-process thread)."""

    name = "local"
    sampling_slots = 1

    def __init__(self, env: WorkerEnv, eval_workers: int = 1) -> None:
        self.env = env
        self._sampler = ThreadPoolExecutor(1, thread_name_prefix="bdgen-sample")
        self._evals: Executor
        if eval_workers > 0:
            self._evals = ProcessPoolExecutor(
                eval_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker)
        else:
            self._evals = ThreadPoolExecutor(1, thread_name_prefix="bdgen-eval")

    def submit(self, unit: Unit) -> Future:
        pool = self._sampler if isinstance(unit, SampleUnit) else self._evals
        return pool.submit(run_unit, unit, self.env)

    def close(self) -> None:
        self._sampler.shutdown(wait=True, cancel_futures=True)
        self._evals.shutdown(wait=True, cancel_futures=True)


class RayEngine:
    """A Ray cluster: one task per unit (see the module docstring for resources/retries)."""

    name = "ray"

    def __init__(self, env: WorkerEnv, *, address: str | None = None, device: str = "auto",
                 store_url: str, tracking_uri: str | None,
                 num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BdgenError("--engine ray needs Ray: pip install 'bdgen[ray]' (or "
                             "'ray[default]>=2.40')") from None
        self._ray = ray
        self.env = dataclasses.replace(env, export=True)
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self._started = not ray.is_initialized()
        if self._started:
            # A local cluster's workers inherit this process's environment; a remote one's
            # get the variables here (the store and MLflow also travel in ``env``).
            runtime = {"env_vars": env_vars} if address else None
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None,
                         include_dashboard=False, log_to_driver=False,
                         runtime_env=runtime)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BdgenError(f"cannot connect to the Ray cluster at {address or 'local'}: "
                                 f"{str(exc).splitlines()[0]}") from None
        self._check_cluster(address, store_url, tracking_uri)
        res = ray.cluster_resources()
        self.cuda = device.startswith("cuda") or (device == "auto" and res.get("GPU", 0) > 0)
        self.sampling_slots = max(1, int(res.get("GPU", 0) if self.cuda else res.get("CPU", 1)))
        self._remote = ray.remote(run_unit)

    def _check_cluster(self, address: str | None, store_url: str,
                       tracking_uri: str | None) -> None:
        """Refuse what cannot work across hosts, before any unit is submitted."""
        hosts = {n["NodeManagerAddress"] for n in self._ray.nodes() if n.get("Alive")}
        if len(hosts) <= 1:
            return
        if store_url.startswith("sqlite"):
            raise BdgenError(f"the Ray cluster spans {len(hosts)} hosts but the store is "
                             "SQLite: use a PostgreSQL store (--db / $BDGEN_DB_URL) that "
                             "every host reaches (README: studies on several hosts)")
        if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
            raise BdgenError(f"the Ray cluster spans {len(hosts)} hosts: set "
                             "$MLFLOW_TRACKING_URI to an MLflow server every host reaches "
                             "(or use --no-mlflow)")

    def _options(self, unit: Unit) -> Mapping[str, Any]:
        if isinstance(unit, SampleUnit) and self.cuda:
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": 1}

    def submit(self, unit: Unit) -> Future:
        opts = dict(self._options(unit))
        ref = self._remote.options(max_retries=RAY_MAX_RETRIES, retry_exceptions=False,
                                   name=("sample" if isinstance(unit, SampleUnit) else
                                         "evaluate" if isinstance(unit, EvalUnit) else
                                         "denoise"), **opts).remote(unit, self.env)
        return ref.future()

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_engine(kind: str, env: WorkerEnv, *, address: str | None = None,
                device: str = "auto", eval_workers: int | None = None,
                store_url: str = "", tracking_uri: str | None = None,
                num_cpus: int | None = None) -> Engine:
    """The engine ``kind`` (``local`` | ``ray``) for workers in ``env``."""
    if kind == "local":
        if address is not None:
            raise BdgenError("--address is for --engine ray")
        if eval_workers is None:
            eval_workers = max(1, min(8, (os.cpu_count() or 2) - 2))
        return LocalEngine(env, eval_workers)
    if kind == "ray":
        return RayEngine(env, address=address, device=device, store_url=store_url,
                         tracking_uri=tracking_uri, num_cpus=num_cpus)
    raise BdgenError(f"unknown engine {kind!r}; valid: {', '.join(ENGINES)}")
