"""CPU inference fast path of the decoder's additive attention (same function, fewer flops).

The decoder (:mod:`ica_captioning.model.decoder`) computes
``softmax_l(2·w·σ(2·W_a a_l + 2·U_a h))``. In CPU inference this module computes the same
scores with two tricks, both measured in ``benchmarks/results/`` and ``docs/training.md``:

* ``σ(2(W_a a + U_a h)) = 1 / (1 + exp(−2 W_a a)·exp(−2 U_a h))`` with ``exp(−2 W_a a)``
  computed once per image (:func:`exp_memory`, called by ``init_state``): no transcendental
  function per ``[R, L, A]`` element.
* The ``[N, K, L, A]`` intermediate is processed in tiles of whole images of about
  :data:`TILE_BYTES`, so it stays cache-resident instead of a fresh large buffer per step.

Two kernels compute the fast path (:data:`KERNELS`, chosen with :func:`use_kernel`, e.g. by
``evaluation.cpu_attention``): ``"tiled"`` (the default) runs the ATen ops above tile by tile;
``"compiled"`` hands the whole expression to ``torch.compile``, which generates one loop that
never writes the ``[N, K, L, A]`` intermediate: the scores alone 3× faster, a paper-size beam
search 1.3× faster on 1 thread but only 1.07× on 2
(``benchmarks/results/cpu_beam_search_compiled_attention.txt``). It needs a C++ compiler and
compiles on first use (19 s cold, 3 s from inductor's on-disk cache here); where it cannot be
built it warns once and the tiled kernel runs. Both agree with the plain formula to float32
round-off.

It is used only where it is exact to float32 round-off and faster: on CPU, without autograd
(training keeps the plain differentiable formula), in float32/64 (not under autocast), and
while ``|W_a a|`` and ``|U_a h|`` stay within :data:`EXP_RANGE`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch

logger = logging.getLogger(__name__)

#: Bytes of one tile of the ``[N, K, L, A]`` intermediate (whole images per tile).
TILE_BYTES = 2 * 1024 * 1024

#: The fast path needs ``|W_a a| ≤ EXP_RANGE`` and ``|U_a h| ≤ EXP_RANGE``: then
#: ``exp(−2 W_a a)·exp(−2 U_a h)`` stays within ``e^{±4·EXP_RANGE}``, finite and normal in
#: float32 (``e^{±80}``), so it equals ``exp(−2(W_a a + U_a h))`` to a few ulp. Outside it
#: the scores fall back to ``sigmoid``.
EXP_RANGE = 20.0

#: ``(query [N', K, 1, A], projected [N', L, A]) -> σ(2·projected + 2·query) [N', K, L, A]``.
Activation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Kernels of the fast path: ATen ops over cache-sized tiles, or one ``torch.compile`` loop.
KERNELS = ("tiled", "compiled")

_kernel: ContextVar[str] = ContextVar("cpu_attention_kernel", default="tiled")


@contextlib.contextmanager
def use_kernel(name: str) -> Iterator[None]:
    """Run the fast path with kernel ``name`` (one of :data:`KERNELS`) inside the block.

    Raises:
        ValueError: an unknown kernel name.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown CPU attention kernel {name!r}; expected one of {KERNELS}")
    token = _kernel.set(name)
    try:
        yield
    finally:
        _kernel.reset(token)


def fused_scores(exp_query: torch.Tensor, exp_projected: torch.Tensor, w2: torch.Tensor):
    """``Σ_a w2_a / (1 + exp_query_a · exp_projected_la)`` as one expression (for torch.compile).

    Args:
        exp_query: ``[N, K, 1, A]`` = ``exp(−2 U_a h)``.
        exp_projected: ``[N, L, A]`` = ``exp(−2 W_a a)``.
        w2: ``[1, 1, 1, A]`` = ``2·w``.

    Returns:
        ``[N, K, L]`` scores.
    """
    return torch.sum(w2 / (1.0 + exp_query * exp_projected.unsqueeze(1)), dim=-1)


@functools.cache
def compiled_scores() -> Callable[..., torch.Tensor] | None:
    """:func:`fused_scores` compiled by ``torch.compile`` (dynamic shapes), or ``None``.

    Compiled and run once on a small input here, so a missing C++ compiler shows up now (one
    warning, then the tiled kernel) and not in the middle of a search.
    """
    fn = torch.compile(fused_scores, dynamic=True)
    try:
        with torch.inference_mode():
            eq, ep, w2 = torch.ones(2, 2, 1, 3), torch.ones(2, 4, 3), torch.ones(1, 1, 1, 3)
            if not torch.allclose(fn(eq, ep, w2), fused_scores(eq, ep, w2)):
                raise RuntimeError("the compiled kernel disagrees with the formula")
    except Exception as err:  # no compiler, unsupported platform, ...: keep decoding
        logger.warning(
            "cpu_attention: the compiled kernel is not available here (%s: %s); "
            "using the tiled kernel",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
        return None
    return fn


def applies(query: torch.Tensor) -> bool:
    """Whether a step with this attention query ``[N, K, 1, A]`` takes the CPU path."""
    return (
        not torch.is_grad_enabled()
        and query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.float64)  # not under autocast
    )


def exp_memory(projected: torch.Tensor) -> torch.Tensor:
    """``exp(−2·projected)`` ``[N, L, A]`` for the fast path, or ``[N, 0, 0]`` where it is off.

    Off under autograd, off the CPU (a GPU does the ``sigmoid`` at memory speed), for
    non-float32/64 dtypes, and where ``|projected| > EXP_RANGE``.
    """
    n = projected.shape[0]
    if (
        n == 0
        or torch.is_grad_enabled()
        or projected.device.type != "cpu"
        or projected.dtype not in (torch.float32, torch.float64)
        or not bool(projected.abs().amax() <= EXP_RANGE)
    ):
        return projected.new_empty(n, 0, 0)
    return torch.exp(-2.0 * projected)


def attention_scores(
    query: torch.Tensor,
    projected: torch.Tensor,
    exp_projected: torch.Tensor,
    weight: torch.Tensor,
    activation: Activation,
) -> torch.Tensor:
    """Attention scores ``2·w·σ(2·W_a a + 2·U_a h)`` in cache-sized tiles of whole images.

    Args:
        query: ``[N, K, 1, A]`` = ``U_a h`` (``K`` rows per image).
        projected: ``[N, L, A]`` = ``W_a a``.
        exp_projected: ``[N, L, A]`` = :func:`exp_memory` of ``projected``, or ``[N, 0, 0]``.
        weight: ``[1, A]`` the attention's output layer ``w``.
        activation: the decoder's ``σ(2·W_a a + 2·U_a h)``, used where the exp form is off.

    Returns:
        ``[N, K, L]`` scores (softmax over ``L`` gives the attention).
    """
    n, k, _, dim = query.shape
    num_cells = projected.shape[1]
    fast = exp_projected.numel() > 0 and bool(query.abs().amax() <= EXP_RANGE)
    exp_query = torch.exp(-2.0 * query) if fast else query  # [N, K, 1, A]
    if fast and _kernel.get() == "compiled" and (compiled := compiled_scores()) is not None:
        return compiled(exp_query, exp_projected, 2.0 * weight.view(1, 1, 1, dim))
    per_image = k * num_cells * dim * query.element_size()
    block = max(1, TILE_BYTES // max(per_image, 1))
    scores = query.new_empty(n, k, num_cells)
    w2 = 2.0 * weight.t()  # [A, 1]
    one = query.new_ones(())
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        if fast:  # 1 / (1 + exp(−2 U_a h)·exp(−2 W_a a)) = σ(2(W_a a + U_a h))
            act = torch.addcmul(one, exp_query[lo:hi], exp_projected[lo:hi].unsqueeze(1))
            act.reciprocal_()  # [n', K, L, A]
        else:
            act = activation(query[lo:hi], projected[lo:hi])
        # Straight into the scores: no per-tile temporaries beyond ``act``.
        torch.mm(act.view(-1, act.shape[-1]), w2, out=scores[lo:hi].view(-1, 1))
    return scores
