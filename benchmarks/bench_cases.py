"""The benchmark cases: each builds one problem identically for geoparam, torch and geotorch.

A *case* names a problem (a constrained weight of a given shape, or a small model) and the modes
it is timed in. Building it gives a :class:`Problem`: one :class:`Contender` per library holding
the same tensors, the cotangent ``G`` of the loss ``(W * G).sum()``, and a float64 reference of
torch's map for the gradient check. Nothing here times anything; see ``bench_timing.py``.
"""

from __future__ import annotations

import contextlib
import copy
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
    "COMPILED",
    "EVAL",
    "FORWARD",
    "FORWARD_BACKWARD",
    "LIBRARIES",
    "STEP_MODES",
    "TRAIN_STEP",
    "Case",
    "Contender",
    "Problem",
    "all_cases",
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
# Modes timed through the contender's own `step` callable (the others read `module.weight`).
STEP_MODES = (TRAIN_STEP, COMPILED, EVAL)

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
            forward).
    """

    module: nn.Module
    params: list[Tensor]
    step: Callable[[], Tensor] | None = None


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
    """A named problem and the modes it is timed in; ``build`` makes the :class:`Problem`."""

    name: str
    family: str
    modes: tuple[str, ...]
    build: Callable[[], Problem]
    details: dict[str, object] = field(default_factory=dict)

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
    geoparam_module.load_state_dict(state)

    contenders: dict[str, Contender | str] = {
        "geoparam": Contender(geoparam_module, _unconstrained(geoparam_module)),
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
    return cases
