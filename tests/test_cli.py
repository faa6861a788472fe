"""The `agop` command: the demo recovers the true coordinates; errors are one line."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
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


# ------------------------------------------------------------------ agop fit / predict

def _csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_fit_default_finds_the_low_rank_coordinates(tmp_path, capsys):
    prefix = str(tmp_path / "model")
    assert main(["fit", "--iters", "3", "--out", prefix]) == 0
    text = capsys.readouterr().out
    assert "lowrank (4000 samples x 20 features, regression" in text
    assert text.count("<- chosen") == 1 and "test rmse" in text
    top3 = [line.split()[1] for line in text.splitlines() if line.strip()[:1] in "123"
            and len(line.split()) >= 3 and line.split()[1].startswith("x")][:3]
    assert sorted(top3) == ["x0", "x1", "x5"]
    for suffix in (".npz", ".json", "_M.png", "_importances.png"):
        assert (tmp_path / f"model{suffix}").stat().st_size > 0


def test_fit_and_predict_a_csv_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 3))
    label = np.where(X[:, 1] > 0, "pos", "neg")
    rows = [[f"{a:.6f}", lab, f"{b:.6f}", f"{c:.6f}"]
            for (a, b, c), lab in zip(X, label, strict=True)]
    data = _csv(tmp_path / "train.csv", ["a", "kind", "b", "c"], rows)
    prefix = str(tmp_path / "clf")
    assert main(["fit", "--data", str(data), "--target", "kind", "--iters", "1", "--out",
                 prefix, "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "classification, target 'kind'" in text and "test accuracy" in text
    assert not (tmp_path / "clf_M.png").exists()
    out = tmp_path / "pred.csv"
    assert main(["predict", prefix + ".npz", "--data", str(data), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "predicted_kind" and len(lines) == 161
    acc = np.mean(np.array(lines[1:]) == label)
    assert acc > 0.9
    assert main(["predict", prefix + ".npz", "--data", str(data), "--proba"]) == 0
    proba = capsys.readouterr().out.splitlines()
    assert proba[0] == "p_neg,p_pos"
    assert abs(sum(map(float, proba[1].split(","))) - 1.0) < 1e-5


def test_fit_bundled_regression_with_options(tmp_path, capsys):
    assert main(["fit", "--dataset", "diabetes", "--iters", "1", "--diag", "--bandwidth",
                 "median", "--val-size", "0", "--out", str(tmp_path / "d"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "diabetes (442 samples x 10 features, regression" in text and "bmi" in text


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--data", "{missing}"], "no such file"),
        (["--data", "{empty}"], "is empty"),
        (["--data", "{train}", "--target", "nope"], "no column 'nope'"),
        (["--data", "{text}", "--target", "y"], "column 'a' is not numeric"),
        (["--data", "{gap}", "--target", "y"], "missing value in column 'a'"),
        (["--data", "{train}", "--target", "y", "--bandwidth", "wide"], "--bandwidth"),
        (["--dataset", "iris"], "unknown dataset"),
        (["--dataset", "wine", "--target", "y"], "--target goes with --data"),
        (["--data", "{train}", "--target", "y", "--test-size", "1.5"], "[0, 1)"),
    ],
)
def test_fit_errors_are_one_line(tmp_path, capsys, argv_tail, message):
    files = {
        "missing": tmp_path / "missing.csv",
        "empty": tmp_path / "empty.csv",
        "train": _csv(tmp_path / "train.csv", ["a", "b", "y"],
                      [[i, i % 3, i * 0.5] for i in range(20)]),
        "text": _csv(tmp_path / "text.csv", ["a", "y"], [["x", 1], ["y", 2]]),
        "gap": _csv(tmp_path / "gap.csv", ["a", "y"], [["", 1], ["2", 2]]),
    }
    files["empty"].write_text("")
    argv = ["fit", *[a.format(**files) for a in argv_tail], "--out", str(tmp_path / "m"),
            "--no-plots", "--iters", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("agop fit: error: ") and message in err and err.count("\n") == 1


def test_predict_rejects_foreign_files(tmp_path, capsys):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    data = _csv(tmp_path / "x.csv", ["a"], [[1.0]])
    assert main(["predict", str(bogus), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agop predict: error: ") and "not a readable agop model" in err


def test_png_fallback_without_matplotlib(tmp_path):
    import struct
    import zlib

    from agop._plot import bar_png, heatmap_png

    M = np.array([[1.0, -0.5], [-0.5, 0.25]])
    for path in (heatmap_png(M, str(tmp_path / "h.png"), use_matplotlib=False),
                 bar_png(np.array([0.2, 1.0, 0.5]), str(tmp_path / "b.png"),
                         use_matplotlib=False)):
        blob = open(path, "rb").read()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", blob[16:24])
        idat = blob.index(b"IDAT")
        n = struct.unpack(">I", blob[idat - 4 : idat])[0]
        raw = zlib.decompress(blob[idat + 4 : idat + 4 + n])
        assert len(raw) == h * (1 + 3 * w)
    mpl_image = pytest.importorskip("matplotlib.image")
    img = mpl_image.imread(str(tmp_path / "h.png"))
    assert img.shape[2] == 3 and img[0, 0, 0] > 0.5 > img[0, 0, 2]  # M[0, 0] > 0: red
