"""``python -m geoparam demo``: an orthogonal RNN remembers where an LSTM forgets.

The *copying task* (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) asks a recurrent network
to read ``K = 10`` symbols drawn from an alphabet of 8, wait through a delay of ``L`` steps, and,
when a marker appears, write the ``K`` symbols back in order. A sequence has ``T = L + 2K`` steps::

    input   s1 … s10  _ _ … _ _  :  _ … _
    target  _  …  _   _ _ … _ _  _  s1 … s10
            └─ K ──┘  └─ L - 1 ┘ ↑  └─ K ┘      (_ blank, : marker)

A model that remembers nothing can still predict the blanks and guess the symbols uniformly; its
cross-entropy per step is the *memoryless baseline* ``K · ln 8 / (L + 2K)``. Doing better means
carrying 30 bits across ``L`` steps, over which an unconstrained RNN's gradients vanish.

The demo trains two models of the same hidden size on the same batches, with RMSprop and a cosine
learning-rate decay:

* an **orthogonal RNN** in the style of expRNN (Lezcano-Casado & Martínez-Rubio, ICML 2019):
  ``h_t = modReLU(W h_{t-1} + U x_t)``, ``y_t = V h_t``, with ``W`` constrained by
  :func:`geoparam.orthogonal` (``matrix_exp`` by default) and initialised as 2 x 2 rotations by
  random angles (Henaff et al. 2016); as in the paper, ``W``'s parameters learn 10 times slower;
* an unconstrained **LSTM** (:class:`torch.nn.LSTM`, forget-gate bias 1) with a linear read-out,
  at the learning rate that brought it to the memoryless baseline fastest in a small sweep.

A progress bar (on stderr, when it is a terminal) shows the training; then a table gives, for
each model, the cross-entropy on a fresh batch of 1000 sequences next to the memoryless baseline
(and their ratio), the fraction of the recalled symbols it gets right on that batch (chance is
1/8), the training wall time and the orthogonality error ``‖WᵀW − I‖_F`` of the recurrent
matrix. The training-loss curves (``loss.png``) and the results (``results.json``) go to the
output folder.

Example:
    >>> from geoparam.demo import main
    >>> main(["--quick", "--out", "demo_out"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import geoparam

from ._extras import require
from .manifolds import ORTHOGONAL_MAPS

__all__ = [
    "BLANK",
    "MARKER",
    "RECALL",
    "SYMBOLS",
    "LSTMBaseline",
    "OrthogonalRNN",
    "copying_batch",
    "main",
    "memoryless_loss",
]

SYMBOLS = 8
"""Size of the alphabet to remember: the symbols are ``0 … 7``."""
BLANK = 8
"""Index of the blank, in the inputs and in the targets."""
MARKER = 9
"""Index of the marker, the input that asks for the recall."""
RECALL = 10
"""``K``: how many symbols each sequence asks the model to recall."""

_INPUTS = SYMBOLS + 2  # symbols, blank, marker
_OUTPUTS = SYMBOLS + 1  # symbols, blank
_TARGET_ACCURACY = 0.99
_EVAL_SEQUENCES = 1000

# From a small sweep at the defaults below. The orthogonal RNN reached 99.7-99.9 % (seeds 0-3)
# with these rates; 3e-3 or more spiked late in training. The LSTM gets the rate that brought it
# to the memoryless line fastest: at 2e-3 it was still at twice the line after 500 steps, at 5e-3
# slower than at 1e-2.
_LEARNING_RATE = 2e-3
_ORTHOGONAL_LEARNING_RATE = 2e-4
_LSTM_LEARNING_RATE = 1e-2

# A full run takes about 2 minutes on 2 cores; --quick takes seconds (for tests).
_DEFAULTS = {"delay": 150, "steps": 500, "hidden": 128, "batch": 64}
# --quick is sized so that the orthogonal RNN clearly learns (about a second): at hidden size 64
# and 100 steps its cross-entropy ends at 0.22-0.28 of the memoryless baseline, recall 84-88 %
# (seeds 0-9), which tests/test_demo.py relies on; at hidden 16 and 20 steps it stayed above it.
_QUICK = {"delay": 10, "steps": 100, "hidden": 64, "batch": 16}


def copying_batch(
    batch: int, delay: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw a batch of the copying task, time-major.

    Args:
        batch: number of sequences ``B``.
        delay: the delay ``L``: the marker is input ``L`` steps after the last symbol, at step
            ``K + L - 1``, and a sequence has ``T = L + 2K`` steps.
        generator: the random source of the symbols.

    Returns:
        ``(inputs, targets)``, integer tensors of shape ``(T, B)``. The inputs hold ``K`` symbols,
        then blanks with the marker at step ``K + L - 1``; the targets are blanks but for the last
        ``K`` steps, which repeat the ``K`` symbols.

    Raises:
        ValueError: ``delay`` is less than 1.

    Example:
        >>> inputs, targets = copying_batch(4, delay=30)
        >>> inputs.shape
        torch.Size([50, 4])
        >>> bool((targets[-RECALL:] == inputs[:RECALL]).all())
        True
    """
    if delay < 1:
        raise ValueError(f"copying_batch: expected a delay of at least 1, got {delay}.")
    symbols = torch.randint(0, SYMBOLS, (RECALL, batch), generator=generator)
    inputs = torch.full((delay + 2 * RECALL, batch), BLANK, dtype=torch.long)
    inputs[:RECALL] = symbols
    inputs[RECALL + delay - 1] = MARKER
    targets = torch.full_like(inputs, BLANK)
    targets[-RECALL:] = symbols
    return inputs, targets


def memoryless_loss(delay: int) -> float:
    """Cross-entropy per step of the best model without memory: ``K · ln 8 / (L + 2K)``."""
    return RECALL * math.log(SYMBOLS) / (delay + 2 * RECALL)


def _rotation_blocks(size: int) -> Tensor:
    # Henaff et al. (2016): 2 x 2 rotations by angles uniform in [-π, π] (and a 1 in the corner
    # for an odd size). A linear RNN with this matrix forgets nothing, so the model starts with
    # a memory and only learns what to store in it.
    weight = torch.eye(size)
    angles = (2 * torch.rand(size // 2) - 1) * math.pi
    even = torch.arange(0, size - 1, 2)
    weight[even, even] = weight[even + 1, even + 1] = angles.cos()
    weight[even + 1, even] = angles.sin()
    weight[even, even + 1] = -angles.sin()
    return weight


class OrthogonalRNN(nn.Module):
    """``h_t = modReLU(W h_{t-1} + U x_t)``, ``y_t = V h_t``, with ``W`` orthogonal.

    ``modReLU(z) = sign(z) · relu(|z| + b)`` (Arjovsky et al. 2016) shrinks each unit towards zero
    by a learned amount without flipping its sign, so the state's norm never grows and ``W`` alone
    decides how it rotates.

    Args:
        hidden: size of the hidden state.
        orthogonal_map: the map of :func:`geoparam.orthogonal` for ``W``.
    """

    def __init__(self, hidden: int, orthogonal_map: str = "matrix_exp") -> None:
        super().__init__()
        self.input = nn.Linear(_INPUTS, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        with torch.no_grad():
            self.recurrent.weight.copy_(_rotation_blocks(hidden))
        # The weight is already orthogonal, so geoparam keeps it as the base of the map.
        geoparam.orthogonal(self.recurrent, orthogonal_map=orthogonal_map)
        self.modrelu_bias = nn.Parameter(torch.empty(hidden).uniform_(-0.01, 0.01))
        self.output = nn.Linear(hidden, _OUTPUTS)

    def forward(self, inputs: Tensor) -> Tensor:
        """Map integer inputs ``(T, B)`` to logits ``(T, B, 9)``."""
        projected = self.input(F.one_hot(inputs, _INPUTS).float())
        # One read per sequence, transposed once for all the steps' products.
        weight_t = self.recurrent.weight.T
        state = projected.new_zeros(projected.shape[1:])
        states = []
        for step_input in projected:
            pre_activation = torch.addmm(step_input, state, weight_t)
            state = pre_activation.sign() * torch.relu(pre_activation.abs() + self.modrelu_bias)
            states.append(state)
        return self.output(torch.stack(states))

    def orthogonality_error(self) -> float:
        """``‖WᵀW − I‖_F`` of the recurrent matrix, computed in float64."""
        with torch.no_grad():
            weight = self.recurrent.weight.double()
            eye = torch.eye(weight.size(-1), dtype=weight.dtype)
            return torch.linalg.matrix_norm(weight.T @ weight - eye).item()


class LSTMBaseline(nn.Module):
    """An unconstrained :class:`torch.nn.LSTM` on one-hot inputs, with a linear read-out.

    The forget gate starts open (bias 1), the usual initialisation for long memories.

    Args:
        hidden: size of the hidden state.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(_INPUTS, hidden)
        # A forget-gate bias of 1 (Gers et al. 2000; Jozefowicz et al. 2015) makes the LSTM keep
        # its cell by default, its best chance on this task. torch orders the gates i, f, g, o.
        forget_gate = slice(hidden, 2 * hidden)
        with torch.no_grad():
            self.lstm.bias_ih_l0[forget_gate] = 1.0
            self.lstm.bias_hh_l0[forget_gate] = 0.0
        self.output = nn.Linear(hidden, _OUTPUTS)

    def forward(self, inputs: Tensor) -> Tensor:
        """Map integer inputs ``(T, B)`` to logits ``(T, B, 9)``."""
        states, _ = self.lstm(F.one_hot(inputs, _INPUTS).float())
        return self.output(states)


@dataclass
class _Result:
    cross_entropy: float
    recall_accuracy: float
    wall_time_s: float
    orthogonality_error: float | None
    train_loss: list[float]


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _recall_accuracy(logits: Tensor, targets: Tensor) -> float:
    return (logits[-RECALL:].argmax(-1) == targets[-RECALL:]).float().mean().item()


def _batches(options: argparse.Namespace) -> Iterator[tuple[Tensor, Tensor]]:
    # One stream per seed, so that both models train on the same batches.
    generator = torch.Generator().manual_seed(options.seed)
    for _ in range(options.steps):
        yield copying_batch(options.batch, options.delay, generator)


def _train_and_evaluate(
    label: str,
    model: nn.Module,
    param_groups: list[dict],
    options: argparse.Namespace,
) -> _Result:
    optimizer = torch.optim.RMSprop(param_groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.steps)
    # Imported here, not at the top: the models and the task must import without the extra.
    from tqdm import tqdm

    train_loss = []
    start = time.perf_counter()
    # A bar only for a person at a terminal: in a log or CI output its redraws are noise.
    progress = tqdm(
        _batches(options),
        desc=label,
        total=options.steps,
        unit="step",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )
    for inputs, targets in progress:
        loss = _cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        train_loss.append(loss.item())
        progress.set_postfix(loss=f"{train_loss[-1]:.4f}", refresh=False)
    wall_time = time.perf_counter() - start

    generator = torch.Generator().manual_seed(options.seed + 1)
    inputs, targets = copying_batch(_EVAL_SEQUENCES, options.delay, generator)
    with torch.no_grad():
        logits = model(inputs)
    return _Result(
        cross_entropy=_cross_entropy(logits, targets).item(),
        recall_accuracy=_recall_accuracy(logits, targets),
        wall_time_s=wall_time,
        orthogonality_error=(
            model.orthogonality_error() if isinstance(model, OrthogonalRNN) else None
        ),
        train_loss=train_loss,
    )


def _table(results: dict[str, _Result], baseline: float) -> str:
    header = (
        f"{'model':<16}{'cross-entropy':>14}{'memoryless':>12}{'ratio':>8}"
        f"{'recall accuracy':>17}{'wall time':>11}{'‖WᵀW − I‖_F':>14}"
    )
    rows = [header, "-" * len(header)]
    for label, result in results.items():
        error = result.orthogonality_error
        rows.append(
            f"{label:<16}{result.cross_entropy:>14.5f}{baseline:>12.5f}"
            f"{result.cross_entropy / baseline:>8.3f}{result.recall_accuracy:>17.2%}"
            f"{result.wall_time_s:>10.1f}s{'n/a' if error is None else f'{error:.1e}':>14}"
        )
    return "\n".join(rows)


def _plot(
    results: dict[str, _Result], baseline: float, options: argparse.Namespace, path: Path
) -> None:
    from matplotlib.figure import Figure

    # A bare Figure renders through the Agg canvas and leaves pyplot's global state alone.
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    for label, result in results.items():
        axes.plot(range(1, len(result.train_loss) + 1), result.train_loss, label=label)
    axes.axhline(baseline, color="black", linestyle="--", label="memoryless baseline")
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("cross-entropy per step")
    axes.set_title(f"Copying task, delay L = {options.delay}, hidden size {options.hidden}")
    axes.legend()
    figure.savefig(path, dpi=120)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="geoparam demo",
        description="The copying task: an orthogonal RNN (geoparam.orthogonal) against an LSTM.",
    )
    parser.add_argument(
        "--delay", type=_positive, help=f"the delay L (default {_DEFAULTS['delay']})"
    )
    parser.add_argument(
        "--steps", type=_positive, help=f"training steps (default {_DEFAULTS['steps']})"
    )
    parser.add_argument(
        "--hidden", type=_positive, help=f"hidden size (default {_DEFAULTS['hidden']})"
    )
    parser.add_argument(
        "--batch", type=_positive, help=f"batch size (default {_DEFAULTS['batch']})"
    )
    parser.add_argument(
        "--map",
        default="matrix_exp",
        choices=ORTHOGONAL_MAPS,
        help="the orthogonal map of the recurrent matrix (default matrix_exp)",
    )
    parser.add_argument(
        "--out", default="demo_out", type=Path, help="output folder (default demo_out/)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny run of a few seconds: {', '.join(f'{k} {v}' for k, v in _QUICK.items())}",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="CPU threads for torch (default 1: the per-step matrices are too small to share, and "
        "extra threads slow a busy machine down badly)",
    )
    options = parser.parse_args(argv)
    for key, value in (_QUICK if options.quick else _DEFAULTS).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    return options


def _run(options: argparse.Namespace) -> dict[str, _Result]:
    torch.manual_seed(options.seed)
    orthogonal = OrthogonalRNN(options.hidden, options.map)
    lstm = LSTMBaseline(options.hidden)
    orthogonal_groups = [
        {"params": orthogonal.recurrent.parameters(), "lr": _ORTHOGONAL_LEARNING_RATE},
        {
            "params": [
                p for n, p in orthogonal.named_parameters() if not n.startswith("recurrent.")
            ],
            "lr": _LEARNING_RATE,
        },
    ]
    lstm_groups = [{"params": lstm.parameters(), "lr": _LSTM_LEARNING_RATE}]
    return {
        "orthogonal RNN": _train_and_evaluate(
            "orthogonal RNN", orthogonal, orthogonal_groups, options
        ),
        "LSTM": _train_and_evaluate("LSTM", lstm, lstm_groups, options),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo with command-line arguments ``argv`` and return the exit code (0).

    The global random state and thread count of torch are restored on return.

    Raises:
        MissingExtraError: matplotlib or tqdm is not installed (``pip install 'geoparam[demo]'``);
            raised before any training, and an :class:`ImportError`.
    """
    options = _parse(argv)
    require("geoparam demo", "matplotlib", "tqdm")
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            results = _run(options)
    finally:
        torch.set_num_threads(threads)

    baseline = memoryless_loss(options.delay)
    orthogonal, lstm = results["orthogonal RNN"], results["LSTM"]
    solved = orthogonal.recall_accuracy >= _TARGET_ACCURACY
    options.out.mkdir(parents=True, exist_ok=True)
    _plot(results, baseline, options, options.out / "loss.png")
    summary = {
        "task": {"delay": options.delay, "recall": RECALL, "symbols": SYMBOLS},
        "memoryless_loss": baseline,
        "options": {key: value for key, value in vars(options).items() if key != "out"},
        "learning_rates": {
            "orthogonal RNN": _LEARNING_RATE,
            "orthogonal RNN, W": _ORTHOGONAL_LEARNING_RATE,
            "LSTM": _LSTM_LEARNING_RATE,
        },
        "target_accuracy": _TARGET_ACCURACY,
        "solved": solved,
        "models": {label: asdict(result) for label, result in results.items()},
    }
    (options.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(
        f"Copying task: recall K = {RECALL} of {SYMBOLS} symbols after a delay "
        f"L = {options.delay}; hidden size {options.hidden}, batch {options.batch}, "
        f"{options.steps} steps, {options.map} map, seed {options.seed}."
    )
    print(_table(results, baseline))
    verdict = "solved the task" if solved else "did NOT reach the target (try more --steps)"
    print(
        f"The orthogonal RNN {verdict}: it recalled {orthogonal.recall_accuracy:.2%} of the "
        f"symbols (target {_TARGET_ACCURACY:.0%})."
    )
    print(
        f"The LSTM recalled {lstm.recall_accuracy:.2%} (chance: {1 / SYMBOLS:.1%}); its "
        f"cross-entropy is {lstm.cross_entropy / baseline:.2f} times the memoryless baseline."
    )
    print(
        f"Wrote {options.out / 'loss.png'} and {options.out / 'results.json'} "
        f"({time.perf_counter() - start:.0f} s in all)."
    )
    return 0
