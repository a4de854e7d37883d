"""Property test for ``--where`` values (issue 13): whatever the value, a read command either
answers with exactly the results whose field equals it (the SQL push-down agrees with the
in-Python filter) or refuses with one BdgenError line; never another exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bdgen.errors import BdgenError
from bdgen.pipeline.views import load_results
from bdgen.report.profiles import apply_where, split_where
from bdgen.store.api import Store

METHODS = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_cap_eta0.4",
           "random_argmax_no_remask", "llada_topp0.95_remdm_confidence_tsw0.5")
#: Method and model fields: the push-down must agree with the in-Python filter.
FIELD_KEYS = ("method", "unmasking", "top_p", "eta", "t_switch", "strategy", "temperature",
              "v2", "model", "version", "noise_schedule")
#: Run fields (seeds, sizes): filtered in SQL only.
RUN_KEYS = ("seed", "steps", "num_samples", "reference", "evaluator_version")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("where") / "w.db")
    store = Store.open(path)
    store.get_or_create_model("mA", "v1", "loglinear")
    for i, method in enumerate(METHODS):
        for seed in (1, 2):
            gid = store.start_generation_run("mA", method, seed, 100, 10)
            store.finish_generation_run(gid, "0" * 64, f"/s/{i}{seed}.pt")
            store.record_evaluation(gid, {"inside_validity": 0.5 + i / 10, "novelty": 1.0})
    store.close()
    return path


@pytest.fixture(scope="module")
def everything(db) -> list:
    """Every result of the (read-only) store, loaded once for all the examples."""
    return load_results(db)


def _names(results) -> list[tuple[str, str]]:
    return sorted((r.model, r.method) for r in results)


values = st.one_of(
    st.sampled_from(["0.9", "0.95", "0.4", "0.5", "1", "1.0", "llada", "random", "cap",
                     "confidence", "true", "false", "null", "none", "v1", "mA", "100", "10",
                     "2001-01-01", "1e-320", "nan", "inf", "-0", "[1]", "{a: 1}", "~", "''"]),
    st.sampled_from(METHODS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(FIELD_KEYS + RUN_KEYS), value=values)
def test_where_value_filters_exactly_or_refuses_in_one_line(db, everything, key, value):
    item = f"{key}={value}"
    try:
        got = load_results(db, where=[item])
    except BdgenError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    if key in RUN_KEYS:
        if key == "seed":
            assert all(set(r.seeds) == {float(value)} for r in got), item
        return
    try:
        want = apply_where(everything, split_where([item]))
    except BdgenError:
        pytest.fail(f"--where {item!r}: the store answered but the in-Python filter refused")
    assert _names(got) == _names(want), item


def test_where_v2_is_the_method_version(db):
    """``v2`` (a store column) filters the same in SQL and in Python: found by the property
    test above (``v2=false`` selected the v1 methods in SQL and nothing in Python)."""
    everything = load_results(db)
    for value, want in (("false", 4), ("true", 0), ("'false'", 4), ("'0'", 4)):
        got = load_results(db, where=[f"v2={value}"])
        assert len(got) == want, value
        assert _names(apply_where(everything, split_where([f"v2={value}"]))) == _names(got)


def test_where_examples(db):
    assert len(load_results(db, where=["top_p=0.9"])) == 2  # argmax: top_p not set
    assert _names(load_results(db, where=["eta=0.4"])) == [("mA", METHODS[1])]
    assert load_results(db, where=["top_p=0.5"]) == []
    with pytest.raises(BdgenError, match="top_p"):
        load_results(db, where=["top_p=high"])
