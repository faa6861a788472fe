"""The `agop` command: the demo recovers the true coordinates; errors are one line."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest

from agop.cli import TRUE_SUPPORT, main, run_demo


def test_demo_recovers_the_relevant_coordinates():
    out = io.StringIO()
    args = SimpleNamespace(
        n=4000, n_test=1000, d=20, kernel="laplace", bandwidth=10.0, reg=1e-3, seed=0, top=8
    )
    res = run_demo(args, out)
    assert res["relevant"] == list(TRUE_SUPPORT)
    # the kernel machine beats the constant predictor (SPEC §12: 0.0123 vs 0.036)
    assert res["mse"] < 0.5 * res["null_mse"]
    text = out.getvalue()
    assert "matches the true [0, 1, 5]" in text
    assert text.count("<- true") == 3


def test_main_demo_small_and_errors(capsys):
    assert main(["demo", "--n", "300", "--n-test", "50", "--d", "8", "--top", "3"]) == 0
    assert "rank  coordinate" in capsys.readouterr().out
    assert main(["demo", "--d", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agop demo: error: d must be") and err.count("\n") == 1
    assert main(["demo", "--bandwidth", "-1"]) == 2
    assert "bandwidth must lie in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--n", "0"])
    assert main([]) == 0


def test_module_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "agop", "--version"], capture_output=True, text=True, check=True
    )
    assert res.stdout.startswith("agop ")
