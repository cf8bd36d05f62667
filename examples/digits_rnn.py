"""An orthogonal RNN that reads scikit-learn's 8×8 digits row by row (or pixel by pixel).

The recurrent matrix of a vanilla RNN is wrapped in :func:`geoparam.orthogonal`, so it stays
exactly orthogonal throughout training: the recurrence rotates the hidden state, never shrinking
or blowing it up, which is what lets such networks carry information across long sequences (Arjovsky
et al., "Unitary Evolution RNNs", 2016; Lezcano-Casado & Martínez-Rubio, "expRNN", 2019). Each
8×8 image is a sequence of 8 rows of 8 pixels (``--pixels``: 64 steps of one pixel, a longer
memory). The data ships with scikit-learn, so nothing is downloaded.

The script prints the test accuracy and the orthogonality error ``max |QᵀQ - I|`` of the recurrent
matrix, and writes ``digits_rnn.png`` (accuracy and orthogonality error per epoch) and
``digits_rnn.json``.

Run it (rows: about 15 s on two CPU cores, ``--pixels``: about a minute; ``--quick``: a few
seconds)::

    python examples/digits_rnn.py --out out/
    python examples/digits_rnn.py --pixels --out out/
    python examples/digits_rnn.py --quick --out out/
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

import geoparam
from geoparam._extras import exit_on_missing_extra, require

if TYPE_CHECKING:  # numpy comes with scikit-learn (the demo extra), not with geoparam
    import numpy as np

N_CLASSES = 10

# Settings for --quick: a few seconds, and enough training to beat chance (10 %) clearly. Over
# seeds 0-9, five epochs reached 82-92 % test accuracy on rows and 52-90 % on pixels (three
# epochs of pixels: 39-82 % over seeds 0-4); tests/test_examples.py relies on this.
QUICK_DEFAULTS = {"epochs": 5, "hidden": 64, "log_every": 0}


def load_sequences(pixels: bool, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits as sequences ``(n, steps, features)`` in ``[0, 1]``, split 75/25, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    features = 1 if pixels else 8

    def to_sequences(x: np.ndarray) -> Tensor:
        # Pixel intensities are integers in [0, 16].
        return torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1, features) / 16

    return (
        to_sequences(x_train),
        torch.as_tensor(y_train),
        to_sequences(x_test),
        torch.as_tensor(y_test),
    )


class ModReLU(nn.Module):
    """``sign(z) · relu(|z| + b)``: keeps the sign of each unit and only trims small magnitudes.

    Unlike ``tanh`` it does not squash the state, so together with an orthogonal recurrence the
    hidden state's norm neither decays nor explodes over long sequences.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((features,), -0.01))

    def forward(self, z: Tensor) -> Tensor:
        return torch.sign(z) * torch.relu(z.abs() + self.bias)


class OrthogonalRNN(nn.Module):
    """``h_t = modrelu(Q h_{t-1} + W x_t)`` with ``Q`` orthogonal; logits from the last state."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = geoparam.orthogonal(nn.Linear(hidden_size, hidden_size, bias=False))
        self.activation = ModReLU(hidden_size)
        self.readout = nn.Linear(hidden_size, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        inputs = self.input(x)  # all time steps at once, outside the sequential loop
        state = torch.zeros(x.size(0), self.recurrent.out_features)
        # Without the cache, every step would recompute Q from its parameters (a matrix
        # exponential); cached() computes it once per forward pass and reuses it.
        with parametrize.cached():
            for t in range(x.size(1)):
                state = self.activation(self.recurrent(state) + inputs[:, t])
        return self.readout(state)


def orthogonality_error(module: nn.Module) -> float:
    """``max |QᵀQ - I|`` of the module's weight ``Q``."""
    with torch.no_grad():
        q = module.weight
        return (q.T @ q - torch.eye(q.size(1))).abs().max().item()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train()
    return correct


def make_optimizer(model: OrthogonalRNN, lr: float, lr_orthogonal: float) -> torch.optim.Optimizer:
    """Adam with a smaller step on the orthogonal matrix's parameters.

    A large step on the skew-symmetric parameter rotates the state a lot at once; expRNN found a
    tenth of the usual learning rate works well there.
    """
    recurrent = list(model.recurrent.parameters())
    others = [p for p in model.parameters() if all(p is not q for q in recurrent)]
    return torch.optim.Adam([{"params": others}, {"params": recurrent, "lr": lr_orthogonal}], lr=lr)


def train(
    model: OrthogonalRNN, data: tuple[Tensor, Tensor, Tensor, Tensor], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Minibatch Adam with a cosine schedule; records test accuracy and orthogonality error."""
    x_train, y_train, x_test, y_test = data
    optimizer = make_optimizer(model, args.lr, args.lr / 10)
    # Cosine decay to zero: the last epochs fine-tune instead of bouncing between minima, so
    # the final accuracy is the settled one rather than a lucky or unlucky last step.
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history: dict[str, list[float]] = {"test_accuracy": [], "orthogonality_error": []}
    for epoch in range(args.epochs):
        losses = []
        for batch in torch.randperm(len(x_train)).split(args.batch_size):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            losses.append(loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        history["test_accuracy"].append(accuracy(model, x_test, y_test))
        history["orthogonality_error"].append(orthogonality_error(model.recurrent))
        if args.log_every and (epoch + 1) % args.log_every == 0:
            print(
                f"epoch {epoch + 1:3d}  train loss {sum(losses) / len(losses):.3f}  "
                f"test accuracy {history['test_accuracy'][-1]:.1%}"
            )
    return history


def save_plot(path: Path, history: dict[str, list[float]], title: str) -> None:
    """Test accuracy and orthogonality error against epochs, side by side."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the script must run on a server or in CI
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["test_accuracy"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, history["test_accuracy"])
    left.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
    right.semilogy(epochs, history["orthogonality_error"])
    # Float32 rounding is the floor: errors near it mean Q is orthogonal to working precision.
    right.axhline(torch.finfo(torch.float32).eps, color="gray", linestyle=":", label="float32 eps")
    right.set(xlabel="epoch", ylabel="max |QᵀQ - I|", ylim=(1e-8, 1e-2))
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", action="store_true", help="64 steps of one pixel, not rows")
    parser.add_argument("--hidden", type=int, default=128, help="hidden state size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for PNG and JSON")
    parser.add_argument("--log-every", type=int, default=5, help="0 disables progress lines")
    parser.add_argument("--quick", action="store_true", help="a few training steps, for tests")
    # --quick swaps in small defaults; options given explicitly still win.
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK_DEFAULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and plot; returns the final metrics."""
    args = parse_args(argv)
    require("examples/digits_rnn.py", "matplotlib", "sklearn")
    # Matrices this small gain little from intra-op parallelism, and one thread keeps the run
    # steady on a shared machine.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_sequences(args.pixels, args.seed)
    model = OrthogonalRNN(input_size=data[0].size(2), hidden_size=args.hidden)
    start = time.perf_counter()
    history = train(model, data, args)
    metrics = {
        "test_accuracy": history["test_accuracy"][-1],
        "orthogonality_error": history["orthogonality_error"][-1],
        "sequence_length": data[0].size(1),
        "train_seconds": time.perf_counter() - start,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    title = (
        f"orthogonal RNN, {metrics['sequence_length']} steps: "
        f"{metrics['test_accuracy']:.1%} test accuracy"
    )
    save_plot(args.out / "digits_rnn.png", history, title)
    (args.out / "digits_rnn.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"test accuracy: {metrics['test_accuracy']:.1%}  "
        f"orthogonality error max|QᵀQ - I|: {metrics['orthogonality_error']:.1e}  "
        f"training: {metrics['train_seconds']:.1f} s"
    )
    return metrics


if __name__ == "__main__":
    # A missing optional package ends the script with one line naming the extra, not a traceback.
    with exit_on_missing_extra("examples/digits_rnn.py"):
        main()
