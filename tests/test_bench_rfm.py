"""agop against the figures xRFM 0.4.5 reaches with matching settings (benchmarks/)."""

from __future__ import annotations

import numpy as np
import pytest

from agop.bench import names
from agop.bench.rfm import main, real_problem, run_agop, synthetic_problem

pytest.importorskip("sklearn")

#: test figures of xRFM 0.4.5 on the same splits and settings, measured by
#: `agop bench rfm` (benchmarks/results/bench_rfm.md): Laplace L = 10, reg 1e-3,
#: 5 iterations, full M, best iterate on validation with early stop at 1.1
XRFM_FIGURES = {
    "breast_cancer": ("accuracy", 0.9737),
    "wine": ("accuracy", 1.0),
    "diabetes": ("rmse", 0.7428),
}


@pytest.mark.parametrize("name", sorted(XRFM_FIGURES))
def test_no_worse_than_xrfm(name):
    problem = real_problem(name)
    _, P = run_agop(problem)
    metric, peer = XRFM_FIGURES[name]
    if metric == "accuracy":
        acc = np.mean(P.argmax(1) == problem.Y_test.argmax(1))
        assert acc >= peer - 1e-4
    else:
        rmse = np.sqrt(np.mean((P - problem.Y_test) ** 2))
        assert rmse <= peer + 1e-4


def test_bench_rfm_runs_small(tmp_path, capsys):
    p = synthetic_problem(200, d=10)
    assert p.X_train.shape == (200, 10) and p.X_val.shape == (50, 10)
    assert p.X_train.dtype == np.float32
    out = tmp_path / "t.md"
    assert main(["--sizes", "160", "--datasets", "wine", "--no-xrfm", "--repeats", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| wine |" in text and "| synthetic n=160 |" in text and out.read_text() == text
    assert "rfm" in names()


def test_bench_rfm_reports_the_fastest_of_the_repeats(monkeypatch):
    """With repeats, each library's fastest fit is reported (and repeats < 1 is refused)."""
    import agop.bench.rfm as bench

    times = iter([3.0, 1.0, 2.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr(bench, "warm_up", lambda *a, **k: None)
    monkeypatch.setattr(bench, "run_agop",
                        lambda p: (next(times), np.zeros_like(p.Y_test)))
    touched = []
    monkeypatch.setattr(bench, "touch_memory", touched.append)
    p = synthetic_problem(40, d=3)
    rows = bench.run([p, synthetic_problem(20, d=3)], threads=1, with_xrfm=False, repeats=3)
    assert rows[0]["agop_s"] == 1.0 and rows[0]["xrfm_s"] is None
    # once, before any fit: four float32 matrices of the largest n_fit
    assert touched == [4 * 4 * 40 * 40]
    with pytest.raises(ValueError, match="repeats"):
        bench.run([p], threads=1, with_xrfm=False, repeats=0)
