"""Method names <-> configurations (spec §5.8, §11 item 8)."""

from __future__ import annotations

import glob
import json
import os

import pytest

from bdgen.diffusion.method import LEGACY_CONFIG_KEYS, LEGACY_GRID, Method
from bdgen.errors import BdgenError

# The 36-name grid of §5.8: 22 loglinear names (= LEGACY_GRID), the 12 linear names are a
# subset of them, plus the 2 v2 names.
V2_NAMES = ("v2_llada_topp0.9_no_remask", "v2_llada_topp0.9_remdm_confidence_tsw1.0")


LINEAR_GRID = (
    [f"{u}_{s}_no_remask" for u in ("random", "llada") for s in ("argmax", "topp0.9")]
    + [f"random_topp0.9_remdm_cap_eta{e}" for e in ("0.2", "0.4", "0.6", "0.8", "1.0")]
    + [f"random_topp0.9_remdm_confidence_tsw{t}" for t in ("0.3", "0.5", "0.7")]
)


def test_grid_of_36_round_trips():
    assert len(LEGACY_GRID) == 22 == len(set(LEGACY_GRID))
    assert len(LINEAR_GRID) == 12 and set(LINEAR_GRID) <= set(LEGACY_GRID)
    grid = [*LEGACY_GRID, *LINEAR_GRID, *V2_NAMES]
    assert len(grid) == 36
    for name in (*grid, *("v2_" + n for n in LEGACY_GRID)):
        m = Method.parse(name)
        assert m.format() == name and Method.parse(m.format()) == m
        assert Method.from_legacy_config(m.legacy_config(), is_v2=m.v2) == m
    assert len({Method.parse(n) for n in LEGACY_GRID}) == 22  # distinct configs


def test_legacy_files_round_trip(legacy_dir):
    files = sorted(glob.glob(os.path.join(legacy_dir, "*.json")))
    assert len(files) == 22
    for f in files:
        with open(f) as fh:
            d = json.load(fh)
        m = Method.parse(d["method"])
        assert m.format() == d["method"] == os.path.basename(f)[:-5]
        assert m.legacy_config() == {k: d["config"][k] for k in LEGACY_CONFIG_KEYS}
        assert Method.from_legacy_config(d["config"], is_v2=False) == m
        assert m.v2 is False


def test_examples_table():
    m = Method.parse("llada_topp0.9_remdm_confidence_tsw0.5")
    assert (m.unmasking, m.top_p, m.temperature, m.remasking, m.eta, m.t_switch) == (
        "llada", 0.9, 0.0, "confidence", 0.0, 0.5)
    m = Method.parse("llada_topp0.9_remdm_cap_eta0.4")
    assert (m.remasking, m.eta, m.t_switch) == ("cap", 0.4, 1.0)
    m = Method.parse("random_argmax_no_remask")
    assert (m.top_p, m.temperature, m.remasking, m.eta, m.t_switch) == (None, 0.0, None, None,
                                                                       None)
    m = Method.parse("v2_llada_topp0.9_remdm_confidence_tsw1.0")
    assert m.v2 and m.fields()["version"] == "v2"
    assert Method.parse("random_temp0.5_no_remask").temperature == 0.5


def test_extensions_make_distinct_configs_distinct():
    cap = Method(unmasking="random", top_p=0.9, remasking="cap", eta=0.4)
    cap_half = Method(unmasking="random", top_p=0.9, remasking="cap", eta=0.4, t_switch=0.5)
    assert cap.format() == "random_topp0.9_remdm_cap_eta0.4"
    assert cap_half.format() == "random_topp0.9_remdm_cap_eta0.4_tsw0.5"
    assert Method.parse(cap_half.format()) == cap_half
    assert Method(top_p=1.0).format() == "random_topp1.0_no_remask"
    assert Method().format() == "random_argmax_no_remask"
    assert Method(temperature=0.7).format() == "random_temp0.7_no_remask"
    assert Method.parse("llada_topp1.0_remdm_rescale_eta0.5").remasking == "rescale"


def test_normalisation():
    # temperature ignored under top_p, eta ignored for confidence
    assert Method(top_p=0.9, temperature=0.5) == Method(top_p=0.9)
    assert Method(top_p=0.9, remasking="confidence", eta=0.4).eta == 0.0
    # an integer literal is not the canonical spelling of a float (issue 13 item 8): refused,
    # with the canonical name as the hint
    with pytest.raises(BdgenError, match="closest valid name: "
                       "'random_topp0.9_remdm_confidence_tsw1.0'"):
        Method.parse("random_topp0.9_remdm_confidence_tsw1")
    assert Method(remasking="cap").eta == 0.1 and Method(remasking="cap").t_switch == 1.0


def test_fields_and_legacy_config():
    m = Method.parse("random_topp0.9_remdm_cap_eta0.2")
    assert m.fields() == {"unmasking": "random", "top_p": 0.9, "temperature": 0.0,
                          "strategy": "cap", "eta": 0.2, "t_switch": 1.0, "version": "v1",
                          "precision": "fp32"}
    assert Method().legacy_config()["remasking_enabled"] is False


@pytest.mark.parametrize("name,fragment", [
    ("lada_topp0.9_no_remask", "llada_topp0.9_no_remask"),
    ("llada_top0.9_no_remask", "llada_topp0.9_no_remask"),
    ("random_topp0.9_remdm_capp_eta0.4", "random_topp0.9_remdm_cap_eta0.4"),
    ("llada_topp0.9_remdm_confidence_tsw1.O", "llada_topp0.9_remdm_confidence_tsw1.0"),
])
def test_parse_errors_suggest(name, fragment):
    with pytest.raises(BdgenError) as ei:
        Method.parse(name)
    msg = str(ei.value)
    assert fragment in msg and "\n" not in msg


@pytest.mark.parametrize("name", [
    "random_topp0.0_no_remask", "random_topp1.5_no_remask",
    "random_topp0.9_remdm_confidence_tsw0.0", "random_topp0.9_remdm_confidence_tsw1.5",
    "random_topp0.9_remdm_cap_eta0.4_tsw2.0", "random_temp0_no_remask",
])
def test_parse_out_of_range(name):
    with pytest.raises(BdgenError):
        Method.parse(name)


def test_constructor_validation():
    for kw in ({"unmasking": "greedy"}, {"remasking": "foo"}, {"top_p": 0.0},
               {"remasking": "cap", "eta": -0.1}, {"remasking": "cap", "t_switch": 0.0},
               {"eta": 0.1}, {"temperature": -1.0}, {"top_p": float("nan")}):
        with pytest.raises(BdgenError):
            Method(**kw)
    with pytest.raises(BdgenError, match="random, llada"):
        Method(unmasking="greedy")


def test_compiled_suffix_names_the_kernels_after_the_precision() -> None:
    m = Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16_compiled")
    assert (m.precision, m.kernels) == ("bf16", "compiled")
    assert m.legacy_config()["kernels"] == "compiled" and m.fields()["kernels"] == "compiled"
    assert "kernels" not in Method.parse("llada_topp0.9_no_remask").legacy_config()
    assert Method.parse("random_argmax_no_remask_compiled").precision == "fp32"
    with pytest.raises(BdgenError, match="closest valid name: 'llada_topp0.9_no_remask_bf16_"
                                         "compiled'"):
        Method.parse("llada_topp0.9_no_remask_compiled_bf16")
    with pytest.raises(BdgenError, match="unknown kernels 'fused'"):
        Method(kernels="fused")


def test_the_v2_prefix_comes_from_the_models_version() -> None:
    m = Method.parse("llada_topp0.9_no_remask")
    assert m.on_model("v2").format() == "v2_llada_topp0.9_no_remask"
    assert m.on_model("v1") == m
    assert Method.parse("v2_llada_topp0.9_no_remask").on_model("v2").v2
    with pytest.raises(BdgenError, match=r"^method 'v2_llada_topp0.9_no_remask' has the v2_ "
                       r"prefix but the checkpoint is a v1 model \(the prefix comes from the "
                       r"checkpoint\)$"):
        Method.parse("v2_llada_topp0.9_no_remask").on_model("v1", "v2_llada_topp0.9_no_remask")
