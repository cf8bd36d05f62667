"""Interleaved timing of one benchmark row, and the accuracy measures of its outputs."""

from __future__ import annotations

import gc
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

import geoparam
from bench_cases import FORWARD, FORWARD_BACKWARD, STEP_MODES, Contender, weight_loss

__all__ = [
    "WARMUP_CALLS",
    "Timing",
    "call_order",
    "measure_interleaved",
    "orthogonality_error",
    "relative_error",
    "workload",
]


WARMUP_CALLS = 3
"""Untimed calls per library before the timed ones: the first one also feeds the accuracy checks,
the others let allocator caches, LAPACK workspaces and branch predictors settle."""


@dataclass
class Timing:
    """What one library's calls in one row took.

    The warm-up calls come first; the first of them also yields the outputs checked for
    accuracy. If that first call alone spent the time budget, it is the only measurement
    (``cold``).
    """

    reps_requested: int
    warmup_s: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    capped: bool = False
    error: str | None = None

    @property
    def first_s(self) -> float | None:
        """The first (cold) call, a warm-up."""
        return self.warmup_s[0] if self.warmup_s else None

    @property
    def cold(self) -> bool:
        """Whether the only measurement is the first warm-up call."""
        return not self.times_s and self.first_s is not None

    @property
    def reps(self) -> int:
        """Calls that make up the reported time."""
        return len(self.times_s) or (1 if self.cold else 0)

    @property
    def median_s(self) -> float | None:
        """The reported time: median of the timed calls, else the cold call."""
        if self.times_s:
            return statistics.median(self.times_s)
        return self.first_s

    @property
    def min_s(self) -> float | None:
        """The fastest timed call (the least disturbed by the machine), else the cold call."""
        if self.times_s:
            return min(self.times_s)
        return self.first_s


def workload(mode: str, contender: Contender, cotangent: Tensor | None) -> Callable[[], object]:
    """The call timed for ``mode``; it returns what the accuracy checks read.

    * forward: read ``module.weight`` under ``no_grad`` (inference; no graph is kept);
    * fwd+bwd: read it, ``(W * G).sum()``, backward to the unconstrained tensors;
    * train step, compiled fwd+bwd, eval forward: the contender's own ``step``.
    """
    module, params = contender.module, contender.params
    if mode == FORWARD:

        def forward() -> Tensor:
            # Every call evaluates the map: geoparam would otherwise return the weight it computed
            # at the previous call, since nothing changed in between (a no-op for the others).
            geoparam.clear_caches(module)
            with torch.no_grad():
                return module.weight

        return forward
    if mode == FORWARD_BACKWARD:
        assert cotangent is not None

        def forward_backward() -> Tensor:
            geoparam.clear_caches(module)
            # set_to_none rather than zeroing: no accumulation kernel in the timed region.
            for p in params:
                p.grad = None
            W = module.weight
            weight_loss(W, cotangent).backward()
            return W.detach()

        return forward_backward
    if mode in STEP_MODES:
        assert contender.step is not None
        return contender.step
    raise ValueError(f"unknown mode {mode!r}")


def call_order(libraries: list[str], round_: int) -> list[str]:
    """The order of round ``round_``: ``libraries`` rotated to start at entry ``round_ mod L``.

    Within a round the library called first runs on whatever the previous call left (caches,
    the allocator, the CPU's clock): rotating gives every library each position equally often.
    """
    if not libraries:
        return []
    shift = round_ % len(libraries)
    return libraries[shift:] + libraries[:shift]


def measure_interleaved(
    calls: dict[str, Callable[[], object]],
    reps: int,
    budget_s: float,
    on_first: Callable[[str, object], None],
    log: Callable[[str], None],
    warmup: int = WARMUP_CALLS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time ``calls`` in rounds of one call per library, the order rotating every round.

    Interleaving spreads any drift of the machine (other jobs, frequency, caches) over every
    library alike, which separate back-to-back runs do not; rotating the order (round ``r``
    starts with library ``r mod L``, see :func:`call_order`) removes the bias of always going
    first. Each library makes ``warmup`` untimed calls, then up to ``reps`` timed ones; the
    output of its first call goes to ``on_first`` for the accuracy checks.

    The budget bounds the slow baselines, separately for the warm-up and the timed calls:

    * a library whose first call alone took ``budget_s`` gets no further call: that cold call
      is its only measurement (:attr:`Timing.cold`);
    * otherwise it stops warming up once its warm-up calls took ``budget_s`` (so it may get
      fewer than ``warmup``), and stops timing once its timed calls took ``budget_s``
      (:attr:`Timing.capped`, fewer than ``reps``). It always gets at least one timed call.

    The others go on meanwhile.

    Args:
        calls: library name to its zero-argument call, in table order (round 0's order).
        reps: timed calls wanted per library, after the warm-up.
        budget_s: seconds per library for its warm-up calls, and again for its timed calls.
        on_first: receives ``(library, output)`` of each library's first call.
        log: where a failing call's error is reported.
        warmup: untimed calls per library before the timed ones (at least 1).
        clock: the timer (``time.perf_counter``; a fake one in tests).

    Returns:
        library name to its :class:`Timing`.

    Raises:
        ValueError: if ``reps`` or ``warmup`` is below 1.
    """
    if reps < 1 or warmup < 1:
        raise ValueError(f"expected reps >= 1 and warmup >= 1, got reps={reps}, warmup={warmup}")
    timings = {library: Timing(reps) for library in calls}
    warming = set(calls)
    active = set(calls)
    gc.collect()
    # As timeit does: a cyclic-GC pause inside one library's call would bill it for the others.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        round_ = 0
        while active:
            for library in call_order(list(calls), round_):
                if library not in active:
                    continue
                timing = timings[library]
                try:
                    start = clock()
                    output = calls[library]()
                    elapsed = clock() - start
                except Exception as exc:
                    timing.error = f"{type(exc).__name__}: {exc}"
                    log(f"  {library} failed: {timing.error}\n{traceback.format_exc()}")
                    active.discard(library)
                    continue
                if library in warming:
                    timing.warmup_s.append(elapsed)
                    if len(timing.warmup_s) == 1:
                        on_first(library, output)
                    warm_spent = sum(timing.warmup_s)
                    if warm_spent >= budget_s and len(timing.warmup_s) == 1:
                        # The cold call alone spent the budget: it is the only measurement.
                        timing.capped = True
                        active.discard(library)
                    if warm_spent >= budget_s or len(timing.warmup_s) == warmup:
                        warming.discard(library)
                else:
                    timing.times_s.append(elapsed)
                    if len(timing.times_s) == reps:
                        active.discard(library)
                    elif sum(timing.times_s) >= budget_s:
                        timing.capped = True
                        active.discard(library)
                del output
            round_ += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def orthogonality_error(W: Tensor) -> float:
    """``‖WᴴW - I‖₂`` (``WWᴴ`` for a wide ``W``), computed in float64; the max over a batch.

    The spectral norm is ``max |σᵢ² - 1|`` over the singular values of ``W``: how far the
    weight is from an isometry, independent of its size.
    """
    wide = torch.complex128 if W.is_complex() else torch.float64
    W = W.detach().to(wide)
    if W.size(-2) < W.size(-1):
        W = W.mH
    gram = W.mH @ W
    gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)
    return float(torch.linalg.eigvalsh(gram).abs().max())


def relative_error(values: list[Tensor], reference: list[Tensor]) -> float:
    """``‖g - g_ref‖ / ‖g_ref‖`` over a list of tensors (Frobenius norms), in float64."""
    if len(values) != len(reference):
        raise ValueError(f"expected {len(reference)} gradients, got {len(values)}")
    difference = reference_norm = 0.0
    for value, ref in zip(values, reference, strict=True):
        difference += float((value.to(ref.dtype) - ref).abs().square().sum())
        reference_norm += float(ref.abs().square().sum())
    if reference_norm == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return math.sqrt(difference / reference_norm)
