"""``bdgen generate``: one self-describing samples file per (model, method, seed).

Everything that identifies the run comes from the checkpoint, never from command-line
defaults: the model version (hence the ``v2_`` prefix of the method name), the noise
schedule, n_max, the dataset identity and the room-count distribution (the legacy
generator took model and noise from its CLI and mis-filed results, spec §10 item 23).

All validation (method names and ranges, counts, device, checkpoint, output location)
happens before any sampling, and each file is written atomically, so a bad invocation
writes nothing and an interrupted one leaves no partial file under a final name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bdgen.data.samples_file import SamplesFile, save_samples
from bdgen.diffusion.fast_sampling import sample
from bdgen.diffusion.guided import GuidedOutput, sample_guided
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess, forward_process_of, has_learned_rates
from bdgen.diffusion.sampler import CPU_BATCH, SampleOutput, draw_num_rooms
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.model.checkpoint import Checkpoint, build_denoiser, load_checkpoint, model_id
from bdgen.pipeline.constraint_sets import load_constraints
from bdgen.pipeline.workspace import Workspace
from bdgen.util.device import resolve_device
from bdgen.util.faults import fault_point
from bdgen.util.hashing import file_sha256

DEFAULT_SEEDS = (42, 123, 456, 789, 1337)

log = logging.getLogger(__name__)


@dataclass
class GenerateResult:
    path: Path
    sha256: str
    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    wall_s: float
    samples_per_s: float
    model_calls: int
    constraint_set: str | None = None               # identity of a guided run's set
    diagnostics: dict[str, list[float]] | None = None  # a guided run's per-step series


def parse_seeds(text: str) -> list[int]:
    """``"42,123"`` -> ``[42, 123]`` (duplicates dropped, order kept)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            s = int(part)
        except ValueError:
            raise BdgenError(f"bad seed {part!r} in --seeds {text!r} (want e.g. 42,123)") from None
        if s < 0:
            raise BdgenError(f"seeds must be >= 0, got {s}")
        if s not in seeds:
            seeds.append(s)
    return seeds


def resolve_methods(names: Sequence[str], ckpt: Checkpoint) -> list[Method]:
    """Parse names and give them the checkpoint's version (the ``v2_`` prefix)."""
    if not names:
        raise BdgenError("no --method given")
    has_learned_rates(ckpt)  # a checkpoint of a known version
    methods: list[Method] = []
    for name in names:
        m = Method.parse(name).on_model(ckpt.version, name)
        if m not in methods:
            methods.append(m)
    return methods


def load_constraints_arg(constraints: str | Path | None, calibration: str | Path | None
                         ) -> ConstraintSet | None:
    """``--constraints``/``--calibration``: the calibrated set, or None without a file."""
    if constraints is None:
        if calibration is not None:
            raise BdgenError("--calibration needs --constraints")
        return None
    return load_constraints(constraints, calibration)


def check_guidance_inputs(methods: Sequence[Method], constraints: ConstraintSet | None
                          ) -> None:
    """Guided methods need a constraint set, and a constraint set needs guided methods (a
    set given to an unguided method would be silently ignored)."""
    for m in methods:
        if m.guided and constraints is None:
            raise BdgenError(f"method {m.format()} is guided: give its constraint set with "
                             f"--constraints FILE")
        if not m.guided and constraints is not None:
            raise BdgenError(f"--constraints applies to guided methods only; {m.format()} is "
                             f"not guided (run unguided methods without --constraints)")


def constraints_record(cs: ConstraintSet) -> dict:
    """What a guided samples file carries: the compiled set with normalisers and identity."""
    return {**cs.to_dict(), "identity": cs.identity}


def samples_path(out_root: Workspace | Path, mid: str, method: str, seed: int, n: int,
                 steps: int, constraint_set: str | None = None) -> Path:
    """The workspace path, or the same layout below an ``--out-dir``. A guided run's file
    lies in a ``cs-<12 hex digits of the constraint set identity>`` folder below its method,
    so runs of one method with different constraint sets never share a file."""
    if isinstance(out_root, Workspace):
        path = out_root.samples_path(mid, method, seed, n, steps)
    else:
        ws = Workspace(Path(out_root))
        path = Path(out_root) / ws.samples_path(mid, method, seed, n, steps).relative_to(
            ws.root / "artifacts" / "samples")
    if constraint_set is not None:
        path = path.parent / f"cs-{constraint_set[:12]}" / path.name
    return path


@dataclass
class GenerationSetup:
    """Everything validated and loaded once before any sampling: the checkpoint (hashed
    once), its denoiser and forward process on the device, and the parsed methods."""

    model_path: Path
    ckpt: Checkpoint
    sha256: str
    model_id: str
    methods: list[Method]
    device: torch.device
    model: torch.nn.Module
    process: ForwardProcess
    model_info: dict
    constraints: ConstraintSet | None = None  # guided methods only

    def constraint_set_id(self, method: Method) -> str | None:
        return self.constraints.identity if method.guided and self.constraints else None


def prepare_generation(model_path: str | Path, methods: Sequence[str],
                       seeds: Sequence[int] = DEFAULT_SEEDS, num_samples: int = 1000,
                       steps: int = 100, batch_size: int | None = None, device: str = "auto",
                       sha256: str | None = None, constraints: str | Path | None = None,
                       calibration: str | Path | None = None) -> GenerationSetup:
    """Validate a generation request and load what it samples from; nothing is written.

    ``sha256``: the checkpoint's digest when the caller has computed it already (the file
    is then not hashed again). ``constraints``/``calibration``: the constraint file (and
    calibration file) of guided methods.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise BdgenError(f"--steps must be an integer >= 1, got {steps!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise BdgenError(f"--num-samples must be an integer >= 1, got {num_samples!r}")
    if batch_size is not None and batch_size < 1:
        raise BdgenError(f"--batch-size must be >= 1, got {batch_size}")
    seeds = list(seeds)
    if not seeds or any(int(s) < 0 for s in seeds):
        raise BdgenError(f"--seeds must be a non-empty list of integers >= 0, got {seeds}")
    requested = [Method.parse(name) for name in methods]  # name errors before anything else
    cs = load_constraints_arg(constraints, calibration)
    check_guidance_inputs(requested, cs)  # before touching the checkpoint
    dev = resolve_device(device)
    ckpt = load_checkpoint(model_path)
    parsed = resolve_methods(methods, ckpt)
    model = build_denoiser(ckpt, dev)
    process = forward_process_of(ckpt, dev)
    if len(ckpt.num_rooms_distribution) != ckpt.n_max:
        raise BdgenError(f"checkpoint {model_path}: num_rooms_distribution has "
                         f"{len(ckpt.num_rooms_distribution)} entries, n_max is {ckpt.n_max}")
    draw_num_rooms(ckpt.num_rooms_distribution, 1, 0)  # validates the histogram
    sha = sha256 or file_sha256(model_path)
    mid = model_id(ckpt, sha)
    model_info = {"id": mid, "sha256": sha, "version": ckpt.version, "noise": ckpt.noise,
                  "dataset_hash": ckpt.dataset_hash, "dataset_id": ckpt.dataset_id,
                  "n_max": ckpt.n_max, "split": ckpt.split}
    return GenerationSetup(Path(model_path), ckpt, sha, mid, parsed, dev, model, process,
                           model_info, cs)


def sample_to_file(setup: GenerationSetup, method: Method, seed: int, num_samples: int,
                   steps: int, path: Path, *, batch_size: int | None = None,
                   early_stop: bool = True,
                   progress: Callable[[int], None] | None = None,
                   sampled: tuple[SampleOutput | GuidedOutput, float] | None = None,
                   before_write: Callable[[], None] | None = None) -> GenerateResult:
    """Sample one (method, seed) and write its samples file atomically.

    ``sampled``: this seed's output and wall time when it was sampled already (several
    seeds in one batch, :func:`sample_seed_batch`); only the file is written then.
    ``before_write``: called once sampled, before the file is written (it may raise: a
    holder checking that its claim is still its own, so as not to replace the file of the
    process that took its run over)."""
    dev = setup.device
    cs = setup.constraints if method.guided else None
    out, wall = sampled if sampled is not None else sample_one(
        setup, method, seed, num_samples, steps, batch_size=batch_size,
        early_stop=early_stop, progress=progress)
    fault_point("generate.sampled")
    if before_write is not None:
        before_write()
    diagnostics = getattr(out, "diagnostics", None)
    rate = num_samples / wall if wall > 0 else float("inf")
    sf = SamplesFile(tokens=out.tokens, pad_mask=out.pad_mask, num_rooms=out.num_rooms,
                     method=method.format(), method_config=method.legacy_config(),
                     model=setup.model_info, seed=int(seed), steps=steps,
                     num_samples=num_samples,
                     timings={"wall_s": wall, "samples_per_s": rate,
                              "model_calls": out.model_calls,
                              "rows_evaluated": out.rows_evaluated,
                              "device": str(dev),
                              "batch_size": batch_size or (
                                  min(num_samples, CPU_BATCH) if dev.type == "cpu"
                                  else num_samples)},
                     constraints=constraints_record(cs) if cs is not None else None,
                     diagnostics=diagnostics)
    digest = save_samples(sf, path)
    log.info("%s seed %s: %s samples x %s steps in %.1f s (%.1f samples/s, %s model calls) "
             "-> %s", method.format(), seed, num_samples, steps, wall, rate, out.model_calls,
             path)
    return GenerateResult(path, digest, setup.model_id, method.format(), int(seed),
                          num_samples, steps, wall, rate, out.model_calls,
                          cs.identity if cs is not None else None, diagnostics)


def sample_one(setup: GenerationSetup, method: Method, seed: int, num_samples: int,
               steps: int, *, batch_size: int | None = None, early_stop: bool = True,
               progress: Callable[[int], None] | None = None
               ) -> tuple[SampleOutput | GuidedOutput, float]:
    """One (method, seed) sampled (room counts from the seed), with its wall time; a guided
    method samples against the setup's constraint set."""
    ckpt, dev = setup.ckpt, setup.device
    rooms = draw_num_rooms(ckpt.num_rooms_distribution, num_samples, int(seed))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    cs = setup.constraints if method.guided else None
    out: SampleOutput | GuidedOutput
    if cs is not None:
        out = sample_guided(setup.model, setup.process, ckpt.vocab, rooms, method, cs, steps,
                            int(seed), dev, batch_size=batch_size, early_stop=early_stop,
                            progress=progress)
    else:
        out = sample(setup.model, setup.process, ckpt.vocab, rooms, method, steps, int(seed),
                     dev, batch_size=batch_size, early_stop=early_stop, progress=progress)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, time.perf_counter() - start


def sample_seed_batch(setup: GenerationSetup, method: Method, seeds: Sequence[int],
                      num_samples: int, steps: int, *, batch_size: int | None = None
                      ) -> dict[int, tuple[SampleOutput | GuidedOutput, float]]:
    """Every seed of ``method`` sampled in one batch (:mod:`bdgen.diffusion.seed_batch`;
    each seed's tokens as if sampled alone), with its share of the wall time. Seed batches
    exist for the unguided sampler only: a guided method samples its seeds one by one."""
    from bdgen.diffusion.seed_batch import sample_seeds

    if method.guided:
        return {int(s): sample_one(setup, method, int(s), num_samples, steps,
                                   batch_size=batch_size) for s in seeds}

    dist = setup.ckpt.num_rooms_distribution
    rooms = {int(s): draw_num_rooms(dist, num_samples, int(s)) for s in seeds}
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    start = time.perf_counter()
    outs = sample_seeds(setup.model, setup.process, setup.ckpt.vocab, rooms, method, steps,
                        setup.device, batch_size=batch_size)
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    share = (time.perf_counter() - start) / max(1, len(outs))
    return {s: (o, share) for s, o in outs.items()}


def generate(model_path: str | Path, methods: Sequence[str],
             seeds: Sequence[int] = DEFAULT_SEEDS, num_samples: int = 1000, steps: int = 100,
             batch_size: int | None = None, device: str = "auto",
             out_dir: str | Path | None = None, workspace: Workspace | None = None,
             progress: bool = True, early_stop: bool = True,
             constraints: str | Path | None = None,
             calibration: str | Path | None = None) -> list[GenerateResult]:
    """Sample every (method, seed) and write its samples file; returns one result per file.

    All validation (:func:`prepare_generation`) happens before any sampling, so a bad
    request writes nothing."""
    setup = prepare_generation(model_path, methods, seeds, num_samples, steps, batch_size,
                               device, constraints=constraints, calibration=calibration)
    root: Workspace | Path = Path(out_dir) if out_dir is not None else (
        workspace or Workspace.find())
    jobs = [(m, s, samples_path(root, setup.model_id, m.format(), int(s), num_samples, steps,
                                setup.constraint_set_id(m)))
            for m in setup.methods for s in seeds]
    from bdgen.pipeline.progress import Progress

    results: list[GenerateResult] = []
    with Progress(len(jobs) * num_samples, "generate", "sample", enabled=progress) as bar:
        for k, (method, seed, path) in enumerate(jobs):
            bar.status(f"{method.format()} seed {seed}")
            base = k * num_samples

            def tick(n: int, base: int = base) -> None:
                bar.update_to(base + n)

            results.append(sample_to_file(setup, method, int(seed), num_samples, steps, path,
                                          batch_size=batch_size, early_stop=early_stop,
                                          progress=tick))
            bar.update_to(base + num_samples)
    return results
