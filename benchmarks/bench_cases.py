"""The benchmark cases: each builds one problem identically for geoparam, torch and geotorch.

A *case* names a problem (a constrained weight of a given shape, or a small model) and the modes
it is timed in. Building it gives a :class:`Problem`: one :class:`Contender` per library holding
the same tensors, the cotangent ``G`` of the loss ``(W * G).sum()``, and a float64 reference of
torch's map for the gradient check. Nothing here times anything; see ``bench_timing.py``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

import geoparam
from geoparam.manifolds import ORTHOGONAL_MAPS

try:
    import geotorch
except ImportError:  # geotorch is an optional baseline (pip install geoparam[bench])
    geotorch = None

__all__ = [
    "CATALOGUE",
    "COMPILED",
    "CONV",
    "EVAL",
    "FORWARD",
    "FORWARD_BACKWARD",
    "LIBRARIES",
    "REGISTER",
    "RIGHT_INVERSE",
    "SCALE",
    "STEP_MODES",
    "TRAIN_STEP",
    "Case",
    "Contender",
    "Problem",
    "all_cases",
    "operator_norms",
    "skew_spectral_norm",
    "tall_map_low_rank",
    "weight_loss",
]

LIBRARIES: tuple[str, ...] = ("geoparam", "torch", "geotorch")

FORWARD = "forward"
FORWARD_BACKWARD = "fwd+bwd"
TRAIN_STEP = "train step"
COMPILED = "compiled fwd+bwd"
EVAL = "eval forward"
RIGHT_INVERSE = "right inverse"
REGISTER = "register"
LAYER_FORWARD = "layer forward"
LAYER_TRAIN = "layer fwd+bwd"
# Modes timed through the contender's own `step` callable (the others read `module.weight`).
STEP_MODES = (TRAIN_STEP, COMPILED, EVAL, RIGHT_INVERSE, REGISTER, LAYER_FORWARD, LAYER_TRAIN)

CATALOGUE = "catalogue"
"""The family of the rows that time geoparam's constraint catalogue against geotorch."""

SCALE = "scale"
"""The family of the rows of tall weights at scale, registered with every default argument."""

SCALE_ADAM_STEPS = 3

CONV = "conv"
"""The family of the rows of Lipschitz convolutions (operator norm, orthogonal convolution)."""

# Above this many rows, torch's float64 n x n route for a tall matrix_exp/cayley weight takes
# minutes (the backward exponentiates a 2n x 2n block), so the reference uses the exact
# rank-2k form of the same map instead (see tall_map_low_rank).
DIRECT_REFERENCE_MAX_ROWS = 1024

_GEOTORCH_TRIV = {"matrix_exp": "expm", "cayley": "cayley"}
_WIDE = {torch.float32: torch.float64, torch.complex64: torch.complex128}


@dataclass
class Contender:
    """One library's instance of a problem.

    Attributes:
        module: the module whose ``weight`` is constrained (the whole model for a train step).
        params: the unconstrained tensors behind the weight, whose gradients are checked.
        step: for the modes of :data:`STEP_MODES`, the call to time (an optimisation step
            returning the loss, a compiled forward+backward returning the weight, an inference
            forward, an assignment of the weight, a registration).
        to_reference: maps the gradients on ``params`` to the coordinates of the reference
            gradient, when the library stores the weight's state in others (geoparam's compact
            base of a tall weight: ``X = B X_torch``, so ``g_torch = Bᴴ g``).
    """

    module: nn.Module
    params: list[Tensor]
    step: Callable[[], Tensor | None] | None = None
    to_reference: Callable[[list[Tensor]], list[Tensor]] | None = None


@dataclass
class Problem:
    """The same problem for every library, plus what the accuracy checks need.

    Attributes:
        contenders: library name to its contender, or to the reason it has no equivalent.
        cotangent: ``G`` in the loss ``(W * G).sum()`` of the fwd+bwd mode.
        reference_gradient: float64 gradient of that loss through torch's map, in the order of
            ``Contender.params``; computed lazily because it can take seconds.
        orthogonal: whether the orthogonality error of the weight is meaningful.
    """

    contenders: dict[str, Contender | str]
    cotangent: Tensor | None = None
    reference_gradient: Callable[[], list[Tensor]] | None = None
    orthogonal: bool = False


@dataclass(frozen=True)
class Case:
    """A named problem and the modes it is timed in; ``build`` makes the :class:`Problem`.

    ``memory``, if given, measures each library's peak memory for the case in fresh processes
    (MiB, or the reason it was not measured).
    """

    name: str
    family: str
    modes: tuple[str, ...]
    build: Callable[[], Problem]
    details: dict[str, object] = field(default_factory=dict)
    memory: Callable[[], dict[str, float | str]] | None = None

    def rows(self) -> list[str]:
        """The row labels ``"<name> <mode>"`` that ``--filter`` matches against."""
        return [f"{self.name} {mode}" for mode in self.modes]


class _Holder(nn.Module):
    """A module with a single ``weight`` of any shape (a batch of matrices, say)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)


class _RecurrentNet(nn.Module):
    """``h_{t+1} = tanh(W_in x_t + W h_t)`` over a sequence, then a linear readout of the last h.

    ``recurrent.weight`` is the ``W`` that gets the orthogonal constraint, as in expRNN. With
    ``read_once`` the forward reads ``W`` once and reuses it at every step; otherwise the cell
    reads it at every step, as ``self.recurrent(h)`` in a loop naturally does.
    """

    def __init__(self, n_in: int, hidden: int, n_out: int, read_once: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.read_once = read_once
        self.input = nn.Linear(n_in, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, inputs: Tensor) -> Tensor:
        h = inputs.new_zeros(inputs.size(1), self.hidden)
        W = self.recurrent.weight if self.read_once else None
        for x in inputs:
            recurrent = F.linear(h, W) if W is not None else self.recurrent(h)
            h = torch.tanh(self.input(x) + recurrent)
        return self.readout(h)


def weight_loss(W: Tensor, G: Tensor) -> Tensor:
    """The scalar loss ``Re (W * G).sum()`` whose gradient the fwd+bwd mode computes."""
    return (W * G).sum().real


def _unconstrained(module: nn.Module, name: str = "weight") -> list[Tensor]:
    # ParametrizationList keeps `original` (or `original0`, `original1`, ...) as its own
    # parameters, in registration order, the same in every library.
    return list(module.parametrizations[name].parameters(recurse=False))


def skew_spectral_norm(X: Tensor) -> Tensor:
    """``‖A‖₂`` per matrix for torch's skew embedding ``A = [L, 0] - [L, 0]ᴴ``, ``L = X.tril()``.

    Uses the compressed ``M`` of :func:`tall_map_low_rank` (``‖A‖₂ = ‖M‖₂``), so a 4096 x 64
    weight costs a 128 x 128 SVD rather than a 4096 x 4096 one.
    """
    return torch.linalg.matrix_norm(_compressed_skew(X)[0], ord=2)


def _compressed_skew(X: Tensor) -> tuple[Tensor, Tensor | None]:
    # A = [[A11, -X2ᴴ], [X2, 0]] = U M Uᴴ with X2 = Y R (reduced QR) and U = diag(I, Y), which
    # has orthonormal columns; M = [[A11, -Rᴴ], [R, 0]]. Returns (M, Y); Y is None if square.
    k = X.size(-1)
    L1 = X[..., :k, :].tril()
    A11 = L1 - L1.mH
    if X.size(-2) == k:
        return A11, None
    Y, R = torch.linalg.qr(X[..., k:, :])
    top = torch.cat([A11, -R.mH], dim=-1)
    bottom = torch.cat([R, R.new_zeros(*R.shape[:-1], R.size(-2))], dim=-1)
    return torch.cat([top, bottom], dim=-2), Y


def tall_map_low_rank(X: Tensor, orthogonal_map: str) -> Tensor:
    """torch's ``matrix_exp``/``cayley`` map of a tall ``X`` (no base), by its rank-2k form.

    With ``A = U M Uᴴ`` as in :func:`skew_spectral_norm` and ``f(0) = I`` for both maps,
    ``f(A) = I + U (f(M) - I) Uᴴ``, so ``f(A)[:, :k] = [F₁₁; Y F₂₁]`` with ``F = f(M)``.
    Exact (no approximation), differentiable through torch's QR, and ``O(nk²)``: the float64
    gradient reference for tall weights whose ``n x n`` route would take minutes. It shares no
    code or route with geoparam's Stiefel kernels (those use ``C = X₂ᴴX₂``, no QR).
    """
    k = X.size(-1)
    M, Y = _compressed_skew(X)
    if orthogonal_map == "matrix_exp":
        F_ = torch.matrix_exp(M)
    else:
        eye = torch.eye(M.size(-1), dtype=M.dtype, device=M.device)
        F_ = torch.linalg.solve(eye - 0.5 * M, eye + 0.5 * M)
    if Y is None:
        return F_
    return torch.cat([F_[..., :k, :k], Y @ F_[..., k:, :k]], dim=-2)


def _orthogonal_point(
    shape: tuple[int, ...], orthogonal_map: str, dtype: torch.dtype, gen, norm: float = 1.0
):
    """A realistic unconstrained ``X``: ``‖A‖₂ = norm`` per matrix, or small Householder tails.

    ``X = 0`` (where every library starts) makes the exponential trivially cheap, so the
    benchmark moves it to a point a few optimizer steps could reach (``norm = 1``), or that long
    training without re-basing reaches (``norm = 1000``).
    """
    X = torch.randn(shape, generator=gen, dtype=_WIDE[dtype])
    if orthogonal_map == "householder":
        # Reflectors e_i + tail with ‖tail‖² ≈ 1/4; the diagonal -1 is what right_inverse stores.
        X = X.tril(-1) / (2 * shape[-2] ** 0.5)
        X.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return X.to(dtype)
    return (X * (norm / skew_spectral_norm(X))[..., None, None]).to(dtype)


def _orthogonal_reference(
    snapshot: nn.Module, orthogonal_map: str, cotangent: Tensor
) -> list[Tensor]:
    """Gradient of ``weight_loss`` through torch's map in float64 (complex128)."""
    wide = _WIDE[cotangent.dtype]
    G = cotangent.to(wide)
    original = snapshot.parametrizations.weight.original
    n, k = original.shape[-2:]
    if orthogonal_map != "householder" and n > k and n > DIRECT_REFERENCE_MAX_ROWS:
        X = original.detach().to(wide).requires_grad_()
        base = snapshot.parametrizations.weight[0].base.to(wide)
        W = base @ tall_map_low_rank(X, orthogonal_map)
        return list(torch.autograd.grad(weight_loss(W, G), [X]))
    with warnings.catch_warnings():
        # Module.to(complex128) warns that complex modules are experimental; the module here
        # is a plain holder of one complex parameter.
        warnings.simplefilter("ignore", UserWarning)
        reference = copy.deepcopy(snapshot).to(wide)
    return list(torch.autograd.grad(weight_loss(reference.weight, G), _unconstrained(reference)))


def _compact_to_torch(base: Tensor, grads: list[Tensor]) -> list[Tensor]:
    # The compact layout stores X = B X_torch (tall orientation): g_torch = Bᴴ g.
    (grad,) = grads
    if grad.size(-2) < grad.size(-1):
        return [(base.mH @ grad.mT).mT]
    return [base.mH @ grad]


def _norm_reference(snapshot: nn.Module, cotangent: Tensor) -> list[Tensor]:
    # The snapshot was taken before any call, so its spectral-norm vectors u, v are the ones
    # every library's first (accuracy) call starts from.
    reference = copy.deepcopy(snapshot).double()
    G = cotangent.double()
    return list(torch.autograd.grad(weight_loss(reference.weight, G), _unconstrained(reference)))


def _orthogonal_problem(
    shape: tuple[int, ...],
    orthogonal_map: str,
    dtype: torch.dtype,
    seed: int,
    norm: float = 1.0,
    use_trivialization: bool = True,
) -> Problem:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    template = _Holder(torch.randn(shape, generator=gen, dtype=dtype))

    torch_module = torch_parametrizations.orthogonal(
        copy.deepcopy(template), "weight", orthogonal_map, use_trivialization=use_trivialization
    )
    with torch.no_grad():
        torch_module.parametrizations.weight.original.copy_(
            _orthogonal_point(shape, orthogonal_map, dtype, gen, norm)
        )
    # Torch's random orthogonal base and the point above go to every library: the drop-in
    # promise makes the state_dict keys (and meanings) identical, and geotorch's Stiefel
    # stores the same `original` and `base` and builds the same skew matrix from them.
    state = torch_module.state_dict()
    geoparam_module = geoparam.orthogonal(
        copy.deepcopy(template), "weight", orthogonal_map, use_trivialization=use_trivialization
    )
    to_reference = None
    with warnings.catch_warnings():
        # With its default arguments geoparam keeps a compact base for tall weights above
        # FULL_BASE_LIMIT: torch's state converts on loading (the same weight), and says so.
        warnings.filterwarnings("ignore", ".*converted the checkpoint's base")
        geoparam_module.load_state_dict(state)
    if getattr(geoparam_module.parametrizations.weight[0], "compact_base", False):
        to_reference = partial(_compact_to_torch, torch_module.parametrizations.weight[0].base)

    contenders: dict[str, Contender | str] = {
        "geoparam": Contender(
            geoparam_module, _unconstrained(geoparam_module), to_reference=to_reference
        ),
        "torch": Contender(torch_module, _unconstrained(torch_module)),
    }
    if geotorch is None:
        contenders["geotorch"] = "geotorch is not installed"
    elif not use_trivialization:
        contenders["geotorch"] = "geotorch's maps always have a base"
    elif orthogonal_map == "householder":
        contenders["geotorch"] = "geotorch has no Householder map"
    elif dtype.is_complex:
        contenders["geotorch"] = "geotorch's skew part is X - Xᵀ: no unitary weights"
    else:
        geotorch_module = copy.deepcopy(template)
        geotorch.orthogonal(geotorch_module, "weight", triv=_GEOTORCH_TRIV[orthogonal_map])
        geotorch_module.load_state_dict(state)
        contenders["geotorch"] = Contender(geotorch_module, _unconstrained(geotorch_module))

    cotangent = torch.randn(shape, generator=gen, dtype=dtype)
    snapshot = copy.deepcopy(torch_module)
    return Problem(
        contenders,
        cotangent,
        partial(_orthogonal_reference, snapshot, orthogonal_map, cotangent),
        orthogonal=True,
    )


_TORCH_NORMS = {
    "spectral_norm": torch_parametrizations.spectral_norm,
    "weight_norm": torch_parametrizations.weight_norm,
}
_GEOPARAM_NORMS = {"spectral_norm": geoparam.spectral_norm, "weight_norm": geoparam.weight_norm}


def _norm_problem(constraint: str, make_layer: Callable[[], nn.Module], seed: int) -> Problem:
    torch.manual_seed(seed)
    template = make_layer()
    torch_module = _TORCH_NORMS[constraint](copy.deepcopy(template))
    geoparam_module = _GEOPARAM_NORMS[constraint](copy.deepcopy(template))
    # Same weight and, for spectral_norm, the same power-iteration vectors u and v.
    geoparam_module.load_state_dict(torch_module.state_dict())
    gen = torch.Generator().manual_seed(seed + 1)
    cotangent = torch.randn(template.weight.shape, generator=gen)
    snapshot = copy.deepcopy(torch_module)
    return Problem(
        {
            "geoparam": Contender(geoparam_module, _unconstrained(geoparam_module)),
            "torch": Contender(torch_module, _unconstrained(torch_module)),
            "geotorch": f"geotorch has no {constraint}",
        },
        cotangent,
        partial(_norm_reference, snapshot, cotangent),
    )


def _train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    target: Tensor,
    scoped: bool,
) -> Tensor:
    """zero_grad, forward over the sequence, backward, Adam step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    # scoped: inside torch's parametrize.cached(), the weight is computed once per step, as torch
    # recommends for recurrent use; every library gets the same treatment.
    with parametrize.cached() if scoped else contextlib.nullcontext():
        loss = F.mse_loss(net(inputs), target)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _rnn_problem(
    hidden: int,
    seq_len: int,
    batch: int,
    n_in: int,
    seed: int,
    *,
    scoped: bool = True,
    read_once: bool = False,
) -> Problem:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    template = _RecurrentNet(n_in, hidden, n_out=n_in, read_once=read_once)
    inputs = torch.randn(seq_len, batch, n_in, generator=gen)
    target = torch.randn(batch, n_in, generator=gen)

    reference = copy.deepcopy(template)
    torch_parametrizations.orthogonal(reference.recurrent, "weight", "matrix_exp")
    point = _orthogonal_point((hidden, hidden), "matrix_exp", torch.float32, gen)
    with torch.no_grad():
        reference.recurrent.parametrizations.weight.original.copy_(point)
    state = reference.state_dict()

    constrain: dict[str, Callable[[nn.Module], object] | str] = {
        "geoparam": partial(geoparam.orthogonal, orthogonal_map="matrix_exp"),
        "torch": partial(torch_parametrizations.orthogonal, orthogonal_map="matrix_exp"),
        "geotorch": "geotorch is not installed"
        if geotorch is None
        else partial(geotorch.orthogonal, triv="expm"),
    }
    contenders: dict[str, Contender | str] = {}
    for library, apply in constrain.items():
        if isinstance(apply, str):
            contenders[library] = apply
            continue
        net = copy.deepcopy(template)
        apply(net.recurrent)
        net.load_state_dict(state)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        step = partial(_train_step, net, optimizer, inputs, target, scoped)
        contenders[library] = Contender(net, _unconstrained(net.recurrent), step)
    return Problem(contenders)


def _compiled_problem(n: int, seed: int) -> Problem:
    """The fwd+bwd of the square matrix_exp case, each library's loss under torch.compile."""
    problem = _orthogonal_problem((n, n), "matrix_exp", torch.float32, seed)
    G = problem.cotangent
    for contender in problem.contenders.values():
        if isinstance(contender, str):
            continue
        module, params = contender.module, contender.params
        loss = torch.compile(lambda module=module: weight_loss(module.weight, G), fullgraph=True)

        def step(module=module, params=params, loss=loss) -> Tensor:
            for p in params:
                p.grad = None
            loss().backward()
            return module.weight.detach()

        step()  # compiles here, when the problem is built: the timing sees compiled calls only
        contender.step = step
    return problem


class _OrthogonalMLP(nn.Module):
    """Linear layers of one width with orthogonal weights and tanh between them."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def _eval_problem(width: int, depth: int, batch: int, seed: int, *, frozen: bool) -> Problem:
    """Inference of an orthogonal MLP in eval mode: parametrized, or frozen into plain weights."""
    torch.manual_seed(seed)
    inputs = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))
    template = _OrthogonalMLP(width, depth)
    reference = copy.deepcopy(template)
    for layer in reference.layers:
        torch_parametrizations.orthogonal(layer, "weight", "matrix_exp")
    state = reference.state_dict()

    constrain: dict[str, tuple[Callable[[nn.Module], object], Callable[[nn.Module], object]]] = {
        "geoparam": (partial(geoparam.orthogonal, orthogonal_map="matrix_exp"), geoparam.freeze),
        "torch": (
            partial(torch_parametrizations.orthogonal, orthogonal_map="matrix_exp"),
            _torch_freeze,
        ),
    }
    contenders: dict[str, Contender | str] = {}
    if geotorch is None:
        contenders["geotorch"] = "geotorch is not installed"
    else:
        constrain["geotorch"] = (partial(geotorch.orthogonal, triv="expm"), _torch_freeze)
    for library, (apply, unfreeze) in constrain.items():
        model = copy.deepcopy(template)
        for layer in model.layers:
            apply(layer)
        model.load_state_dict(state)
        model.eval()
        if frozen:
            unfreeze(model)

        def step(model=model) -> Tensor:
            with torch.no_grad():
                return model(inputs)

        contenders[library] = Contender(model, [], step)
    return Problem({library: contenders[library] for library in LIBRARIES})


def _torch_freeze(model: nn.Module) -> None:
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name)


# The constraint catalogue against geotorch: each constraint on one weight, in both libraries.

# Registration leaves every map at its chart's centre (geotorch's skew generators are 0 there),
# where a matrix exponential costs next to nothing. Both libraries start from the same weight
# and take these Adam steps on the same loss, which move their generators to ‖A‖₂ of order 1
# (geotorch's low_rank at 256 x 256: 1.08), a point a few steps of training reach, before
# anything is timed.
CATALOGUE_STEPS = 5
CATALOGUE_LR = 1e-2

# geotorch's alpha_stable right inverse solves an n² × n² float32 linear system; past this size
# (n = 256 needs 16 GiB) it is killed for memory, so it is not run.
_LYAPUNOV_LIMIT_BYTES = 4 * 2**30


@dataclass(frozen=True)
class _Constraint:
    """A catalogue constraint as both libraries call it, a point on its set and an oracle.

    Attributes:
        label: the row's case name.
        constraint: the front door, spelled the same in geoparam and geotorch.
        shape: the weight's shape.
        kwargs: the front door's arguments after the tensor's name, the same for both.
        point: draws a float64 weight on the set from a generator.
        violation: how far a float64 weight is off the set, relative to its scale (``inf``
            where a strict inequality fails); independent of both libraries.
        measure: what ``violation`` measures, for messages.
        modes: the modes the row is timed in.
        tolerance: the largest violation accepted of a library's float32 weight.
    """

    label: str
    constraint: str
    shape: tuple[int, int]
    kwargs: dict[str, object]
    point: Callable[[torch.Generator], Tensor]
    violation: Callable[[Tensor], float]
    measure: str
    modes: tuple[str, ...] = (FORWARD, FORWARD_BACKWARD)
    tolerance: float = 1e-4

    def geotorch_absent(self) -> str | None:
        """Why geotorch is not run on this constraint, if it is not."""
        n = self.shape[-1]
        if self.constraint == "alpha_stable" and 4 * n**4 > _LYAPUNOV_LIMIT_BYTES:
            return (
                "geotorch's right inverse solves the Lyapunov equation as one n² × n² linear "
                f"system, {n * n:,} × {n * n:,} ({4 * n**4 / 2**30:.0f} GiB in float32) at "
                f"n = {n}: it is killed for memory, so it is not run"
            )
        return None


def _frame(n: int, k: int, gen: torch.Generator) -> Tensor:
    """``n x k`` orthonormal columns, Haar distributed (float64)."""
    Q, R = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return Q * R.diagonal().sign()


def _uniform(k: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(k, generator=gen, dtype=torch.float64)


def _svd_point(
    n: int,
    k: int,
    rank: int,
    low: float,
    high: float,
    gen: torch.Generator,
    unit_det: bool = False,
) -> Tensor:
    """``U diag(s) Vᵀ`` of the given rank, ``s`` uniform in ``[low, high]``; det > 0 if square."""
    U, V = _frame(n, rank, gen), _frame(k, rank, gen)
    s = _uniform(rank, low, high, gen)
    if unit_det:
        s = (s.log() - s.log().mean()).exp()
    if rank == n == k and torch.linalg.det(U) * torch.linalg.det(V) < 0:
        U[:, 0] = -U[:, 0]
    return (U * s) @ V.T


def _eigen_point(n: int, rank: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    """``Q diag(λ) Qᵀ`` with ``rank`` eigenvalues uniform in ``[low, high]``, the rest 0."""
    Q = _frame(n, rank, gen)
    W = (Q * _uniform(rank, low, high, gen)) @ Q.T
    return (W + W.T) / 2  # exactly symmetric, before and after the cast to float32


def _stable_point(n: int, gen: torch.Generator) -> Tensor:
    """``S - D``, S skew and D ≻ 0.5 I: the symmetric part -D puts every Re λ at or below -0.5."""
    X = torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5
    return (X - X.T) / 2 - _eigen_point(n, n, 0.5, 1.5, gen)


def _gaussian(n: int, k: int, gen: torch.Generator) -> Tensor:
    return torch.randn(n, k, generator=gen, dtype=torch.float64) / n**0.5


def _skew_point(n: int, gen: torch.Generator) -> Tensor:
    X = _gaussian(n, n, gen)
    return (X - X.T) / 2


def _symmetric_point(n: int, gen: torch.Generator) -> Tensor:
    X = _gaussian(n, n, gen)
    return (X + X.T) / 2


def _sphere_point(n: int, k: int, gen: torch.Generator) -> Tensor:
    X = _gaussian(n, k, gen)
    return X / torch.linalg.vector_norm(X, dim=-1, keepdim=True)


def _rank_violation(W: Tensor, rank: int, fixed: bool) -> float:
    # σ_{r+1} / σ_1; a fixed rank also needs σ_r > 0.
    s = torch.linalg.svdvals(W)
    if fixed and not s[rank - 1] > 0:
        return math.inf
    return float(s[rank:].max() / s[0]) if rank < s.numel() else 0.0


def _band_violation(W: Tensor, lam: float) -> float:
    # How far a singular value lies outside [1 - lam, 1 + lam].
    return max(0.0, float((torch.linalg.svdvals(W) - 1).abs().max()) - lam)


def _det_violation(W: Tensor, unit: bool) -> float:
    # det > 0; for a unit determinant also |log det| / n, the log of the singular values'
    # geometric mean.
    sign, logabsdet = torch.linalg.slogdet(W)
    if not sign > 0:
        return math.inf
    return float(logabsdet.abs()) / W.size(-1) if unit else 0.0


def _eigen_violation(W: Tensor, rank: int, strict: bool) -> float:
    # Symmetric, no negative eigenvalue, the n - rank smallest 0 (relative to the largest); a
    # strict set (definite, fixed rank) also needs the rank-th largest > 0.
    n = W.size(-1)
    asymmetry = float(torch.linalg.matrix_norm(W - W.T) / torch.linalg.matrix_norm(W))
    eigenvalues = torch.linalg.eigvalsh((W + W.T) / 2)
    top = float(eigenvalues[-1])
    if not top > 0 or (strict and not eigenvalues[n - rank] > 0):
        return math.inf
    tail = float(eigenvalues[: n - rank].abs().max()) if rank < n else 0.0
    return max(asymmetry, -float(eigenvalues[0]) / top, tail / top)


def _orthonormal_violation(W: Tensor) -> float:
    gram = W.T @ W - torch.eye(W.size(-1), dtype=W.dtype)
    return float(torch.linalg.matrix_norm(gram, ord=2))


def _sphere_violation(W: Tensor) -> float:
    return float((torch.linalg.vector_norm(W, dim=-1) - 1).abs().max())


def _symmetry_violation(W: Tensor, sign: int) -> float:
    # ‖W - sign·Wᵀ‖ / ‖W‖: sign 1 for symmetric, -1 for skew.
    return float(torch.linalg.matrix_norm(W - sign * W.T) / torch.linalg.matrix_norm(W))


def _stable_violation(W: Tensor, alpha: float) -> float:
    # How far the largest real part of an eigenvalue lies above -alpha, relative to ‖W‖₂.
    excess = float(torch.linalg.eigvals(W).real.max()) + alpha
    return max(0.0, excess) / float(torch.linalg.matrix_norm(W, ord=2))


def _catalogue(quick: bool) -> list[_Constraint]:
    """The catalogue's rows: 256 x 256 float32 weights, rank 64 where a rank applies."""
    n, r = (16, 4) if quick else (256, 64)
    k = n // 4
    square = (n, n)
    rows = [
        _Constraint(
            f"low_rank {n}x{n} rank={r}",
            "low_rank",
            square,
            {"rank": r},
            partial(_svd_point, n, n, r, 0.5, 1.5),
            partial(_rank_violation, rank=r, fixed=False),
            "σ_{r+1} / σ_1",
        ),
        _Constraint(
            f"fixed_rank {n}x{n} rank={r}",
            "fixed_rank",
            square,
            {"rank": r},
            partial(_svd_point, n, n, r, 0.5, 1.5),
            partial(_rank_violation, rank=r, fixed=True),
            "σ_{r+1} / σ_1",
        ),
        _Constraint(
            f"almost_orthogonal {n}x{n} lam=0.5",
            "almost_orthogonal",
            square,
            {"lam": 0.5},
            partial(_svd_point, n, n, n, 0.6, 1.4),
            partial(_band_violation, lam=0.5),
            "distance of a singular value outside [1 - lam, 1 + lam]",
        ),
        _Constraint(
            f"invertible {n}x{n}",
            "invertible",
            square,
            {},
            partial(_svd_point, n, n, n, 0.5, 2.0),
            partial(_det_violation, unit=False),
            "det > 0",
        ),
        _Constraint(
            f"sln {n}x{n}",
            "sln",
            square,
            {},
            partial(_svd_point, n, n, n, 0.5, 2.0, unit_det=True),
            partial(_det_violation, unit=True),
            "|log det| / n",
        ),
        _Constraint(
            f"positive_definite {n}x{n}",
            "positive_definite",
            square,
            {},
            partial(_eigen_point, n, n, 0.5, 2.0),
            partial(_eigen_violation, rank=n, strict=True),
            "asymmetry, negative eigenvalues",
        ),
        _Constraint(
            f"positive_semidefinite {n}x{n}",
            "positive_semidefinite",
            square,
            {},
            partial(_eigen_point, n, n, 0.1, 2.0),
            partial(_eigen_violation, rank=n, strict=False),
            "asymmetry, negative eigenvalues",
        ),
        _Constraint(
            f"positive_semidefinite_low_rank {n}x{n} rank={r}",
            "positive_semidefinite_low_rank",
            square,
            {"rank": r},
            partial(_eigen_point, n, r, 0.5, 2.0),
            partial(_eigen_violation, rank=r, strict=False),
            "asymmetry, negative or tail eigenvalues",
        ),
        _Constraint(
            f"positive_semidefinite_fixed_rank {n}x{n} rank={r}",
            "positive_semidefinite_fixed_rank",
            square,
            {"rank": r},
            partial(_eigen_point, n, r, 0.5, 2.0),
            partial(_eigen_violation, rank=r, strict=True),
            "asymmetry, negative or tail eigenvalues",
        ),
        _Constraint(
            f"grassmannian {n}x{k}",
            "grassmannian",
            (n, k),
            {},
            partial(_frame, n, k),
            _orthonormal_violation,
            "‖WᵀW - I‖₂",
        ),
        _Constraint(
            f"sphere {n}x{n}",
            "sphere",
            square,
            {},
            partial(_sphere_point, n, n),
            _sphere_violation,
            "| ‖row‖ - 1 |",
        ),
        _Constraint(
            f"skew {n}x{n}",
            "skew",
            square,
            {},
            partial(_skew_point, n),
            partial(_symmetry_violation, sign=-1),
            "‖W + Wᵀ‖ / ‖W‖",
        ),
        _Constraint(
            f"symmetric {n}x{n}",
            "symmetric",
            square,
            {},
            partial(_symmetric_point, n),
            partial(_symmetry_violation, sign=1),
            "‖W - Wᵀ‖ / ‖W‖",
        ),
    ]
    for m in (8, 16) if quick else (64, 256):
        rows.append(
            _Constraint(
                f"alpha_stable {m}x{m}",
                "alpha_stable",
                (m, m),
                {"alpha": 1e-3},
                partial(_stable_point, m),
                partial(_stable_violation, alpha=1e-3),
                "(max Re λ + alpha) / ‖W‖₂",
                modes=(FORWARD, FORWARD_BACKWARD, RIGHT_INVERSE),
            )
        )
    return rows


class _Refused(nn.Module):
    """Stands in for a library that failed to set a row up or to pass its check: every call
    raises with the reason, so the row's cell reads error (and the run's exit status is 1)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    @property
    def weight(self) -> Tensor:
        raise RuntimeError(self.reason)

    def refuse(self) -> None:
        """The call of the step modes."""
        raise RuntimeError(self.reason)


def _assign(module: nn.Module, value: Tensor) -> None:
    """``module.weight = value``: the right inverse, which registration runs too."""
    module.weight = value


def _descend(module: nn.Module, loss_weights: Tensor) -> None:
    """:data:`CATALOGUE_STEPS` Adam steps on ``(W * loss_weights).sum()``."""
    _descend_steps(module, loss_weights, CATALOGUE_STEPS, CATALOGUE_LR)


def _descend_steps(module: nn.Module, loss_weights: Tensor, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        weight_loss(module.weight, loss_weights).backward()
        optimizer.step()


def _catalogue_contender(
    library: str,
    front_door: Callable[..., nn.Module],
    spec: _Constraint,
    start: Tensor,
    loss_weights: Tensor,
    seed: int,
) -> Contender:
    """``library``'s constrained weight at ``start``, moved by the Adam steps, then checked.

    The weight must start at ``start`` and, after the steps, lie on the set by the oracle;
    otherwise (or if the set-up raises) the contender is :class:`_Refused`.
    """
    try:
        torch.manual_seed(seed)  # geotorch draws a random weight at registration
        module = front_door(_Holder(start.clone()), "weight", **spec.kwargs)
        if library == "geotorch" and spec.constraint != "symmetric":
            # ... and discards the one it was given (except for symmetric): assign it back.
            module.weight = start
        with torch.no_grad():
            drift = float(torch.linalg.matrix_norm(module.weight - start))
        drift /= float(torch.linalg.matrix_norm(start))
        if not drift <= 1e-4:
            raise RuntimeError(f"the weight did not start at the given one (relative {drift:.2g})")
        _descend(module, loss_weights)
        with torch.no_grad():
            violation = spec.violation(module.weight.double())
        if not violation <= spec.tolerance:
            raise RuntimeError(
                f"the weight is off the set after {CATALOGUE_STEPS} Adam steps: {spec.measure} "
                f"is {violation:.2g}, above {spec.tolerance:g}"
            )
    except Exception as exc:
        refused = _Refused(f"{library} {spec.constraint}: {type(exc).__name__}: {exc}")
        return Contender(refused, [], refused.refuse)
    return Contender(module, _unconstrained(module), partial(_assign, module, start))


def _catalogue_problem(spec: _Constraint, seed: int) -> Problem:
    """One constraint in geoparam and geotorch, from the same weight, each library's defaults."""
    gen = torch.Generator().manual_seed(seed)
    start = spec.point(gen).to(torch.float32)
    cotangent = torch.randn(spec.shape, generator=gen)
    loss_weights = torch.randn(spec.shape, generator=gen)
    contenders: dict[str, Contender | str] = {"torch": f"torch has no {spec.constraint}"}
    front_doors: dict[str, Callable[..., nn.Module]] = {}
    absent = spec.geotorch_absent()
    if geotorch is None:
        contenders["geotorch"] = "geotorch is not installed"
    elif absent is not None:
        contenders["geotorch"] = absent
    else:
        front_doors["geotorch"] = getattr(geotorch, spec.constraint)
    # geoparam's front door is looked up here, so that a missing one fails its cells only.
    front_doors["geoparam"] = partial(_geoparam_front_door, spec.constraint)
    for library, front_door in front_doors.items():
        contenders[library] = _catalogue_contender(
            library, front_door, spec, start, loss_weights, seed
        )
    # The gradient check against a float64 reference is torch's map's; the libraries'
    # parametrizations differ here, so each one's weight is checked by the oracle instead.
    return Problem(
        {library: contenders[library] for library in LIBRARIES},
        cotangent,
        orthogonal=spec.constraint == "grassmannian",
    )


def _conv_problem(
    channels: int, size: int, batch: int, seed: int, *, kind: str, train: bool
) -> Problem:
    """A 3x3 convolution layer at batch ``batch``, timed as a whole layer.

    ``kind``: ``"spectral_norm"`` (geoparam's operator normalisation, in training mode, against
    torch's reshaped-kernel one), ``"plain"`` (the unconstrained layer, the same for both: the
    reference of the two others), ``"orthogonal"`` (geoparam's ``OrthogonalConv2d`` against a
    plain circular ``Conv2d`` of the same shape). ``train``: time forward+backward of a mean
    square loss; otherwise the forward under ``no_grad``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, channels, size, size, generator=gen)
    template = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")
    layers: dict[str, nn.Module] = {}
    if kind == "spectral_norm":
        layers["geoparam"] = geoparam.spectral_norm(
            copy.deepcopy(template), input_shape=(channels, size, size)
        )
        layers["torch"] = torch_parametrizations.spectral_norm(copy.deepcopy(template))
    elif kind == "plain":
        layers = {"geoparam": copy.deepcopy(template), "torch": copy.deepcopy(template)}
    else:
        layers["geoparam"] = geoparam.OrthogonalConv2d(channels, channels, 3)
        layers["torch"] = copy.deepcopy(template)
    contenders: dict[str, Contender | str] = {"geotorch": "geotorch has no convolution constraint"}
    for library, layer in layers.items():
        if train:

            def step(layer: nn.Module = layer) -> Tensor:
                layer.zero_grad(set_to_none=True)
                loss = layer(inputs).square().mean()
                loss.backward()
                return loss.detach()

        else:

            def step(layer: nn.Module = layer) -> Tensor:
                with torch.no_grad():
                    return layer(inputs)

        contenders[library] = Contender(layer, [], step)
    return Problem({library: contenders[library] for library in LIBRARIES})


# The layers of the issue that measured torch's spectral_norm against the operator norm.
_NORM_LAYERS: tuple[tuple[str, Callable[[], nn.Module], tuple[int, ...]], ...] = (
    ("Conv2d(3, 8, 3, padding=1)", partial(nn.Conv2d, 3, 8, 3, padding=1), (3, 8, 8)),
    (
        "Conv2d(3, 8, 3, padding=1, stride=2)",
        partial(nn.Conv2d, 3, 8, 3, padding=1, stride=2),
        (3, 8, 8),
    ),
    (
        "Conv2d(3, 8, 3, padding=2, dilation=2)",
        partial(nn.Conv2d, 3, 8, 3, padding=2, dilation=2),
        (3, 8, 8),
    ),
    ("Conv1d(3, 8, 5, padding=2)", partial(nn.Conv1d, 3, 8, 5, padding=2), (3, 32)),
    (
        "ConvTranspose2d(8, 3, 4, stride=2, padding=1)",
        partial(nn.ConvTranspose2d, 8, 3, 4, stride=2, padding=1),
        (8, 4, 4),
    ),
)


def _dense_operator_norm(layer: nn.Module, input_shape: tuple[int, ...]) -> float:
    # The largest singular value of the layer's linear part, from its dense matrix (float64).
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *input_shape)
    with torch.no_grad():
        images = layer(basis) - layer(torch.zeros_like(basis[:1]))
    return float(torch.linalg.matrix_norm(images.reshape(n, -1), 2))


def operator_norms(seed: int = 0, reads: int = 100) -> list[dict[str, object]]:
    """The true operator norm that each library's spectral normalisation leaves.

    Each layer is normalised by torch's ``spectral_norm`` (the reshaped kernel) and by geoparam's
    with ``input_shape``, from the same kernel; both take ``reads`` training-mode reads (one
    power iteration each), then the operator norm of the eval-mode layer is computed from its
    dense matrix in float64.
    """
    rows = []
    for name, make, shape in _NORM_LAYERS:
        torch.manual_seed(seed)
        template = make().double()
        normalised = {
            "torch": torch_parametrizations.spectral_norm(copy.deepcopy(template)),
            "geoparam": geoparam.spectral_norm(copy.deepcopy(template), input_shape=shape),
        }
        norms = {}
        for library, layer in normalised.items():
            with torch.no_grad():
                for _ in range(reads):
                    layer.weight  # noqa: B018  (a training-mode read refines the estimate)
            layer.eval()
            norms[library] = _dense_operator_norm(layer, shape)
        rows.append({"layer": name, "input_shape": list(shape), **norms})
    return rows


def _plain_tall(kind: str, n: int, k: int) -> nn.Module:
    """The plain module of a scale row: ``Embedding(n, k)`` or ``Linear(k, n)`` (weight n x k)."""
    return nn.Embedding(n, k) if kind == "Embedding" else nn.Linear(k, n, bias=False)


def _orthogonal_front_door(library: str) -> Callable[..., nn.Module]:
    if library == "geoparam":
        return geoparam.orthogonal
    if library == "torch":
        return torch_parametrizations.orthogonal
    return geotorch.orthogonal


def _register_copy(front_door: Callable[..., nn.Module], template: nn.Module) -> None:
    # A fresh plain module each call (a copy of its weight is part of the time).
    front_door(copy.deepcopy(template), "weight")


def _scale_problem(
    kind: str, n: int, k: int, seed: int, *, only_geoparam: str | None, trained: bool
) -> Problem:
    """A tall orthogonal weight registered with every library's default arguments.

    ``register`` times a registration on a fresh copy of the plain module. With ``trained``,
    geoparam's module takes :data:`SCALE_ADAM_STEPS` Adam steps on ``(W * G′).sum()`` when the
    problem is built, and fwd+bwd is timed there. ``only_geoparam``: why torch and geotorch are
    not run (their ``n x n`` base), or ``None`` to run them (registration only).
    """
    torch.manual_seed(seed)
    template = _plain_tall(kind, n, k)
    contenders: dict[str, Contender | str] = {}
    for library in LIBRARIES:
        if library != "geoparam" and only_geoparam is not None:
            contenders[library] = only_geoparam
            continue
        if library == "geotorch" and geotorch is None:
            contenders[library] = "geotorch is not installed"
            continue
        register = partial(_register_copy, _orthogonal_front_door(library), template)
        if not trained:
            contenders[library] = Contender(template, [], register)
            continue
        module = geoparam.orthogonal(copy.deepcopy(template), "weight")
        gen = torch.Generator().manual_seed(seed)
        _descend_steps(module, torch.randn(n, k, generator=gen), SCALE_ADAM_STEPS, lr=1e-3)
        contenders[library] = Contender(module, _unconstrained(module), register)
    cotangent = torch.randn(n, k, generator=torch.Generator().manual_seed(seed + 1))
    return Problem(contenders, cotangent, orthogonal=True)


_MEMORY_SCRIPT = """
import json, sys
import torch
from torch import nn
library, kind, n, k, backward, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
if library == "geoparam":
    from geoparam import orthogonal
elif library == "torch":
    from torch.nn.utils.parametrizations import orthogonal
else:
    from geotorch import orthogonal
def status(field):
    with open("/proc/self/status") as lines:
        line = next(line for line in lines if line.startswith(field + ":"))
    return int(line.split()[1])  # kB
module = nn.Embedding(n, k) if kind == "Embedding" else nn.Linear(k, n, bias=False)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # restart the peak (VmHWM) from the current size
orthogonal(module, "weight")
if backward:
    module.weight.square().sum().backward()
print(json.dumps((status("VmHWM") - before) / 1024))
"""


def _peak_memory(
    kind: str, n: int, k: int, libraries: tuple[str, ...], backward: bool
) -> dict[str, float | str]:
    """Peak resident memory (MiB) of registration (and one fwd+bwd), each in a fresh process.

    The peak resident size while registering (Linux's ``VmHWM``, restarted through
    ``/proc/self/clear_refs``) above the size before it, when the plain module was built, so
    the plain weight itself is not counted.
    """
    peaks: dict[str, float | str] = {}
    for library in LIBRARIES:
        if library not in libraries:
            peaks[library] = "not measured"
            continue
        arguments = json.dumps([library, kind, n, k, backward, torch.get_num_threads()])
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, arguments],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            peaks[library] = f"failed: {done.stderr.strip().splitlines()[-1:]}"
        else:
            peaks[library] = float(done.stdout.strip())
    return peaks


def _geoparam_front_door(constraint: str, *args: object, **kwargs: object) -> nn.Module:
    return getattr(geoparam, constraint)(*args, **kwargs)


def all_cases(quick: bool = False, seed: int = 0) -> list[Case]:
    """Every case of the benchmark, in table order; ``quick`` shrinks every size to a toy one."""
    maps = ORTHOGONAL_MAPS
    both = (FORWARD, FORWARD_BACKWARD)
    squares = (16,) if quick else (64, 256, 512, 1024)
    talls = ((64, 8),) if quick else ((1024, 64), (4096, 64))
    batch, side = (4, 8) if quick else (64, 32)
    complex_n = 16 if quick else 256
    linear = 32 if quick else 1024
    channels = 4 if quick else 64
    hidden, seq_len, rnn_batch, n_in = (16, 4, 8, 8) if quick else (256, 32, 64, 64)

    cases: list[Case] = []

    def orthogonal_case(
        name: str,
        shape: tuple[int, ...],
        omap: str,
        dtype=torch.float32,
        norm: float = 1.0,
        use_trivialization: bool = True,
    ) -> Case:
        details = {"map": omap, "shape": list(shape), "dtype": str(dtype).removeprefix("torch.")}
        build = partial(_orthogonal_problem, shape, omap, dtype, seed, norm, use_trivialization)
        details = {**details, "norm": norm, "use_trivialization": use_trivialization}
        return Case(name, "orthogonal", both, build, details)

    for omap in maps:
        for n in squares:
            cases.append(orthogonal_case(f"orthogonal {omap} {n}x{n}", (n, n), omap))
        for n, k in talls:
            cases.append(orthogonal_case(f"orthogonal {omap} {n}x{k}", (n, k), omap))
        cases.append(
            orthogonal_case(
                f"orthogonal {omap} {batch} x ({side}x{side})", (batch, side, side), omap
            )
        )
    # A tall Householder weight without the n x n base (use_trivialization=False): the map alone,
    # against which the rows above show what torch's base product costs.
    n, k = talls[0]
    cases.append(
        orthogonal_case(
            f"orthogonal householder {n}x{k} no base",
            (n, k),
            "householder",
            use_trivialization=False,
        )
    )
    # Far from the chart's centre (long training without re-basing): ‖A‖₂ = 1000.
    far = 16 if quick else 256
    for shape in ((far, far), (4 * far, far // 4)):
        label = "x".join(map(str, shape))
        cases.append(
            orthogonal_case(
                f"orthogonal matrix_exp {label} ‖A‖=1000", shape, "matrix_exp", norm=1e3
            )
        )
    for omap in ("matrix_exp", "cayley"):
        n = complex_n
        cases.append(
            orthogonal_case(f"unitary {omap} {n}x{n} complex64", (n, n), omap, torch.complex64)
        )

    layers: dict[str, Callable[[], nn.Module]] = {
        f"Linear({linear}, {linear})": partial(nn.Linear, linear, linear),
        f"Conv2d({channels}, {channels}, 3)": partial(nn.Conv2d, channels, channels, 3),
    }
    for constraint in ("spectral_norm", "weight_norm"):
        for label, make_layer in layers.items():
            build = partial(_norm_problem, constraint, make_layer, seed)
            details = {"constraint": constraint, "layer": label}
            cases.append(
                Case(f"{constraint} {label}", constraint, (FORWARD_BACKWARD,), build, details)
            )

    details = {"hidden": hidden, "seq_len": seq_len, "batch": rnn_batch, "inputs": n_in}
    cases.append(
        Case(
            f"orthogonal RNN matrix_exp h={hidden} T={seq_len} B={rnn_batch} (Adam)",
            "rnn",
            (TRAIN_STEP,),
            partial(_rnn_problem, hidden, seq_len, rnn_batch, n_in, seed),
            {"map": "matrix_exp", **details},
        )
    )

    # Reading a weight many times in one step, without any caching ceremony: a cell that reads
    # it at each of T steps, against the same cell given the weight read once per step.
    cell_steps = 6 if quick else 50
    details = {"hidden": hidden, "seq_len": cell_steps, "batch": rnn_batch, "inputs": n_in}
    for label, read_once in (("read at every step", False), ("read once per step", True)):
        cases.append(
            Case(
                f"orthogonal RNN cell h={hidden} T={cell_steps}, weight {label} (Adam)",
                "reuse",
                (TRAIN_STEP,),
                partial(
                    _rnn_problem,
                    hidden,
                    cell_steps,
                    rnn_batch,
                    n_in,
                    seed,
                    scoped=False,
                    read_once=read_once,
                ),
                {"map": "matrix_exp", "read_once": read_once, **details},
            )
        )

    # Inference: a parametrized model in eval mode against the same model frozen to plain weights.
    width, depth, eval_batch = (16, 2, 8) if quick else (512, 4, 64)
    for frozen in (False, True):
        label = "frozen (plain weights)" if frozen else "parametrized"
        cases.append(
            Case(
                f"orthogonal MLP {depth} x Linear({width}) batch {eval_batch}, {label}",
                "inference",
                (EVAL,),
                partial(_eval_problem, width, depth, eval_batch, seed, frozen=frozen),
                {"map": "matrix_exp", "frozen": frozen, "width": width, "depth": depth},
            )
        )

    # torch.compile(fullgraph=True) of the loss: each library's compiled forward+backward.
    n = 16 if quick else 512
    cases.append(
        Case(
            f"orthogonal matrix_exp {n}x{n} torch.compile",
            "compile",
            (COMPILED,),
            partial(_compiled_problem, n, seed),
            {"map": "matrix_exp", "shape": [n, n], "dtype": "float32"},
        )
    )

    # Tall weights at scale, with every default argument (geoparam's compact base).
    too_big = "not run: the {n} x {n} base alone takes {gib:.1f} GiB, and its QR O(n³)"
    scale_cases = (
        [("Linear", 256, 8, False), ("Embedding", 1000, 8, True)]
        if quick
        else [
            ("Linear", 8192, 64, False),
            ("Embedding", 30000, 50, True),
            ("Embedding", 1_000_000, 64, True),
        ]
    )
    for kind, n, k, geoparam_only in scale_cases:
        layer = f"Embedding({n}, {k})" if kind == "Embedding" else f"Linear({k}, {n})"
        reason = too_big.format(n=n, gib=n * n * 4 / 2**30) if geoparam_only else None
        measured = ("geoparam",) if geoparam_only else ("geoparam", "torch")
        cases.append(
            Case(
                f"orthogonal {layer}, default arguments",
                SCALE,
                (REGISTER, FORWARD_BACKWARD) if geoparam_only else (REGISTER,),
                partial(
                    _scale_problem,
                    kind,
                    n,
                    k,
                    seed,
                    only_geoparam=reason,
                    trained=geoparam_only,
                ),
                {"layer": layer, "shape": [n, k], "dtype": "float32"},
                memory=partial(_peak_memory, kind, n, k, measured, geoparam_only),
            )
        )

    # Lipschitz convolutions: the operator norm's power iteration and an orthogonal convolution,
    # each against the layer's own cost.
    conv_channels, conv_size, conv_batch = (4, 8, 4) if quick else (64, 32, 64)
    layer = f"Conv2d({conv_channels}, {conv_channels}, 3)"
    where = f"{conv_size}x{conv_size} batch {conv_batch}"
    for kind, label, mode in (
        ("plain", f"{layer} {where}, no constraint", LAYER_FORWARD),
        ("spectral_norm", f"{layer} {where}, spectral_norm (train mode)", LAYER_FORWARD),
        ("plain", f"{layer} {where}, no constraint", LAYER_TRAIN),
        ("orthogonal", f"Orthogonal{layer} {where} against a plain Conv2d", LAYER_TRAIN),
    ):
        build = partial(
            _conv_problem,
            conv_channels,
            conv_size,
            conv_batch,
            seed,
            kind=kind,
            train=mode == LAYER_TRAIN,
        )
        cases.append(Case(label, CONV, (mode,), build, {"layer": layer, "kind": kind}))

    # The constraint catalogue against geotorch (torch has none of these constraints).
    for spec in _catalogue(quick):
        details = {
            "constraint": spec.constraint,
            "shape": list(spec.shape),
            "dtype": "float32",
            **spec.kwargs,
            "adam_steps": CATALOGUE_STEPS,
            "adam_lr": CATALOGUE_LR,
        }
        build = partial(_catalogue_problem, spec, seed)
        cases.append(Case(spec.label, CATALOGUE, spec.modes, build, details))
    return cases
