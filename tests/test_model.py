"""Denoiser (spec §2): parameter counts, initial logits, PAD key masking, time and hooks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _model_support import randomised, rplan_batch

from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_PAD,
    NODE_MASK,
    NODE_PAD,
    RPLAN_VOCAB,
    VocabConfig,
)
from bdgen.errors import BdgenError
from bdgen.model.denoiser import (
    MODEL_PRESETS,
    BDDenoiser,
    ModelConfig,
    count_parameters,
    timestep_embedding,
)


@pytest.mark.parametrize("name,expected", [("small", 1_281_564), ("base", 7_389_724)])
def test_parameter_counts_match_spec(name: str, expected: int) -> None:
    assert count_parameters(BDDenoiser(MODEL_PRESETS[name], RPLAN_VOCAB)) == expected


def test_initial_logits_are_zero_except_subs_classes() -> None:
    tokens, pads = rplan_batch()
    model = BDDenoiser(MODEL_PRESETS["small"], RPLAN_VOCAB)
    node_logits, edge_logits = model(tokens, pads, 0.3)
    assert node_logits.shape == (3, 8, 15) and edge_logits.shape == (3, 28, 13)
    assert node_logits.dtype == torch.float32
    for logits, blocked in ((node_logits, [NODE_MASK, NODE_PAD]),
                            (edge_logits, [EDGE_MASK, EDGE_PAD])):
        assert torch.isneginf(logits[..., blocked]).all()
        keep = [c for c in range(logits.shape[-1]) if c not in blocked]
        assert (logits[..., keep] == 0).all()
    # Uniform softmax over the 13 room types / the 11 real edge classes.
    node_ce = torch.nn.functional.cross_entropy(node_logits.reshape(-1, 15),
                                                torch.zeros(24, dtype=torch.long))
    edge_ce = torch.nn.functional.cross_entropy(edge_logits.reshape(-1, 13),
                                                torch.full((84,), 10))
    assert node_ce.item() == pytest.approx(math.log(13), abs=1e-6)
    assert edge_ce.item() == pytest.approx(math.log(11), abs=1e-6)


def test_pad_tokens_do_not_change_real_positions() -> None:
    tokens, pads = rplan_batch()
    model = randomised(BDDenoiser, dataclasses.replace(MODEL_PRESETS["tiny"], n_layers=2))
    node_a, edge_a = model(tokens, pads, 0.5)
    changed = tokens.clone()
    gen = torch.Generator().manual_seed(1)
    noise_nodes = torch.randint(0, 15, (3, 8), generator=gen)
    noise_edges = torch.randint(0, 13, (3, 28), generator=gen)
    changed[:, :8] = torch.where(pads[:, :8], tokens[:, :8], noise_nodes)
    changed[:, 8:] = torch.where(pads[:, 8:], tokens[:, 8:], noise_edges)
    assert not torch.equal(changed, tokens)
    node_b, edge_b = model(changed, pads, 0.5)
    real_n, real_e = pads[:, :8], pads[:, 8:]
    torch.testing.assert_close(node_a[real_n], node_b[real_n], rtol=0, atol=1e-5)
    torch.testing.assert_close(edge_a[real_e], edge_b[real_e], rtol=0, atol=1e-5)
    # ... whereas a real token does change them (the test is not vacuous).
    changed[0, 0] = 5
    node_c, _ = model(changed, pads, 0.5)
    assert not torch.allclose(node_a[0, 1], node_c[0, 1])


def test_time_argument_forms_and_errors() -> None:
    tokens, pads = rplan_batch()
    model = randomised(BDDenoiser, MODEL_PRESETS["tiny"])
    ref = model(tokens, pads, torch.full((3,), 0.25))[0]
    for t in (0.25, torch.tensor(0.25), torch.tensor([0.25]),
              torch.tensor(0.25, dtype=torch.float64)):
        torch.testing.assert_close(model(tokens, pads, t)[0], ref)
    per_sample = model(tokens, pads, torch.tensor([0.1, 0.5, 0.9]))[0]
    assert not torch.allclose(per_sample[0], per_sample[2])
    with pytest.raises(ValueError):
        model(tokens, pads, torch.zeros(2))
    with pytest.raises(ValueError):
        model(tokens, pads, torch.zeros(3, 1))


def test_pre_embedded_replaces_token_embedding() -> None:
    tokens, pads = rplan_batch()
    model = randomised(BDDenoiser, MODEL_PRESETS["tiny"])
    direct = model(tokens, pads, 0.4)
    hooked = model(torch.zeros_like(tokens), pads, 0.4, pre_embedded=model.embed(tokens))
    torch.testing.assert_close(direct[0], hooked[0])
    torch.testing.assert_close(direct[1], hooked[1])


def test_sinusoid_is_cos_first_and_positional_encoding_is_order_invariant() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0] == pytest.approx(math.cos(1.0)) and emb[1, 4] == pytest.approx(math.sin(1.0))
    assert timestep_embedding(torch.tensor([0.3]), 7).shape == (1, 7)
    model = randomised(BDDenoiser, MODEL_PRESETS["tiny"])
    pe = model.positional_encoding()
    v = RPLAN_VOCAB
    expected = (model.entity_type_emb.weight[1] + model.pair_index_emb.weight[2]
                + model.pair_index_emb.weight[5])
    torch.testing.assert_close(pe[v.n_max + v.pair_to_pos(2, 5)], expected)


def test_other_vocabulary_and_bad_configs() -> None:
    vocab = VocabConfig(5)
    model = BDDenoiser(MODEL_PRESETS["tiny"], vocab)
    tokens = torch.zeros(2, vocab.seq_len, dtype=torch.long)
    node_logits, edge_logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool), 0.5)
    assert node_logits.shape == (2, 5, 15) and edge_logits.shape == (2, 10, 13)
    with pytest.raises(ValueError):
        model(torch.zeros(2, 36, dtype=torch.long), torch.ones(2, 36, dtype=torch.bool), 0.5)
    with pytest.raises(BdgenError):
        ModelConfig(d_model=30, n_heads=4, cond_dim=30)
    with pytest.raises(BdgenError):
        ModelConfig(d_model=32, n_heads=4, cond_dim=64)
