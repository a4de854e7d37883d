"""Test-only reference implementations: slow, obviously correct versions that the
package's fast code is checked against."""

from __future__ import annotations

import numpy as np


def mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2 with explicit difference tensors (small n only): the reference of
    :func:`bdgen.eval.structure.mmd2`."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 0.0
    dxx = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dyy = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    dxy = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    alld = np.concatenate([dxx.ravel(), dyy.ravel(), dxy.ravel()])
    nz = alld[alld > 0]
    if nz.size == 0:
        return 0.0
    sigma = np.sqrt(np.median(nz) / 2)
    if sigma == 0:
        return 0.0
    kxx, kyy, kxy = (np.exp(-d / (2 * sigma**2)) for d in (dxx, dyy, dxy))
    tx = (kxx.sum() - n) / (n * (n - 1)) if n > 1 else 0.0
    ty = (kyy.sum() - m) / (m * (m - 1)) if m > 1 else 0.0
    return max(float(tx + ty - 2 * kxy.sum() / (n * m)), 0.0)


def parse_markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """``{section title: rows of cells}`` of a comparison document (header row included).

    Used to check a generated document against the legacy one cell by cell.
    """
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            tables[title] = []
        elif title and line.startswith("|") and not line.startswith("|-"):
            tables[title].append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return tables
