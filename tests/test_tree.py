"""xRFM trees: splits, routing (hard and soft, against naive loops), the peer's smoke
targets, ensembles, save / load, scikit-learn conventions and leaves on a dask cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import agop
import agop._tree_grow as grow_mod
import agop.tree as tree_mod
from agop.testing import to_numpy

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

FAST = {"iters": 1}


def _peer_data(n=2000, d=10, seed=0):
    """SPEC §10.5 (xRFM's tests): n = 2000, d = 10, 80/20 then 80/20."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    n_test = n // 5
    n_val = (n - n_test) // 5
    return X, slice(0, n - n_test - n_val), slice(n - n_test - n_val, n - n_test), \
        slice(n - n_test, n)


@pytest.fixture(scope="module")
def reg_data():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(900, 5))
    y = np.sign(X[:, 0]) + 0.5 * X[:, 1] ** 2
    return X, y


@pytest.fixture(scope="module")
def soft_model(reg_data):
    X, y = reg_data
    return agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=120, random_state=0).fit(
        X[:700], y[:700])


# --------------------------------------------------------------------------- sklearn


@parametrize_with_checks([  # small leaves: the checks' data sets are split
    agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=20, random_state=0),
    agop.xRFMClassifier(rfm_params=FAST, max_leaf_size=20, random_state=0),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_clone_and_params_round_trip():
    m = agop.xRFMRegressor(rfm_params={"kernel": "gaussian", "bandwidth": 3.0}, n_trees=2)
    c = clone(m)
    assert c.get_params() == m.get_params() and c.rfm_params is not m.rfm_params
    c.set_params(max_leaf_size=50, temperature=0.5)
    assert c.max_leaf_size == 50 and c.temperature == 0.5


# --------------------------------------------------------------------------- peer targets


def test_regression_smoke_target_with_real_splits():
    X, tr, va, te = _peer_data()
    Y = np.stack([(X[:, 0] > 0).astype(float), (X[:, 1] < 0.5).astype(float)], axis=1)
    m = agop.xRFMRegressor(rfm_params={"iters": 2}, max_leaf_size=300, random_state=0)
    m.fit(X[tr], Y[tr], X[va], Y[va])
    assert m.n_leaves_ >= 4
    rmse = float(np.sqrt(np.mean((m.predict(X[te]) - Y[te]) ** 2)))
    assert rmse < 0.3, rmse


@pytest.mark.parametrize("K", [2, 3])
def test_classification_smoke_target_with_real_splits(K):
    X, tr, va, te = _peer_data(seed=K)
    y = np.clip(np.floor(X[:, 0]), 0, K - 1).astype(int)
    c = agop.xRFMClassifier(rfm_params={"iters": 2}, max_leaf_size=300, random_state=0)
    c.fit(X[tr], y[tr], X[va], y[va])
    assert c.n_leaves_ >= 4 and list(c.classes_) == list(range(K))
    assert c.score(X[te], y[te]) > 0.8
    P = c.predict_proba(X[te])
    assert P.shape == (X[te].shape[0], K) and np.allclose(P.sum(axis=1), 1.0)


def test_pure_leaves_still_score_every_class():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 4, size=(800, 3))
    names = np.array(["a", "b", "c", "d"])
    y = names[np.floor(X[:, 0]).astype(int)]  # a leaf on one side sees only some classes
    c = agop.xRFMClassifier(rfm_params=FAST, max_leaf_size=100, split_method="linear",
                            random_state=0).fit(X, y)
    seen = [set(np.flatnonzero(np.abs(leaf.coef_).sum(0) > 0)) for leaf in c.trees_[0].leaves]
    assert all(leaf.coef_.shape[1] == 4 for leaf in c.trees_[0].leaves)
    assert any(len(s) < 4 for s in seen)  # zero coefficients for the classes a leaf lacks
    pred = c.predict(X)
    assert pred.dtype.kind == "U" and np.mean(pred == y) > 0.95


# --------------------------------------------------------------------------- splits


def test_agop_split_direction_follows_the_target():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1200, 6))
    y = np.tanh(3 * X[:, 0])  # depends on x0 only
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=400, random_state=0).fit(X, y)
    V = to_numpy(m.trees_[0].directions)
    assert abs(V[0, 0]) > 0.95, V[0]
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=1e-12)


def test_pca_linear_and_random_directions():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 5)) * np.array([1.0, 1.0, 1.0, 4.0, 1.0])
    w = np.array([1.0, -2.0, 0.0, 0.0, 0.5])
    y = X @ w / 4.0
    kw = {"rfm_params": FAST, "max_leaf_size": 500, "random_state": 0}
    V = to_numpy(agop.xRFMRegressor(split_method="pca", **kw).fit(X, y).trees_[0].directions)
    assert abs(V[0, 3]) > 0.99  # the direction of largest variance
    V = to_numpy(agop.xRFMRegressor(split_method="linear", **kw).fit(X, y).trees_[0].directions)
    assert abs(V[0] @ w) / np.linalg.norm(w) > 0.99  # the regression coefficients
    dirs = [to_numpy(agop.xRFMRegressor(split_method="random", **{**kw, "random_state": s})
                     .fit(X, y).trees_[0].directions[0]) for s in (0, 1)]
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-12 for v in dirs)
    assert abs(dirs[0] @ dirs[1]) < 0.99


def test_top_eigenvector_lobpcg_above_256_matches_eigh():
    rng = np.random.default_rng(4)
    B = rng.normal(size=(300, 300))
    A = B @ B.T + 50.0 * np.outer(np.ones(300), np.ones(300)) / 300
    v = grow_mod._top_eigenvector(A, np, rng)
    ref = np.linalg.eigh(A)[1][:, -1]
    assert abs(v @ ref) > 1 - 1e-8


def test_splits_are_balanced_medians_and_leaves_respect_the_size():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1000, 4))
    y = X[:, 0] + X[:, 1]
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=130, validation_fraction=0.0,
                           random_state=0).fit(X, y)
    t = m.trees_[0]
    sizes = [leaf.X_fit_.shape[0] for leaf in t.leaves]
    assert sum(sizes) == 1000 and max(sizes) <= 130 and max(sizes) - min(sizes) <= 1
    assert t.n_leaves == 8 and t.depth == 3
    # the root threshold is the midpoint between the two middle projections
    s = np.sort(X @ t.directions[0])
    assert t.thresholds[0] == pytest.approx((s[499] + s[500]) / 2, rel=1e-12)
    q75, q25 = np.quantile(X @ t.directions[0], [0.75, 0.25])
    assert t.scales[0] == pytest.approx(q75 - q25, rel=1e-12)


def test_validation_refill_moves_training_points():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, 3))
    Y = X[:, :1]
    grower = grow_mod._Grower(X, Y, X[:40], np, np.random.default_rng(0), 100, "pca", {},
                              100, 0.05, 1500, 0.2)
    grower.grow(np.arange(500), np.arange(40))
    jobs = grower.plan.jobs
    assert len(jobs) == 8
    for job in jobs:
        n_total = job.train.shape[0] + job.moved.shape[0]
        assert job.moved.shape[0] == int(0.2 * n_total)  # min(1500 - n_val, 0.2 n)
        assert not set(job.moved.tolist()) & set(job.train.tolist())
    assert sum(job.val.shape[0] for job in jobs) == 40  # every validation point routed once
    # a leaf with more than refill_size validation points is not refilled
    g2 = grow_mod._Grower(X, Y, X, np, np.random.default_rng(0), 1000, "pca", {}, 100, 0.05,
                          100, 0.2)
    g2.grow(np.arange(500), np.arange(500))
    assert g2.plan.jobs[0].moved is None and g2.plan.jobs[0].train.shape[0] == 500


def test_a_tree_that_never_splits_refills_nothing():
    # xRFM refills a leaf's validation set only after a split: a one-leaf tree is the
    # leaf RFM on all the training points with the given validation data
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] - X[:, 1]
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=1000, random_state=0).fit(
        X[:200], y[:200], X[200:], y[200:])
    (leaf,) = m.trees_[0].leaves
    np.testing.assert_array_equal(leaf.X_fit_, X[:200])


# --------------------------------------------------------------------------- routing


def _naive_leaf(t, x):
    node = 0
    while t.leaf[node] < 0:
        j = t.split[node]
        node = t.children[node, 0] if x @ t.directions[j] <= t.thresholds[j] else \
            t.children[node, 1]
    return int(t.leaf[node])


def _naive_soft(t, X, T, keep=0.99, cap=12):
    """Per point: path products of sigmoids, then the kept leaves, all leaves evaluated."""
    P_all = np.stack([leaf.predict(X)[:, 0] for leaf in t.leaves], axis=1)  # (m, L)
    out = np.zeros(X.shape[0])
    for i, x in enumerate(X):
        logp = np.zeros(t.n_leaves)
        stack = [(0, 0.0)]
        while stack:
            node, acc = stack.pop()
            if t.leaf[node] >= 0:
                logp[t.leaf[node]] = max(acc, -50.0)
                continue
            j = t.split[node]
            z = (x @ t.directions[j] - t.thresholds[j]) / (T * t.scales[j])
            stack.append((t.children[node, 0], acc - np.logaddexp(0, z)))
            stack.append((t.children[node, 1], acc - np.logaddexp(0, -z)))
        w = np.exp(logp - logp.max())
        w /= w.sum()
        order = np.argsort(-w, kind="stable")
        kept, total = [], 0.0
        for k in order:
            if total >= keep or len(kept) == cap:
                break
            kept.append(k)
            total += w[k]
        out[i] = sum(w[k] * P_all[i, k] for k in kept) / sum(w[k] for k in kept)
    return out


def test_every_point_reaches_exactly_one_leaf(soft_model, reg_data):
    X, _ = reg_data
    t = soft_model.trees_[0]
    assert t.n_leaves >= 4
    ids = to_numpy(t.apply(X))
    np.testing.assert_array_equal(ids, [_naive_leaf(t, x) for x in X])
    parts = t._route(X)
    rows = np.concatenate([r for _, r in parts])
    np.testing.assert_array_equal(np.sort(rows), np.arange(X.shape[0]))
    hard = t.predict(X, temperature=0.0)
    for k, leaf in enumerate(t.leaves):
        mine = ids == k
        np.testing.assert_array_equal(hard[mine], leaf.predict(X[mine]))  # (m, c) outputs


def test_hard_routing_evaluates_each_point_in_one_leaf(soft_model, reg_data, monkeypatch):
    X, _ = reg_data
    calls = []
    real = tree_mod._leaf_predict
    monkeypatch.setattr(tree_mod, "_leaf_predict",
                        lambda leaf, Xs: calls.append(Xs.shape[0]) or real(leaf, Xs))
    soft_model.trees_[0].predict(X, temperature=0.0)
    assert sum(calls) == X.shape[0] and len(calls) <= soft_model.trees_[0].n_leaves


def test_soft_routing_matches_a_naive_loop(soft_model, reg_data):
    X, _ = reg_data
    t = soft_model.trees_[0]
    for T in (0.3, 3.0, 300.0):
        np.testing.assert_allclose(t.predict(X[:150], temperature=T)[:, 0],
                                   _naive_soft(t, X[:150], T), rtol=1e-10, atol=1e-12)
    W = t.leaf_weights(X, 1e4)  # very soft: many leaves, capped at 12 and renormalized
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=1e-12)
    assert ((W > 0).sum(axis=1) <= 12).all() and ((W > 0).sum(axis=1) > 1).all()


def test_tree_rejects_negative_or_nan_temperatures(soft_model, reg_data):
    X, _ = reg_data
    t = soft_model.trees_[0]
    for T in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            t.predict(X[:5], temperature=T)
        with pytest.raises(ValueError, match="temperature"):
            t.leaf_weights(X[:5], T)


def test_soft_routing_tends_to_hard_routing(soft_model, reg_data):
    X, _ = reg_data
    t = soft_model.trees_[0]
    hard = t.predict(X, temperature=0.0)
    np.testing.assert_array_equal(t.predict(X, temperature=1e-9), hard)
    W = t.leaf_weights(X, 1e-9)
    np.testing.assert_array_equal(np.argmax(W, axis=1), to_numpy(t.apply(X)))
    assert np.array_equal(W.max(axis=1), np.ones(X.shape[0]))
    # the error grows smoothly away from T = 0
    d = [np.max(np.abs(t.predict(X, temperature=T) - hard)) for T in (1e-3, 1e-1, 10.0)]
    assert d[0] <= d[1] <= d[2] and d[2] > 0


def test_temperature_is_tuned_on_validation(soft_model):
    t = soft_model.trees_[0]
    assert list(t.temperature_scores) == list(tree_mod.TEMPERATURES)
    assert t.temperature_scores[t.temperature] == min(t.temperature_scores.values())
    # without validation data: hard routing, leaves see no validation data
    X = np.random.default_rng(0).normal(size=(300, 3))
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=100, validation_fraction=0.0,
                           random_state=0).fit(X, X[:, 0])
    assert all(tr.temperature == 0.0 for tr in m.trees_)
    assert all(h["val_metric"] is None for leaf in m.trees_[0].leaves for h in leaf.history_)
    fixed = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=100, temperature=0.5,
                               random_state=0).fit(X, X[:, 0])
    assert fixed.trees_[0].temperature == 0.5


def test_temperature_grid_is_the_xrfm_grid_from_0_025_to_4_5():
    # xRFM's DEFAULT_TEMP_TUNING_SPACE: 0 (hard) and 20 geometrically spaced temperatures
    # from 0.025 to 4.5 (multiples of each node's IQR); SPEC §10.4
    T = np.asarray(tree_mod.TEMPERATURES)
    assert T.shape == (21,) and T[0] == 0.0
    assert T[1] == pytest.approx(0.025, rel=1e-12) and T[-1] == pytest.approx(4.5, rel=1e-12)
    ratios = T[2:] / T[1:-1]
    np.testing.assert_allclose(ratios, (4.5 / 0.025) ** (1 / 19), rtol=1e-12)


def test_temperature_tuning_uses_a_capped_validation_subset(reg_data, monkeypatch):
    X, y = reg_data
    seen = []
    real = tree_mod._TreeBase._set_temperature
    monkeypatch.setattr(tree_mod, "TUNING_MAX_POINTS", 50)
    monkeypatch.setattr(tree_mod._TreeBase, "_set_temperature",
                        lambda self, t, Xv, Yv: seen.append(Xv.shape[0]) or real(self, t, Xv, Yv))
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=200, n_trees=2, random_state=0)
    m.fit(X[:600], y[:600])
    assert seen == [50, 50] and all(len(t.temperature_scores) == 21 for t in m.trees_)


def test_ensemble_averages_the_trees_and_seeds_make_it_reproducible(reg_data):
    X, y = reg_data
    kw = {"rfm_params": FAST, "max_leaf_size": 200, "n_trees": 3, "random_state": 7}
    m = agop.xRFMRegressor(**kw).fit(X[:700], y[:700])
    assert len(m.trees_) == 3 and m.n_leaves_ == sum(t.n_leaves for t in m.trees_)
    each = [t.predict(X[700:])[:, 0] for t in m.trees_]
    np.testing.assert_allclose(m.predict(X[700:]), np.mean(each, axis=0), rtol=1e-14)
    assert not np.array_equal(to_numpy(m.trees_[0].directions), to_numpy(m.trees_[1].directions))
    again = agop.xRFMRegressor(**kw).fit(X[:700], y[:700])
    np.testing.assert_array_equal(again.predict(X[700:]), m.predict(X[700:]))
    # a NumPy integer seed (as parameter grids built with numpy give) is the same seed
    numpy_seed = agop.xRFMRegressor(**{**kw, "random_state": np.int64(7)}).fit(X[:700], y[:700])
    np.testing.assert_array_equal(numpy_seed.predict(X[700:]), m.predict(X[700:]))


def test_dataframe_columns_must_keep_their_names_and_order(reg_data):
    pd = pytest.importorskip("pandas")
    X, y = reg_data
    cols = ["a", "b", "c", "d", "e"]
    df = pd.DataFrame(X[:300], columns=cols)
    for model in (agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=100, random_state=0),
                  agop.RFMRegressor(iters=1)):
        model.fit(df, y[:300])
        np.testing.assert_array_equal(model.predict(df), model.predict(X[:300]))
        with pytest.raises(ValueError, match="feature names should match"):
            model.predict(df[["b", "a", "c", "d", "e"]])  # reordered columns
        with pytest.raises(ValueError, match="feature names should match"):
            model.predict(df.rename(columns={"e": "z"}))


def test_other_namespaces_stay_in_their_library(xp, reg_data):
    X, y = reg_data
    kw = {"rfm_params": FAST, "max_leaf_size": 200, "random_state": 0}
    ref = agop.xRFMRegressor(**kw).fit(X[:600], y[:600])
    m = agop.xRFMRegressor(**kw).fit(xp.asarray(X[:600]), xp.asarray(y[:600]))
    Xt = xp.asarray(X[600:])
    P = m.predict(Xt)
    assert type(P) is type(Xt) and type(m.trees_[0].directions) is type(Xt)
    assert m.n_leaves_ == ref.n_leaves_ >= 2
    np.testing.assert_allclose(to_numpy(P), ref.predict(X[600:]), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(to_numpy(m.trees_[0].predict(Xt, temperature=2.0)),
                               ref.trees_[0].predict(X[600:], temperature=2.0), rtol=1e-7,
                               atol=1e-9)
    c = agop.xRFMClassifier(**kw).fit(xp.asarray(X[:600]), xp.asarray((y[:600] > 0) * 1))
    assert type(c.predict_proba(Xt)) is type(Xt) and type(c.predict(Xt)) is type(Xt)


def test_float32_is_kept_and_grid_search_works(reg_data):
    from sklearn.model_selection import GridSearchCV

    X, y = reg_data
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=200, random_state=0)
    m.fit(X[:600].astype(np.float32), y[:600].astype(np.float32))
    assert m.trees_[0].directions.dtype == np.float32
    assert m.predict(X[600:].astype(np.float32)).dtype == np.float32
    assert all(leaf.M_.dtype == np.float32 for leaf in m.trees_[0].leaves)
    grid = GridSearchCV(agop.xRFMRegressor(rfm_params=FAST, random_state=0),
                        {"max_leaf_size": [150, 1000]}, cv=2).fit(X[:600], y[:600])
    assert grid.best_params_["max_leaf_size"] in (150, 1000) and grid.score(X, y) > 0.5


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_save_load_is_bit_identical(tmp_path, reg_data, kind):
    X, y = reg_data
    kw = {"rfm_params": {"iters": 1, "diag": True}, "max_leaf_size": 200, "n_trees": 2,
          "random_state": 0}
    if kind == "regressor":  # a fixed soft temperature: the soft path must reload exactly
        m = agop.xRFMRegressor(**kw, temperature=0.7).fit(X[:700], np.stack([y, -y], 1)[:700])
        assert all(t.temperature == 0.7 for t in m.trees_)
    else:
        labels = np.array(["lo", "mid", "hi"])[np.digitize(y, [-0.5, 0.5])]
        m = agop.xRFMClassifier(**kw).fit(X[:700], labels[:700])
        assert all(len(t.temperature_scores) == 21 for t in m.trees_)
    assert m.n_leaves_ > 2
    path = agop.save(m, tmp_path / "tree")
    r = agop.load(path)
    assert type(r) is type(m) and r.get_params() == m.get_params()
    np.testing.assert_array_equal(r.predict(X), m.predict(X))
    if kind == "classifier":
        np.testing.assert_array_equal(r.predict_proba(X), m.predict_proba(X))
        assert list(r.classes_) == list(m.classes_)
    for a, b in zip(r.trees_, m.trees_, strict=True):
        assert a.temperature == b.temperature and a.temperature_scores == b.temperature_scores
        np.testing.assert_array_equal(a.directions, b.directions)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype.kind != "O" for k in f.files)


def test_bad_tree_files_raise_clear_errors(tmp_path, soft_model):
    path = agop.save(soft_model, tmp_path / "m.npz")
    raw = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable agop model"):
        agop.load(cut)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not an agop model"):
        agop.load(foreign)
    # a file with one leaf's arrays removed
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("tree0.leaf1.")}
    holed = tmp_path / "holed.npz"
    np.savez(holed, **arrays)
    with pytest.raises(ValueError, match="incomplete"):
        agop.load(holed)
    # node arrays that do not describe the tree: an error at load, not wrong predictions
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    leaf_ids = arrays["tree0.leaf"].copy()
    first, second = np.flatnonzero(leaf_ids >= 0)[:2]
    leaf_ids[first] = leaf_ids[second]
    children = arrays["tree0.children"].copy()
    children[0, 1] = 99
    for key, value in [("tree0.thresholds", arrays["tree0.thresholds"][:1]),
                       ("tree0.scales", -arrays["tree0.scales"]),
                       ("tree0.directions", arrays["tree0.directions"][:, :2]),
                       ("tree0.leaf", leaf_ids), ("tree0.children", children),
                       ("tree0.split", arrays["tree0.split"].astype(float))]:
        bad = tmp_path / "bad.npz"
        np.savez(bad, **{**arrays, key: value})
        with pytest.raises(ValueError, match="inconsistent node arrays"):
            agop.load(bad)
    with zipfile.ZipFile(path) as z:
        meta = json.loads(str(np.load(z.open("__agop_meta__.npy"))[()]))
    assert meta["class"] == "xRFMRegressor" and len(meta["trees"]) == 1
    with pytest.raises(ValueError, match="not fitted"):
        agop.save(agop.xRFMRegressor(), tmp_path / "unfitted")


# --------------------------------------------------------------------------- errors


def test_bad_parameters_get_clear_errors():
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = X[:, 0]
    for kwargs, err, match in [
        ({"max_leaf_size": 0}, ValueError, "max_leaf_size"),
        ({"max_leaf_size": 10.5}, ValueError, "max_leaf_size"),
        ({"n_trees": 0}, ValueError, "n_trees"),
        ({"split_method": "rf"}, ValueError, "split_method"),
        ({"split_max_points": 1}, ValueError, "split_max_points"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": "tune"}, ValueError, "temperature"),
        ({"keep_weight_fraction": 0.0}, ValueError, "keep_weight_fraction"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"refill_fraction": -0.1}, ValueError, "refill_fraction"),
        ({"rfm_params": {"bandwith": 2.0}}, ValueError, "unknown RFMRegressor hyperparameters"),
        ({"rfm_params": {"reg": -1.0}}, ValueError, "reg"),
        ({"rfm_params": {"random_state": 0}}, ValueError, "random_state"),
        ({"rfm_params": [("iters", 1)]}, TypeError, "dict"),
        ({"split_rfm_params": {"solver": "lu"}}, ValueError, "solver"),
    ]:
        with pytest.raises(err, match=match):
            agop.xRFMRegressor(**kwargs).fit(X, y)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        agop.xRFMRegressor().predict(X)
    m = agop.xRFMRegressor(rfm_params=FAST).fit(X, y)
    with pytest.raises(ValueError, match="expecting 3 features"):
        m.predict(X[:, :2])
    with pytest.raises(ValueError, match="at least 2 classes"):
        agop.xRFMClassifier().fit(X, np.zeros(60))
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        agop.xRFMRegressor(rfm_params=FAST).fit(X, y, client=object())
    torch = pytest.importorskip("torch")
    pytest.importorskip("distributed")
    with pytest.raises(TypeError, match="NumPy arrays"):
        agop.xRFMRegressor(rfm_params=FAST).fit(torch.asarray(X), torch.asarray(y),
                                                client=object())


def test_rfm_params_pass_through_unchanged(reg_data):
    X, y = reg_data
    params = {"kernel": "gaussian", "bandwidth": 2.5, "reg": 1e-2, "iters": 2, "diag": True,
              "agop_power": 0.5, "normalize": "fro"}
    m = agop.xRFMRegressor(rfm_params=params, max_leaf_size=400, random_state=0)
    m.fit(X[:700], y[:700])
    assert m.rfm_params == params  # not mutated
    for leaf in m.trees_[0].leaves:
        got = leaf.get_params()
        assert all(got[k] == v for k, v in params.items()) and got["tuning_metric"] == "mse"
        assert leaf.M_.shape == (5,) and leaf.kernel_ == agop.Gaussian(2.5)


# --------------------------------------------------------------------------- dask


def test_import_agop_does_not_import_dask():
    code = ("import sys, agop; agop.xRFMRegressor; import agop.tree; "
            "sys.exit(int(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    X = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ImportError, match=r"pip install agop\[dask\]"):
        agop.xRFMRegressor(rfm_params=FAST).fit(X, X[:, 0], client=object())


@pytest.mark.slow
def test_leaves_fitted_on_a_dask_cluster_equal_the_in_process_fit():
    distributed = pytest.importorskip("distributed")
    import dask

    rng = np.random.default_rng(8)
    X = rng.normal(size=(600, 4))
    y = np.sign(X[:, 0]) + X[:, 1]
    labels = (X[:, 0] + X[:, 2] > 0).astype(int)
    kw = {"rfm_params": FAST, "max_leaf_size": 150, "random_state": 3}
    local_r = agop.xRFMRegressor(**kw).fit(X[:500], y[:500])
    local_c = agop.xRFMClassifier(**kw).fit(X[:500], labels[:500])
    # categorical columns: the leaves on the cluster keep M block-diagonal as well
    Xk = np.empty((600, 3), dtype=object)
    Xk[:, :2] = X[:, :2]
    Xk[:, 2] = np.array(["u", "v", "w"])[rng.integers(0, 3, size=600)]
    yk = np.sign(X[:, 0]) + X[:, 1] + np.where(Xk[:, 2] == "v", 0.5, 0.0)
    kw_k = {**kw, "categorical_features": [2]}
    local_k = agop.xRFMRegressor(**kw_k).fit(Xk[:500], yk[:500])
    # spawned (not forked) worker processes: numba's threading layer does not survive a fork
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        dist_r = agop.xRFMRegressor(**kw).fit(X[:500], y[:500], client=client)
        dist_c = agop.xRFMClassifier(**kw).fit(X[:500], labels[:500], client=client)
        dist_k = agop.xRFMRegressor(**kw_k).fit(Xk[:500], yk[:500], client=client)
    assert dist_r.n_leaves_ == local_r.n_leaves_ >= 4
    np.testing.assert_allclose(dist_r.predict(X[500:]), local_r.predict(X[500:]),
                               rtol=1e-10, atol=1e-12)
    for a, b in zip(dist_r.trees_[0].leaves, local_r.trees_[0].leaves, strict=True):
        np.testing.assert_allclose(a.M_, b.M_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dist_c.predict_proba(X[500:]), local_c.predict_proba(X[500:]),
                               rtol=1e-10, atol=1e-12)
    assert dist_r.trees_[0].temperature == local_r.trees_[0].temperature
    np.testing.assert_allclose(dist_k.predict(Xk[500:]), local_k.predict(Xk[500:]),
                               rtol=1e-10, atol=1e-12)
    assert dist_k.n_leaves_ == local_k.n_leaves_ >= 2
    for a, b in zip(dist_k.trees_[0].leaves, local_k.trees_[0].leaves, strict=True):
        np.testing.assert_allclose(a.M_, b.M_, rtol=1e-10, atol=1e-12)
        assert np.all(a.M_[:2, 2:] == 0.0)
    mixed = [leaf for leaf in dist_k.trees_[0].leaves
             if np.unique(np.argmax(leaf.X_fit_[:, 2:], axis=1)).size > 1]
    assert mixed and all(np.any(leaf.M_[2:, 2:] != 0.0) for leaf in mixed)
