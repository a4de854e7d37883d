"""Guided (SVDD) sampling study on the built-in synthetic dataset (issue 16 item 6), one command.

    # the study (GPU):
    python bench/guided_study.py --device cuda --out runs/guided_study
    # a tiny CPU smoke run:
    python bench/guided_study.py --device cpu --tiny --out /tmp/guided_study_tiny

Stages (each skipped when its output exists under ``--out``, so a re-run continues):

1. data + a v1 model: the synthetic dataset and a v1 log-linear model trained as in
   ``bench/v2_study.py`` (same code), or ``--model CKPT``;
2. the constraint set ``constraints.yaml``: the researchers' CS2 (exactly one kitchen, a
   kitchen next to the living room, no bathroom next to the kitchen, 2-3 bathrooms), which
   fits the synthetic programs (one LivingRoom, usually one Kitchen and a Bathroom); the
   dataset's own satisfaction is printed next to the samples';
3. unguided baselines ``llada_topp0.9_no_remask`` and ``llada_topp0.9_remdm_confidence_tsw1.0``
   and the P90 calibration from the no-remask baseline (``calibration.json``, G3.2);
4. the sweeps of rounds 1-4 (G6.2): K x alpha (no remask), K at alpha 0.1 and alpha at K 16
   (no remask and confidence), soft vs hard at K 16, alpha 0.01; every guided run uses the
   calibrated set;
5. constraint satisfaction (hard violation 0, per constraint and overall) and a few quality
   metrics per seed, mean ± population std over seeds; the G8 sanity checks; the table and
   checks are printed and written to ``guided_study.md`` and ``results.json``.

The G8 checks: (1) alpha large gives about the unguided satisfaction; (2) satisfaction falls
monotonically with alpha for no-remask LLaDA; (3) gains saturate in K; (4) soft beats hard;
(5) K = 1 leaves the samples unchanged (bit for bit here); (6) ESS = K once a sample is fully
decoded without remasking (checked on every step of one traced batch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from v2_study import OutOfTime, _atomic_save, _log, stage_data, stage_train  # noqa: E402

NR, CF = "llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0"
CS2_YAML = """\
# CS2 of the researchers' rounds 2-7 (GUIDANCE_SPEC G6.2)
constraints:
  - {name: one_kitchen, type: ExactCount, room_type: Kitchen, target: 1}
  - {name: kitchen_near_living, type: RequireAdj, type_a: Kitchen, type_b: LivingRoom}
  - {name: no_bath_kitchen, type: ForbidAdj, type_a: Bathroom, type_b: Kitchen}
  - {name: between_2_and_3_bathrooms, type: CountRange, room_type: Bathroom, lo: 2, hi: 3}
"""
QUALITY = (("eval/validity_rate", "Valid.%", 100, 1), ("eval/diversity", "Div.", 1, 3),
           ("eval/mode_coverage_weighted", "MC(wt)%", 100, 1),
           ("eval/node_tv", "Node TV", 1, 3))


def guided_name(base: str, k: int, alpha: float, mode: str = "soft") -> str:
    return f"{base}_guided_K{k}_a{float(alpha)}_{mode}_linear"


def sweeps(args) -> dict[str, list[str]]:
    """Round -> method names (rounds 1-4 of G6.2 at the chosen sizes)."""
    r1_k, r1_a = args.r1_ks, args.r1_alphas
    return {
        "R1 K x alpha (no remask)": [guided_name(NR, k, a) for a in r1_a for k in r1_k],
        "R2 K sweep, alpha 0.1": [guided_name(b, k, 0.1) for b in (NR, CF) for k in args.ks],
        f"R3 alpha sweep, K {args.k_alpha}": [guided_name(b, args.k_alpha, a) for b in (NR, CF)
                                 for a in args.alphas],
        f"R4 soft vs hard, K {args.k_alpha}, alpha 0.01": [guided_name(b, args.k_alpha, 0.01, m)
                                              for b in (NR, CF) for m in ("soft", "hard")],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="guided sampling study on the synthetic dataset")
    ap.add_argument("--out", default="runs/guided_study")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", dest="ckpt", default=None,
                    help="a checkpoint (CKPT) to use instead of training a v1 model")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--steps", type=int, default=15000, help="training steps")
    ap.add_argument("--preset", default="small", help="denoiser preset of the trained model")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--v1-is-mode", default="legacy", choices=("legacy", "unbiased", "off"))
    ap.add_argument("--num-graphs", type=int, default=None)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--checkpoint-every", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=200, help="samples per seed")
    ap.add_argument("--seeds", default="42,123,456")
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--ks", default="1,4,8,16,24", help="R2 K sweep")
    ap.add_argument("--alphas", default="0.01,0.05,0.1,0.3,0.5,5.0,1000.0", help="R3 sweep")
    ap.add_argument("--r1-ks", default="4,16")
    ap.add_argument("--r1-alphas", default="0.1,1.0,5.0")
    ap.add_argument("--k-alpha", type=int, default=16, help="K of the alpha and soft/hard runs")
    ap.add_argument("--no-quality", action="store_true", help="skip the quality metrics")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds, then stop (rc 3)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.preset, args.num_graphs, args.batch_size = 40, "tiny", 400, 32
        args.samples, args.seeds, args.sample_steps = 12, "1", 8
        args.ks, args.alphas, args.r1_ks, args.r1_alphas, args.k_alpha = (
            "1,2,4", "0.01,1000.0", "2", "0.1", 4)
    for f in ("ks", "r1_ks"):
        setattr(args, f, [int(v) for v in getattr(args, f).split(",")])
    for f in ("alphas", "r1_alphas"):
        setattr(args, f, [float(v) for v in getattr(args, f).split(",")])
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        ds = stage_data(out, args)
        ckpt_path = Path(args.ckpt) if args.ckpt else out / "v1" / "checkpoint.pt"
        if not args.ckpt:
            # v2_study names the preset --model
            stage_train(out, ds, "v1", argparse.Namespace(**{**vars(args), "model": args.preset}),
                        device, deadline)
        study = Study(out, ds, ckpt_path, device, seeds, args, deadline)
        results = study.run()
    except OutOfTime as exc:
        _log(f"time budget reached ({exc}); state saved, run the same command again")
        return 3
    text = report(results, args, seeds, device)
    (out / "guided_study.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


class Study:
    """Stages 2-5 on one model; samples are cached under ``out/samples``."""

    def __init__(self, out: Path, ds, ckpt_path: Path, device, seeds, args, deadline) -> None:
        from bdgen.diffusion.process import forward_process_of
        from bdgen.model.checkpoint import build_denoiser, load_checkpoint

        self.out, self.ds, self.device, self.seeds = out, ds, device, seeds
        self.args, self.deadline = args, deadline
        self.ckpt = load_checkpoint(ckpt_path, map_location="cpu")
        self.model = build_denoiser(self.ckpt, device)
        self.process = forward_process_of(self.ckpt, device)
        self.vocab = self.ckpt.vocab

    def constraints(self):
        from bdgen.guidance.schema import load_constraint_set

        path = self.out / "constraints.yaml"
        if not path.exists():
            path.write_text(CS2_YAML)
        return load_constraint_set(path)

    def samples(self, name: str, seed: int, cs=None) -> dict:
        from bdgen.diffusion.fast_sampling import sample
        from bdgen.diffusion.guided import sample_guided
        from bdgen.diffusion.method import Method
        from bdgen.diffusion.sampler import draw_num_rooms

        path = self.out / "samples" / name / f"seed-{seed}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OutOfTime(f"before {name} seed {seed}")
        m = Method.parse(name)
        rooms = draw_num_rooms(self.ckpt.num_rooms_distribution, self.args.samples, seed)
        t0 = time.perf_counter()
        if m.guided:
            res = sample_guided(self.model, self.process, self.vocab, rooms, m, cs,
                                self.args.sample_steps, seed, self.device)
            diag = res.diagnostics
        else:
            res = sample(self.model, self.process, self.vocab, rooms, m,
                         self.args.sample_steps, seed, self.device)
            diag = None
        wall = time.perf_counter() - t0
        rec = {"tokens": res.tokens, "pad_mask": res.pad_mask, "wall_s": wall,
               "diagnostics": diag}
        _atomic_save(rec, path)
        _log(f"{name} seed {seed}: {self.args.samples} samples in {wall:.1f} s")
        return rec

    def calibrated(self, cs):
        from bdgen.data.graph import detokenize
        from bdgen.guidance.calibration import calibrate, calibration_document, read_calibration

        path = self.out / "calibration.json"
        if not path.exists():
            graphs = []
            for seed in self.seeds:
                s = self.samples(NR, seed)
                for t, p in zip(s["tokens"].numpy(), s["pad_mask"].numpy()):
                    with contextlib.suppress(ValueError):  # undecodable: skipped (G3.2)
                        graphs.append(detokenize(t, p, self.vocab))
            doc = calibration_document(cs, calibrate(cs, graphs),
                                       {"method": NR, "seeds": self.seeds,
                                        "num_samples": self.args.samples})
            path.write_text(json.dumps(doc, indent=2))
        return read_calibration(json.loads(path.read_text()), cs, str(path))

    def measure(self, name: str, cs, ref) -> dict:
        """Satisfaction (and quality) per seed, mean ± population std over seeds."""
        from bdgen.eval.aggregate import aggregate_seeds
        from bdgen.eval.suite import evaluate_seed
        from bdgen.guidance.violations import hard_violations

        per_seed, walls = {}, []
        for seed in self.seeds:
            s = self.samples(name, seed, cs)
            v = hard_violations(cs, s["tokens"], s["pad_mask"])
            row = {f"sat/{c}": float((v[:, i] == 0).double().mean())
                   for i, c in enumerate(cs.names)}
            row["sat/overall"] = float((v == 0).all(-1).double().mean())
            if ref is not None:
                q = evaluate_seed(s["tokens"].numpy(), s["pad_mask"].numpy(), ref)
                row.update({k: q[k] for k, *_ in QUALITY})
            per_seed[str(seed)] = row
            walls.append(s["wall_s"])
        agg = aggregate_seeds(per_seed)
        return {"metrics": {k: {"mean": a.mean, "std": a.std} for k, a in agg.items()},
                "wall_s": sum(walls)}

    def run(self) -> dict:
        from bdgen.eval.reference import ReferenceStats
        from bdgen.guidance.violations import hard_violations

        base_cs = self.constraints()
        cs = self.calibrated(base_cs)
        train = self.ds.split("train", self.args.seed)
        ref = None if self.args.no_quality else ReferenceStats.build(
            train.tokens.numpy(), train.pad_mask.numpy(), self.ds.vocab)
        dv = hard_violations(cs, train.tokens, train.pad_mask)
        results: dict = {
            "constraint_set": cs.to_dict(), "identity": cs.identity,
            "dataset_satisfaction": {**{c: float((dv[:, i] == 0).double().mean())
                                        for i, c in enumerate(cs.names)},
                                     "overall": float((dv == 0).all(-1).double().mean())},
            "runs": {}, "rounds": {}}
        for base in (NR, CF):
            results["runs"][base] = self.measure(base, cs, ref)
        for rnd, names in sweeps(self.args).items():
            results["rounds"][rnd] = names
            for name in names:
                if name not in results["runs"]:
                    results["runs"][name] = self.measure(name, cs, ref)
        results["checks"] = self.checks(results, cs)
        return results

    def checks(self, results: dict, cs) -> list[dict]:
        """The G8 sanity relations, each with its numbers and a verdict."""
        from bdgen.diffusion.guided import sample_guided_batch
        from bdgen.diffusion.method import Method
        from bdgen.diffusion.sampler import derive_seed, draw_num_rooms

        a = self.args

        def sat(name):
            m = results["runs"][name]["metrics"]["sat/overall"]
            return m["mean"], m["std"]

        out = []
        big = max(a.alphas)
        s_big, sd_big = sat(guided_name(NR, a.k_alpha, big))
        s0, sd0 = sat(NR)
        tol = max(0.03, 2 * max(sd_big, sd0))
        out.append({"check": f"alpha {big} ~ unguided (no remask, tolerance {tol:.3f})",
                    "values": [s_big, s0], "ok": abs(s_big - s0) <= tol})
        seq = [sat(guided_name(NR, a.k_alpha, al))[0] for al in sorted(a.alphas)]
        out.append({"check": "satisfaction falls monotonically with alpha (no remask, "
                             "alphas " + ", ".join(map(str, sorted(a.alphas))) + ")",
                    "values": seq, "ok": all(x >= y - 0.01 for x, y in zip(seq, seq[1:]))})
        ks = sorted(a.ks)
        kseq = [sat(guided_name(NR, k, 0.1))[0] for k in ks]
        gains = [(y - x) / max(k2 / k1, 1.0) for (k1, x), (k2, y) in
                 zip(zip(ks, kseq), zip(ks[1:], kseq[1:]))]
        out.append({"check": "gains saturate in K (no remask, alpha 0.1, K " +
                    ", ".join(map(str, ks)) + "): last gain per K-ratio <= first",
                    "values": kseq, "ok": len(gains) < 2 or gains[-1] <= gains[0] + 0.01})
        for base in (NR, CF):
            soft = sat(guided_name(base, a.k_alpha, 0.01, "soft"))[0]
            hard = sat(guided_name(base, a.k_alpha, 0.01, "hard"))[0]
            out.append({"check": f"soft beats hard ({base}, K {a.k_alpha}, alpha 0.01)",
                        "values": [soft, hard], "ok": soft > hard})
        same = True
        for base in (NR, CF):
            if 1 in a.ks:
                for seed in self.seeds:
                    u = self.samples(base, seed)["tokens"]
                    g = self.samples(guided_name(base, 1, 0.1), seed, cs)["tokens"]
                    same &= bool(torch.equal(u, g))
        out.append({"check": "K = 1 leaves the samples unchanged (bit for bit, every seed)",
                    "values": [], "ok": same if 1 in a.ks else None})
        trace: list = []
        m = Method.parse(guided_name(NR, a.k_alpha, 0.1))
        rooms = draw_num_rooms(self.ckpt.num_rooms_distribution, min(a.samples, 256),
                               self.seeds[0]).to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seeds[0], "t"))
        # at least 48 steps, so that LLaDA (about one reveal per step) finishes some samples
        sample_guided_batch(self.model, self.process, self.vocab, rooms, m, cs,
                            max(a.sample_steps, 48), gen, early_stop=False, trace=trace)
        checked, ok = 0, True
        for before, step in zip(trace, trace[1:]):
            done = before["n_masked"] == 0
            checked += int(done.sum())
            ok &= bool((step["ess"][done] == a.k_alpha).all())
        out.append({"check": f"ESS = K once decoded without remasking (K {a.k_alpha}; "
                             f"{checked} sample-steps checked)", "values": [],
                    "ok": ok if checked else None})
        return out


def _cell(m: dict | None, scale: float, dec: int) -> str:
    if m is None:
        return "--"
    return f"{m['mean'] * scale:.{dec}f}±{m['std'] * scale:.{dec}f}"


def report(results: dict, args, seeds, device) -> str:
    cs_names = [c["name"] for c in results["constraint_set"]["constraints"]]
    p90 = {c["name"]: c["p90"] for c in results["constraint_set"]["constraints"]}
    kind = "TINY SMOKE RUN, numbers meaningless" if args.tiny else "study"
    lines = [f"# Guided sampling on the synthetic dataset ({kind})", "",
             f"Device {device}; model {args.ckpt or f'v1 {args.preset}, {args.steps} steps'}; "
             f"{args.samples} samples x seeds {', '.join(map(str, seeds))}, N = "
             f"{args.sample_steps}; constraint set {results['identity'][:12]} (CS2, p90 "
             + ", ".join(f"{n} {p90[n]:g}" for n in cs_names) + "). Satisfaction in %, "
             "mean ± population std over seeds.", "",
             "Dataset (train split) satisfaction: " + ", ".join(
                 f"{n} {100 * v:.1f}" for n, v in results["dataset_satisfaction"].items()), ""]
    quality = [q for q in QUALITY if not args.no_quality]
    head = ["method", "Sat (all)", *cs_names, *[h for _, h, _, _ in quality], "s"]
    sections = [("Unguided baselines", [NR, CF]), *results["rounds"].items()]
    for title, names in sections:
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for name in names:
            r = results["runs"][name]
            met = r["metrics"]
            cells = [name, _cell(met["sat/overall"], 100, 1),
                     *[_cell(met[f"sat/{c}"], 100, 1) for c in cs_names],
                     *[_cell(met.get(k), sc, d) for k, _, sc, d in quality],
                     f"{r['wall_s']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## G8 sanity checks", ""]
    for c in results["checks"]:
        verdict = {True: "OK", False: "FAILS", None: "not run"}[c["ok"]]
        vals = ", ".join(f"{100 * v:.1f}" for v in c["values"])
        lines.append(f"- **{verdict}** {c['check']}" + (f": {vals}" if vals else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
