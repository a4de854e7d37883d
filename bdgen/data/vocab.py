"""Node and edge vocabularies and the token-sequence layout (spec §1.3-§1.5).

This module is the single source of truth for every index, name and size that
depends on the vocabulary. Everything else imports from here.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# --- Node vocabulary (Graph2Plan room types; 13/14 reused as MASK/PAD) -------
NODE_TYPES: tuple[str, ...] = (
    "LivingRoom",
    "MasterRoom",
    "Kitchen",
    "Bathroom",
    "DiningRoom",
    "ChildRoom",
    "StudyRoom",
    "SecondRoom",
    "GuestRoom",
    "Balcony",
    "Entrance",
    "Storage",
    "Wall-in",
)
NODE_SHORT: tuple[str, ...] = (
    "Liv", "Mstr", "Kit", "Bath", "Din", "Chld", "Stdy", "2nd", "Gst", "Bal", "Ent", "Stor",
    "Wall",
)
N_ROOM_TYPES = len(NODE_TYPES)  # 13
NODE_MASK = 13
NODE_PAD = 14
NODE_VOCAB_SIZE = 15

LIVING_ROOM = 0
MASTER_ROOM = 1
KITCHEN = 2
BATHROOM = 3
DINING_ROOM = 4
CHILD_ROOM = 5
STUDY_ROOM = 6
SECOND_ROOM = 7
GUEST_ROOM = 8
BALCONY = 9
ENTRANCE = 10
STORAGE = 11
WALL_IN = 12

# --- Edge vocabulary ----------------------------------------------------------
RELATIONS: tuple[str, ...] = (
    "left-above",
    "left-below",
    "left-of",
    "above",
    "inside",
    "surrounding",
    "below",
    "right-of",
    "right-above",
    "right-below",
)
N_RELATIONS = len(RELATIONS)  # 10
INSIDE = 4
SURROUNDING = 5
EDGE_NO_EDGE = 10
EDGE_MASK = 11
EDGE_PAD = 12
EDGE_VOCAB_SIZE = 13

# Axis meaning of each relation "i rel j" (spec §1.3 table): -1 = i left/above j,
# +1 = i right/below j, 0 = no statement on that axis.
REL_H = np.array([-1, -1, -1, 0, 0, 0, 0, 1, 1, 1], dtype=np.int8)
REL_V = np.array([-1, 1, 0, -1, 0, 0, 1, 0, -1, 1], dtype=np.int8)


def invert_relation(rel: int) -> int:
    """The relation of (j, i) given that of (i, j): ``9 - rel``."""
    if not 0 <= rel < N_RELATIONS:
        raise ValueError(f"relation {rel} is not in [0, {N_RELATIONS})")
    return N_RELATIONS - 1 - rel


# --- Forbidden containments (Appendix C): "A inside B" for (A, B) -------------
_FORBIDDEN_CONTAINERS: dict[int, tuple[int, ...]] = {
    0: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
    1: (2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
    2: (1, 3, 5, 6, 7, 8, 9, 10, 11),
    3: (10,),
    4: (1, 3, 5, 8, 9, 10, 11),
    5: (2, 3, 4, 9, 10, 11),
    6: (3, 9, 10),
    7: (3, 9, 10),
    8: (3, 9, 10),
    9: (2, 3, 6, 10, 11),
    10: (1, 2, 3, 4, 5, 6, 7, 8, 9, 11),
    11: (9,),
}
FORBIDDEN_INSIDE: frozenset[tuple[int, int]] = frozenset(
    (a, b) for a, containers in _FORBIDDEN_CONTAINERS.items() for b in containers
)
assert len(FORBIDDEN_INSIDE) == 69

# Boolean lookup table [inner_type, outer_type] for vectorised checks.
FORBIDDEN_INSIDE_TABLE = np.zeros((N_ROOM_TYPES, N_ROOM_TYPES), dtype=bool)
for _a, _b in FORBIDDEN_INSIDE:
    FORBIDDEN_INSIDE_TABLE[_a, _b] = True


@dataclass(frozen=True)
class VocabConfig:
    """Sizes and the upper-triangle edge layout for graphs of at most ``n_max`` rooms.

    Sequence layout: ``[node_0 .. node_{n_max-1}, edge_0 .. edge_{n_edges-1}]`` where
    edge slot ``pos`` holds the pair of the row-major upper-triangle enumeration.
    """

    n_max: int = 8

    def __post_init__(self) -> None:
        # numpy integers (e.g. read back from arrays) are accepted and stored as int.
        if isinstance(self.n_max, bool) or not isinstance(self.n_max, numbers.Integral) \
                or self.n_max < 2:
            raise ValueError(f"n_max must be an integer >= 2, got {self.n_max!r}")
        object.__setattr__(self, "n_max", int(self.n_max))

    @property
    def n_edges(self) -> int:
        return self.n_max * (self.n_max - 1) // 2

    @property
    def seq_len(self) -> int:
        return self.n_max + self.n_edges

    def pair_to_pos(self, i: int, j: int) -> int:
        """Edge slot of the pair (i, j); the pair is swapped if i > j."""
        if i == j:
            raise ValueError(f"no edge slot for a self-pair ({i}, {j})")
        if i > j:
            i, j = j, i
        if not (i >= 0 and j < self.n_max):
            raise ValueError(f"pair ({i}, {j}) out of range for n_max={self.n_max}")
        return i * self.n_max - i * (i + 1) // 2 + (j - i - 1)

    def pos_to_pair(self, pos: int) -> tuple[int, int]:
        """Inverse of :meth:`pair_to_pos`."""
        if not 0 <= pos < self.n_edges:
            raise ValueError(f"edge position {pos} out of range [0, {self.n_edges})")
        before = 0
        for r in range(self.n_max - 1):
            row = self.n_max - 1 - r
            if pos < before + row:
                return r, pos - before + r + 1
            before += row
        raise AssertionError("unreachable")

    @cached_property
    def edge_pairs(self) -> np.ndarray:
        """``[n_edges, 2]`` int64 array of (i, j) per edge slot."""
        return np.array([self.pos_to_pair(p) for p in range(self.n_edges)], dtype=np.int64)

    @cached_property
    def pair_pos_table(self) -> np.ndarray:
        """``[n_max, n_max]`` table of edge slots (-1 on the diagonal)."""
        table = -np.ones((self.n_max, self.n_max), dtype=np.int64)
        for p, (i, j) in enumerate(self.edge_pairs):
            table[i, j] = table[j, i] = p
        return table

    @cached_property
    def pad_mask_table(self) -> np.ndarray:
        """``[n_max + 1, seq_len]`` bool: row r is the PAD mask (True = real) of r rooms."""
        rooms = np.arange(self.n_max + 1)[:, None]
        nodes = np.arange(self.n_max)[None, :] < rooms
        ei, ej = self.edge_pairs[:, 0][None, :], self.edge_pairs[:, 1][None, :]
        edges = (ei < rooms) & (ej < rooms)
        return np.concatenate([nodes, edges], axis=1)

    def pad_mask(self, num_rooms: int) -> np.ndarray:
        """PAD mask of one graph (True = real position), spec §1.5."""
        if not 1 <= num_rooms <= self.n_max:
            raise ValueError(f"num_rooms {num_rooms} not in [1, {self.n_max}]")
        result: np.ndarray = self.pad_mask_table[num_rooms].copy()
        return result

    def num_real(self, num_rooms: int) -> int:
        return num_rooms + num_rooms * (num_rooms - 1) // 2


RPLAN_VOCAB = VocabConfig(8)
