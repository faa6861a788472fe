"""Categorical features in xRFM trees: one encoding for the tree, block-diagonal M in every
leaf and split model (equal to a single categorical RFM on the leaf's raw rows), every
kernel, unknown categories, feature importances, save / load and scikit-learn params."""

from __future__ import annotations

import numpy as np
import pytest

import agop
import agop._tree_grow as grow_mod

from .test_categorical import _task

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402

FAST = {"iters": 1}
CAT = [2, 4]  # _task: [x0, x1, code in 0..3, x3, label in {a, b, c}]


def _block_mask(blocks, d):
    mask = np.zeros((d, d), dtype=bool)
    for b in blocks:
        mask[np.ix_(b, b)] = True
    return mask


@pytest.fixture(scope="module")
def task():
    return _task(700, np.random.default_rng(11))


@pytest.fixture(scope="module")
def cat_tree(task):
    X, y = task
    return agop.xRFMRegressor(rfm_params={"iters": 2}, max_leaf_size=150, n_trees=2,
                              random_state=0, categorical_features=CAT).fit(X[:550], y[:550])


def test_tree_learns_from_string_categories_better_than_without_them(task, cat_tree):
    X, y = task
    err_cat = np.mean((cat_tree.predict(X[550:]) - y[550:]) ** 2)
    Xnum = X[:, [0, 1, 3]].astype(float)
    drop = agop.xRFMRegressor(rfm_params={"iters": 2}, max_leaf_size=150, random_state=0)
    err_drop = np.mean((drop.fit(Xnum[:550], y[:550]).predict(Xnum[550:]) - y[550:]) ** 2)
    assert cat_tree.n_leaves_ >= 4
    assert err_cat < 0.2 * err_drop
    assert [c.tolist() for c in cat_tree.categories_] == [[0, 1, 2, 3], ["a", "b", "c"]]
    assert [b.tolist() for b in cat_tree.feature_blocks_] == [[0, 1, 2], [3, 4, 5, 6],
                                                              [7, 8, 9]]
    assert cat_tree.n_features_in_ == 5 and cat_tree.trees_[0].directions.shape[1] == 10
    # one encoding for the whole tree: every leaf lives in its embedded coordinates
    for leaf in cat_tree.trees_[0].leaves:
        assert leaf.X_fit_.shape[1] == 10 and leaf.M_.shape == (10, 10)
        assert not hasattr(leaf, "categories_")


def test_classifier_with_categories(task):
    X, y = task
    labels = np.where(y > np.median(y), "hi", "lo")
    clf = agop.xRFMClassifier(rfm_params=FAST, max_leaf_size=150, random_state=0,
                              categorical_features=CAT).fit(X[:550], labels[:550])
    assert clf.score(X[550:], labels[550:]) > 0.85
    P = clf.predict_proba(X[550:])
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


def _decode(Xe, enc):
    """Raw object rows back from embedded rows (every embedding row distinct, none zero)."""
    X = np.empty((Xe.shape[0], enc.n_features_in), dtype=object)
    for j, col in enumerate(enc.numerical):
        X[:, col] = Xe[:, j]
    for g, (col, b) in enumerate(zip(enc.categorical, enc.blocks[1:], strict=True)):
        E = enc.embeddings[g]
        hit = np.all(np.isclose(Xe[:, b][:, None, :], E[None, :, :]), axis=2)
        assert np.all(hit.sum(axis=1) == 1)
        X[:, col] = enc.categories[g][np.argmax(hit, axis=1)]
    return X


def test_leaf_and_split_models_are_block_diagonal_and_equal_a_single_categorical_rfm(
        task, monkeypatch):
    """Each leaf M equals that of RFMRegressor(categorical_features=...) fitted on the
    leaf's raw rows (all categories embedded via categorical_vectors, so both encodings
    agree), and the split models' M and directions respect the blocks."""
    X, y = task
    vectors = {2: np.eye(4), 4: {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}}
    params = {"iters": 2, "kernel": "l1", "bandwidth": 3.0, "agop_power": 0.5}
    splits, leaves = [], []
    real_rfm = grow_mod._rfm
    real_leaf = grow_mod._fit_leaf_model

    def spy_rfm(p, seed, blocks):
        model = real_rfm(p, seed, blocks)
        if p.get("iters") == 1:
            splits.append(model)
        return model

    def spy_leaf(*args):
        leaves.append(args)
        return real_leaf(*args)

    monkeypatch.setattr(grow_mod, "_rfm", spy_rfm)
    monkeypatch.setattr(grow_mod, "_fit_leaf_model", spy_leaf)
    tree = agop.xRFMRegressor(rfm_params=params, split_rfm_params={**params, "iters": 1},
                              max_leaf_size=150, random_state=1, categorical_features=CAT,
                              categorical_vectors=vectors).fit(X[:550], y[:550])
    enc = tree._categorical_encoding()
    blocks = [list(b) for b in enc.blocks]
    assert blocks == [[0, 1, 2], [3, 4, 5, 6], [7, 8]]
    mask = _block_mask(blocks, 9)
    assert len(splits) == tree.n_leaves_ - 1 >= 3 and len(leaves) == tree.n_leaves_
    for model in splits:
        assert np.all(model.M_[~mask] == 0.0) and np.any(model.M_[:3, :3] != 0)
    # the direction is an eigenvector of the block-diagonal AGOP: it lies in one block
    for v in tree.trees_[0].directions:
        assert sum(bool(np.max(np.abs(v[b])) > 1e-12) for b in blocks) == 1
    for leaf, (Xl, Yl, Xv, Yv, p, seed, b) in zip(tree.trees_[0].leaves, leaves, strict=True):
        assert [list(c) for c in b] == blocks
        assert np.all(leaf.M_[~mask] == 0.0) and np.all(np.diag(leaf.M_)[:3] > 0)
        single = agop.RFMRegressor(**p, random_state=seed, categorical_features=CAT,
                                   categorical_vectors=vectors)
        single.fit(_decode(Xl, enc), Yl, _decode(Xv, enc), Yv)
        np.testing.assert_allclose(single.X_fit_, leaf.X_fit_, rtol=0, atol=0)
        np.testing.assert_allclose(leaf.M_, single.M_, rtol=1e-10, atol=1e-12)
        assert leaf.best_iter_ == single.best_iter_


@pytest.mark.parametrize("kernel", ["laplace", "gaussian", "generalized_exponential", "l1",
                                    "product_laplace", "lpq", "quadratic"])
def test_every_kernel_fits_mixed_data_in_a_tree(kernel):
    X, y = _task(320, np.random.default_rng(12))
    params = {"kernel": kernel, "iters": 1}
    if kernel in ("l1", "product_laplace"):  # xRFM's categorical L1 path needs CUDA
        params["bandwidth"] = 3.0
    m = agop.xRFMRegressor(rfm_params=params, max_leaf_size=100, random_state=0,
                           categorical_features=CAT).fit(X[:260], y[:260])
    P = m.predict(X[260:])
    assert m.n_leaves_ >= 2 and P.shape == (60,) and np.all(np.isfinite(P))
    mask = _block_mask([b.tolist() for b in m.feature_blocks_], 10)
    for leaf in m.trees_[0].leaves:
        assert np.all(leaf.M_[~mask] == 0.0)
    if kernel != "quadratic":
        assert m.score(X[260:], y[260:]) > 0.5


def test_unseen_categories_follow_handle_unknown(task):
    X, y = task
    X = X.copy()
    X[:, 2] = np.where(X[:, 2] == 3, 0, X[:, 2])  # code 3 never seen in fit
    kw = {"rfm_params": FAST, "max_leaf_size": 100, "random_state": 0,
          "categorical_features": CAT, "temperature": 0.5}
    err = agop.xRFMRegressor(**kw).fit(X[:300], y[:300])
    Xn = X[550:560].copy()
    Xn[0, 2] = 3
    Xn[1, 4] = "zzz"
    with pytest.raises(ValueError, match=r"not seen in fit: \[3\]"):
        err.predict(Xn)
    with pytest.raises(ValueError, match="not seen in fit"):
        err.apply(Xn)
    ign = agop.xRFMRegressor(**kw, handle_unknown="ignore").fit(X[:300], y[:300])
    assert ign.n_leaves_ >= 2
    # an unknown category is embedded as zeros, then routed (softly) and predicted so
    _, Xe, _ = ign._categorical_encoding().transform(X[550:560])
    Xe[0, 3:6] = 0.0
    Xe[1, 6:9] = 0.0
    tree = ign.trees_[0]
    assert tree.temperature == 0.5
    np.testing.assert_allclose(ign.predict(Xn), tree.predict(Xe)[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(ign.apply(Xn)[0], tree.apply(Xe))
    assert np.all(np.isfinite(ign.predict(Xn)))


def test_feature_importances_are_leaf_size_weighted_m_diagonals(task, cat_tree):
    X, y = task
    m = cat_tree
    expect = np.zeros(10)
    for tree in m.trees_:
        sizes = [leaf.X_fit_.shape[0] for leaf in tree.leaves]
        assert sum(sizes) < 550 and min(sizes) > 0  # validation points are not counted
        for n_k, leaf in zip(sizes, tree.leaves, strict=True):
            expect += n_k * np.array([leaf.M_[i, i] for i in range(10)]) / sum(sizes) / 2
    np.testing.assert_allclose(m.feature_importances_, expect, rtol=1e-12)
    imp = m.feature_importances_
    # the code column (block 3..6) and x0 drive the target; x1, x3 are noise
    assert imp[3:7].sum() > 5 * (imp[1] + imp[2]) and imp[0] > imp[1] + imp[2]
    d = agop.xRFMRegressor(rfm_params={"iters": 1, "diag": True}, max_leaf_size=100,
                           random_state=0).fit(X[:300, [0, 1, 3]].astype(float), y[:300])
    leaves = d.trees_[0].leaves
    w = np.array([leaf.X_fit_.shape[0] for leaf in leaves], dtype=float)
    np.testing.assert_allclose(d.feature_importances_,
                               sum(wk * leaf.M_ for wk, leaf in zip(w, leaves, strict=True))
                               / w.sum(), rtol=1e-12)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        _ = agop.xRFMRegressor().feature_importances_


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_save_load_round_trips_bit_identically(tmp_path, task, kind):
    X, y = task
    kw = {"rfm_params": FAST, "max_leaf_size": 150, "random_state": 0, "n_trees": 2,
          "categorical_features": np.array([False, False, True, False, True]),
          "categorical_vectors": {2: np.eye(4)}, "handle_unknown": "ignore"}
    if kind == "regressor":
        m = agop.xRFMRegressor(**kw).fit(X[:550], y[:550])
    else:
        m = agop.xRFMClassifier(**kw).fit(X[:550], np.digitize(y[:550], [-0.5, 1.0]))
    path = agop.save(m, tmp_path / "cat_tree")
    r = agop.load(path)
    Xn = X[550:].copy()
    Xn[0, 4] = "unseen"
    np.testing.assert_array_equal(r.predict(Xn), m.predict(Xn))
    if kind == "classifier":
        np.testing.assert_array_equal(r.predict_proba(Xn), m.predict_proba(Xn))
    np.testing.assert_array_equal(r.feature_importances_, m.feature_importances_)
    assert r.handle_unknown == "ignore"
    np.testing.assert_array_equal(r.categorical_features, kw["categorical_features"])
    np.testing.assert_array_equal(r.categorical_vectors[2], np.eye(4))
    assert [c.tolist() for c in r.categories_] == [c.tolist() for c in m.categories_]
    assert [b.tolist() for b in r.feature_blocks_] == [b.tolist() for b in m.feature_blocks_]
    assert r.categorical_features_.tolist() == [2, 4]
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype.kind != "O" for k in f.files)
        import json

        meta = json.loads(str(f["__agop_meta__"][()]))
    assert meta["format_version"] == 2 and meta["n_categorical"] == 2
    # a file without the tree's categories is incomplete, not silently numerical
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != "categories_1"}
    holed = tmp_path / "holed.npz"
    np.savez(holed, **arrays)
    with pytest.raises(ValueError, match="incomplete.*categories_1"):
        agop.load(holed)


def test_params_clone_and_validation(task):
    X, y = task
    m = agop.xRFMRegressor(rfm_params=FAST, categorical_features=CAT,
                           categorical_vectors={2: np.eye(4)}, handle_unknown="ignore")
    c = clone(m)
    assert c.get_params()["categorical_features"] == CAT
    assert c.handle_unknown == "ignore" and np.array_equal(c.categorical_vectors[2], np.eye(4))
    c.set_params(categorical_features=None, categorical_vectors=None)
    with pytest.raises(TypeError, match="contains strings"):
        c.fit(X[:100], y[:100])
    for kwargs, match in [
        ({"rfm_params": {"categorical_features": [2]}, "categorical_features": CAT},
         "must not set"),
        ({"split_rfm_params": {"handle_unknown": "ignore"}, "categorical_features": CAT},
         "must not set"),
        ({"handle_unknown": "drop", "categorical_features": CAT}, "handle_unknown"),
        ({"categorical_vectors": {2: np.eye(4)}}, "needs categorical_features"),
        ({"categorical_features": [7]}, "names columns"),
    ]:
        with pytest.raises(ValueError, match=match):
            agop.xRFMRegressor(**kwargs).fit(X[:100], y[:100])


def test_torch_codes_stay_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    A = np.column_stack([rng.normal(size=300), rng.integers(0, 3, size=300)])
    y = A[:, 0] + np.array([1.0, -1.0, 0.0])[A[:, 1].astype(int)]
    m = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=120, random_state=0,
                           categorical_features=[1])
    m.fit(torch.asarray(A[:250]), torch.asarray(y[:250]))
    P = m.predict(torch.asarray(A[250:]))
    assert isinstance(P, torch.Tensor) and isinstance(m.trees_[0].directions, torch.Tensor)
    assert m.trees_[0].directions.shape[1] == 4
    ref = agop.xRFMRegressor(rfm_params=FAST, max_leaf_size=120, random_state=0,
                             categorical_features=[1]).fit(A[:250], y[:250])
    np.testing.assert_allclose(P.numpy(), ref.predict(A[250:]), rtol=1e-8, atol=1e-10)
