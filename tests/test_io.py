"""Saved models reload without pickle and predict bit-identical numbers."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import agop
from agop.datasets import low_rank


@pytest.fixture(scope="module")
def data():
    return low_rank(300, 8, random_state=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: agop.RFMRegressor(iters=2),
        lambda: agop.RFMRegressor(iters=1, diag=True, kernel=agop.LpqLaplace(3.0, 1.5, 1.0)),
        lambda: agop.RFMRegressor(iters=1, kernel="gaussian", bandwidth="median", reg=0.0),
    ],
)
def test_regressor_round_trip_is_bit_identical(tmp_path, data, make):
    X, y = data
    m = make().fit(X, y)
    path = agop.save(m, tmp_path / "model")
    assert path.endswith(".npz")
    r = agop.load(path)
    assert type(r) is type(m) and r.get_params() == m.get_params()
    np.testing.assert_array_equal(r.predict(X), m.predict(X))
    np.testing.assert_array_equal(r.M_, m.M_)
    assert r.history_ == m.history_ and r.best_iter_ == m.best_iter_
    assert r.kernel_ == m.kernel_
    # the file holds no pickled objects
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype.kind != "O" for k in f.files)


def test_classifier_round_trip(tmp_path, data):
    X, y = data
    labels = np.where(y > 0, "up", np.where(y < 0, "down", "flat"))
    c = agop.RFMClassifier(iters=1).fit(X, labels)
    r = agop.load(agop.save(c, tmp_path / "clf.npz"))
    np.testing.assert_array_equal(r.predict(X), c.predict(X))
    np.testing.assert_array_equal(r.predict_proba(X), c.predict_proba(X))
    assert list(r.classes_) == list(c.classes_)


def test_torch_model_reloads_as_torch(tmp_path, data):
    torch = pytest.importorskip("torch")
    X, y = data
    Xt = torch.asarray(X)
    m = agop.RFMRegressor(iters=1).fit(Xt, torch.asarray(y))
    r = agop.load(agop.save(m, tmp_path / "t"))
    assert isinstance(r.M_, torch.Tensor)
    assert torch.equal(r.predict(Xt), m.predict(Xt))
    rn = agop.load(tmp_path / "t.npz", like=np.zeros(1))
    np.testing.assert_allclose(rn.predict(X), m.predict(Xt).numpy(), rtol=1e-10, atol=1e-12)


def test_bad_files_raise_clear_errors(tmp_path, data):
    X, y = data
    path = agop.save(agop.RFMRegressor(iters=0).fit(X, y), tmp_path / "m")
    blob = open(path, "rb").read()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="not a readable agop model"):
        agop.load(trunc)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable agop model"):
        agop.load(corrupt)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable agop model"):
        agop.load(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="not an agop model"):
        agop.load(foreign)
    with pytest.raises(FileNotFoundError):
        agop.load(tmp_path / "missing.npz")
    # a newer format version
    newer = tmp_path / "newer.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__agop_meta__"][()]))
    meta["format_version"] = 99
    arrays["__agop_meta__"] = np.array(json.dumps(meta))
    np.savez(newer, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        agop.load(newer)
    # a missing array
    partial = tmp_path / "partial.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(partial, "w") as zout:
        for item in zin.namelist():
            if not item.startswith("coef_"):
                zout.writestr(item, zin.read(item))
    with pytest.raises(ValueError, match="missing arrays"):
        agop.load(partial)


def test_save_rejects_unfitted_and_foreign_objects(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        agop.save(agop.RFMRegressor(), tmp_path / "x")
    with pytest.raises(TypeError, match="RFMRegressor or RFMClassifier"):
        agop.save(object(), tmp_path / "x")


def test_categorical_model_round_trip_and_format_versions(tmp_path, data):
    X, y = data
    rng = np.random.default_rng(1)
    Xc = np.empty((X.shape[0], X.shape[1] + 2), dtype=object)
    Xc[:, : X.shape[1]] = X
    Xc[:, -2] = rng.integers(0, 3, size=X.shape[0])
    Xc[:, -1] = np.array(["x", "y"])[rng.integers(0, 2, size=X.shape[0])]
    yc = y + Xc[:, -2].astype(float)
    m = agop.RFMRegressor(iters=1, categorical_features=[-2, -1],
                          categorical_vectors={-2: np.eye(3) * 2.0}).fit(Xc, yc)
    path = agop.save(m, tmp_path / "cat")
    r = agop.load(path)
    np.testing.assert_array_equal(r.predict(Xc), m.predict(Xc))
    assert r.categorical_features == [-2, -1]
    np.testing.assert_array_equal(r.categorical_vectors[-2], np.eye(3) * 2.0)
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["__agop_meta__"][()]))
        assert all(f[k].dtype.kind != "O" for k in f.files)
    assert meta["format_version"] == 2 and meta["n_categorical"] == 2
    plain = agop.save(agop.RFMRegressor(iters=0).fit(X, y), tmp_path / "plain")
    with np.load(plain) as f:
        assert json.loads(str(f["__agop_meta__"][()]))["format_version"] == 1
    partial = tmp_path / "partial.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(partial, "w") as zout:
        for item in zin.namelist():
            if not item.startswith("categories_1"):
                zout.writestr(item, zin.read(item))
    with pytest.raises(ValueError, match=r"missing arrays \['categories_1'\]"):
        agop.load(partial)


#: the hyperparameters a format-1 file may hold (a reader of format 1 passes each to the
#: estimator's constructor, so a file labelled 1 must not name newer ones)
FORMAT_1_PARAMS = {
    "agop_max_points", "agop_power", "bandwidth", "centering", "diag", "early_stop_tol",
    "early_stopping", "iters", "kernel", "normalize", "random_state", "reg", "solver",
    "tuning_metric", "update", "validation_fraction", "verbose",
}


def _meta(path):
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["__agop_meta__"][()]))


def test_format_1_files_hold_only_format_1_hyperparameters(tmp_path, data):
    X, y = data
    for i, m in enumerate((agop.RFMRegressor(iters=0).fit(X, y),
                           agop.RFMClassifier(iters=0).fit(X, y > 0))):
        path = agop.save(m, tmp_path / f"plain{i}")
        meta = _meta(path)
        assert meta["format_version"] == 1
        assert set(meta["params"]) <= FORMAT_1_PARAMS
        r = agop.load(path)
        assert r.get_params() == m.get_params()
        np.testing.assert_array_equal(r.predict(X), m.predict(X))
    # categorical hyperparameters that name no column still need format 2 to be kept
    m = agop.RFMRegressor(iters=0, categorical_features=[], handle_unknown="ignore").fit(X, y)
    path = agop.save(m, tmp_path / "nocat")
    assert _meta(path)["format_version"] == 2
    r = agop.load(path)
    assert r.categorical_features == [] and r.handle_unknown == "ignore"


def test_categorical_features_given_as_a_tensor_are_saved(tmp_path):
    """Column indices in a torch tensor are saved as their values (not dropped to None, which
    made the reloaded hyperparameters fit a different model)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    X = np.empty((40, 2), dtype=object)
    X[:, 0], X[:, 1] = rng.normal(size=40), np.array(["u", "v"])[rng.integers(0, 2, 40)]
    y = X[:, 0].astype(float) + (X[:, 1] == "u")
    m = agop.RFMRegressor(iters=1, categorical_features=torch.tensor([1])).fit(X, y)
    r = agop.load(agop.save(m, tmp_path / "t"))
    np.testing.assert_array_equal(np.asarray(r.categorical_features), [1])
    again = agop.RFMRegressor(**r.get_params()).fit(X, y)
    np.testing.assert_array_equal(again.predict(X), m.predict(X))
