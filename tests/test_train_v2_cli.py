"""``bdgen train --noise learned`` end to end: a v2 checkpoint, resume, then ``bdgen generate``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.dataset import prepare_synthetic
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import EDGE_MASK, NODE_MASK
from bdgen.diffusion.process import RateNetworkProcess, forward_process_of
from bdgen.diffusion.rate_network import RateNetworkConfig, build_rate_network
from bdgen.model.checkpoint import load_checkpoint


def _train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_train_learned_writes_a_v2_checkpoint_and_generates(tmp_path):
    data = tmp_path / "data.pt"
    prepare_synthetic(120, seed=1).save(data)
    out = tmp_path / "run"
    base = ("--dataset", data, "--noise", "learned", "--model", "tiny", "--batch-size", 16,
            "--checkpoint-every", 3, "--val-every", 3, "--device", "cpu", "--quiet")
    common = (*base, "--out", out)
    r = _train(*common, "--steps", 3)
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint_final.pt")
    assert ckpt.version == "v2" and ckpt.noise["type"] == "learned"
    assert ckpt.noise["tau_start"] == 1.0 and ckpt.noise["lambda_edge"] == 1.0
    assert ckpt.train_config["is_mode"] == "off"
    assert RateNetworkConfig.from_dict(ckpt.rate_network_config) == RateNetworkConfig()
    assert isinstance(forward_process_of(ckpt), RateNetworkProcess)
    net = build_rate_network(ckpt)
    assert sum(p.numel() for p in net.parameters()) == 4740
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    [row] = [r for r in rows if "val_loss" in r]
    assert row["step"] == 3 and row["gumbel_temp"] == pytest.approx(0.1)
    assert [r["step"] for r in rows if "train_loss" in r] == [3]

    # resume to more steps: the rate network continues from the checkpoint
    r = _train(*common, "--steps", 6, "--resume")
    assert r.exit_code == 0, r.output
    resumed = load_checkpoint(out / "checkpoint_final.pt")
    assert resumed.step == 6 and resumed.version == "v2"
    assert any(not torch.equal(resumed.rate_network_state[k], ckpt.rate_network_state[k])
               for k in ckpt.rate_network_state)

    # importance sampling is not a v2 option
    r = _train(*base, "--out", tmp_path / "other", "--steps", 2, "--is-mode", "legacy")
    assert r.exit_code == 2 and "is_mode must be 'off'" in r.output

    gen_out = tmp_path / "samples"
    r = CliRunner().invoke(cli, ["generate", "--model", str(out / "checkpoint_final.pt"),
                                 "--method", "llada_topp0.9_remdm_confidence_tsw1.0",
                                 "--seeds", "7", "--num-samples", 6, "--steps", 8,
                                 "--device", "cpu", "--out-dir", str(gen_out)])
    assert r.exit_code == 0, r.output
    [path] = list(gen_out.rglob("*.pt"))
    sf = load_samples(path)
    assert sf.method == "v2_llada_topp0.9_remdm_confidence_tsw1.0"
    assert sf.model["version"] == "v2" and sf.model["id"].startswith("v2-learned-")
    assert not (sf.tokens[:, :8] == NODE_MASK).any() and not (sf.tokens[:, 8:] == EDGE_MASK).any()
