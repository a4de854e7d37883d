"""The fast denoiser paths (:mod:`bdgen.model.fast_forward`) against the reference model:
bit-identical where the computation is the same, equal up to float rounding where the fast
path reorders it (folded time, PAD rows skipped)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _model_support import RPLAN_GRAPHS, randomised, rplan_batch

from bdgen.model.denoiser import MODEL_PRESETS, BDDenoiser
from bdgen.model.fast_forward import FastDenoiser


def _reference_twin(model: FastDenoiser) -> BDDenoiser:
    ref = BDDenoiser(model.config, model.vocab)
    ref.load_state_dict(model.state_dict())
    return ref.train(model.training)


@pytest.mark.parametrize("train", [False, True])
def test_reference_modules_are_the_reference_bit_for_bit(train: bool) -> None:
    """``use_reference_modules()`` runs the reference forward; so does the fast class with
    every speed-up off, at per-row times (eval) or with the same RNG (training)."""
    tokens, pads = _mixed_batch()
    config = dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.2)
    model = randomised(FastDenoiser, config).train(train)
    ref = _reference_twin(model)
    t = torch.linspace(0.1, 0.9, len(tokens))
    torch.manual_seed(3)
    want = ref(tokens, pads, t)
    off = randomised(FastDenoiser, config).train(train)
    off.pack_real_positions, off.share_time, off.fast_cpu_dropout = False, False, False
    model.use_reference_modules()
    for m in (model, off):
        torch.manual_seed(3)
        got = m(tokens, pads, t)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_fast_eval_paths_are_deterministic_and_close_to_reference() -> None:
    tokens, pads = _mixed_batch()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"])
    ref = _reference_twin(model)
    for t in (0.37, torch.linspace(0.1, 0.9, len(tokens))):
        want = ref(tokens, pads, t)
        for pack in (False, True):
            model.pack_real_positions = pack
            got, again = model(tokens, pads, t), model(tokens, pads, t)
            assert torch.equal(got[0], again[0])
            for g, w in zip(_real(got, pads), _real(want, pads)):
                torch.testing.assert_close(g, w)


def test_packed_cpu_path_equals_dense_path() -> None:
    """On CPU the token-wise layers run on real rows only; real outputs must not change."""
    tokens, pads = rplan_batch()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"])
    t = torch.tensor([0.2, 0.6, 0.9])
    model.pack_real_positions = False
    dense = model(tokens, pads, t)
    model.pack_real_positions = True
    packed = model(tokens, pads, t)
    torch.testing.assert_close(packed[0][pads[:, :8]], dense[0][pads[:, :8]])
    torch.testing.assert_close(packed[1][pads[:, 8:]], dense[1][pads[:, 8:]])
    model.pack_real_positions = None
    model.use_reference_modules()   # the plain computation, as the original did it
    reference = model(tokens, pads, t)
    torch.testing.assert_close(reference[0], dense[0])


def _mixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Room counts repeated out of order, so grouping by PAD pattern must scatter back."""
    return rplan_batch([RPLAN_GRAPHS[i] for i in (2, 0, 1, 0, 2, 1, 0)])


def _real(logits: tuple[torch.Tensor, torch.Tensor], pads: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at real positions, without the -inf SUBS classes."""
    return logits[0][pads[:, :8]][:, :13], logits[1][pads[:, 8:]][:, :11]


def test_bucketed_rows_land_at_their_positions() -> None:
    """Each sample's real rows go through the blocks with its own group and come back to
    its own positions, whatever the order of room counts in the batch."""
    tokens, pads = _mixed_batch()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"])
    t = torch.linspace(0.1, 0.9, len(tokens))
    model.pack_real_positions = True
    packed = model(tokens, pads, t)
    for i in range(len(tokens)):  # one sample alone: dense path, its own key mask
        model.pack_real_positions = False
        alone = model(tokens[i:i + 1], pads[i:i + 1], t[i:i + 1])
        for got, want in zip(_real(tuple(x[i:i + 1] for x in packed), pads[i:i + 1]),
                             _real(alone, pads[i:i + 1])):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("pack", [False, True])
def test_shared_time_fold_equals_per_row_time(pack: bool) -> None:
    """A number t (a sampling step) is embedded once and folded into the blocks' weights;
    the logits equal those of the same t given per row, up to float rounding."""
    tokens, pads = _mixed_batch()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"])
    model.pack_real_positions = pack
    per_row = model(tokens, pads, torch.full((len(tokens),), 0.37))
    for t in (0.37, torch.tensor(0.37), torch.tensor([0.37])):
        shared = model(tokens, pads, t)
        for got, want in zip(_real(shared, pads), _real(per_row, pads)):
            torch.testing.assert_close(got, want)
            assert not torch.equal(got, torch.zeros_like(got))
    model.use_reference_modules()  # per-row embeddings, no fold: exactly the dense path
    reference = model(tokens, pads, 0.37)
    model.reference = False
    model.share_time = True
    model.pack_real_positions = False
    dense_per_row = model(tokens, pads, torch.full((len(tokens),), 0.37))
    assert torch.equal(reference[0], dense_per_row[0])


def test_packed_training_gradients_equal_dense() -> None:
    """Training on CPU gathers the real rows around each attention; every parameter gets
    a finite gradient equal to the dense path's."""
    tokens, pads = _mixed_batch()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"]).train()
    t = torch.linspace(0.1, 0.9, len(tokens))
    grads = []
    for pack in (True, False):
        model.zero_grad()
        model.pack_real_positions = pack
        node, edge = model(tokens, pads, t)
        (node[pads[:, :8]][:, :13].square().mean() + edge[pads[:, 8:]][:, :11].mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for got, want in zip(*grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training() -> None:
    tokens, pads = rplan_batch()
    model = randomised(FastDenoiser, dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.3))
    model.eval()
    a = model(tokens, pads, 0.5)[0]
    torch.testing.assert_close(model(tokens, pads, 0.5)[0], a)
    model.train()
    for pack in (False, True):
        model.pack_real_positions = pack
        b = model(tokens, pads, 0.5)[0]
        assert torch.isfinite(b[pads[:, :8]][:, :13]).all() and not torch.allclose(a, b)
