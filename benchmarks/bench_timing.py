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

from bench_cases import FORWARD, FORWARD_BACKWARD, TRAIN_STEP, Contender, weight_loss

__all__ = ["Timing", "measure_interleaved", "orthogonality_error", "relative_error", "workload"]


@dataclass
class Timing:
    """What one library's calls in one row took.

    The first call is a warm-up that also yields the outputs checked for accuracy; if it alone
    spent the time budget it is the only measurement (``cold``).
    """

    reps_requested: int
    times_s: list[float] = field(default_factory=list)
    first_s: float | None = None
    capped: bool = False
    error: str | None = None

    @property
    def cold(self) -> bool:
        """Whether the only measurement is the warm-up call."""
        return not self.times_s and self.first_s is not None

    @property
    def reps(self) -> int:
        """Calls that make up the reported time."""
        return len(self.times_s) or (1 if self.cold else 0)

    @property
    def median_s(self) -> float | None:
        """The reported time: median of the timed calls, else the warm-up call."""
        if self.times_s:
            return statistics.median(self.times_s)
        return self.first_s


def workload(mode: str, contender: Contender, cotangent: Tensor | None) -> Callable[[], object]:
    """The call timed for ``mode``; it returns what the accuracy checks read.

    * forward: read ``module.weight`` under ``no_grad`` (inference; no graph is kept);
    * fwd+bwd: read it, ``(W * G).sum()``, backward to the unconstrained tensors;
    * train step: the contender's own optimisation step.
    """
    module, params = contender.module, contender.params
    if mode == FORWARD:

        def forward() -> Tensor:
            with torch.no_grad():
                return module.weight

        return forward
    if mode == FORWARD_BACKWARD:
        assert cotangent is not None

        def forward_backward() -> Tensor:
            # set_to_none rather than zeroing: no accumulation kernel in the timed region.
            for p in params:
                p.grad = None
            W = module.weight
            weight_loss(W, cotangent).backward()
            return W.detach()

        return forward_backward
    if mode == TRAIN_STEP:
        assert contender.train_step is not None
        return contender.train_step
    raise ValueError(f"unknown mode {mode!r}")


def measure_interleaved(
    calls: dict[str, Callable[[], object]],
    reps: int,
    budget_s: float,
    on_first: Callable[[str, object], None],
    log: Callable[[str], None],
) -> dict[str, Timing]:
    """Time ``calls`` round-robin (A, B, C, A, B, C, ...) in this process.

    Interleaving spreads any drift of the machine (other jobs, frequency, caches) over every
    library alike, which separate back-to-back runs do not. Round 0 is a warm-up whose output
    goes to ``on_first`` (untimed) for the accuracy checks. A library stops after the round in
    which its calls (warm-up included) passed ``budget_s``; the others go on.

    Args:
        calls: library name to its zero-argument call.
        reps: timed calls wanted per library, after the warm-up.
        budget_s: seconds per library after which it gets no further calls.
        on_first: receives ``(library, output)`` of each warm-up call.
        log: where a failing call's error is reported.

    Returns:
        library name to its :class:`Timing`.
    """
    timings = {library: Timing(reps) for library in calls}
    spent = dict.fromkeys(calls, 0.0)
    active = list(calls)
    gc.collect()
    # As timeit does: a cyclic-GC pause inside one library's call would bill it for the others.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(reps + 1):
            for library in list(active):
                timing = timings[library]
                try:
                    start = time.perf_counter()
                    output = calls[library]()
                    elapsed = time.perf_counter() - start
                except Exception as exc:
                    timing.error = f"{type(exc).__name__}: {exc}"
                    log(f"  {library} failed: {timing.error}\n{traceback.format_exc()}")
                    active.remove(library)
                    continue
                if round_ == 0:
                    timing.first_s = elapsed
                    on_first(library, output)
                else:
                    timing.times_s.append(elapsed)
                del output
                spent[library] += elapsed
                if spent[library] >= budget_s and round_ < reps:
                    timing.capped = True
                    active.remove(library)
            if not active:
                break
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
