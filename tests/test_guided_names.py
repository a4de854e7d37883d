"""Guided method names (spec G6): the 46 legacy names, canonical names, fields and configs."""

from __future__ import annotations

import pytest

from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.guidance.names import LEGACY_ROUND_KEYS, LEGACY_TAGS, Guidance

P = "llada_topp0.9_"
NR, CF = f"{P}no_remask", f"{P}remdm_confidence_tsw1.0"

# G6.3: every legacy guided name of rounds 1-7 (46)
LEGACY_46 = (
    [f"{NR}_guided_basic_K{k}_a{a}" for k in (4, 16) for a in ("0.1", "1.0", "5.0")]
    + [f"{b}_guided_kstar_K{k}_a0.1" for b in (NR, CF) for k in (4, 8, 10, 12, 14, 16, 20, 24)]
    + [f"{b}_guided_alpha_K16_a{a}" for b in (NR, CF)
       for a in ("0.01", "0.05", "0.1", "0.15", "0.3", "0.5")]
    + [f"{b}_guided_r4{r}_K16_a0.01" for b in (NR, CF) for r in ("soft", "hard")]
    + [f"{CF}_guided_{t}_K16_a0.01" for t in ("r5optA", "r5optB", "r6lockA", "r6lockB",
                                             "r6bLockA", "r6bLockB", "r7decayA", "r7decayB")]
)


def test_the_46_legacy_names_round_trip():
    assert len(LEGACY_46) == len(set(LEGACY_46)) == 46
    methods = [Method.parse(n) for n in LEGACY_46]
    for name, m in zip(LEGACY_46, methods):
        assert m.format() == name and Method.parse(m.format()) == m
        assert m.guided and m.guidance.legacy_tag in LEGACY_TAGS
        assert m.unguided.format() in (NR, CF)
        assert Method.from_legacy_config(m.legacy_config(), name=name) == m
    assert len(set(methods)) == 46


@pytest.mark.parametrize("tag,fields", [
    ("basic", {"reward_mode": "soft", "attribution_boost": False, "ema_lock": False}),
    ("r4hard", {"reward_mode": "hard", "attribution_boost": True}),
    ("r5optA", {"fresh_logits_remask": True, "protect_just_unmasked": False}),
    ("r5optB", {"protect_just_unmasked": True, "fresh_logits_remask": False}),
    ("r6lockB", {"ema_lock": True, "ema_beta": 0.85, "ema_lock_consecutive": 3,
                 "ema_lock_deadline": 0.5, "ema_lock_warmup": 0.0}),
    ("r6bLockA", {"ema_lock": True, "ema_lock_warmup": 0.2, "fresh_logits_remask": True}),
    ("r7decayB", {"ema_lock": False, "remask_decay_power": 3.0, "protect_just_unmasked": True}),
])
def test_legacy_tags_stand_for_their_rounds_settings(tag, fields):
    f = Method.parse(f"{CF}_guided_{tag}_K16_a0.01").fields()
    assert f["K"] == 16 and f["alpha"] == 0.01 and f["phi"] == "linear"
    assert f["guidance_tag"] == tag
    assert {k: f[k] for k in fields} == fields


def test_round4_boost_only_on_the_confidence_runs():
    assert Method.parse(f"{CF}_guided_r4soft_K16_a0.01").guidance.attribution_boost
    assert not Method.parse(f"{NR}_guided_r4soft_K16_a0.01").guidance.attribution_boost


def test_legacy_configs_carry_their_rounds_keys():
    def keys(tag, base=CF):
        return set(Method.parse(f"{base}_guided_{tag}_K16_a0.01").legacy_config())

    sampling = {"temperature", "top_p", "unmasking_mode", "remasking_enabled"}
    assert keys("alpha") == sampling | set(LEGACY_ROUND_KEYS["R3"])
    assert len(keys("alpha")) == 8 and len(keys("r4soft")) == 9
    assert len(keys("r5optA")) == 11 and len(keys("r6lockA")) == 15
    assert len(keys("r6bLockA")) == len(keys("r7decayA")) == 16
    # round 7 wrote the lock parameters although the lock was off
    cfg = Method.parse(f"{CF}_guided_r7decayA_K16_a0.01").legacy_config()
    assert (cfg["ema_lock"], cfg["ema_beta"], cfg["ema_lock_consecutive"],
            cfg["ema_lock_deadline"], cfg["ema_lock_warmup"]) == (False, 0.85, 3, 0.5, 0.0)


def test_a_legacy_name_never_equals_a_canonical_one():
    legacy = Method.parse(f"{CF}_guided_r6lockB_K16_a0.01")
    g = legacy.guidance
    canonical = Method.parse(
        f"{CF}_guided_K16_a0.01_soft_linear_protect_lock_b0.85_c3_d0.5_w0.0")
    assert canonical.guidance.legacy_tag is None
    assert {k: v for k, v in canonical.fields().items() if k != "guidance_tag"} == \
        {k: v for k, v in legacy.fields().items() if k != "guidance_tag"}
    assert canonical != legacy and canonical.format() != legacy.format()
    # a legacy tag cannot be given other settings than it stood for
    with pytest.raises(BdgenError, match="stands for other guided settings"):
        Method(unmasking="llada", top_p=0.9, remasking="confidence",
               guidance=Guidance(num_candidates=16, alpha=0.01, protect_just_unmasked=True,
                                 legacy_tag="r5optA"))
    assert g.K == 16


def test_canonical_names_spell_every_field():
    name = (f"v2_{CF}_bf16_guided_K50_a0.01_hard_log1p_fresh_protect_boost"
            "_lock_b0.9_c5_d0.3_w0.1_decay2.5")
    m = Method.parse(name)
    g = m.guidance
    assert (m.v2, m.precision, g.num_candidates, g.alpha, g.reward_mode, g.phi) == (
        True, "bf16", 50, 0.01, "hard", "log1p")
    assert (g.fresh_logits_remask, g.protect_just_unmasked, g.attribution_boost) == (
        True, True, True)
    assert (g.ema_lock, g.ema_beta, g.ema_consecutive, g.ema_deadline, g.ema_warmup) == (
        True, 0.9, 5, 0.3, 0.1)
    assert g.decay_power == 2.5 and m.format() == name
    cfg = m.legacy_config()
    assert cfg["remasking_strategy"] == "confidence" and cfg["remask_decay_power"] == 2.5
    assert cfg["num_candidates"] == 50 and cfg["guidance_alpha"] == 0.01
    assert Method.from_legacy_config(cfg, is_v2=True) == m
    # defaults: the lock switched on without values takes beta .85, C 3, D .5, W 0
    on = Guidance(ema_lock=True)
    assert (on.ema_beta, on.ema_consecutive, on.ema_deadline, on.ema_warmup) == (
        0.85, 3, 0.5, 0.0)
    off = Method.parse(f"{NR}_guided_K8_a1.0_soft_linear")
    assert off.fields()["ema_beta"] is None and off.guidance == Guidance()


def test_unguided_names_and_fields_unchanged():
    m = Method.parse(CF)
    assert not m.guided and m.unguided is m
    assert set(m.fields()) == {"unmasking", "top_p", "temperature", "strategy", "eta",
                               "t_switch", "version", "precision"}
    assert set(m.legacy_config()) == {"temperature", "top_p", "unmasking_mode",
                                      "remasking_enabled", "remasking_strategy",
                                      "remasking_eta", "remasking_t_switch"}


def test_from_legacy_config_checks_the_name():
    name = f"{CF}_guided_kstar_K8_a0.1"
    cfg = {**Method.parse(name).legacy_config(), "is_v2": False}
    with pytest.raises(BdgenError, match="give the method name"):
        Method.from_legacy_config(cfg)
    with pytest.raises(BdgenError, match="num_candidates = 12"):
        Method.from_legacy_config({**cfg, "num_candidates": 12}, name=name)
    with pytest.raises(BdgenError, match="is v1 but the config says is_v2 = True"):
        Method.from_legacy_config({**cfg, "is_v2": True}, name=name)
    with pytest.raises(BdgenError, match="lacks key 'reward_mode'"):
        Method.from_legacy_config({k: v for k, v in cfg.items() if k != "reward_mode"},
                                  name=name)
    with pytest.raises(BdgenError, match="not guided"):
        Method.from_legacy_config(cfg, name=CF)
