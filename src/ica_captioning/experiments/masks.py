"""Control variants of the ICA pseudo-labels: does ICA ground words, or only regularise?

Each function takes the ``pseudo_labels`` table (docs/contracts.md: ``caption_id, image_id,
token_position, class_name, grid_size, grid``, ``grid`` = ``np.packbits`` of a row-major bool
``[G, G]`` mask) and returns a new table with the same columns, index and row order in which only
``grid`` changed. The input is never mutated. Randomised transforms draw everything from
``numpy.random.default_rng(seed)``, so a (table, seed) pair always gives the same output.

* ``shuffled``: each row gets the grid of another row (right shape statistics, wrong place).
* ``random``: a random 4-connected blob with the true area (right size, random shape and place).
* ``boxes``: the bounding box of the true grid (box supervision, Liu et al. 2017).
* ``degraded_75/50/25``: the true grid with cells removed and added near its boundary so that its
  IoU with the true grid is about 0.75 / 0.5 / 0.25 (localisation quality as the variable).

All work is done on the unpacked ``[P, G, G]`` stack (``P`` rows) with whole-table NumPy
operations; only the blob growth and the distance transforms iterate, over growth steps and
distances (at most ``G²``), never over rows or cells.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ica_captioning.data.tables import require_columns
from ica_captioning.matching.grid import pack_grids
from ica_captioning.matching.pseudo_labels import PSEUDO_LABEL_COLUMNS

#: Label variants of the control experiments, in report order.
MASK_KINDS = (
    "true",
    "shuffled",
    "random",
    "boxes",
    "degraded_75",
    "degraded_50",
    "degraded_25",
)

#: Weight of the random direction in the degradation keys (per cell of projection): half a cell
#: of boundary distance per cell along the direction, so the trailing side loses up to a few
#: bands before the leading side loses its first one, which reads as a shifted, ragged mask
#: instead of a uniformly thinned one.
_DIRECTION_WEIGHT = 0.5
#: Tie-break noise in the degradation keys; below the 0.5 spacing of the other terms' values for
#: neighbouring cells, so it only orders cells that are otherwise (nearly) equivalent.
_JITTER = 0.25
#: Swap rounds tried to repair a random permutation before shuffle_masks falls back to drawing.
_SHUFFLE_REPAIR_ROUNDS = 64
#: Rows processed at once by the blob growth and the degradation: bounds their ``[rows, G²]``
#: float temporaries (~6 MiB each for G = 14) on tables of millions of rows. Fixed, because the
#: random draws (hence the output for a seed) follow the chunking.
_CHUNK = 4096


class MaskTransformError(ValueError):
    """A pseudo-label table cannot be transformed (the message names the problem)."""


# --------------------------------------------------------------------------- table <-> stack


def _grid_stack(labels: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Validate the table and unpack its grids.

    Args:
        labels: the ``pseudo_labels`` table.

    Returns:
        ``grids`` ``[P, G, G]`` bool and ``G`` (0 for an empty table).

    Raises:
        MaskTransformError: missing columns, several grid sizes, a grid that is not bytes or
            whose length is not ``ceil(G² / 8)``.
    """
    require_columns(labels, "pseudo_labels", PSEUDO_LABEL_COLUMNS, error=MaskTransformError)
    p = len(labels)
    if p == 0:
        return np.zeros((0, 0, 0), dtype=bool), 0
    sizes = pd.unique(labels["grid_size"].to_numpy())
    if len(sizes) != 1:
        raise MaskTransformError(
            f"pseudo_labels mixes grid sizes {sorted(int(s) for s in sizes)}; a transform works "
            "on one G × G grid at a time"
        )
    g = int(sizes[0])
    if g <= 0:
        raise MaskTransformError(f"pseudo_labels has grid_size {g}; it must be positive")
    raw = labels["grid"].tolist()
    bad_type = [i for i, b in enumerate(raw) if not isinstance(b, (bytes, bytearray, memoryview))]
    if bad_type:
        i = bad_type[0]
        raise MaskTransformError(
            f"pseudo_labels grid must be bytes; row {i} (caption_id "
            f"{labels['caption_id'].iloc[i]}) holds {type(raw[i]).__name__} "
            f"({len(bad_type)} row(s) affected)"
        )
    n_bytes = -(-g * g // 8)
    lengths = np.fromiter((len(b) for b in raw), dtype=np.int64, count=p)
    wrong = np.flatnonzero(lengths != n_bytes)
    if wrong.size:
        i = int(wrong[0])
        raise MaskTransformError(
            f"pseudo_labels grid has {lengths[i]} bytes in row {i} (caption_id "
            f"{labels['caption_id'].iloc[i]}); grid_size {g} needs {n_bytes} "
            f"({wrong.size} row(s) affected)"
        )
    packed = np.frombuffer(b"".join(bytes(b) for b in raw), dtype=np.uint8).reshape(p, n_bytes)
    # count= drops the zero padding of the last byte: [P, G*G] -> [P, G, G]
    grids = np.unpackbits(packed, axis=1, count=g * g).astype(bool).reshape(p, g, g)
    return grids, g


def _with_grids(labels: pd.DataFrame, grids: np.ndarray) -> pd.DataFrame:
    """A copy of ``labels`` whose ``grid`` column holds ``grids`` ``[P, G, G]`` packed."""
    out = labels.copy()
    out["grid"] = pd.Series(pack_grids(grids) if len(grids) else [], index=out.index, dtype=object)
    return out


def _dilate4(masks: np.ndarray) -> np.ndarray:
    """4-neighbour dilation of ``[N, G, G]`` bool masks (the grid border is not wrapped)."""
    out = masks.copy()
    out[:, 1:, :] |= masks[:, :-1, :]
    out[:, :-1, :] |= masks[:, 1:, :]
    out[:, :, 1:] |= masks[:, :, :-1]
    out[:, :, :-1] |= masks[:, :, 1:]
    return out


def _city_block_distance(sources: np.ndarray, unreached: float) -> np.ndarray:
    """City-block distance ``[N, G, G]`` of every cell to the nearest ``True`` of ``sources``.

    Computed by repeated dilation (at most ``2G - 2`` steps); cells of a mask without any source
    get ``unreached``.
    """
    dist = np.where(sources, 0.0, unreached)
    reached = sources.copy()
    step = 0
    while True:
        step += 1
        grown = _dilate4(reached)
        new = grown & ~reached
        if not new.any():
            return dist
        dist[new] = step
        reached = grown


# --------------------------------------------------------------------------- metrics


def mask_iou(labels_a: pd.DataFrame, labels_b: pd.DataFrame) -> np.ndarray:
    """Per-row IoU of two pseudo-label tables of the same rows (e.g. true vs degraded).

    Args:
        labels_a: ``pseudo_labels`` table with ``P`` rows.
        labels_b: a table with the same ``P`` rows in the same order and the same grid size.

    Returns:
        ``[P]`` float64 IoU; two empty grids count as identical (1.0).
    """
    a, ga = _grid_stack(labels_a)
    b, gb = _grid_stack(labels_b)
    if len(a) != len(b):
        raise MaskTransformError(
            f"mask_iou needs tables of equal length, got {len(a)} and {len(b)}"
        )
    if len(a) == 0:
        return np.zeros(0, dtype=np.float64)
    if ga != gb:
        raise MaskTransformError(f"mask_iou needs one grid size, got {ga} and {gb}")
    return _iou(a, b)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[P]`` of two ``[P, G, G]`` bool stacks (empty vs empty = 1.0)."""
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# --------------------------------------------------------------------------- shuffled


def shuffle_masks(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Give each row the grid of a random other row whose grid differs from its own.

    The grids of the ~5 captions of an image (and of repeated objects) are byte-identical, so
    "another row" alone would often hand a row its own mask back; the draw therefore excludes
    every row with an identical grid. It starts from a random permutation (which keeps the
    multiset of grids, i.e. the exact shape statistics) and repairs conflicting rows by random
    swaps that resolve both rows of a swap. If one grid holds more than half of the rows no
    conflict-free permutation exists; rows still in conflict after the repair rounds then draw a
    grid uniformly from the rows with a different grid (with replacement).

    Args:
        labels: ``pseudo_labels`` table, ``P`` rows.
        seed: seed of the random generator.

    Returns:
        The table with shuffled ``grid``; every output grid is one of the input grids.

    Raises:
        MaskTransformError: a non-empty table whose grids are all identical (or a single row):
            no row has a different grid to take.
    """
    grids, _ = _grid_stack(labels)
    p = len(grids)
    if p == 0:
        return _with_grids(labels, grids)
    # Group rows by grid (hashing the canonical packed bytes: O(P), unlike a row-wise unique).
    group, distinct = pd.factorize(pd.Series(pack_grids(grids), dtype=object))
    n_groups = len(distinct)
    if n_groups < 2:
        raise MaskTransformError(
            f"shuffle_masks needs at least two distinct grids; all {p} grid(s) are identical, "
            "so no row can take a different mask"
        )
    rng = np.random.default_rng(seed)
    source = rng.permutation(p)
    for _ in range(_SHUFFLE_REPAIR_ROUNDS):
        bad = np.flatnonzero(group[source] == group)
        if bad.size == 0:
            break
        partner = rng.integers(0, p, size=bad.size)
        # Swapping the sources of bad row i and row k fixes i and keeps k valid iff k's source is
        # not in i's group and i's source (which is in i's group) is not in k's group.
        ok = (group[source[partner]] != group[bad]) & (group[partner] != group[bad])
        i, k = bad[ok], partner[ok]
        # Apply only swaps whose two rows take part in no other swap this round.
        uses = np.bincount(np.concatenate([i, k]), minlength=p)
        single = (uses[i] == 1) & (uses[k] == 1)
        i, k = i[single], k[single]
        source[i], source[k] = source[k], source[i].copy()
    bad = np.flatnonzero(group[source] == group)
    if bad.size:
        # Uniform over the rows of other groups: rows sorted by group, skip the row's own block.
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group, minlength=n_groups)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        g_bad = group[bad]
        u = rng.integers(0, p - counts[g_bad])
        u = np.where(u < start[g_bad], u, u + counts[g_bad])
        source[bad] = order[u]
    return _with_grids(labels, grids[source])


# --------------------------------------------------------------------------- random blobs


def random_blob_masks(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Replace each grid by a random 4-connected blob with exactly the same number of cells.

    The blob starts at a uniformly random cell and grows one cell at a time into a uniformly
    random cell of its 4-neighbour frontier (Eden growth), so it is connected by construction.
    Rows grow together (in chunks), one step per cell of the largest mask. An empty grid stays
    empty.

    Args:
        labels: ``pseudo_labels`` table, ``P`` rows.
        seed: seed of the random generator.

    Returns:
        The table with blob grids.
    """
    grids, g = _grid_stack(labels)
    p = len(grids)
    if p == 0:
        return _with_grids(labels, grids)
    cells = g * g
    areas = grids.reshape(p, cells).sum(axis=1)
    rng = np.random.default_rng(seed)
    blob = np.zeros((p, cells), dtype=bool)
    for first in range(0, p, _CHUNK):
        part = slice(first, first + _CHUNK)
        blob[part] = _grow_blobs(areas[part], g, rng)
    return _with_grids(labels, blob.reshape(p, g, g))


def _grow_blobs(areas: np.ndarray, g: int, rng: np.random.Generator) -> np.ndarray:
    """Eden-growth blobs ``[N, G²]`` bool with ``areas`` ``[N]`` cells each."""
    n, cells = len(areas), g * g
    blob = np.zeros((n, cells), dtype=bool)
    start = rng.integers(0, cells, size=n)
    live = np.flatnonzero(areas > 0)
    blob[live, start[live]] = True
    for size in range(1, int(areas.max(initial=0))):
        rows = np.flatnonzero(areas > size)  # rows that still need a cell
        current = blob[rows]
        frontier = _dilate4(current.reshape(-1, g, g)).reshape(-1, cells) & ~current
        # argmax of uniform keys over the frontier = a uniformly random frontier cell; a blob
        # smaller than the grid always has a non-empty frontier (the grid is connected).
        keys = np.where(frontier, rng.random((rows.size, cells)), -1.0)
        blob[rows, keys.argmax(axis=1)] = True
    return blob


# --------------------------------------------------------------------------- boxes


def box_masks(labels: pd.DataFrame) -> pd.DataFrame:
    """Replace each grid by the bounding box of its on-cells (box supervision); empty stays empty.

    Args:
        labels: ``pseudo_labels`` table, ``P`` rows.

    Returns:
        The table with box grids (each ``⊇`` its true grid).
    """
    grids, g = _grid_stack(labels)
    if len(grids) == 0:
        return _with_grids(labels, grids)
    rows_on = grids.any(axis=2)  # [P, G]
    cols_on = grids.any(axis=1)  # [P, G]
    idx = np.arange(g)
    # first and last on index per row; argmax of an all-False row is 0, masked below
    r0, r1 = rows_on.argmax(axis=1), g - 1 - rows_on[:, ::-1].argmax(axis=1)
    c0, c1 = cols_on.argmax(axis=1), g - 1 - cols_on[:, ::-1].argmax(axis=1)
    in_rows = (idx >= r0[:, None]) & (idx <= r1[:, None])  # [P, G]
    in_cols = (idx >= c0[:, None]) & (idx <= c1[:, None])  # [P, G]
    boxes = in_rows[:, :, None] & in_cols[:, None, :]  # [P, G, G]
    boxes &= rows_on.any(axis=1)[:, None, None]
    return _with_grids(labels, boxes)


# --------------------------------------------------------------------------- degraded


def _iou_options(target_iou: float, cells: int) -> dict[str, np.ndarray]:
    """Achievable IoUs just below and above ``target_iou``, for every mask area ``a`` in 1..L.

    Keeping ``k`` of the ``a`` true cells and adding cells up to ``m`` in total union gives
    IoU ``k / m`` with ``1 <= k <= a <= m <= L``. For each area this returns the largest such
    value ``<= target`` (``lo``) and the smallest ``>= target`` (``hi``), with their ``k`` and
    ``m``; among equal values the one whose size ``k + (m - a)`` is closest to ``a`` (the most
    area-preserving) is taken.

    Returns:
        Arrays ``[L + 1]`` indexed by area (row 0 unused): ``lo``, ``lo_k``, ``lo_m``, ``hi``,
        ``hi_k``, ``hi_m``; ``lo`` is ``-inf`` where no value is ``<= target``.
    """
    a = np.arange(1, cells + 1)[:, None]  # [L, 1]
    k = np.arange(1, cells + 1)[None, :]  # [1, L]
    valid_k = k <= a
    eps = 1e-9
    m_lo = np.maximum(a, np.ceil(k / target_iou - eps))  # smallest m with k/m <= t
    # largest m with k/m >= t; broadcast to [L, L] like m_lo (it does not depend on a)
    m_hi = np.broadcast_to(np.minimum(cells, np.floor(k / target_iou + eps)), m_lo.shape)
    ok_lo = valid_k & (m_lo <= cells)
    ok_hi = valid_k & (m_hi >= a)
    v_lo = np.where(ok_lo, k / np.where(ok_lo, m_lo, 1), -np.inf)
    v_hi = np.where(ok_hi, k / np.where(ok_hi, m_hi, 1), np.inf)
    # Distinct values k/m (m <= L) differ by >= 1/L², far above this nudge (<= 2L·1e-9), so it
    # only breaks exact ties, in favour of the degraded mask with the area closest to the true.
    score_lo = v_lo - 1e-9 * np.abs(m_lo + k - 2 * a)
    score_hi = v_hi + 1e-9 * np.abs(m_hi + k - 2 * a)
    j_lo, j_hi = score_lo.argmax(axis=1), score_hi.argmin(axis=1)
    rows = np.arange(cells)

    def pad(x: np.ndarray) -> np.ndarray:
        return np.concatenate([[x[0]], x])  # index by area; row 0 is a placeholder

    return {
        "lo": pad(v_lo[rows, j_lo]),
        "lo_k": pad(k[0, j_lo]),
        "lo_m": pad(m_lo[rows, j_lo].astype(np.int64)),
        "hi": pad(v_hi[rows, j_hi]),
        "hi_k": pad(k[0, j_hi]),
        "hi_m": pad(m_hi[rows, j_hi].astype(np.int64)),
    }


def degrade_masks(
    labels: pd.DataFrame, target_iou: float, seed: int, tolerance: float | None = 0.05
) -> pd.DataFrame:
    """Degrade each grid so that its IoU with the true grid is about ``target_iou``.

    A degraded grid keeps ``k`` of the ``a`` true cells and adds ``m - a`` cells outside, so its
    IoU with the true grid is exactly ``k / m``. Per row, ``(k, m)`` is one of the two achievable
    values adjacent to the target (the largest ``<=`` and the smallest ``>=``; both equal the
    target when it is achievable, which for 0.25 / 0.5 holds for every area and for 0.75 for most
    areas ``>= 3``). Between the two, rows take the upper one with probability
    ``(t - lo) / (hi - lo)``, assigned by systematic sampling over the rows in random order, so
    the table's mean IoU is the target up to about one row's gap divided by ``P``.

    Where: cells are removed from the true grid in order of a key ``boundary distance +
    0.5 · projection on a random direction`` and added outside it in order of ``distance to the
    grid − 0.5 · projection`` (small random jitter breaks ties). Cells near the boundary go
    first, the trailing side of the direction loses cells and the leading side gains them: a
    ragged erosion/dilation with a shift, like a detector mask with localisation error. Instance
    dropping is not possible at grid level (instances are merged). ``k >= 1``, so a non-empty
    grid stays non-empty; an empty grid stays empty.

    Args:
        labels: ``pseudo_labels`` table, ``P`` rows.
        target_iou: the IoU to reach, ``0 < target_iou <= 1``.
        seed: seed of the random generator.
        tolerance: largest accepted ``|mean IoU − target|`` over the non-empty rows; ``None``
            skips the check (tables of very few tiny masks cannot always reach the target).

    Returns:
        The table with degraded grids (see :func:`mask_iou` to report the IoU reached).

    Raises:
        MaskTransformError: target outside ``(0, 1]``, or the mean IoU reached is further than
            ``tolerance`` from it.
    """
    if not 0.0 < float(target_iou) <= 1.0:
        raise MaskTransformError(f"degrade_masks target_iou must be in (0, 1], got {target_iou}")
    grids, g = _grid_stack(labels)
    p = len(grids)
    if p == 0:
        return _with_grids(labels, grids)
    cells = g * g
    t = float(target_iou)
    flat = grids.reshape(p, cells)
    areas = flat.sum(axis=1)
    live = areas > 0
    rng = np.random.default_rng(seed)

    opt = _iou_options(t, cells)
    lo, hi = opt["lo"][areas], opt["hi"][areas]
    gap = hi - lo
    p_hi = np.where(np.isfinite(lo) & (gap > 0), (t - lo) / np.where(gap > 0, gap, 1.0), 0.0)
    p_hi = np.where(np.isfinite(lo), p_hi, 1.0)  # no achievable value below the target
    # Systematic sampling: in a random row order, row i takes "hi" when the running sum of p_hi
    # (shifted by one uniform) crosses an integer, so every prefix takes hi within one row of
    # its expected count and the mean IoU has almost no sampling noise.
    order = rng.permutation(p)
    cum = np.cumsum(p_hi[order]) + rng.random()
    prev = cum - p_hi[order]
    take_hi = np.empty(p, dtype=bool)
    take_hi[order] = np.floor(cum) > np.floor(prev)
    keep = np.where(take_hi, opt["hi_k"][areas], opt["lo_k"][areas])
    union = np.where(take_hi, opt["hi_m"][areas], opt["lo_m"][areas])
    n_remove = np.where(live, areas - keep, 0)
    n_add = np.where(live, union - areas, 0)

    degraded = np.empty_like(flat)
    for first in range(0, p, _CHUNK):
        part = slice(first, first + _CHUNK)
        degraded[part] = _move_cells(grids[part], n_remove[part], n_add[part], rng)

    degraded = degraded.reshape(p, g, g)
    out = _with_grids(labels, degraded)
    if tolerance is not None and live.any():
        achieved = float(_iou(grids[live], degraded[live]).mean())
        if abs(achieved - t) > tolerance:
            raise MaskTransformError(
                f"degrade_masks reached mean IoU {achieved:.3f} for target {t:.3f} "
                f"(tolerance {tolerance}); the table has too few or too small masks to hit the "
                "target (pass tolerance=None to accept)"
            )
    return out


def _move_cells(
    grids: np.ndarray, n_remove: np.ndarray, n_add: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Remove ``n_remove`` ``[N]`` cells from and add ``n_add`` ``[N]`` cells to ``grids``.

    Args:
        grids: ``[N, G, G]`` bool true grids.
        n_remove: cells to remove per row (fewer than its area).
        n_add: cells to add per row (at most its number of off cells).
        rng: the random generator.

    Returns:
        ``[N, G²]`` bool degraded grids; cells with the smallest key go first (see
        :func:`degrade_masks`).
    """
    n, g, _ = grids.shape
    cells = g * g
    flat = grids.reshape(n, cells)
    ys, xs = np.divmod(np.arange(cells), g)  # [L] row-major cell coordinates
    safe_area = np.maximum(flat.sum(axis=1), 1)
    cy = (flat * ys).sum(axis=1) / safe_area  # [N] centroid
    cx = (flat * xs).sum(axis=1) / safe_area
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    # [N, L] position of each cell along the row's random direction, from the centroid
    proj = (xs[None, :] - cx[:, None]) * np.cos(theta)[:, None] + (
        ys[None, :] - cy[:, None]
    ) * np.sin(theta)[:, None]
    jitter = _JITTER * rng.random((n, cells))
    far = float(2 * g)  # a grid covering every cell has no background: equal depth everywhere
    depth = _city_block_distance(~grids, far).reshape(n, cells)  # 1 on the inner boundary
    reach = _city_block_distance(grids, far).reshape(n, cells)  # 1 next to the grid
    remove_key = np.where(flat, depth + _DIRECTION_WEIGHT * proj + jitter, np.inf)
    add_key = np.where(flat, np.inf, reach - _DIRECTION_WEIGHT * proj + jitter)
    return (flat & ~_smallest(remove_key, n_remove)) | _smallest(add_key, n_add)


def _smallest(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[P, L]`` bool: per row, the ``counts[row]`` cells with the smallest (finite) key."""
    order = np.argsort(keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(keys.shape[1])[None, :], axis=1)
    return ranks < counts[:, None]


# --------------------------------------------------------------------------- dispatch


def _true(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The true grids (validated and re-packed, so the output is canonical like the others)."""
    grids, _ = _grid_stack(labels)
    return _with_grids(labels, grids)


#: Label variant name -> transform ``(labels, seed) -> labels``.
TRANSFORMS: dict[str, Callable[[pd.DataFrame, int], pd.DataFrame]] = {
    "true": _true,
    "shuffled": shuffle_masks,
    "random": random_blob_masks,
    "boxes": lambda labels, seed: box_masks(labels),
    "degraded_75": lambda labels, seed: degrade_masks(labels, 0.75, seed),
    "degraded_50": lambda labels, seed: degrade_masks(labels, 0.50, seed),
    "degraded_25": lambda labels, seed: degrade_masks(labels, 0.25, seed),
}


def transform_labels(labels: pd.DataFrame, kind: str, *, seed: int) -> pd.DataFrame:
    """Apply the label variant ``kind`` (one of :data:`MASK_KINDS`) to ``labels``.

    Raises:
        MaskTransformError: unknown ``kind`` (the message lists the valid kinds), or any error
            of the transform itself.
    """
    if kind not in TRANSFORMS:
        raise MaskTransformError(
            f"unknown pseudo-label variant {kind!r}; valid kinds: {', '.join(MASK_KINDS)}"
        )
    return TRANSFORMS[kind](labels, seed)
