"""Constraint-guided sampling (SVDD, GUIDANCE_SPEC G4): the loop over steps and chunks
around :func:`bdgen.diffusion.guided_step.guided_step`, and the per-step diagnostics (G5).

The loop is the unguided one (:mod:`bdgen.diffusion.sampler`) with the guided step in
place of the unguided step: same initialisation, same room counts, same generator per
chunk (``derive_seed(seed, "tokens", c)``), same final clean-up. Hence a guided method with
K = 1 gives the unguided samples bit for bit (tested).

Diagnostics. Each step records the G5.1 quantities per sample; a chunk returns their sums
over its samples per step, and :func:`sample_guided` divides by the number of samples, so
the saved series are means over *all* samples of the run (the legacy analysis averaged
batch means without weighting by batch size, G9 item 17). ``mean_attribution_boost`` is the
mean of all boost entries above 0.01 over the run (0 if none); ``violation/<name>`` is the
winner's scoring violation of each constraint.

Exact speed-ups, as for the unguided sampler (every step draws the same shapes whatever the
state of the batch, and a chunk has its own generator):

* **early stop**: without remasking, once nothing is masked the remaining steps change no
  token (all K candidates equal the sample, so any winner is the sample). Their
  diagnostics are known too: every candidate has the sample's reward (a committed
  sequence's soft violations do not depend on the logits), so the skipped steps are filled
  with the diagnostics of K equal rewards, computed by the same function as in the loop.
* **row compaction** (CPU default): the model runs only on rows whose logits this step
  uses: rows with a masked position (proposal and soft scoring read the logits only
  there), or every row at a remasking step; option A's second call runs only on unlocked
  rows. Rows the model skips get zero logits, which nothing reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.fast_sampling import (
    CompactLogits,
    EarlyStop,
    GraphedLogits,
    chunk_runner,
    loop_defaults,
)
from bdgen.diffusion.guided_fast import propose_candidates_shared
from bdgen.diffusion.guided_step import GuidedContext, LockState, guided_step, step_diagnostics
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.reverse import Plan, clean_up
from bdgen.diffusion.sampler import check_request, chunk_generator, chunk_starts
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.reward import candidate_weights

#: Per-step series saved in a guided samples file (plus ``violation/<constraint name>``).
DIAGNOSTICS: tuple[str, ...] = (
    "ess", "max_weight", "weight_entropy", "reward_selected", "reward_all_candidates",
    "reward_gap", "reward_pre_remask", "reward_post_remask", "reward_remasking_delta",
    "positions_remasked", "positions_protected", "mean_attribution_boost",
    "positions_boosted", "samples_locked")
_SUMMED = tuple(n for n in DIAGNOSTICS if n != "mean_attribution_boost") + ("boost_sum",)


@dataclass
class GuidedOutput:
    tokens: Tensor        # int64 [N, S]
    pad_mask: Tensor      # bool  [N, S]
    num_rooms: Tensor     # int64 [N]
    model_calls: int
    rows_evaluated: int
    diagnostics: dict[str, list[float]] = field(default_factory=dict)  # name -> per step s
    lock_steps: Tensor | None = None  # int64 [N], step s a sample was locked at (-1: never)


def check_guided(method: Method, constraints: ConstraintSet | None) -> None:
    if method.guidance is None:
        raise BdgenError(f"method {method.format()} is not guided")
    if constraints is None:
        raise BdgenError(f"guided method {method.format()} needs a constraint set")


@torch.inference_mode()
def sample_guided_batch(model: nn.Module, process: ForwardProcess, vocab: VocabConfig,
                        num_rooms: Tensor, method: Method, constraints: ConstraintSet,
                        steps: int, generator: torch.Generator, *, early_stop: bool = True,
                        compact: bool | None = None, model_batch: int | None = None,
                        cuda_graphs: bool | None = None, shared_proposal: bool = True,
                        trace: list[dict[str, Any]] | None = None
                        ) -> tuple[Tensor, int, int, dict[str, Tensor], Tensor | None]:
    """Sample one batch with guidance; returns (tokens int64 [B, S], model calls, rows
    evaluated, per-step sums over the batch ``{name: float64 [steps]}``, lock steps [B]).

    ``cuda_graphs`` (CUDA default): whole-batch forwards replayed from a CUDA graph, as in
    the unguided sampler (same logits, less launch overhead).
    ``shared_proposal`` (default): candidates drawn without tiling the logits
    (:mod:`bdgen.diffusion.guided_fast`, the same candidates); False: the reference
    proposal on the batch tiled K times.
    ``trace`` (tests): one dict per executed step with ``i``, ``x`` (after the step),
    ``ess`` [B] and ``n_masked`` [B] (after the step)."""
    check_guided(method, constraints)
    check_request(vocab, num_rooms, steps)
    device = num_rooms.device
    compact, model_batch, cuda_graphs = loop_defaults(device, compact, model_batch,
                                                      cuda_graphs)
    plan = Plan.build(method, process, vocab, num_rooms, steps)
    ctx = GuidedContext.build(plan, constraints, generator,
                              propose_candidates_shared if shared_proposal else None)
    logits_fn = CompactLogits(model, plan.pad_mask, method.precision, model_batch,
                              GraphedLogits(model) if cuda_graphs else None)
    lock = LockState.start(num_rooms.shape[0], device) if ctx.guidance.ema_lock else None
    stop = EarlyStop(plan, early_stop)
    per_step: list[dict[str, Tensor] | None] = [None] * steps
    last: dict[str, Tensor] | None = None
    x = plan.initial()
    for i in range(steps - 1, -1, -1):
        if stop.done(x):
            break
        rows = None
        if compact:  # proposal and scoring read logits only at masked positions
            rows = (x == plan.mask_tok).any(-1) | (i in plan.fire)
        x, diag = guided_step(ctx, logits_fn, x, i, lock, rows)
        per_step[steps - 1 - i] = {n: v.sum(0) for n, v in diag.items()}
        last = diag
        if trace is not None:
            trace.append({"i": i, "x": x.cpu(), "ess": diag["ess"].cpu(),
                          "n_masked": (x == plan.mask_tok).sum(-1).cpu()})
        stop.record(x)
    if last is not None and any(d is None for d in per_step):
        fill = _settled_step(last, ctx.K, ctx.guidance.alpha)
        per_step = [fill if d is None else d for d in per_step]
    x = clean_up(plan, x, logits_fn, row_hints=compact)  # safety net, as unguided
    steps_done = [d for d in per_step if d is not None]  # all, unless no step ran
    names = steps_done[0].keys() if steps_done else ()
    sums = {n: torch.stack([d[n].to(torch.float64) for d in steps_done]).cpu() for n in names}
    return (x, logits_fn.calls, logits_fn.rows, sums,
            lock.lock_step.cpu() if lock is not None else None)


def _settled_step(last: dict[str, Tensor], k: int, alpha: float) -> dict[str, Tensor]:
    """Per-step sums of a step where every sample is fully decoded and nothing remasks: K
    equal candidates with the last step's rewards and violations (see the module doc)."""
    r = last["reward_post_remask"]
    w = candidate_weights(r.expand(k, *r.shape), alpha, dim=0)
    order = [n for n in last if n.startswith("violation/")]
    v = torch.stack([last[n] for n in order], -1) if order else r.new_zeros((r.shape[0], 0))
    diag = step_diagnostics(w, r.expand(k, *r.shape), r, r, v)
    zeros = torch.zeros_like(last["positions_remasked"])
    diag.update(positions_remasked=zeros, positions_protected=zeros, positions_boosted=zeros,
                boost_sum=torch.zeros_like(last["boost_sum"]),
                samples_locked=torch.zeros_like(last["samples_locked"]))
    return {n: t.sum(0) for n, t in diag.items()}


def summarise(sums: Sequence[dict[str, Tensor]], n: int, constraint_names: Sequence[str]
              ) -> dict[str, list[float]]:
    """Per-step means over the run's n samples from the chunks' per-step sums."""
    total: dict[str, Tensor] = {name: torch.stack([s[name] for s in sums]).sum(0)
                                for name in sums[0]}
    out: dict[str, list[float]] = {}
    for name in _SUMMED[:-1]:
        out[name] = (total[name] / n).tolist()
    boosted = total["positions_boosted"]
    out["mean_attribution_boost"] = torch.where(
        boosted > 0, total["boost_sum"] / boosted.clamp_min(1), 0.0).tolist()
    out = {name: out[name] for name in DIAGNOSTICS}
    for c, cname in enumerate(constraint_names):
        out[f"violation/{cname}"] = (total[f"violation/{c}"] / n).tolist()
    return out


def sample_guided(model: nn.Module, process: ForwardProcess, vocab: VocabConfig, num_rooms: Tensor,
                  method: Method, constraints: ConstraintSet, steps: int, seed: int,
                  device: torch.device | str = "cpu", batch_size: int | None = None,
                  early_stop: bool = True, compact: bool | None = None,
                  model_batch: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  workers: int | None = None, cuda_graphs: bool | None = None,
                  shared_proposal: bool = True) -> GuidedOutput:
    """Guided sampling of ``len(num_rooms)`` graphs in chunks (as :func:`~bdgen.diffusion.
    sampler.sample`: default chunk 128 on CPU, everything at once on CUDA; chunk c draws
    from its own generator seeded with ``derive_seed(seed, "tokens", c)``)."""
    check_guided(method, constraints)
    device = torch.device(device)
    check_request(vocab, num_rooms, steps)
    n = int(num_rooms.shape[0])
    starts, bs = chunk_starts(n, batch_size, device)

    def chunk(c: int) -> tuple[Tensor, int, int, dict[str, Tensor], Tensor | None]:
        rooms = num_rooms[starts[c]:starts[c] + bs].to(device)
        x, k, r, sums, locks = sample_guided_batch(
            model, process, vocab, rooms, method, constraints, steps,
            chunk_generator(seed, c, device), early_stop=early_stop, compact=compact,
            model_batch=model_batch, cuda_graphs=cuda_graphs, shared_proposal=shared_proposal)
        return x.cpu(), k, r, sums, locks

    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    workers = max(1, min(int(workers), len(starts))) if device.type == "cpu" else 1
    out, sums, locks, calls, rows = [], [], [], 0, 0
    with chunk_runner(workers) as run_chunks:
        for c, (x, k, r, s, lk) in enumerate(run_chunks(chunk, range(len(starts)))):
            out.append(x)
            sums.append(s)
            locks.append(lk)
            calls, rows = calls + k, rows + r
            if progress is not None:
                progress(min(starts[c] + bs, n))
    tokens = torch.cat(out)
    pad_mask = torch.from_numpy(vocab.pad_mask_table)[num_rooms.cpu()]
    lock_steps = torch.cat(locks) if locks[0] is not None else None
    return GuidedOutput(tokens, pad_mask, num_rooms.cpu().long(), calls, rows,
                        summarise(sums, n, constraints.names), lock_steps)
