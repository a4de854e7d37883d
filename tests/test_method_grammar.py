"""Property tests of the method-name grammar (issue 13 item 8) and of ``--where`` values.

On the canonical grammar ``parse(format(m)) == m`` and ``format(parse(name)) == name``;
every string that is not a canonical name is refused with a one-line error; a refused
look-alike gets its canonical name as the hint.
"""

from __future__ import annotations

import glob
import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bdgen.diffusion.method import KERNELS, UNMASKING_MODES, Method
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import MethodResult
from bdgen.guidance.names import PHIS, REWARD_MODES, Guidance, spell
from bdgen.report.profiles import apply_where, split_where

SHARED = os.environ.get("BDGEN_SHARED_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared")
LEGACY_ROOT = os.path.abspath(os.path.join(SHARED, "legacy_eval_results"))

PROPS = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def grid(lo_step: int, hi_step: int) -> st.SearchStrategy[float]:
    """Floats on the 0.0001 grid, steps lo_step .. hi_step."""
    return st.integers(lo_step, hi_step).map(lambda i: i / 10000)


unit_open = grid(1, 10000)          # (0, 1]
unit_closed = grid(0, 10000)        # [0, 1]


@st.composite
def guidance_for(draw, remasking: str | None) -> Guidance:
    acting = remasking is not None
    lock = acting and draw(st.booleans())
    kw = {
        "num_candidates": draw(st.integers(1, 1024)), "alpha": draw(grid(1, 10_000_000)),
        "reward_mode": draw(st.sampled_from(REWARD_MODES)), "phi": draw(st.sampled_from(PHIS)),
        "fresh_logits_remask": acting and draw(st.booleans()),
        "protect_just_unmasked": acting and draw(st.booleans()),
        "attribution_boost": remasking == "confidence" and draw(st.booleans()),
        "decay_power": draw(grid(0, 1_000_000)) if acting else 0.0,
    }
    if lock:
        kw.update(ema_lock=True, ema_beta=draw(grid(0, 9999)),
                  ema_consecutive=draw(st.integers(1, 1000)),
                  ema_deadline=draw(unit_closed), ema_warmup=draw(unit_closed))
    return Guidance(**kw)


@st.composite
def methods(draw) -> Method:
    kw: dict = {"unmasking": draw(st.sampled_from(UNMASKING_MODES)), "v2": draw(st.booleans()),
                "precision": draw(st.sampled_from(("fp32", "bf16", "tf32"))),
                "kernels": draw(st.sampled_from(KERNELS))}
    sampling = draw(st.sampled_from(("topp", "argmax", "temp")))
    if sampling == "topp":
        kw["top_p"] = draw(unit_open)
    elif sampling == "temp":
        kw["temperature"] = draw(grid(1, 1_000_000))
    remasking = draw(st.sampled_from((None, "confidence", "cap", "rescale")))
    if remasking is not None:
        kw.update(remasking=remasking, t_switch=draw(unit_open))
        if remasking != "confidence":
            kw["eta"] = draw(unit_closed)
    if draw(st.booleans()):
        kw["guidance"] = draw(guidance_for(remasking))
    return Method(**kw)


@PROPS
@given(methods())
def test_canonical_round_trip(m: Method) -> None:
    name = m.format()
    assert name.isascii() and name == name.strip()
    back = Method.parse(name)
    assert back == m and back.format() == name
    assert Method.from_legacy_config(m.legacy_config(), is_v2=m.v2) == m
    assert Method.from_legacy_config(m.legacy_config(), is_v2=m.v2, name=name) == m


# --- every non-canonical string is refused ------------------------------------------------
LOOKALIKE_DIGITS = {d: [chr(base + d) for base in (0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE)]
                    for d in range(10)}


def mutations(name: str) -> st.SearchStrategy[str]:
    digits = [i for i, c in enumerate(name) if c.isdigit()]
    numbers = [i for i in range(len(name)) if name[i].isdigit() and (
        i == 0 or not (name[i - 1].isdigit() or name[i - 1] == "."))]
    options = [
        st.sampled_from([" ", "\n", "\t", "\r\n", "\u00a0", "\u200b"]).map(
            lambda w: name + w),
        st.sampled_from([" ", "\n", "\ufeff"]).map(lambda w: w + name),
        st.sampled_from([name.upper(), name.replace("_", "-"), name + "_"]),
    ]
    if digits:
        options.append(st.tuples(st.sampled_from(digits), st.integers(0, 4)).map(
            lambda t: name[:t[0]] + LOOKALIKE_DIGITS[int(name[t[0]])][t[1]] + name[t[0] + 1:]))
        options.append(st.sampled_from(numbers).map(lambda i: name[:i] + "0" + name[i:]))
        options.append(st.sampled_from(digits).map(lambda i: name[:i + 1] + "0" + name[i + 1:]
                                                    if "." in name[:i + 1] else name + "?"))
    return st.one_of(options)


def refused(text: str) -> str:
    with pytest.raises(BdgenError) as ei:
        Method.parse(text)
    msg = str(ei.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@PROPS
@given(st.data())
def test_mutated_names_are_refused_or_canonical(data) -> None:
    name = data.draw(methods()).format()
    text = data.draw(mutations(name))
    try:
        m = Method.parse(text)
    except BdgenError as exc:
        assert "\n" not in str(exc)
        return
    assert m.format() == text  # accepted only if it is itself canonical (e.g. a new zero)


@PROPS
@given(st.text(alphabet=st.sampled_from("abcdeglmnoprstuvwxyKKz_.0123456789e-+ \n０٣"),
               max_size=60))
def test_arbitrary_text_is_refused_unless_canonical(text: str) -> None:
    try:
        m = Method.parse(text)
    except BdgenError as exc:
        assert "\n" not in str(exc)
        return
    assert m.format() == text


@PROPS
@given(methods(), st.sampled_from(["\n", " ", "\t"]), st.integers(0, 4))
def test_lookalikes_get_the_canonical_hint(m: Method, ws: str, which: int) -> None:
    name = m.format()
    assert f"closest valid name: {name!r}" in refused(name + ws)
    i = next(i for i, c in enumerate(name) if c.isdigit()) if any(
        c.isdigit() for c in name) else None
    assume(i is not None)
    look = name[:i] + LOOKALIKE_DIGITS[int(name[i])][which] + name[i + 1:]
    assert f"closest valid name: {name!r}" in refused(look)


@pytest.mark.parametrize("text,hint", [
    ("llada_topp０.９_no_remask", "llada_topp0.9_no_remask"),
    ("llada_topp٠٫٩_no_remask", "llada_topp0.9_no_remask"),
    ("llada_topp0.9_no_remask\n", "llada_topp0.9_no_remask"),
    ("llada_topp0.9_no_remask ", "llada_topp0.9_no_remask"),
    ("llada_topp0.90_no_remask", "llada_topp0.9_no_remask"),
    ("llada_topp.9_no_remask", "llada_topp0.9_no_remask"),
    ("llada_topp9e-1_no_remask", "llada_topp0.9_no_remask"),
    ("random_topp0.9_remdm_confidence_tsw1e-320", "random_topp0.9_remdm_confidence_tsw0.0001"),
    ("random_topp0.9_remdm_cap_eta0.4_tsw1.0", "random_topp0.9_remdm_cap_eta0.4"),
    ("random_temp0.0_no_remask", "random_argmax_no_remask"),
    ("llada_topp0.12345_no_remask", "llada_topp0.1235_no_remask"),
    ("llada_topp0.9_no_remask_guided_basic_K016_a0.1",
     "llada_topp0.9_no_remask_guided_basic_K16_a0.1"),
    ("llada_topp0.9_no_remask_guided_mytag_K4_a1.0",
     "llada_topp0.9_no_remask_guided_K4_a1.0_soft_linear"),
    ("llada_topp0.9_no_remask_guided_K4_a1.0_soft_linear_decay0.0",
     "llada_topp0.9_no_remask_guided_K4_a1.0_soft_linear"),
])
def test_refusals_and_hints(text, hint):
    msg = refused(text)
    if hint is not None:
        assert f"closest valid name: {hint!r}" in msg


@pytest.mark.parametrize("name", [
    "random_topp0.9_remdm_cap_eta1.5",                       # eta in [0, 1]
    "random_temp100.5_no_remask",                            # temperature in [0, 100]
    "llada_topp0.9_no_remask_guided_K0_a0.1_soft_linear",    # K >= 1
    "llada_topp0.9_no_remask_guided_K2000_a0.1_soft_linear",  # K <= 1024
    "llada_topp0.9_no_remask_guided_K4_a0.0_soft_linear",    # alpha > 0
    "llada_topp0.9_no_remask_guided_K4_a0.1_soft_cubic",
    "llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear_protect",   # needs remasking
    "llada_topp0.9_remdm_cap_eta0.4_guided_K4_a0.1_soft_linear_boost",  # confidence only
    "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear_boost_protect",  # order
    "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear_lock_b1.0_c3_d0.5_w0.0",
    "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear_lock_b0.85_c0_d0.5_w0.0",
    "llada_topp0.9_remdm_confidence_tsw1.0_guided_basic_K4_a0.1_soft_linear",
])
def test_out_of_range_or_inert_guided_fields(name):
    refused(name)


def test_constructor_refuses_off_grid_values():
    for kw in ({"top_p": 0.12345}, {"remasking": "confidence", "t_switch": 1e-320},
               {"temperature": 1e-9}, {"remasking": "cap", "eta": 2.0}):
        with pytest.raises(BdgenError):
            Method(**kw)
    assert Method(remasking="cap", eta=-0.0).eta == 0.0
    assert Method(remasking="cap", eta=-0.0).format() == "random_argmax_remdm_cap_eta0.0"


# --- legacy names ----------------------------------------------------------------------------
def legacy_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(LEGACY_ROOT, "**", "*.json"), recursive=True))
    if not files:
        pytest.skip(f"legacy results not found at {LEGACY_ROOT}")
    return files


def test_every_legacy_file_name_round_trips():
    files = legacy_files()
    guided = 0
    for f in files:
        with open(f) as fh:
            d = json.load(fh)
        name, config = d["method"], d["config"]
        m = Method.parse(name)
        assert m.format() == name == os.path.basename(f)[:-5]
        expected = m.legacy_config()
        assert expected == {k: config[k] for k in expected}, name
        assert Method.from_legacy_config(config, name=name) == m
        if m.guided:
            guided += 1
            assert m.guidance.legacy_tag is not None
            # exactly the keys the file carries, besides run and constraint-set keys
            others = {"seeds", "num_samples", "sampling_steps", "checkpoint", "is_v2",
                      "guidance_config", "num_constraints"}
            assert set(expected) == set(config) - others, name
            with pytest.raises(BdgenError, match="give the method name"):
                Method.from_legacy_config(config)
        else:
            assert Method.from_legacy_config(config, is_v2=m.v2) == m
    assert guided == 34 and len(files) == 70


# --- --where values (bdgen.report.profiles, tested as it is) ----------------------------------
def render(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return spell(value)
    return str(value)


def result(m: Method) -> MethodResult:
    return MethodResult(model="m", method=m.format(), config=m.legacy_config(), metrics={},
                        seeds=(1,), method_fields=m.fields())


@PROPS
@given(methods(), methods(), st.data())
def test_where_selects_exactly_the_equal_field_values(a: Method, b: Method, data) -> None:
    key = data.draw(st.sampled_from(sorted(a.fields())))
    where = split_where([f"{key}={render(a.fields()[key])}"])
    ra, rb = result(a), result(b)
    assert apply_where([ra], where) == [ra]
    same = key in b.fields() and render(b.fields()[key]) == render(a.fields()[key])
    assert (apply_where([rb], where) == [rb]) == same
    # the method name itself is a field: it selects only its own method
    by_name = split_where([f"method={a.format()}"])
    assert apply_where([ra, rb], by_name) == [ra] + ([rb] if b == a else [])


@PROPS
@given(methods(), st.integers(0, 4))
def test_where_lookalike_digits_select_nothing(m: Method, which: int) -> None:
    numeric = {k: v for k, v in m.fields().items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assume(numeric)
    key = sorted(numeric)[0]
    text = render(numeric[key])
    look = "".join(LOOKALIKE_DIGITS[int(c)][which] if c.isdigit() else c for c in text)
    assert apply_where([result(m)], split_where([f"{key}={look}"])) == []
