"""RFMRegressor / RFMClassifier: scikit-learn conventions, namespaces, published accuracy."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import agop
from agop.datasets import low_rank
from agop.testing import to_numpy

sklearn = pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


@parametrize_with_checks([agop.RFMRegressor(iters=2), agop.RFMClassifier(iters=2)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_regressor_recovers_the_low_rank_features():
    X, y = low_rank(2000, 20, random_state=0)
    m = agop.RFMRegressor(iters=3).fit(X[:1500], y[:1500])
    assert sorted(np.argsort(-m.feature_importances_)[:3].tolist()) == [0, 1, 5]
    assert m.M_.shape == (20, 20) and m.coef_.shape == (1500,) and m.X_fit_.shape == (1500, 20)
    assert m.n_iter_ == 3 and m.best_iter_ == 3 and len(m.history_) == 4
    assert m.score(X[1500:], y[1500:]) > 0.7
    assert m.kernel_ == agop.Laplace(10.0)


def test_regressor_validation_selects_the_best_iterate():
    X, y = low_rank(1200, 10, random_state=1)
    m = agop.RFMRegressor(iters=4, early_stop_tol=1.0 + 1e-12)
    m.fit(X[:800], y[:800], X[800:], y[800:])
    vals = [h["val_metric"] for h in m.history_]
    assert m.best_iter_ == int(np.argmin(vals))
    pred = m.predict(X[800:])
    assert np.mean((pred - y[800:]) ** 2) == pytest.approx(min(vals), rel=1e-9)
    # validation_fraction holds out a part of the training data
    m2 = agop.RFMRegressor(iters=2, validation_fraction=0.25, random_state=0).fit(X, y)
    assert m2.X_fit_.shape[0] == 900 and m2.history_[0]["val_metric"] is not None


def test_multioutput_regression_and_diag():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    Y = np.stack([X[:, 0] ** 2, np.sin(X[:, 1])], axis=1)
    m = agop.RFMRegressor(iters=2, diag=True, bandwidth="median").fit(X, Y)
    assert m.predict(X).shape == (300, 2) and m.coef_.shape == (300, 2)
    assert m.M_.shape == (6,)
    assert set(np.argsort(-m.feature_importances_)[:2].tolist()) == {0, 1}
    assert m.kernel_.bandwidth != 10.0  # the median heuristic


def test_classifier_labels_of_any_type_and_proba():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    names = np.array(["cat", "dog", "emu"])
    y = names[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    clf = agop.RFMClassifier(iters=2).fit(X[:300], y[:300])
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    P = clf.predict_proba(X[300:])
    assert P.shape == (100, 3) and np.allclose(P.sum(axis=1), 1.0) and (P > 0).all()
    pred = clf.predict(X[300:])
    assert pred.dtype.kind == "U" and np.mean(pred == y[300:]) > 0.8
    np.testing.assert_array_equal(pred, names[np.argmax(clf.decision_function(X[300:]), 1)])
    # binary: decision_function > 0 <=> classes_[1]; proba = [1 - p, p]
    yb = np.where(X[:, 2] > 0, 7, -3)
    cb = agop.RFMClassifier(iters=1).fit(X, yb)
    df = cb.decision_function(X)
    np.testing.assert_array_equal(cb.predict(X), np.where(df > 0, 7, -3))
    Pb = cb.predict_proba(X)
    np.testing.assert_allclose(Pb[:, 1], np.clip(df + 0.5, 1e-3, 1 - 1e-3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        agop.RFMClassifier().fit(X, np.zeros(400))
    with pytest.raises(ValueError, match="continuous"):
        agop.RFMClassifier().fit(X, X[:, 0])


def test_digits_accuracy():
    """Stratified 80/20 split, seed 0: accuracy >= 0.98 (validation selects the iterate)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    clf = agop.RFMClassifier(bandwidth=20.0, validation_fraction=0.2, random_state=0)
    clf.fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.98


def test_pipeline_and_grid_search():
    X, y = low_rank(400, 8, random_state=3)
    pipe = make_pipeline(StandardScaler(), agop.RFMRegressor(iters=1))
    grid = GridSearchCV(pipe, {"rfmregressor__bandwidth": [2.0, 20.0]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["rfmregressor__bandwidth"] in (2.0, 20.0)
    assert np.isfinite(grid.score(X, y))
    clf = GridSearchCV(agop.RFMClassifier(iters=1), {"reg": [1e-3, 1e-1]}, cv=2)
    clf.fit(X, (y > 0).astype(int))
    assert clf.best_estimator_.n_iter_ == 1


def test_other_namespaces_stay_in_their_library(xp):
    X, y = low_rank(200, 6, random_state=0)
    Xx, yx = xp.asarray(X), xp.asarray(y)
    m = agop.RFMRegressor(iters=2).fit(Xx, yx)
    for a in (m.M_, m.coef_, m.X_fit_, m.predict(Xx), m.feature_importances_):
        assert type(a) is type(Xx)
    ref = agop.RFMRegressor(iters=2).fit(X, y)
    np.testing.assert_allclose(to_numpy(m.predict(Xx)), ref.predict(X), rtol=1e-8, atol=1e-10)
    yc = xp.asarray((y > 0).astype(np.int64))
    c = agop.RFMClassifier(iters=1).fit(Xx, yc)
    assert type(c.predict(Xx)) is type(Xx) and type(c.predict_proba(Xx)) is type(Xx)
    assert c.score(Xx, yc) > 0.9


def test_float32_is_kept():
    X, y = low_rank(300, 6, random_state=0)
    m = agop.RFMRegressor(iters=2).fit(X.astype(np.float32), y.astype(np.float32))
    assert m.M_.dtype == np.float32 and m.predict(X.astype(np.float32)).dtype == np.float32


def test_verbose_logs_each_iteration(caplog, monkeypatch):
    import agop.rfm as rfm

    monkeypatch.setattr(rfm, "_progress", lambda total, verbose: None)  # no tqdm bar
    X, y = low_rank(100, 6, random_state=0)
    with caplog.at_level(logging.INFO, logger="agop"):
        agop.RFMRegressor(iters=2, verbose=True).fit(X, y)
    assert caplog.text.count("iteration ") == 3
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="agop"):
        agop.RFMRegressor(iters=2).fit(X, y)
    assert "iteration" not in caplog.text


@pytest.mark.parametrize(
    "X, err, match",
    [
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "strings"),
        (np.array([[1.0, "2"], [3.0, 4.0]], dtype=object), TypeError, "strings"),
        (np.array([[1.0, np.nan], [3.0, 4.0]]), ValueError, "NaN"),
        (np.ones((2, 2)) * 1j, ValueError, "Complex"),
        (np.ones(4), ValueError, "Reshape"),
        (np.ones((0, 3)), ValueError, "0 sample"),
    ],
)
def test_bad_inputs_get_clear_errors(X, err, match):
    with pytest.raises(err, match=match):
        agop.RFMRegressor().fit(X, np.ones(len(X)))


def test_bad_hyperparameters_get_clear_errors():
    X, y = low_rank(50, 6, random_state=0)
    for kwargs, match in [
        ({"kernel": "rbf2"}, "unknown kernel"),
        ({"bandwidth": "mean"}, "median"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"reg": -1}, "reg"),
        ({"iters": 1.5}, "iters"),
        ({"solver": "lu"}, "solver"),
        ({"normalize": "l1"}, "normalize"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"kernel": "quadratic", "bandwidth": 2.0}, "no bandwidth"),
    ]:
        with pytest.raises(ValueError, match=match):
            agop.RFMRegressor(**kwargs).fit(X, y)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        agop.RFMRegressor().predict(X)
    m = agop.RFMRegressor(iters=0).fit(X, y)
    with pytest.raises(ValueError, match="expecting 6 features"):
        m.predict(X[:, :4])


def test_direct_and_pcg_fits_agree_on_validation_error():
    X, y = low_rank(1500, 10, random_state=4)
    errs = []
    for solver in ("direct", "pcg"):
        m = agop.RFMRegressor(iters=2, solver=solver, random_state=0, early_stopping=False)
        m.fit(X[:1000], y[:1000], X[1000:], y[1000:])
        errs.append([h["val_metric"] for h in m.history_])
        assert {h["solver"] for h in m.history_} == {solver}
    np.testing.assert_allclose(errs[1], errs[0], rtol=1e-4)
