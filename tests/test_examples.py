"""The scripts in ``examples/`` run end to end in their ``--quick`` mode and write their outputs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The examples need the demo extra; tests/test_cli.py checks what they say without it.
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def _load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path: the folder is not a package."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quick_argv(out: Path) -> list[str]:
    # Keep the test session's thread count: the examples set it globally.
    return ["--quick", "--out", str(out), "--threads", str(torch.get_num_threads())]


def test_gan_ring_quick(tmp_path: Path) -> None:
    metrics = _load_example("gan_ring").main(_quick_argv(tmp_path))
    assert metrics["modes_total"] == 8
    # The quick run must learn. Measured over seeds 0-9 (quick settings, one thread): 8/8 modes
    # every time, 35-52 % of the samples within 3σ of a mode (seed 0, the default: 8/8, 37 %).
    # An untrained generator puts no sample there (0 % after 20 steps, 0-2 % after 100).
    assert metrics["modes_covered"] >= 6
    assert 0.2 < metrics["high_quality_fraction"] <= 1.0
    assert (tmp_path / "gan_ring.png").stat().st_size > 0
    assert json.loads((tmp_path / "gan_ring.json").read_text()) == metrics


def test_gan_ring_metric_scores_the_target_itself() -> None:
    # Samples of the target itself must cover every mode, with nearly all of them high quality:
    # a 2-D Gaussian puts 1 - exp(-4.5) ≈ 98.9% of its mass within 3σ of its centre.
    gan_ring = _load_example("gan_ring")
    rng = torch.Generator().manual_seed(0)
    samples = gan_ring.sample_ring(4000, radius=2.0, std=0.05, generator=rng)
    metrics = gan_ring.mode_metrics(samples, radius=2.0, std=0.05, min_share=0.2)
    assert metrics["modes_covered"] == 8
    assert metrics["high_quality_fraction"] > 0.98


def test_gan_ring_discriminator_is_spectrally_normalised() -> None:
    disc = _load_example("gan_ring").make_discriminator(width=16)
    for layer in disc:
        if isinstance(layer, torch.nn.Linear):
            sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("pixels", [False, True], ids=["rows", "pixels"])
def test_digits_rnn_quick(tmp_path: Path, pixels: bool) -> None:
    argv = _quick_argv(tmp_path) + (["--pixels"] if pixels else [])
    metrics = _load_example("digits_rnn").main(argv)
    assert metrics["sequence_length"] == (64 if pixels else 8)
    # Chance is 10 %. Measured over seeds 0-9 (quick: 5 epochs, one thread): rows 82-92 % test
    # accuracy (seed 0, the default: 85 %), pixels 52-90 % (seed 0: 75 %). The thresholds, 6 and
    # 3 times chance, sit 0.2 below the worst seed.
    assert metrics["test_accuracy"] > (0.3 if pixels else 0.6)
    assert metrics["test_accuracy"] <= 1.0
    assert math.isfinite(metrics["orthogonality_error"])
    assert metrics["orthogonality_error"] < 1e-4
    assert (tmp_path / "digits_rnn.png").stat().st_size > 0
    assert json.loads((tmp_path / "digits_rnn.json").read_text()) == metrics
