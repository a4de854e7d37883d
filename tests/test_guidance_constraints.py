"""Constraint files: validation (G1.2 and bdgen's stricter rules), compilation, identity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from bdgen.data.vocab import BATHROOM, KITCHEN, LIVING_ROOM
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet, CountRange, ExactCount, ForbidAdj
from bdgen.guidance.schema import (
    calibration_path,
    compile_specs,
    load_constraint_file,
    load_constraint_set,
    parse_constraint_file,
)

CS2_YAML = """\
constraints:
  - name: one_kitchen
    type: ExactCount
    room_type: Kitchen
    target: 1
  - name: kitchen_near_living
    type: RequireAdj
    type_a: Kitchen
    type_b: LivingRoom
  - name: no_bath_kitchen
    type: ForbidAdj
    type_a: Bathroom
    type_b: Kitchen
  - name: between_2_and_3_bathrooms
    type: CountRange
    room_type: Bathroom
    lo: 2
    hi: 3
num_candidates: 8
alpha: 1.0
phi: linear
reward_mode: soft
"""


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_legacy_layout_compiles_in_file_order(tmp_path):
    cf = load_constraint_file(write(tmp_path, "cs2.yaml", CS2_YAML))
    assert (cf.num_candidates, cf.alpha, cf.phi, cf.reward_mode) == (8, 1.0, "linear", "soft")
    cs = cf.compile()
    assert cs.names == ("one_kitchen", "kitchen_near_living", "no_bath_kitchen",
                        "between_2_and_3_bathrooms")
    a, b, c, d = cs.constraints
    assert a == ExactCount("one_kitchen", 1.0, room_type=KITCHEN, target=1)
    assert (b.kind, b.type_a, b.type_b) == ("RequireAdj", KITCHEN, LIVING_ROOM)
    assert c == ForbidAdj("no_bath_kitchen", 1.0, type_a=BATHROOM, type_b=KITCHEN)
    assert d == CountRange("between_2_and_3_bathrooms", 1.0, room_type=BATHROOM, lo=2, hi=3)
    assert cs.normalisers == (1.0,) * 4 and not cs.calibrated
    # the same content as JSON and as .yml: the same set, the same identity
    data = yaml.safe_load(CS2_YAML)
    js = load_constraint_set(write(tmp_path, "cs2.json", json.dumps(data)))
    yml = load_constraint_set(write(tmp_path, "cs2.yml", CS2_YAML))
    assert js == cs == yml and js.identity == cs.identity
    # empty list allowed; defaults
    empty = parse_constraint_file({"constraints": []})
    assert len(empty.compile()) == 0 and empty.num_candidates == 8 and empty.alpha == 1.0


def test_identity_follows_every_field():
    cs = load_constraint_set_from(CS2_YAML)
    base = cs.identity
    assert len(base) == 64 and cs.short_id == base[:12]
    items = yaml.safe_load(CS2_YAML)["constraints"]
    variants = [
        items[::-1],
        [{**items[0], "weight": 2.0}, *items[1:]],
        [{**items[0], "target": 2}, *items[1:]],
        [{**items[0], "name": "kitchen_once"}, *items[1:]],
        [*items[:3], {**items[3], "hi": 4}],
        items[:3],
    ]
    ids = {compile_specs(v).identity for v in variants}
    assert base not in ids and len(ids) == len(variants)
    calibrated = cs.with_normalisers({"one_kitchen": 1.0, "kitchen_near_living": 1.0,
                                      "no_bath_kitchen": 2.0, "between_2_and_3_bathrooms": 1.0})
    assert calibrated.identity != base and calibrated.calibrated
    # all-1.0 normalisers score exactly as no calibration: the same identity
    ones = cs.with_normalisers(dict.fromkeys(cs.names, 1.0))
    assert ones.identity == base
    # the compiled set round-trips through its dict (what a samples file carries)
    back = ConstraintSet.from_dict(json.loads(calibrated.canonical_json()))
    assert back == calibrated and back.identity == calibrated.identity
    assert json.loads(calibrated.canonical_json())["constraints"][2]["p90"] == 2.0


def load_constraint_set_from(text: str) -> ConstraintSet:
    return parse_constraint_file(yaml.safe_load(text)).compile()


def mutated(change) -> dict:
    data = yaml.safe_load(CS2_YAML)
    change(data)
    return data


@pytest.mark.parametrize("change,expected", [
    (lambda d: d["constraints"][2].update(type_b="Bathrom"),
     "constraint 3 ('no_bath_kitchen', ForbidAdj): type_b: Unknown room type 'Bathrom' "
     "(did you mean 'Bathroom'?)"),
    (lambda d: d["constraints"][0].update(room_type="kitchen"),
     "room_type: Unknown room type 'kitchen' (did you mean 'Kitchen'?)"),
    (lambda d: d["constraints"][0].update(room_type="MASK"), "Unknown room type 'MASK'"),
    (lambda d: d["constraints"][2].update(weigth=2.0),
     "constraint 3 ('no_bath_kitchen', ForbidAdj): unknown key 'weigth' (did you mean "
     "'weight'?)"),
    (lambda d: d["constraints"][3].update(lo=4),
     "constraint 4 ('between_2_and_3_bathrooms', CountRange): lo (4) > hi (3)"),
    (lambda d: d["constraints"][3].update(lo=-1), "lo: must be greater than or equal to 0"),
    (lambda d: d["constraints"][0].update(target=-1), "target: must be greater than or equal"),
    (lambda d: d["constraints"][0].update(target=1.0), "target: must be a valid integer"),
    (lambda d: d["constraints"][0].update(target="1"), "target: must be a valid integer"),
    (lambda d: d["constraints"][0].update(target=True), "target: must be a valid integer"),
    (lambda d: d["constraints"][0].update(type="Exactcount"),
     "constraint 1 ('one_kitchen'): unknown constraint type 'Exactcount'; valid: ExactCount"),
    (lambda d: d["constraints"][0].pop("type"), "missing field 'type'"),
    (lambda d: d["constraints"][0].pop("target"),
     "constraint 1 ('one_kitchen', ExactCount): missing field 'target'"),
    (lambda d: d["constraints"][0].update(weight=-0.5), "weight must be a finite number >= 0"),
    (lambda d: d["constraints"][0].update(weight=float("inf")), "weight must be a finite"),
    (lambda d: d["constraints"][1].update(name="one_kitchen"),
     "constraints 1 and 2 are both named 'one_kitchen'"),
    (lambda d: d["constraints"][1].update(name="kitchen overall"), "must start with a letter"),
    (lambda d: d["constraints"][1].update(name="overall"), "reserve"),
    (lambda d: d["constraints"][1].update(name="satisfaction_kitchen"), "reserve"),
    (lambda d: d["constraints"][1].pop("name"), "missing field 'name'"),
    (lambda d: d["constraints"].append("ExactCount"), "constraint 5: must be a mapping"),
    (lambda d: d.update(num_candidates=0), "num_candidates: must be greater than or equal to 1"),
    (lambda d: d.update(alpha=0.0), "alpha must be a finite number > 0"),
    (lambda d: d.update(alpha=-1), "alpha must be a finite number > 0"),
    (lambda d: d.update(phi="cubic"), "phi: must be 'linear', 'quadratic' or 'log1p'"),
    (lambda d: d.update(reward_mode="argmax"), "reward_mode: must be 'soft' or 'hard'"),
    (lambda d: d.update(constrains=[]), "unknown key 'constrains' (did you mean 'constraints'?)"),
    (lambda d: d.pop("constraints"), "missing field 'constraints'"),
])
def test_every_mistake_is_one_line_naming_constraint_and_field(change, expected):
    with pytest.raises(BdgenError) as ei:
        parse_constraint_file(mutated(change), "c.yaml")
    msg = str(ei.value)
    assert msg.startswith("c.yaml: ") and expected in msg and "\n" not in msg


def test_several_mistakes_in_one_line():
    data = mutated(lambda d: (d["constraints"][0].update(room_type="Kitchn"),
                              d["constraints"][2].update(weigth=1)))
    with pytest.raises(BdgenError) as ei:
        parse_constraint_file(data, "c.yaml")
    assert "constraint 1" in str(ei.value) and "; constraint 3" in str(ei.value)


@pytest.mark.parametrize("name,text,expected", [
    ("c.yaml.txt", CS2_YAML, "unsupported constraint file format '.txt'"),
    ("c.YAML", CS2_YAML, "unsupported constraint file format '.YAML'"),
    ("c", CS2_YAML, "unsupported constraint file format ''"),
    ("c.yaml", "constraints: [\n  - name: a\n", "not valid YAML (line"),
    ("c.yaml", "constraints:\n  - name: a\n    name: b\n", "key 'name' given twice"),
    ("c.json", '{"constraints": [}', "not valid JSON (line 1"),
    ("c.json", '{"constraints": [], "constraints": []}', "key 'constraints' given twice"),
    ("c.yaml", "", "the top level must be a mapping"),
    ("c.yaml", "- 1\n- 2\n", "the top level must be a mapping"),
    ("c.json", "[]", "the top level must be a mapping"),
])
def test_malformed_files(tmp_path, name, text, expected):
    with pytest.raises(BdgenError) as ei:
        load_constraint_file(write(tmp_path, name, text))
    assert expected in str(ei.value) and "\n" not in str(ei.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(BdgenError, match="constraint file not found"):
        load_constraint_file(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("constraints: []\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(BdgenError, match="cannot read"):
        load_constraint_file(bad)


def test_same_type_adjacency_is_allowed_and_calibration_path(tmp_path):
    cf = parse_constraint_file({"constraints": [
        {"name": "baths_apart", "type": "ForbidAdj", "type_a": "Bathroom",
         "type_b": "Bathroom"}], "calibration_file": "p90.json"})
    assert cf.compile().constraints[0].type_a == BATHROOM
    assert calibration_path(cf, tmp_path / "c.yaml") == tmp_path / "p90.json"
    assert calibration_path(parse_constraint_file({"constraints": []}), "x.yaml") is None


def test_guidance_package_imports_no_platform_code_and_names_need_no_torch():
    code = ("import sys, pathlib, ast\n"
            "import bdgen.diffusion.method, bdgen.guidance\n"
            "assert 'torch' not in sys.modules and 'pydantic' not in sys.modules\n"
            "root = pathlib.Path(bdgen.guidance.__file__).parent\n"
            "bad = []\n"
            "for p in root.rglob('*.py'):\n"
            "    for n in ast.walk(ast.parse(p.read_text())):\n"
            "        mods = [a.name for a in n.names] if isinstance(n, ast.Import) else (\n"
            "            [n.module] if isinstance(n, ast.ImportFrom) and n.module else [])\n"
            "        bad += [f'{p.name}:{m}' for m in mods if m.split('.')[0] in\n"
            "                ('mlflow', 'sqlalchemy', 'alembic', 'dvc') or m.startswith(\n"
            "                ('bdgen.store', 'bdgen.pipeline', 'bdgen.tracking', 'bdgen.cli'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
