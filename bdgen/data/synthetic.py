"""The built-in synthetic floorplan generator: bubble diagrams from room geometry.

Why geometric: a bubble diagram is only plausible if some floorplan realises it. Each
graph here comes from an actual plan, so relation types are mutually consistent exactly
as in Graph2Plan's data (relations are derived from room boxes by the rule of
``GRAPH2PLAN_RELATIONS.md``, implemented in :func:`relation_from_boxes`).

One plan is built in four steps:

1. **Program**: the number of rooms is drawn from the RPLAN distribution (spec §1.9), then
   the room types: exactly one LivingRoom, usually a Kitchen, a Bathroom and a MasterRoom,
   the remaining slots filled from a categorical over the other types (calibrated so that
   SecondRoom is the most frequent type and Entrance the rarest, spec §1.10).
2. **Nesting**: a few rooms are placed *inside* another one (Wall-in / Storage / an en-suite
   Bathroom inside a bedroom, MasterRoom, DiningRoom or Kitchen inside the LivingRoom's
   box, ...), only for allowed (inner, outer) pairs, except for a rare deliberate
   violation that mirrors RPLAN's 99.78 % inside validity.
3. **Partition**: the other rooms tile the house outline (an axis-aligned rectangle) by
   recursive slicing: the room list is cut in two groups and the rectangle is cut across
   its longer side in proportion to the groups' target areas (LivingRoom largest, storage
   smallest). Nested rooms sit strictly inside their parent's rectangle, one per corner.
4. **Graph**: rooms that share a wall segment of positive length are joined, a nested room
   is joined to its parent; the relation of each edge ``(u, v)``, ``u < v``, is
   ``relation_from_boxes(box_u, box_v)``.

Room order within a graph (documented, deterministic): the LivingRoom is room 0, the other
rooms follow by *descending* type index (Wall-in, Storage, ..., MasterRoom), ties broken by
the box centre in reading order (top to bottom, then left to right). Why descending: the
small rooms that sit inside bedrooms (Wall-in, Storage, an en-suite Bathroom) then come
before their container and read ``inside``, while rooms inside the LivingRoom's box read
``surrounding`` from room 0, so both containment relations are well represented (with an
ascending order ``inside`` would almost never occur and its class weight, spec §1.8, would
explode). Directional relations are balanced either way.

Coordinates are integers (image convention: y grows downwards), so every equality test
of the relation rule is exact. Everything is drawn from one ``numpy.random.Generator``
seeded by the caller, so a (seed, num_graphs, params) triple always gives the same graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from bdgen.data.graph import Graph
from bdgen.data.vocab import (
    BALCONY,
    BATHROOM,
    CHILD_ROOM,
    DINING_ROOM,
    ENTRANCE,
    FORBIDDEN_INSIDE,
    GUEST_ROOM,
    INSIDE,
    KITCHEN,
    LIVING_ROOM,
    MASTER_ROOM,
    SECOND_ROOM,
    STORAGE,
    STUDY_ROOM,
    SURROUNDING,
    WALL_IN,
)

GENERATOR_VERSION = 1
"""Bump when a change alters the generated graphs for the same seed (it is part of params)."""

DEFAULT_NUM_GRAPHS = 25_000
MIN_ROOMS, MAX_ROOMS = 4, 8  # RPLAN's range (spec §1.10)

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x0 < x1, y0 < y1, y grows downwards
T = TypeVar("T")

# Relation indices of the edge vocabulary (spec §1.3), by name for readability here.
_LEFT_ABOVE, _LEFT_BELOW, _LEFT_OF, _ABOVE = 0, 1, 2, 3
_BELOW, _RIGHT_OF, _RIGHT_ABOVE, _RIGHT_BELOW = 6, 7, 8, 9


def relation_from_boxes(u: Box, v: Box) -> int:
    """Graph2Plan's relation of room ``u`` relative to room ``v`` (GRAPH2PLAN_RELATIONS.md).

    Containment first (strict → surrounding, non-strict within → inside), then the position
    of u's centre against v's box; an exact corner tie goes to the diagonal label, a centre
    strictly inside v (overlap without containment) gives ``inside`` as the original does.
    """
    ux0, uy0, ux1, uy1 = u
    vx0, vy0, vx1, vy1 = v
    if ux0 < vx0 and ux1 > vx1 and uy0 < vy0 and uy1 > vy1:
        return SURROUNDING
    if ux0 >= vx0 and ux1 <= vx1 and uy0 >= vy0 and uy1 <= vy1:
        return INSIDE
    # Centre as a doubled coordinate against doubled box edges keeps everything integer.
    cx, cy = ux0 + ux1, uy0 + uy1
    x0, y0, x1, y1 = 2 * vx0, 2 * vy0, 2 * vx1, 2 * vy1
    if (cx < x0 and cy <= y0) or (cx == x0 and cy == y0):
        return _LEFT_ABOVE
    if x0 <= cx < x1 and cy <= y0:
        return _ABOVE
    if (cx >= x1 and cy < y0) or (cx == x1 and cy == y0):
        return _RIGHT_ABOVE
    if cx >= x1 and y0 <= cy < y1:
        return _RIGHT_OF
    if (cx > x1 and cy >= y1) or (cx == x1 and cy == y1):
        return _RIGHT_BELOW
    if x0 < cx <= x1 and cy >= y1:
        return _BELOW
    if (cx <= x0 and cy > y1) or (cx == x0 and cy == y1):
        return _LEFT_BELOW
    if cx <= x0 and y0 < cy <= y1:
        return _LEFT_OF
    return INSIDE  # centre strictly inside v


def share_wall(a: Box, b: Box) -> bool:
    """True if two non-overlapping boxes touch along a segment of positive length."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    if ax1 == bx0 or bx1 == ax0:
        return min(ay1, by1) - max(ay0, by0) > 0
    if ay1 == by0 or by1 == ay0:
        return min(ax1, bx1) - max(ax0, bx0) > 0
    return False


_BEDROOMS = (MASTER_ROOM, SECOND_ROOM, CHILD_ROOM, GUEST_ROOM)


@dataclass(frozen=True)
class SyntheticParams:
    """Generator knobs, calibrated to the RPLAN statistics of spec §1.9-1.10."""

    # P(num_rooms = MIN_ROOMS..MAX_ROOMS), spec §1.9.
    room_count_probs: tuple[float, ...] = (0.003, 0.072, 0.311, 0.362, 0.252)
    p_kitchen: float = 0.99
    p_bathroom: float = 0.95
    p_master: float = 0.93
    # Categorical over the types that fill the remaining slots (normalised at use).
    fill_weights: dict[int, float] = field(default_factory=lambda: {
        SECOND_ROOM: 0.50, BALCONY: 0.25, BATHROOM: 0.09, CHILD_ROOM: 0.025,
        STUDY_ROOM: 0.03, GUEST_ROOM: 0.012, DINING_ROOM: 0.03, STORAGE: 0.03,
        WALL_IN: 0.025, KITCHEN: 0.002, ENTRANCE: 0.0012,
    })
    # Most rooms of one type per plan (types not listed: 1); keeps programs regular.
    max_count: dict[int, int] = field(default_factory=lambda: {
        SECOND_ROOM: 4, BATHROOM: 3, BALCONY: 3,
    })
    # (inner type, allowed outer types, probability that such a room is nested).
    nesting: tuple[tuple[int, tuple[int, ...], float], ...] = (
        (WALL_IN, _BEDROOMS, 0.85),
        (STORAGE, (LIVING_ROOM, MASTER_ROOM, SECOND_ROOM), 0.70),
        (BATHROOM, (MASTER_ROOM,), 0.25),
        (MASTER_ROOM, (LIVING_ROOM,), 0.093),
        (DINING_ROOM, (LIVING_ROOM,), 0.30),
        (KITCHEN, (LIVING_ROOM,), 0.12),
        (BALCONY, (LIVING_ROOM, MASTER_ROOM), 0.06),
        (STUDY_ROOM, (LIVING_ROOM,), 0.10),
        (SECOND_ROOM, (LIVING_ROOM,), 0.02),
    )
    max_children: int = 2
    # Share of graphs given one forbidden containment (RPLAN: 0.22 %, spec §1.10).
    p_forbidden_nesting: float = 0.002
    # Target area per type (relative); the LivingRoom gets the largest share.
    area: dict[int, float] = field(default_factory=lambda: {
        LIVING_ROOM: 3.0, MASTER_ROOM: 1.6, KITCHEN: 0.9, BATHROOM: 0.6, DINING_ROOM: 1.1,
        CHILD_ROOM: 1.2, STUDY_ROOM: 1.0, SECOND_ROOM: 1.3, GUEST_ROOM: 1.2, BALCONY: 0.6,
        ENTRANCE: 0.4, STORAGE: 0.35, WALL_IN: 0.3,
    })
    area_jitter: float = 0.25  # sigma of the lognormal jitter of target areas
    outline: tuple[int, int] = (160, 260)  # outline side lengths, integer range

    def __post_init__(self) -> None:
        if len(self.room_count_probs) != MAX_ROOMS - MIN_ROOMS + 1:
            raise ValueError(f"room_count_probs needs {MAX_ROOMS - MIN_ROOMS + 1} entries "
                             f"(P of {MIN_ROOMS}..{MAX_ROOMS} rooms)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (int keys as strings), recorded in the dataset's params."""
        d = asdict(self)
        d["fill_weights"] = {str(k): v for k, v in self.fill_weights.items()}
        d["area"] = {str(k): v for k, v in self.area.items()}
        d["max_count"] = {str(k): v for k, v in self.max_count.items()}
        d["nesting"] = [[a, list(b), p] for a, b, p in self.nesting]
        return d


@dataclass(frozen=True)
class Plan:
    """One generated floorplan: room types, boxes, and which room each nested room is in."""

    types: tuple[int, ...]
    boxes: tuple[Box, ...]
    parent: tuple[int, ...]  # index of the containing room, -1 for top-level rooms

    def graph(self) -> Graph:
        """Bubble diagram: wall-sharing and nesting edges with their box-derived relations."""
        n = len(self.types)
        triples = []
        for u in range(n):
            for v in range(u + 1, n):
                pu, pv = self.parent[u], self.parent[v]
                if pu == v or pv == u:
                    linked = True
                elif pu < 0 and pv < 0:
                    linked = share_wall(self.boxes[u], self.boxes[v])
                else:
                    linked = False  # nested rooms stay clear of every wall
                if linked:
                    triples.append((u, v, relation_from_boxes(self.boxes[u], self.boxes[v])))
        return Graph(self.types, tuple(triples))


class _Draws:
    """Uniform numbers drawn in one numpy call per plan (cheap and deterministic)."""

    def __init__(self, rng: np.random.Generator, n: int = 96):
        self._rng = rng
        self._values = rng.random(n).tolist()
        self._k = 0

    def u(self) -> float:
        if self._k == len(self._values):
            self._values = self._rng.random(len(self._values)).tolist()
            self._k = 0
        self._k += 1
        result: float = self._values[self._k - 1]
        return result

    def choice(self, items: Sequence[T], weights: Sequence[float] | None = None) -> T:
        if weights is None:
            return items[min(int(self.u() * len(items)), len(items) - 1)]
        total = sum(weights)
        r = self.u() * total
        for item, w in zip(items, weights):
            r -= w
            if r < 0:
                return item
        return items[-1]


def _program(num_rooms: int, d: _Draws, p: SyntheticParams) -> list[int]:
    types = [LIVING_ROOM]
    for t, prob in ((KITCHEN, p.p_kitchen), (BATHROOM, p.p_bathroom), (MASTER_ROOM, p.p_master)):
        if len(types) < num_rooms and d.u() < prob:
            types.append(t)
    fill_types = list(p.fill_weights)
    fill_w = [p.fill_weights[t] for t in fill_types]
    while len(types) < num_rooms:
        t = d.choice(fill_types, fill_w)
        if types.count(t) < p.max_count.get(t, 1):
            types.append(t)
    return types


def _nesting(types: list[int], d: _Draws, p: SyntheticParams) -> list[int]:
    """Parent index per room (-1 = top level); parents are always top-level rooms."""
    n = len(types)
    parent = [-1] * n
    children = [0] * n
    rules = {inner: (outers, prob) for inner, outers, prob in p.nesting}
    for k in range(1, n):  # the LivingRoom (index 0 of the program) is never nested
        if types[k] not in rules or children[k] > 0:
            continue
        outers, prob = rules[types[k]]
        if d.u() >= prob:
            continue
        cands = [j for j in range(n) if j != k and parent[j] < 0 and types[j] in outers
                 and children[j] < p.max_children]
        if cands:
            j = d.choice(cands)
            parent[k] = j
            children[j] += 1
    if d.u() < p.p_forbidden_nesting:
        pairs = [(k, j) for k in range(1, n) for j in range(n)
                 if j != k and parent[k] < 0 and parent[j] < 0 and children[k] == 0
                 and children[j] < p.max_children and (types[k], types[j]) in FORBIDDEN_INSIDE]
        if pairs:
            k, j = d.choice(pairs)
            parent[k] = j
            children[j] += 1
    return parent


def _slice(box: Box, rooms: list[int], weight: list[float], d: _Draws,
           out: dict[int, Box]) -> None:
    """Tile ``box`` with ``rooms`` (recursive slicing in proportion to their weights)."""
    if len(rooms) == 1:
        out[rooms[0]] = box
        return
    cut = 1 + min(int(d.u() * (len(rooms) - 1)), len(rooms) - 2)
    a, b = rooms[:cut], rooms[cut:]
    wa = sum(weight[r] for r in a)
    frac = wa / (wa + sum(weight[r] for r in b))
    x0, y0, x1, y1 = box
    vertical = (x1 - x0) >= (y1 - y0)  # cut across the longer side
    lo, hi = (x0, x1) if vertical else (y0, y1)
    # Keep at least 4 units per room on each side so every room stays a real box.
    pos = int(round(lo + (hi - lo) * frac))
    pos = max(lo + 4 * len(a), min(hi - 4 * len(b), pos))
    if vertical:
        _slice((x0, y0, pos, y1), a, weight, d, out)
        _slice((pos, y0, x1, y1), b, weight, d, out)
    else:
        _slice((x0, y0, x1, pos), a, weight, d, out)
        _slice((x0, pos, x1, y1), b, weight, d, out)


def _nested_box(parent: Box, corner: int, d: _Draws) -> Box:
    """A box strictly inside ``parent`` near one of its corners (0..3), at most 45 % a side.

    Children of one parent take distinct corners, so (45 % + 5 % margin per side) they
    never overlap.
    """
    x0, y0, x1, y1 = parent
    w, h = x1 - x0, y1 - y0
    cw = max(1, int(w * (0.25 + 0.2 * d.u())))
    ch = max(1, int(h * (0.25 + 0.2 * d.u())))
    margin_x, margin_y = max(1, w // 20), max(1, h // 20)
    nx0 = x0 + margin_x if corner in (0, 2) else x1 - margin_x - cw
    ny0 = y0 + margin_y if corner in (0, 1) else y1 - margin_y - ch
    return (nx0, ny0, nx0 + cw, ny0 + ch)


def generate_plan(num_rooms: int, d: _Draws, p: SyntheticParams) -> Plan:
    """One plan with ``num_rooms`` rooms (see the module docstring for the four steps)."""
    types = _program(num_rooms, d, p)
    parent = _nesting(types, d, p)
    top = [k for k in range(num_rooms) if parent[k] < 0]
    # Shuffle the top-level rooms (Fisher-Yates on our own draws) so neighbours vary.
    for i in range(len(top) - 1, 0, -1):
        j = min(int(d.u() * (i + 1)), i)
        top[i], top[j] = top[j], top[i]
    weight = [p.area[t] * float(np.exp(p.area_jitter * (2.0 * d.u() - 1.0))) for t in types]
    for k in range(num_rooms):  # a parent's target area also holds its nested rooms
        if parent[k] >= 0:
            weight[parent[k]] += weight[k]
    lo, hi = p.outline
    width = lo + int(d.u() * (hi - lo + 1))
    height = lo + int(d.u() * (hi - lo + 1))
    boxes: dict[int, Box] = {}
    _slice((0, 0, width, height), top, weight, d, boxes)
    corners_used: dict[int, list[int]] = {}
    for k in range(num_rooms):
        j = parent[k]
        if j >= 0:
            used = corners_used.setdefault(j, [])
            corner = d.choice([c for c in range(4) if c not in used])
            used.append(corner)
            boxes[k] = _nested_box(boxes[j], corner, d)
    # Canonical room order: LivingRoom, then by descending type, then reading order.
    order = sorted(range(num_rooms), key=lambda k: (types[k] != LIVING_ROOM, -types[k],
                                                     boxes[k][1] + boxes[k][3],
                                                     boxes[k][0] + boxes[k][2]))
    rank = {old: new for new, old in enumerate(order)}
    return Plan(
        types=tuple(types[k] for k in order),
        boxes=tuple(boxes[k] for k in order),
        parent=tuple(rank[parent[k]] if parent[k] >= 0 else -1 for k in order),
    )


def generate_plans(num_graphs: int, seed: int = 0,
                   params: SyntheticParams | None = None) -> list[Plan]:
    """``num_graphs`` plans, deterministic in (seed, params); a prefix of a longer run."""
    if num_graphs < 0:
        raise ValueError(f"num_graphs must be >= 0, got {num_graphs}")
    p = params or SyntheticParams()
    sizes = list(range(MIN_ROOMS, MAX_ROOMS + 1))
    d = _Draws(np.random.default_rng(seed))
    # Sequential draws only, so the first k plans do not depend on num_graphs (prefix-stable).
    return [generate_plan(d.choice(sizes, p.room_count_probs), d, p) for _ in range(num_graphs)]


def generate_graphs(num_graphs: int = DEFAULT_NUM_GRAPHS, seed: int = 0,
                    params: SyntheticParams | None = None) -> list[Graph]:
    """The synthetic bubble diagrams (see :func:`generate_plans`)."""
    return [plan.graph() for plan in generate_plans(num_graphs, seed, params)]


__all__ = [
    "DEFAULT_NUM_GRAPHS",
    "GENERATOR_VERSION",
    "MAX_ROOMS",
    "MIN_ROOMS",
    "Plan",
    "SyntheticParams",
    "generate_graphs",
    "generate_plan",
    "generate_plans",
    "relation_from_boxes",
    "share_wall",
]
