"""Certified robustness on scikit-learn's 8×8 digits: an orthogonal CNN against a plain one.

A network whose logits move by at most ``L·‖δ‖`` (in the l2 norm) when its input moves by ``δ``
cannot change its prediction at ``x`` under any perturbation smaller than
``margin(x) / (√2·L)``, where the margin is the true class's logit minus the largest other one
(Tsuzuku, Sato & Sugiyama, "Lipschitz-margin training", NeurIPS 2018). A test image counts as
certified at radius ``ε`` if it is classified correctly with ``margin > √2·L·ε``: no
perturbation of l2 norm ``ε`` (pixels scaled to ``[0, 1]``, 64 of them) can fool the network
there, whatever the attack. The certificate is only as good as the bound ``L``.

Model A is 1-Lipschitz by construction: three :class:`geoparam.OrthogonalConv2d` layers (each
convolution operator orthogonal, Trockman & Kolter 2021), :class:`geoparam.MaxMin` activations
and a readout made orthogonal by :func:`geoparam.orthogonal`, so ``L = 1``. Model B has the same
layout and the same number of parameters without constraints (ordinary circular convolutions
and ReLU); its bound is the product of its layers' operator norms, each convolution's found by
power iteration on its operator. Both minimise the same loss, a cross-entropy that asks for a
margin in the raw logits. The script prints a table of clean and certified test accuracy at
several radii, checks on random pairs of inputs that model A never moves its output more than
its input, and writes ``certified_digits.png`` (certified accuracy against the radius) and
``certified_digits.json``. The data ships with scikit-learn, so nothing is downloaded.

Run it (about 35 s on two CPU cores; ``--quick``: a few seconds)::

    python examples/certified_digits.py --out out/
    python examples/certified_digits.py --quick --out out/
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import geoparam
from geoparam._extras import exit_on_missing_extra, require
from geoparam.linalg.conv import ConvOperator, operator_power_iteration_

if TYPE_CHECKING:  # numpy comes with scikit-learn (the demo extra), not with geoparam
    import numpy as np

N_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
RADII = (0.1, 0.25, 0.5, 1.0)
"""The l2 radii of the table, in units of the ``[0, 1]``-scaled image (its norm is about 4)."""

# Layers whose Lipschitz constant is 1 by construction (MaxMin is a GroupSort).
ONE_LIPSCHITZ = (geoparam.OrthogonalConv2d, geoparam.GroupSort, nn.ReLU, nn.Flatten)

# Settings for --quick: a few seconds (about a second of training for both models). Over seeds
# 0-9 model A reached 90-95 % clean test accuracy and 86-90 % certified accuracy at ε = 0.1,
# model B 89-96 % clean but 7-38 % certified at ε = 0.1 (its bound L: 18-27) and none beyond;
# model A's largest measured ratio was 0.78-0.84. tests/test_examples.py relies on this.
QUICK_DEFAULTS = {"epochs": 3, "width": 8, "log_every": 0}


def load_images(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits as images ``(n, 1, 8, 8)`` in ``[0, 1]``, split 75/25, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )

    def to_images(x: np.ndarray) -> Tensor:
        # Pixel intensities are integers in [0, 16].
        return torch.as_tensor(x, dtype=torch.float32).reshape(len(x), *IMAGE_SHAPE) / 16

    return to_images(x_train), torch.as_tensor(y_train), to_images(x_test), torch.as_tensor(y_test)


def make_orthogonal_model(width: int) -> nn.Sequential:
    """Model A: every layer is 1-Lipschitz in l2, so the network is (biases change nothing).

    ``1 x 8 x 8 → width x 8 x 8 → 2·width x 4 x 4 → 2·width x 4 x 4 → 10``. The strided layer
    first moves each 2x2 block into channels (a permutation of the pixels). The readout's weight
    is wide, so orthogonal means orthonormal rows: a projection, of norm 1.
    """
    return nn.Sequential(
        geoparam.OrthogonalConv2d(1, width, 3),
        geoparam.MaxMin(),
        geoparam.OrthogonalConv2d(width, 2 * width, 3, stride=2),
        geoparam.MaxMin(),
        geoparam.OrthogonalConv2d(2 * width, 2 * width, 3),
        geoparam.MaxMin(),
        nn.Flatten(),
        geoparam.orthogonal(nn.Linear(2 * width * 16, N_CLASSES)),
    )


def make_plain_model(width: int) -> nn.Sequential:
    """Model B: model A's layout and parameter count without constraints, with ReLU.

    Model A's strided layer convolves the 4x4 grid of 2x2 blocks with a 3x3 kernel, so each
    output reads the 6x6 patch of pixels that starts one block before its own. A 6x6 kernel
    with stride 2 and padding 2 reads the same patches with as many weights: B's layers can
    represent every linear map of A's layers, and any other.
    """
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 6, stride=2, padding=2, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 16, N_CLASSES),
    )


def conv_operator_norm(layer: nn.Conv2d, input_shape: tuple[int, ...], iterations: int) -> float:
    """The largest singular value of the layer's linear map on inputs of ``input_shape``.

    Power iteration on ``convᵀ conv`` (Gouk et al. 2021) with the layer's own stride, padding
    and padding mode; the norm of the kernel reshaped to a matrix can be several times smaller.
    The estimate approaches ``σ₁`` from below.
    """
    operator = ConvOperator(
        dims=2,
        stride=tuple(layer.stride),
        padding=tuple(layer.padding),
        dilation=tuple(layer.dilation),
        groups=layer.groups,
        padding_mode=layer.padding_mode,
        pad=tuple(layer._reversed_padding_repeated_twice),
    )
    weight = layer.weight.detach()
    u = F.normalize(torch.randn(input_shape).flatten(), dim=0).view(1, *input_shape)
    operator_power_iteration_(operator, weight, u, iterations, eps=1e-12)
    return torch.linalg.vector_norm(operator(u, weight)).item()


def lipschitz_bound(model: nn.Sequential, iterations: int = 200) -> float:
    """The product of the layers' Lipschitz constants in l2: one for the whole network.

    Convolutions by power iteration, linear layers by their spectral norm, the layers of
    :data:`ONE_LIPSCHITZ` contribute 1. Any other layer is refused rather than left out.
    """
    bound = 1.0
    x = torch.zeros(1, *IMAGE_SHAPE)  # follows the shapes, for the convolutions' operators
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Conv2d):
                bound *= conv_operator_norm(layer, tuple(x.shape[1:]), iterations)
            elif isinstance(layer, nn.Linear):
                bound *= torch.linalg.matrix_norm(layer.weight, ord=2).item()
            elif not isinstance(layer, ONE_LIPSCHITZ):
                raise TypeError(f"lipschitz_bound: no Lipschitz constant for {layer!r}.")
            x = layer(x)
    return bound


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """``f_y(x) − max_{j≠y} f_j(x)`` per row: positive only where the prediction is right."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf)
    return true - others.max(dim=1).values


def certified_accuracy(margin: Tensor, bound: float, radius: float) -> float:
    """The share of points whose margin exceeds ``√2·L·ε``: right, and provably so within ``ε``.

    A move of ``ε`` moves the logits by at most ``L·ε`` in l2, and so a difference of two logits
    by at most ``√2·L·ε``: it cannot overturn a larger margin.
    """
    return (margin > math.sqrt(2) * bound * radius).float().mean().item()


def max_lipschitz_ratio(
    model: nn.Module, x: Tensor, pairs: int, generator: torch.Generator
) -> float:
    """The largest ``‖f(a) − f(b)‖ / ‖a − b‖`` over random pairs, a check of the bound ``L = 1``.

    Half of the pairs are two test images (about 3 apart in l2), half an image and a random
    perturbation of it (of l2 norm up to about 8).
    """
    a = x[torch.randint(len(x), (2 * pairs,), generator=generator)]
    others = x[torch.randint(len(x), (pairs,), generator=generator)]
    noise = torch.rand(pairs, 1, 1, 1, generator=generator) * torch.randn(
        pairs, *IMAGE_SHAPE, generator=generator
    )
    b = torch.cat([others, a[pairs:] + noise])
    with torch.no_grad():
        moved = torch.linalg.vector_norm(model(a) - model(b), dim=1)
    distance = torch.linalg.vector_norm((a - b).flatten(1), dim=1)
    different = distance > 0  # two draws of the same image
    return (moved[different] / distance[different]).max().item()


def margin_loss(logits: Tensor, labels: Tensor, margin: float, temperature: float) -> Tensor:
    """Cross-entropy of ``T·(f(x) − m·e_y)``: small only once the margin exceeds ``m`` clearly.

    A 1-Lipschitz network cannot scale its logits up to make the cross-entropy small, so the
    loss works on the raw logits: the offset ``m`` asks for the margin that certifies a radius
    ``m / √2``, the temperature ``T`` sets how sharply the loss falls beyond it.
    """
    offset = margin * F.one_hot(labels, N_CLASSES)
    return F.cross_entropy(temperature * (logits - offset), labels)


def train(
    model: nn.Module, data: tuple[Tensor, Tensor, Tensor, Tensor], args: argparse.Namespace
) -> None:
    """Minibatch Adam with a cosine schedule on :func:`margin_loss`."""
    x_train, y_train, x_test, y_test = data
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Cosine decay to zero: the final margins are the settled ones, not those of a last big step.
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for epoch in range(args.epochs):
        losses = []
        for batch in torch.randperm(len(x_train)).split(args.batch_size):
            logits = model(x_train[batch])
            loss = margin_loss(logits, y_train[batch], args.margin, args.temperature)
            losses.append(loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if args.log_every and (epoch + 1) % args.log_every == 0:
            with torch.no_grad():
                accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
            print(
                f"  epoch {epoch + 1:3d}  train loss {sum(losses) / len(losses):.3f}  "
                f"test accuracy {accuracy:.1%}"
            )


def evaluate(model: nn.Sequential, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Lipschitz bound, clean accuracy and certified accuracy at :data:`RADII`."""
    bound = lipschitz_bound(model)
    with torch.no_grad():
        margin = margins(model(x), y)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "lipschitz_bound": bound,
        "clean_accuracy": (margin > 0).float().mean().item(),
        "certified_accuracy": [certified_accuracy(margin, bound, eps) for eps in RADII],
        # The whole curve, for the plot: the certified radius of every test point (0 if wrong).
        "certified_radii": sorted((margin.clamp_min(0) / (math.sqrt(2) * bound)).tolist()),
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """Clean and certified accuracy of each model, one row each."""
    header = ["model", "parameters", "bound L", "clean", *(f"ε = {eps:g}" for eps in RADII)]
    rows = [header, ["---"] * len(header)]
    for name, result in results.items():
        accuracies = [result["clean_accuracy"], *result["certified_accuracy"]]
        row = [name, str(result["parameters"]), f"{result['lipschitz_bound']:.4g}"]
        rows.append(row + [f"{a:.1%}" for a in accuracies])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def save_plot(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """Certified accuracy against the radius, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the script must run on a server or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        radii = torch.tensor(result["certified_radii"])
        # Certified accuracy at ε is the share of test points whose certified radius exceeds ε.
        grid = torch.linspace(0, 1.5 * max(RADII), 200)
        curve = (radii[None, :] > grid[:, None]).float().mean(dim=1)
        label = f"{name} (L = {result['lipschitz_bound']:.3g})"
        (line,) = ax.plot(grid, curve, label=label)
        ax.plot(RADII, result["certified_accuracy"], "o", color=line.get_color())
    ax.set(xlabel="l2 radius ε (pixels in [0, 1])", ylabel="certified test accuracy", ylim=(0, 1))
    ax.legend()
    ax.set_title("certified accuracy on the 8×8 digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16, help="channels of the first layer")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--margin", type=float, default=1.0, help="logit margin the loss asks for")
    parser.add_argument("--temperature", type=float, default=8.0, help="of the loss")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for PNG and JSON")
    parser.add_argument("--log-every", type=int, default=10, help="0 disables progress lines")
    parser.add_argument("--quick", action="store_true", help="a few training steps, for tests")
    # --quick swaps in small defaults; options given explicitly still win.
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK_DEFAULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train both models, certify them, check model A's Lipschitz bound; returns the metrics."""
    args = parse_args(argv)
    require("examples/certified_digits.py", "matplotlib", "sklearn")
    # Layers this small gain little from intra-op parallelism, and one thread keeps the run
    # steady on a shared machine.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_images(args.seed)
    models = {
        "orthogonal": make_orthogonal_model(args.width),
        "plain": make_plain_model(args.width),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        if args.log_every:
            print(f"{name}:")
        start = time.perf_counter()
        train(model, data, args)
        seconds = time.perf_counter() - start
        model.eval()
        results[name] = evaluate(model, data[2], data[3]) | {"train_seconds": seconds}
    pairs_generator = torch.Generator().manual_seed(args.seed)
    ratio = max_lipschitz_ratio(models["orthogonal"], data[2], 1000, pairs_generator)
    metrics = {"radii": list(RADII), **results, "orthogonal_max_lipschitz_ratio": ratio}

    args.out.mkdir(parents=True, exist_ok=True)
    save_plot(args.out / "certified_digits.png", results)
    (args.out / "certified_digits.json").write_text(json.dumps(metrics, indent=2))
    print(markdown_table(results))
    print(
        f"\northogonal model, max ‖f(a) − f(b)‖ / ‖a − b‖ over random pairs: {ratio:.6f} (≤ 1)  "
        f"training: {results['orthogonal']['train_seconds']:.1f} s and "
        f"{results['plain']['train_seconds']:.1f} s"
    )
    return metrics


if __name__ == "__main__":
    # A missing optional package ends the script with one line naming the extra, not a traceback.
    with exit_on_missing_extra("examples/certified_digits.py"):
        main()
