"""Reward (G3.1), candidate weights, and P90 calibration (G3.2) with the spec's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_guidance_violations import CS2, appendix_example

from bdgen.data.graph import Graph
from bdgen.data.vocab import BATHROOM, KITCHEN, LIVING_ROOM
from bdgen.errors import BdgenError
from bdgen.guidance.calibration import calibrate, calibration_document, p90, read_calibration
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.reward import (
    candidate_weights,
    effective_sample_size,
    energy,
    energy_of,
    reward,
)
from bdgen.guidance.schema import compile_specs
from bdgen.guidance.violations import hard_violations, soft_violations

P90_CS2 = {"one_kitchen": 1.0, "kitchen_near_living": 1.0, "no_bath_kitchen": 2.0,
           "between_2_and_3_bathrooms": 1.0}


def calibrated() -> ConstraintSet:
    return compile_specs(CS2).with_normalisers(P90_CS2)


def test_appendix_energy_and_reward():
    cs = calibrated()
    tokens, pad, logits = appendix_example()
    v = soft_violations(cs, tokens, logits, pad)
    e = energy(v, cs)
    assert e.dtype == torch.float64 and e.shape == ()
    assert e.item() == pytest.approx(1.3625, abs=1e-12)   # 0 + 0.55 + 0.225/2 + 0.7
    assert reward(v, cs).item() == -e.item()
    assert energy_of(v.tolist(), cs) == e.item()           # hard-mode float path, same sum


def test_phi_shapes_before_the_normaliser():
    cs = calibrated()
    v = torch.tensor([[0.0, 0.55, 0.225, 0.7], [2.0, 1.0, 3.0, 0.0]], dtype=torch.float64)
    quad = energy(v, cs, "quadratic")
    assert quad.tolist() == pytest.approx([0.55 ** 2 + 0.225 ** 2 / 2 + 0.7 ** 2,
                                           4.0 + 1.0 + 9.0 / 2], abs=1e-12)
    log = energy(v, cs, "log1p")
    assert log[1].item() == pytest.approx(math.log(3) + math.log(2) + math.log(4) / 2,
                                          abs=1e-12)
    assert energy(v, cs).tolist() == pytest.approx([1.3625, 2 + 1 + 1.5], abs=1e-12)
    # weights multiply, normalisers divide; no constraints: a float64 zero
    weighted = compile_specs([{**c, "weight": 3.0} for c in CS2]).with_normalisers(P90_CS2)
    assert energy(v, weighted).tolist() == pytest.approx((3 * energy(v, cs)).tolist())
    zero = energy(torch.zeros(5, 0, dtype=torch.float64), ConstraintSet(()))
    assert zero.dtype == torch.float64 and torch.equal(zero, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(BdgenError, match="unknown phi"):
        energy(v, cs, "cubic")
    with pytest.raises(BdgenError, match="3 violations for 4 constraints"):
        energy(v[:, :3], cs)


def test_hard_reward_zero_iff_all_satisfied_and_batched_sum_is_the_scalar_sum():
    cs = calibrated()
    ok = Graph((KITCHEN, LIVING_ROOM, BATHROOM, BATHROOM), ((0, 1, 2),))
    bad = Graph((KITCHEN, BATHROOM), ((0, 1, 2),))
    assert energy_of(cs.hard(ok), cs) == 0.0
    assert energy_of(cs.hard(bad), cs) == 0.0 + 1.0 + 0.5 + 1.0
    rng = np.random.default_rng(0)
    v = torch.from_numpy(rng.random((64, 16, 4)) * 3)
    batched = energy(v, cs)
    scalar = torch.tensor([[energy_of(v[i, k].tolist(), cs) for k in range(16)]
                           for i in range(64)], dtype=torch.float64)
    assert torch.equal(batched, scalar)
    assert torch.equal(energy(v.view(8, 8, 16, 4), cs), batched.view(8, 8, 16))


@pytest.mark.parametrize("alpha,w,ess", [
    (0.01, (0.731, 0.269), 1.65), (0.1, (0.525, 0.475), 1.99), (1.0, (0.5025, 0.4975), None)])
def test_appendix_weights(alpha, w, ess):
    r = torch.tensor([[-1.00], [-1.01]], dtype=torch.float64)  # [K=2, B=1]
    weights = candidate_weights(r, alpha)
    assert weights.dtype == torch.float64
    digits = 4 if alpha == 1.0 else 3
    assert [round(x, digits) for x in weights[:, 0].tolist()] == list(w)
    if ess is not None:
        assert abs(effective_sample_size(weights)[0].item() - ess) < 0.01  # 1.650, 1.995
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(BdgenError, match="alpha"):
            candidate_weights(r, bad)


# --- calibration ----------------------------------------------------------------------------
def test_p90_examples():
    assert p90([1, 1, 1, 2, 2, 3, 5]) == pytest.approx(3.8, abs=1e-12)
    assert p90([1, 1, 1, 2]) == pytest.approx(1.7, abs=1e-12)
    assert p90([0, 0, 1, 1, 0, 1, 2, 0]) == p90([1, 1, 1, 2])   # only positive values
    assert p90([]) == 1.0 and p90([0.0, 0.0]) == 1.0
    assert p90([2.5]) == 2.5


def test_calibrate_on_hand_built_graphs():
    cs = compile_specs(CS2)
    # one_kitchen violations 0,1,2 ; no_bath_kitchen 0,1,2,1 ; between 2,1,0,0 ...
    graphs = [
        Graph((KITCHEN, LIVING_ROOM, BATHROOM, BATHROOM), ((0, 1, 2),)),          # all 0
        Graph((LIVING_ROOM, BATHROOM), ((0, 1, 2),)),                             # k 1, r 1
        Graph((KITCHEN, KITCHEN, KITCHEN, BATHROOM), ((0, 3, 2), (1, 3, 5))),     # k 2, f 2
        Graph((KITCHEN, BATHROOM, LIVING_ROOM), ((0, 1, 2), (0, 2, 4))),          # f 1
    ]
    hard = [cs.hard(g) for g in graphs]
    assert hard == [(0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 0.0, 1.0), (2.0, 1.0, 2.0, 1.0),
                    (0.0, 0.0, 1.0, 1.0)]
    got = calibrate(cs, graphs)
    assert list(got) == list(cs.names)
    assert got == {"one_kitchen": float(np.percentile([1, 2], 90)),
                   "kitchen_near_living": 1.0,
                   "no_bath_kitchen": float(np.percentile([2, 1], 90)),
                   "between_2_and_3_bathrooms": 1.0}
    assert got["one_kitchen"] == pytest.approx(1.9)
    # batched hard violations give the same numbers as the graph path
    from bdgen.data.graph import tokenize
    from bdgen.data.vocab import VocabConfig

    toks, pads = zip(*(tokenize(g, VocabConfig(8)) for g in graphs))
    t = hard_violations(cs, torch.from_numpy(np.stack(toks)), torch.from_numpy(np.stack(pads)))
    assert t.tolist() == [list(h) for h in hard]


def test_calibration_documents_and_strict_loading():
    cs = compile_specs(CS2)
    doc = calibration_document(cs, P90_CS2, {"model": "m", "method": "x"})
    assert list(doc["normalisers"]) == list(cs.names)
    assert doc["constraint_set"] == cs.identity
    loaded = read_calibration(doc, cs, "p90.json")
    assert loaded.normalisers == (1.0, 1.0, 2.0, 1.0) and loaded.identity == doc["identity"]
    assert read_calibration(dict(P90_CS2), cs).identity == doc["identity"]  # legacy layout
    cases = [
        ({k: v for k, v in P90_CS2.items() if k != "no_bath_kitchen"},
         "no normaliser for no_bath_kitchen"),
        ({**P90_CS2, "one_living": 1.0}, "unknown constraint(s) one_living"),
        ({**P90_CS2, "one_kitchen": 0.0}, "normaliser of 'one_kitchen' must be a finite"),
        ({**P90_CS2, "one_kitchen": float("nan")}, "must be a finite number > 0"),
        ({**P90_CS2, "one_kitchen": "1"}, "must be a finite number > 0"),
        ([1.0], "must be a JSON object"),
        ({**doc, "version": 2}, "unsupported calibration format"),
        ({**doc, "constraint_set": "0" * 64}, "computed for constraint set 000000000000"),
        ({**doc, "normalisers": [1.0]}, "'normalisers' must be an object"),
    ]
    for data, expected in cases:
        with pytest.raises(BdgenError) as ei:
            read_calibration(data, cs, "p90.json")
        assert expected in str(ei.value) and str(ei.value).startswith("p90.json: ")
