"""Reduce instance masks to the encoder's G×G attention grid (docs/design.md, "Grid reduction").

A mask of size ``H × W`` is cut into ``G × G`` equal cells in continuous image coordinates (cell
``(r, c)`` spans rows ``[r·H/G, (r+1)·H/G)`` and columns ``[c·W/G, (c+1)·W/G)``; boundaries may
fall inside a pixel when ``H`` or ``W`` is not a multiple of ``G``). The *area fraction* of a cell
is the part of its area the mask covers, counting a boundary pixel by its overlap. A cell is on
when its fraction is ``>= cell_threshold``; an object that turns no cell on keeps its single
highest-fraction cell so that a matched object is never silently dropped.

The reduction works directly on COCO compressed RLE: for a run of mask pixels from column-major
position ``s`` to ``e`` the cell sums are ``F(e) - F(s)`` with ``F`` a cumulative coverage
function, so each mask costs ``O(runs · G²)`` instead of ``O(H · W)`` and no dense mask is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ica_captioning.detection.rle import rle_string_to_counts, rle_strings_to_counts


def _cover(n: int, g: int) -> np.ndarray:
    """``[g, n]`` int64 overlap of pixel ``p`` with cell ``k``, in units of ``1/g`` pixel.

    Scaling coordinates by ``g`` puts pixel ``p`` at ``[p g, (p+1) g)`` and cell ``k`` at
    ``[k n, (k+1) n)``: every boundary is an integer, so areas are exact integers and a cell
    covered exactly half compares equal to 0.5 (float sums would give 0.49999999999999994).
    """
    p = np.arange(n, dtype=np.int64)
    k = np.arange(g, dtype=np.int64)
    lo = np.maximum(p[None, :] * g, k[:, None] * n)
    hi = np.minimum((p[None, :] + 1) * g, (k[:, None] + 1) * n)
    return np.clip(hi - lo, 0, None)


@lru_cache(maxsize=64)
def _coverage_tables(height: int, width: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative coverage tables for images of one size (cached: COCO has few distinct sizes).

    Returns:
        Integer-valued tables in units of ``1/G`` pixel: ``cy`` ``[H+1, G]`` with ``cy[y, r]`` the
        overlap of rows ``[0, y)`` with cell row ``r``; ``cx`` ``[W+1, G]`` the same for
        columns; ``rx`` ``[W+1, G]`` the overlap of pixel column ``x`` with cell column ``c``
        (a zero row appended for ``x = W``). A product ``cy · cx`` divided by ``H · W`` is an
        area fraction of a cell.
    """
    ry = _cover(height, g)  # [G, H]
    rx = _cover(width, g)  # [G, W]
    zero = np.zeros((1, g), dtype=np.int64)
    cy = np.concatenate([zero, np.cumsum(ry.T, axis=0)])  # [H+1, G]
    cx = np.concatenate([zero, np.cumsum(rx.T, axis=0)])  # [W+1, G]
    rx_pad = np.concatenate([rx.T, zero])  # [W+1, G]
    # float64 holds these integers (and sums of their products, < 2**53) exactly, and its
    # matrix product runs in BLAS, unlike int64's.
    return cy.astype(np.float64), cx.astype(np.float64), rx_pad.astype(np.float64)


def rle_cell_fractions(counts: str | bytes, height: int, width: int, grid_size: int) -> np.ndarray:
    """Area fraction of every grid cell covered by one RLE mask.

    Args:
        counts: COCO compressed RLE string of an ``[H, W]`` mask.
        height: ``H``.
        width: ``W``.
        grid_size: ``G``.

    Returns:
        ``[G, G]`` float64 fractions in ``[0, 1]`` (row-major: ``[row, column]``), each the
        correctly rounded quotient of exact integer areas.
    """
    runs = rle_string_to_counts(counts)
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(
            f"RLE mask covers {total} pixels but its size is {height}x{width} = {height * width}"
        )
    cy, cx, rx = _coverage_tables(int(height), int(width), int(grid_size))
    bounds = np.cumsum(runs)  # [R] end of every run (column-major linear index)
    starts = bounds[0:-1:2]  # runs of ones are the odd runs: [start, end)
    ends = bounds[1::2]
    if ends.size == 0:
        return np.zeros((grid_size, grid_size))
    # F(p) = cy[H] ⊗ cx[x_p] + cy[y_p] ⊗ rx[x_p]; the cell sums are Σ_runs F(end) - F(start).
    xs, ys = np.divmod(starts, height)
    xe, ye = np.divmod(ends, height)
    full = np.outer(cy[height], (cx[xe] - cx[xs]).sum(axis=0))
    part = cy[ye].T @ rx[xe] - cy[ys].T @ rx[xs]
    return (full + part) / (height * width)


def _column_cells(x: np.ndarray, width: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """The (at most two) cell columns that pixel columns ``x`` ``[R]`` overlap.

    Returns:
        ``[R, 2]`` cell columns and ``[R, 2]`` overlaps in units of ``1/G`` pixel (0 for an
        unused second cell, and for ``x = W``, one past the image).
    """
    inside = x < width
    xc = np.minimum(x, width - 1)
    c0 = (xc * g) // width
    c1 = np.minimum(((xc + 1) * g - 1) // width, g - 1)
    w0 = np.minimum((xc + 1) * g, (c0 + 1) * width) - xc * g
    w1 = np.where(c1 > c0, (xc + 1) * g - c1 * width, 0)
    return np.stack([c0, c1], 1), np.stack([w0, w1], 1) * inside[:, None]


def rle_cell_fractions_batch(
    counts: Sequence[str | bytes], height: int, width: int, grid_size: int
) -> np.ndarray:
    """:func:`rle_cell_fractions` for many masks of one size, vectorised over all their runs.

    The sum ``Σ_runs cy[y] ⊗ rx[x]`` is a scatter-add: when ``G <= W`` pixel column ``x``
    overlaps at most two cell columns, so each run adds ``cy[y] · w`` to at most two columns
    of its mask's grid (``np.bincount`` per cell row), with no Python loop over masks or runs.

    Args:
        counts: ``K`` compressed RLE strings of ``[H, W]`` masks.
        height: ``H``.
        width: ``W``.
        grid_size: ``G``.

    Returns:
        ``[K, G, G]`` float64 area fractions.

    Raises:
        ValueError: a string is invalid or does not cover ``H × W`` pixels (names its index).
    """
    g, k = int(grid_size), len(counts)
    if g > width:
        # A pixel column then spans more than two cell columns; images this narrow are rare.
        out = np.zeros((k, g, g))
        for j, c in enumerate(counts):
            try:
                out[j] = rle_cell_fractions(c, height, width, g)
            except ValueError as err:
                raise ValueError(f"RLE mask {j}: {err}") from err
        return out
    runs, owner = rle_strings_to_counts(counts)
    totals = np.bincount(owner, weights=runs, minlength=k)
    if (totals != height * width).any():
        bad = int(np.flatnonzero(totals != height * width)[0])
        raise ValueError(
            f"RLE mask {bad} covers {int(totals[bad])} pixels but its size is "
            f"{height}x{width} = {height * width}"
        )
    cy, cx, _ = _coverage_tables(int(height), int(width), g)
    # Per-string running sums give the end of every run (column-major linear index).
    total = np.cumsum(runs)
    first = np.searchsorted(owner, np.arange(k))
    offset = np.where(first > 0, total[np.maximum(first - 1, 0)], 0)
    bounds = total - offset[owner]  # [V]
    m = np.arange(runs.size) - first[owner]
    ones = np.flatnonzero(m % 2 == 1)  # runs of ones: [bounds[i-1], bounds[i])
    mask = owner[ones]  # [R]
    start, end = bounds[ones - 1], bounds[ones]
    xs, ys = np.divmod(start, height)
    xe, ye = np.divmod(end, height)
    out = np.zeros((k * g, g))  # [(mask, cell column), cell row]
    # Most runs stay in one pixel column: F(end) - F(start) = (cy[ye] - cy[ys]) ⊗ rx[x].
    same = xs == xe
    cross = ~same
    # A run crossing columns adds cy[H] ⊗ (cx[xe] - cx[xs]) + cy[ye] ⊗ rx[xe] - cy[ys] ⊗ rx[xs].
    if cross.any():
        dcx = cx[xe[cross]] - cx[xs[cross]]  # [Rc, G] per cell column
        keys = (mask[cross][:, None] * g + np.arange(g)[None, :]).ravel()
        colsum = np.bincount(keys, weights=dcx.ravel(), minlength=k * g)  # [K G]
        out += colsum[:, None] * cy[height][None, :]
    rows = np.concatenate([cy[ye[same]] - cy[ys[same]], cy[ye[cross]], -cy[ys[cross]]])  # [E, G]
    xcol = np.concatenate([xe[same], xe[cross], xs[cross]])
    owner_e = np.concatenate([mask[same], mask[cross], mask[cross]])
    cells, weights = _column_cells(xcol, width, g)  # [E, 2] each
    for side in (0, 1):
        used = weights[:, side] > 0
        keys = owner_e[used] * g + cells[used, side]
        vals = rows[used] * weights[used, side][:, None]  # [E', G]
        # Scatter-add into [(mask, cell column), G]: one bincount per cell row beats np.add.at.
        for r in range(g):
            out[:, r] += np.bincount(keys, weights=vals[:, r], minlength=k * g)
    # [(K G), G] indexed (mask, column) x row -> [K, G rows, G columns]
    out = out.reshape(k, g, g).transpose(0, 2, 1)
    return out / (height * width)


def dense_cell_fractions(masks: np.ndarray, grid_size: int) -> np.ndarray:
    """Area fraction per grid cell for dense masks (reference path and small inputs).

    Args:
        masks: ``[K, H, W]`` binary masks.
        grid_size: ``G``.

    Returns:
        ``[K, G, G]`` float64 fractions.
    """
    masks = (np.asarray(masks) != 0).astype(np.float64)  # integer-valued: exact below 2**53
    _, height, width = masks.shape
    ry = _cover(height, grid_size).astype(np.float64)  # [G, H]
    rx = _cover(width, grid_size).astype(np.float64)  # [G, W]
    return (ry @ masks @ rx.T) / (height * width)  # [K, G, G]


def binarize_fractions(
    fractions: np.ndarray, cell_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Binarise cell fractions, keeping the best cell of objects that would vanish.

    Args:
        fractions: ``[K, G, G]`` area fractions.
        cell_threshold: a cell is on when its fraction is ``>= cell_threshold``.

    Returns:
        ``grids`` ``[K, G, G]`` bool, and ``fallback`` ``[K]`` bool: True where no cell reached the
        threshold and the single highest-fraction cell (first in row-major order on ties) was
        kept. An all-zero mask stays all-zero (``fallback`` False); callers count it.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    k, g, _ = fractions.shape
    grids = fractions >= cell_threshold
    flat = fractions.reshape(k, g * g)
    fallback = ~grids.reshape(k, -1).any(axis=1) & (flat.max(axis=1, initial=0.0) > 0)
    best = flat.argmax(axis=1)
    rows = np.flatnonzero(fallback)
    grids.reshape(k, g * g)[rows, best[rows]] = True
    return grids, fallback


def pack_grids(grids: np.ndarray) -> list[bytes]:
    """Pack binary ``[K, G, G]`` grids into ``np.packbits(mask.reshape(G*G))`` bytes (row-major)."""
    grids = np.asarray(grids, dtype=bool)
    k = grids.shape[0]
    packed = np.packbits(grids.reshape(k, -1), axis=1)
    return [row.tobytes() for row in packed]


def unpack_grid(packed: bytes, grid_size: int) -> np.ndarray:
    """Inverse of :func:`pack_grids` for one grid: ``bytes`` -> ``[G, G]`` bool."""
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=grid_size * grid_size)
    return bits.reshape(grid_size, grid_size).astype(bool)
