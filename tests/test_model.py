"""Denoiser (spec §2): parameter counts, initial logits, PAD key masking, time and hooks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bdgen.data.graph import Graph, tokenize_many
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

GRAPHS = [
    Graph((0, 2, 3, 9), ((0, 1, 2), (0, 2, 7), (1, 3, 4))),
    Graph((0, 1, 7, 7, 3, 2), ((0, 1, 2), (0, 5, 6), (2, 3, 7), (4, 5, 0))),
    Graph((0, 1, 2, 3, 4, 5, 6, 7), ((0, 7, 9), (3, 6, 1))),
]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens, pads = tokenize_many(GRAPHS, RPLAN_VOCAB)
    return torch.from_numpy(tokens), torch.from_numpy(pads)


def _randomised(config: ModelConfig) -> BDDenoiser:
    """A model whose zero-initialised parts are random, so outputs depend on the input."""
    torch.manual_seed(0)
    model = BDDenoiser(config, RPLAN_VOCAB).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("name,expected", [("small", 1_281_564), ("base", 7_389_724)])
def test_parameter_counts_match_spec(name: str, expected: int) -> None:
    assert count_parameters(BDDenoiser(MODEL_PRESETS[name], RPLAN_VOCAB)) == expected


def test_initial_logits_are_zero_except_subs_classes() -> None:
    tokens, pads = _batch()
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
    tokens, pads = _batch()
    model = _randomised(dataclasses.replace(MODEL_PRESETS["tiny"], n_layers=2))
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
    tokens, pads = _batch()
    model = _randomised(MODEL_PRESETS["tiny"])
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
    tokens, pads = _batch()
    model = _randomised(MODEL_PRESETS["tiny"])
    direct = model(tokens, pads, 0.4)
    hooked = model(torch.zeros_like(tokens), pads, 0.4, pre_embedded=model.embed(tokens))
    torch.testing.assert_close(direct[0], hooked[0])
    torch.testing.assert_close(direct[1], hooked[1])


def test_sinusoid_is_cos_first_and_positional_encoding_is_order_invariant() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0] == pytest.approx(math.cos(1.0)) and emb[1, 4] == pytest.approx(math.sin(1.0))
    assert timestep_embedding(torch.tensor([0.3]), 7).shape == (1, 7)
    model = _randomised(MODEL_PRESETS["tiny"])
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


def test_packed_cpu_path_equals_dense_path() -> None:
    """On CPU the token-wise layers run on real rows only; real outputs must not change."""
    tokens, pads = _batch()
    model = _randomised(MODEL_PRESETS["tiny"])
    t = torch.tensor([0.2, 0.6, 0.9])
    model.pack_real_positions = False
    dense = model(tokens, pads, t)
    model.pack_real_positions = True
    packed = model(tokens, pads, t)
    torch.testing.assert_close(packed[0][pads[:, :8]], dense[0][pads[:, :8]])
    torch.testing.assert_close(packed[1][pads[:, 8:]], dense[1][pads[:, 8:]])
    model.pack_real_positions = None
    model.use_reference_kernels()   # the plain computation, as the original did it
    reference = model(tokens, pads, t)
    torch.testing.assert_close(reference[0], dense[0])


def _mixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Room counts repeated out of order, so grouping by PAD pattern must scatter back."""
    graphs = [GRAPHS[i] for i in (2, 0, 1, 0, 2, 1, 0)]
    tokens, pads = tokenize_many(graphs, RPLAN_VOCAB)
    return torch.from_numpy(tokens), torch.from_numpy(pads)


def _real(logits: tuple[torch.Tensor, torch.Tensor], pads: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at real positions, without the -inf SUBS classes."""
    return logits[0][pads[:, :8]][:, :13], logits[1][pads[:, 8:]][:, :11]


def test_bucketed_rows_land_at_their_positions() -> None:
    """Each sample's real rows go through the blocks with its own group and come back to
    its own positions, whatever the order of room counts in the batch."""
    tokens, pads = _mixed_batch()
    model = _randomised(MODEL_PRESETS["tiny"])
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
    model = _randomised(MODEL_PRESETS["tiny"])
    model.pack_real_positions = pack
    per_row = model(tokens, pads, torch.full((len(tokens),), 0.37))
    for t in (0.37, torch.tensor(0.37), torch.tensor([0.37])):
        shared = model(tokens, pads, t)
        for got, want in zip(_real(shared, pads), _real(per_row, pads)):
            torch.testing.assert_close(got, want)
            assert not torch.equal(got, torch.zeros_like(got))
    model.use_reference_kernels()  # per-row embeddings, no fold: exactly the dense path
    reference = model(tokens, pads, 0.37)
    model.share_time = True
    model.pack_real_positions = False
    dense_per_row = model(tokens, pads, torch.full((len(tokens),), 0.37))
    assert torch.equal(reference[0], dense_per_row[0])


def test_packed_training_gradients_equal_dense() -> None:
    """Training on CPU gathers the real rows around each attention; every parameter gets
    a finite gradient equal to the dense path's."""
    tokens, pads = _mixed_batch()
    model = _randomised(MODEL_PRESETS["tiny"]).train()
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
    tokens, pads = _batch()
    model = _randomised(dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.3))
    model.eval()
    a = model(tokens, pads, 0.5)[0]
    torch.testing.assert_close(model(tokens, pads, 0.5)[0], a)
    model.train()
    for pack in (False, True):
        model.pack_real_positions = pack
        b = model(tokens, pads, 0.5)[0]
        assert torch.isfinite(b[pads[:, :8]][:, :13]).all() and not torch.allclose(a, b)
