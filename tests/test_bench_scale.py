"""``agop bench scale``: its data, its memory reading, its arithmetic and a tiny run."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agop.bench import names
from agop.bench.scale import (
    CHUNK,
    NOISE,
    TARGETS,
    check_targets,
    growth,
    main,
    measure,
    projections,
    ratios,
    run_isolated,
    split_rows,
    synthetic_data,
    table,
    target_function,
)

pytest.importorskip("sklearn")


def test_data_prefix_is_the_same_for_every_n():
    # a subsample of the first k rows is the start of every larger set, across chunks
    Xa, ya = synthetic_data(CHUNK + 300)
    Xb, yb = synthetic_data(CHUNK + 1000)
    assert Xa.dtype == np.float32 and ya.dtype == np.float32 and Xa.shape == (CHUNK + 300, 20)
    np.testing.assert_array_equal(Xa, Xb[:CHUNK + 300])
    np.testing.assert_array_equal(ya, yb[:CHUNK + 300])
    Xt, _ = synthetic_data(300, test=True)
    assert not np.allclose(Xt, Xa[:300])  # the test rows come from another stream


def test_target_is_the_stated_function_plus_noise():
    W = projections()
    np.testing.assert_allclose(W.T @ W, np.eye(3), atol=1e-12)
    X, y = synthetic_data(20_000)
    U = X.astype(np.float64) @ W
    expected = np.sin(2 * U[:, 0]) + 0.5 * U[:, 1] * U[:, 2]
    np.testing.assert_allclose(target_function(U), expected)
    resid = y - expected
    assert abs(resid.mean()) < 0.01 and resid.std() == pytest.approx(NOISE, rel=0.03)
    assert split_rows(1000) == 900 and split_rows(100_000) == 90_000


def test_peak_rss_sees_a_new_allocation():
    # in a fresh process, so that the new array surely raises the peak
    code = ("import numpy as np; from agop.bench.scale import peak_rss_bytes as p; "
            "b = p(); a = np.ones(40_000_000); print(b, p())")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before > 10e6 and after - before > 300e6  # 320 MB of float64 ones, touched


def _rows():
    return [
        {"method": "agop", "n": 1000, "fit_s": 2.0, "predict_s": 0.5, "rmse": 0.2},
        {"method": "hgb", "n": 1000, "fit_s": 1.0, "predict_s": 0.1, "rmse": 0.4},
        {"method": "agop", "n": 4000, "fit_s": 8.0, "predict_s": 0.5, "rmse": 0.1},
        {"method": "hgb", "n": 4000, "error": "timed out after 5 s"},
    ]


def test_ratios_and_growth_by_hand():
    (q,) = ratios(_rows())
    assert q == {"n": 1000, "peer": "hgb", "fit": 0.5, "predict": 0.2, "rmse": 0.5}
    g = growth(_rows(), "agop")
    assert g[0] == (1000, 2.0, None) and g[1][:2] == (4000, 8.0)
    assert g[1][2] == pytest.approx(1.0)  # 4x the rows in 4x the time: linear
    assert growth(_rows(), "hgb") == [(1000, 1.0, None)]  # the failed fit is left out


def test_targets_pass_and_fail():
    base = {"method": "agop", "n": TARGETS["n"], "fit_s": 500.0, "peak_rss": 3e9}
    (line,) = check_targets([base])
    assert line.count("PASS") == 2 and "FAIL" not in line
    (line,) = check_targets([{**base, "fit_s": 700.0, "peak_rss": 9e9}])
    assert line.count("FAIL") == 2
    (line,) = check_targets([{**base, "n": 100}])
    assert "not measured" in line


def test_table_marks_failed_fits():
    rows = [{**r, "peak_rss": 1e8, "rss_before": 5e7, "r2": 0.9, "info": {}}
            if "error" not in r else r for r in _rows()]
    args = argparse.Namespace(sizes=[1000, 4000], threads=2, test_size=100, xrfm_size=1000,
                              rounds=7,
                              settings={"max_leaf_size": 10, "split_max_points": 5,
                                        "rfm_params": {"iters": 1}})
    text = table(rows, args, ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)))
    assert "| hgb | 4000 | - |" in text and "timed out after 5 s" in text
    assert "| 1000 | hgb | 0.50 | 0.20 | 0.500 |" in text
    assert "max_iter=7" in text and "n_estimators=7" in text


def test_agop_learns_the_projections_in_process():
    r = measure("agop", 3000, test_size=1000, settings={
        "max_leaf_size": 800, "split_max_points": 300, "rfm_params": {"iters": 2}})
    assert r["n_train"] == 2700 and r["n_val"] == 300 and r["info"]["leaves"] == 4
    assert r["r2"] > 0.8 and r["rmse"] < 0.4  # a constant predictor has R^2 = 0
    assert r["peak_rss"] >= r["rss_before"] > 0
    with pytest.raises(ValueError, match="unknown method"):
        measure("lightgbm", 100)


def test_xrfm_split_models_use_the_given_subsample(monkeypatch):
    xrfm = pytest.importorskip("xrfm")
    import xrfm.xrfm as module

    sizes = []
    fit = module.RFM.fit

    def recording_fit(self, train_data, *args, **kwargs):
        sizes.append(train_data[0].shape[0])
        return fit(self, train_data, *args, **kwargs)

    monkeypatch.setattr(module.RFM, "fit", recording_fit)
    assert xrfm is not None
    r = measure("xrfm", 3000, test_size=500, settings={
        "max_leaf_size": 800, "split_max_points": 200, "rfm_params": {"iters": 1}})
    # without the override each split model would fit on the whole node (> 800 points)
    assert sizes and max(sizes) <= 800
    assert sizes.count(190) == 3  # 95 % of 200 points in each of the 3 split models
    assert r["r2"] > 0.5


def test_isolated_fit_reports_a_timeout():
    r = run_isolated("agop", 1000, threads=1, test_size=100, seed=0,
                     settings={"max_leaf_size": 300, "split_max_points": 100,
                               "rfm_params": {"iters": 1}}, timeout=0.01)
    assert r == {"method": "agop", "n": 1000, "error": "timed out after 0 s"}


def test_bench_scale_runs_small(tmp_path, capsys):
    out = tmp_path / "scale.md"
    argv = ["--sizes", "2000", "--peers", "hgb", "--max-leaf-size", "500",
            "--split-max-points", "150", "--iters", "1", "--test-size", "300",
            "--threads", "2", "--blas-threads", "1", "--rounds", "50", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    for method in ("agop", "hgb"):  # fitted: seconds, not an error
        assert re.search(rf"^\| {method} \| 2000 \| \d+\.\d \| \d+\.\d\d \|", text, re.M)
    assert "| 2000 | hgb | " in text and "not measured in this run" in text
    assert "HistGradientBoostingRegressor(max_iter=50," in text
    assert "2 threads for every library (1 for BLAS)" in text
    assert "max_leaf_size=500, split_max_points=150, rfm_params={'iters': 1}" in text
    assert "scale" in names()
    with pytest.raises(SystemExit):
        main(["--peers", "lightgbm"])
