"""``bdgen generate`` end to end on a tiny checkpoint: files, identities, errors."""

from __future__ import annotations

import torch
from _model_support import perturb
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.model.checkpoint import Checkpoint, save_checkpoint
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser
from bdgen.pipeline.generate import generate
from bdgen.pipeline.workspace import MARKER, Workspace
from bdgen.util.logs import console_logging

ROOMS_DIST = [0.0, 0.0, 0.0, 0.05, 0.15, 0.3, 0.3, 0.2]


def make_checkpoint(path, version="v1"):
    m = FastDenoiser(MODEL_PRESETS["tiny"], RPLAN_VOCAB)
    perturb(m.parameters(), 0.3)
    ckpt = Checkpoint(version=version, model_config=MODEL_PRESETS["tiny"].to_dict(), n_max=8,
                      noise={"type": "loglinear", "eps": 0.001}, train_config={},
                      dataset_hash="a" * 64, dataset_id="synthetic-aaaaaaaaaaaa",
                      split={"seed": 42, "fractions": [0.8, 0.1, 0.1]},
                      num_rooms_distribution=ROOMS_DIST, edge_class_weights=[1.0] * 13,
                      step=0, model_state=m.state_dict())
    save_checkpoint(ckpt, path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, ["generate", *map(str, args)])


def files(d):
    return sorted(p for p in d.rglob("*") if p.is_file())


def test_generate_writes_self_describing_files(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.pt")
    out = tmp_path / "out"
    r = invoke("--model", ck, "--method", "llada_topp0.9_no_remask", "--method",
               "random_topp0.9_remdm_cap_eta0.4", "--seeds", "1,2", "--num-samples", 7,
               "--steps", 6, "--device", "cpu", "--out-dir", out)
    assert r.exit_code == 0, r.output
    written = files(out)
    assert len(written) == 4 and all(p.suffix == ".pt" for p in written)
    assert r.output.count("samples/s") == 4
    by = {(p.parent.name, p.name): load_samples(p) for p in written}
    a = by[("llada_topp0.9_no_remask", "seed-1_n7_s6.pt")]
    b = by[("random_topp0.9_remdm_cap_eta0.4", "seed-1_n7_s6.pt")]
    c = by[("llada_topp0.9_no_remask", "seed-2_n7_s6.pt")]
    assert torch.equal(a.num_rooms, b.num_rooms)            # same rooms for a seed
    assert a.method == "llada_topp0.9_no_remask" and a.seed == 1 and a.steps == 6
    assert a.method_config["unmasking_mode"] == "llada" and a.method_config["top_p"] == 0.9
    assert a.model["version"] == "v1" and a.model["noise"]["type"] == "loglinear"
    assert a.model["id"].startswith("v1-loglinear-") and len(a.model["sha256"]) == 64
    assert written[0].relative_to(out).parts[0] == a.model["id"]
    assert a.timings["device"] == "cpu" and "samples_per_s" not in a.timings
    assert "model_calls" not in a.timings  # how it was batched: MLflow has it
    assert not torch.equal(a.tokens, c.tokens) or not torch.equal(a.num_rooms, c.num_rooms)
    # same seed -> same samples
    again = generate(ck, ["llada_topp0.9_no_remask"], [1], num_samples=7, steps=6,
                     device="cpu", out_dir=tmp_path / "again", progress=False)
    assert torch.equal(load_samples(again[0].path).tokens, a.tokens)


def test_generate_into_workspace(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.pt")
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.marker.write_text("")
    res = generate(ck, ["random_argmax_no_remask"], [42], num_samples=3, steps=4, device="cpu",
                   workspace=ws, progress=False)
    assert res[0].path == ws.samples_path(res[0].model_id, "random_argmax_no_remask", 42, 3, 4)
    assert res[0].path.is_file() and (tmp_path / "ws" / MARKER).exists()


def _assert_error(tmp_path, result, fragment):
    assert result.exit_code != 0
    err = result.output.strip()
    assert err.startswith("error:") and "\n" not in err and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_cli_errors_write_nothing(tmp_path):
    ck = make_checkpoint(tmp_path / "ck.pt")
    base = ["--model", ck, "--num-samples", 3, "--steps", 3, "--device", "cpu",
            "--out-dir", tmp_path / "out"]
    ok = "llada_topp0.9_no_remask"
    cases = [
        (["--method", "lada_topp0.9_no_remask"], "llada_topp0.9_no_remask"),
        (["--method", ok, "--method", "random_topp1.5_no_remask"], "top_p"),
        (["--method", "random_topp0.9_remdm_confidence_tsw0.0"], "t_switch"),
        (["--method", "random_topp0.9_remdm_cap_eta-0.2"], "closest"),
        (["--method", "v2_llada_topp0.9_no_remask"], "v2_"),
        (["--method", ok, "--steps", 0], "steps"),
        (["--method", ok, "--num-samples", 0], "num-samples"),
        (["--method", ok, "--batch-size", 0], "batch-size"),
        (["--method", ok, "--seeds", "1,x"], "seed"),
    ]
    for extra, fragment in cases:
        _assert_error(tmp_path, invoke(*base, *extra), fragment)
    r = invoke("--model", tmp_path / "nope.pt", "--method", ok, "--out-dir", tmp_path / "out")
    _assert_error(tmp_path, r, "does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ck.read_bytes()[:200])
    _assert_error(tmp_path, invoke("--model", bad, "--method", ok, "--out-dir",
                                   tmp_path / "out"), "corrupt")
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    _assert_error(tmp_path, invoke("--model", other, "--method", ok, "--out-dir",
                                   tmp_path / "out"), "not a bdgen checkpoint")


def test_library_use_is_quiet_and_the_cli_handler_prints_the_messages(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "ck.pt")
    args = (ck, ["random_argmax_no_remask"], [3])
    kw = {"num_samples": 3, "steps": 4, "device": "cpu", "progress": False}
    generate(*args, out_dir=tmp_path / "a", **kw)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    with console_logging():
        (res,) = generate(*args, out_dir=tmp_path / "b", **kw)
    shown = capsys.readouterr()
    assert shown.out.startswith("random_argmax_no_remask seed 3: 3 samples x 4 steps in ")
    assert shown.out.endswith(f"model calls) -> {res.path}\n") and shown.err == ""
    generate(*args, out_dir=tmp_path / "c", **kw)  # the set-up is undone afterwards
    assert capsys.readouterr().out == ""
