"""Categorical features: embedded kernels equal the table-lookup kernel of SPEC §1.9 (and
xRFM's), the AGOP stays block-diagonal, the estimators learn from categories, and a
fitted model saves and reloads."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.categorical import fit_encoding, resolve_features
from agop.updates import AGOPUpdate, FACTUpdate, KernelMachine, block_diagonal

from .naive import psd_sqrt

KERNELS = {
    "laplace": agop.Laplace(1.5),
    "gaussian": agop.Gaussian(1.2),
    "l1": agop.ProductLaplace(2.0),
    "lpq": agop.LpqLaplace(2.0, norm_p=1.5, exponent=0.8),
}


def _mixed(n, rng, *, strings=True):
    """Rows ``[x0, x1, code in 0..3, x3, label in {a, b, c}]`` (object array)."""
    X = np.empty((n, 5), dtype=object)
    X[:, [0, 1, 3]] = rng.normal(size=(n, 3))
    X[:, 2] = rng.integers(0, 4, size=n)
    X[:, 4] = np.array(["a", "b", "c"])[rng.integers(0, 3, size=n)] if strings else \
        rng.integers(0, 3, size=n)
    return X


def _block_M(rng, sizes):
    """A random block-diagonal PSD matrix with diagonal blocks of the given sizes."""
    d = sum(sizes)
    M, start = np.zeros((d, d)), 0
    for s in sizes:
        B = rng.normal(size=(s, s))
        M[start:start + s, start:start + s] = B @ B.T / s + 0.1 * np.eye(s)
        start += s
    return M


def _table_lookup_kernel(kernel, X, Z, enc, M):
    """SPEC §1.9 directly: numerical distance plus, per categorical feature, a K_g x K_g
    table of embedding distances looked up by category (M's blocks used by block)."""
    blocks = enc.blocks
    num = list(enc.numerical)
    S_num = psd_sqrt(M[np.ix_(blocks[0], blocks[0])])
    if isinstance(kernel, agop.ProductLaplace | agop.LpqLaplace):
        p, q = kernel.p, kernel.q
    else:
        p, q = 2.0, None
    tables, codes_x, codes_z = [], [], []
    for g, col in enumerate(enc.categorical):
        b = blocks[1 + g]
        T = enc.embeddings[g] @ psd_sqrt(M[np.ix_(b, b)])
        diff = np.abs(T[:, None, :] - T[None, :, :])
        tables.append(np.sum(diff**p, axis=2))  # ||S_g (E[a] - E[b])||_p^p
        codes_x.append(enc.codes(g, X[:, col]))
        codes_z.append(enc.codes(g, Z[:, col]))
    K = np.empty((X.shape[0], Z.shape[0]))
    for i in range(X.shape[0]):
        for j in range(Z.shape[0]):
            dn = (np.asarray(X[i, num], float) - np.asarray(Z[j, num], float)) @ S_num
            s = float(np.sum(np.abs(dn) ** p))
            s += sum(T[codes_x[g][i], codes_z[g][j]] for g, T in enumerate(tables))
            L = kernel.bandwidth
            if isinstance(kernel, agop.Gaussian):
                K[i, j] = np.exp(-s / (2 * L**2))
            elif isinstance(kernel, agop.Laplace):
                K[i, j] = np.exp(-np.sqrt(s) / L)
            else:
                K[i, j] = np.exp(-((s ** (1.0 / p) / L) ** q))
    return K


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("embedding", ["one_hot", "vectors"])
def test_embedded_kernel_equals_table_lookup_kernel(name, embedding):
    rng = np.random.default_rng(0)
    X, Z = _mixed(9, rng), _mixed(7, rng)
    vectors = None
    if embedding == "vectors":  # embeddings of another width than the number of categories
        vectors = {2: rng.normal(size=(4, 2)),
                   4: {"a": rng.normal(size=5), "b": rng.normal(size=5),
                       "c": rng.normal(size=5)}}
    enc = fit_encoding(np.concatenate([X, Z]), [2, 4], vectors)
    sizes = [len(b) for b in enc.blocks]
    assert sizes == ([3, 4, 3] if vectors is None else [3, 2, 5])
    M = _block_M(rng, sizes)
    kernel = KERNELS[name]
    _, Xe, _ = enc.transform(X)
    _, Ze, _ = enc.transform(Z)
    K = agop.kernel_matrix(kernel, Xe, Ze, M)
    np.testing.assert_allclose(K, _table_lookup_kernel(kernel, X, Z, enc, M), rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("name", ["laplace", "lpq"])
def test_embedded_kernel_equals_xrfm_categorical_kernel(name):
    """xRFM 0.4.5's own categorical kernel on one-hot blocks, with its sqrtM (its L1
    kernel's categorical path needs CUDA, so it is compared through the table lookup)."""
    torch = pytest.importorskip("torch")
    kernels = pytest.importorskip("xrfm.rfm_src.kernels")
    rng = np.random.default_rng(1)
    X, Z = _mixed(8, rng), _mixed(6, rng)
    enc = fit_encoding(np.concatenate([X, Z]), [2, 4])
    M = _block_M(rng, [len(b) for b in enc.blocks])
    ours = KERNELS[name]
    if name == "laplace":
        theirs = kernels.LaplaceKernel(bandwidth=ours.bandwidth, exponent=1.0)
    else:
        theirs = kernels.LpqLaplaceKernel(bandwidth=ours.bandwidth, p=ours.p, q=ours.q)
    b = enc.blocks
    theirs.set_categorical_indices(torch.tensor(b[0]), [torch.tensor(b[1]), torch.tensor(b[2])],
                                   [torch.eye(4, dtype=torch.float64),
                                    torch.eye(3, dtype=torch.float64)], device="cpu")
    _, Xe, _ = enc.transform(X)
    _, Ze, _ = enc.transform(Z)
    sqrtM = torch.asarray(psd_sqrt(M))
    K_x = theirs.get_kernel_matrix(torch.asarray(Xe), torch.asarray(Ze), sqrtM).numpy()
    np.testing.assert_allclose(agop.kernel_matrix(ours, Xe, Ze, M), K_x, rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("name", list(KERNELS))
def test_agop_update_is_block_diagonal_and_equals_autograd_blocks(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    X = _mixed(30, rng)
    enc = fit_encoding(X, [2, 4])
    _, Xe, _ = enc.transform(X)
    coef = rng.normal(size=(30, 2))
    kernel = KERNELS[name]
    M = _block_M(rng, [len(b) for b in enc.blocks])
    machine = KernelMachine.build(kernel, Xe, coef, M)
    A = AGOPUpdate(normalize="mean", blocks=enc.blocks)(machine, Xe, None)
    # autograd of f on the embedded rows, with M used as S = M^{1/2}
    S = torch.asarray(psd_sqrt(M))
    Zt = torch.asarray(Xe) @ S
    x = torch.asarray(Xe).clone().requires_grad_(True)
    D = (x @ S)[:, None, :] - Zt[None, :, :]
    L = kernel.bandwidth
    eye = torch.eye(30, dtype=torch.bool)
    p = kernel.p if isinstance(kernel, agop.ProductLaplace | agop.LpqLaplace) else 2.0
    s = (D.abs() ** p).sum(-1)
    s = torch.where(eye, torch.ones_like(s), s)  # keep the self-pairs' branch smooth
    if isinstance(kernel, agop.Gaussian):
        Kx = torch.exp(-s / (2 * L**2))
    elif isinstance(kernel, agop.Laplace):
        Kx = torch.exp(-torch.sqrt(s) / L)
    else:
        Kx = torch.exp(-((s ** (1 / p) / L) ** kernel.q))
    Kx = torch.where(eye, torch.zeros_like(Kx), Kx)  # self-pairs contribute no gradient
    f = Kx @ torch.asarray(coef)
    G = torch.stack([torch.autograd.grad(f[:, c].sum(), x, retain_graph=True)[0]
                     for c in range(2)], dim=1).numpy()  # (m, c, d)
    full = np.einsum("icd,icD->dD", G, G) / 30
    mask = np.zeros_like(full, dtype=bool)
    for b in enc.blocks:
        mask[np.ix_(b, b)] = True
    np.testing.assert_allclose(A, np.where(mask, full, 0.0), rtol=1e-8, atol=1e-12)
    assert np.all(A[~mask] == 0.0)
    # a matrix power acts block by block
    P = AGOPUpdate(normalize=None, power=0.5, blocks=enc.blocks)(machine, Xe, None)
    for b in enc.blocks:
        blk = full[np.ix_(b, b)] * 30
        w, V = np.linalg.eigh(blk)
        # (the square root amplifies the 1e-8 agreement of the blocks near their small
        # eigenvalues: 3e-9 on entries of size 1 with NumPy 2.4's LAPACK)
        np.testing.assert_allclose(P[np.ix_(b, b)], (V * np.sqrt(np.clip(w, 0, None))) @ V.T,
                                   rtol=1e-6, atol=1e-8)
    assert np.all(P[~mask] == 0.0)


def test_block_diagonal_and_blocks_validation():
    A = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(block_diagonal(A, [[0, 3], [1, 2]]),
                                  [[0, 0, 0, 3], [0, 5, 6, 0], [0, 9, 10, 0], [12, 0, 0, 15]])
    np.testing.assert_array_equal(block_diagonal(np.ones(4), [[0, 3], [1, 2]]), np.ones(4))
    with pytest.raises(ValueError, match="partition"):
        block_diagonal(A, [[0, 1], [2]])
    with pytest.raises(ValueError, match="disjoint"):
        AGOPUpdate(blocks=[[0, 1], [1, 2]])
    with pytest.raises(TypeError, match="integer"):
        AGOPUpdate(blocks=[[0.5, 1]])
    with pytest.raises(TypeError, match="integer"):
        FACTUpdate(blocks=[[]])
    torch = pytest.importorskip("torch")
    out = block_diagonal(torch.ones((3, 3)), [[0], [1, 2]])
    assert isinstance(out, torch.Tensor) and float(out[0, 1]) == 0.0


def _task(n, rng):
    X = _mixed(n, rng)
    effect = np.array([0.0, 2.0, -1.5, 1.0])
    y = np.sin(X[:, 0].astype(float)) + effect[X[:, 2].astype(int)] + 0.8 * (X[:, 4] == "b")
    return X, y


def test_learns_from_categorical_columns_better_than_dropping_them():
    rng = np.random.default_rng(3)
    X, y = _task(400, rng)
    tr, te = slice(0, 300), slice(300, None)
    cat = agop.RFMRegressor(iters=3, categorical_features=[2, 4], random_state=0)
    cat.fit(X[tr], y[tr])
    err_cat = np.mean((cat.predict(X[te]) - y[te]) ** 2)
    Xnum = X[:, [0, 1, 3]].astype(float)
    drop = agop.RFMRegressor(iters=3, random_state=0).fit(Xnum[tr], y[tr])
    err_drop = np.mean((drop.predict(Xnum[te]) - y[te]) ** 2)
    assert err_cat < 0.1 * err_drop
    # M_ is block-diagonal over the feature blocks, and the categorical block of the code
    # column matters more than the noise columns x1, x3
    blocks = [b.tolist() for b in cat.feature_blocks_]
    assert blocks == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    mask = np.zeros((10, 10), dtype=bool)
    for b in blocks:
        mask[np.ix_(b, b)] = True
    assert np.all(cat.M_[~mask] == 0.0)
    imp = cat.feature_importances_
    assert imp[3:7].sum() > 10 * (imp[1] + imp[2])
    assert cat.n_features_in_ == 5 and cat.M_.shape == (10, 10)
    assert [c.tolist() for c in cat.categories_] == [[0, 1, 2, 3], ["a", "b", "c"]]


@pytest.mark.parametrize("kernel", ["laplace", "gaussian", "generalized_exponential", "l1",
                                    "lpq", "quadratic"])
@pytest.mark.parametrize("variant", [{}, {"diag": True}, {"update": "fact"}])
def test_every_kernel_fits_mixed_data(kernel, variant):
    rng = np.random.default_rng(4)
    X, y = _task(80, rng)
    reg = agop.RFMRegressor(kernel=kernel, iters=1, categorical_features=[2, 4], **variant)
    P = reg.fit(X, y).predict(X[:10])
    assert P.shape == (10,) and np.all(np.isfinite(P))
    if not variant.get("diag"):
        assert np.all(reg.M_[:3, 3:] == 0.0) and np.all(reg.M_[3:7, 7:] == 0.0)
    clf = agop.RFMClassifier(kernel=kernel, iters=1, categorical_features=[2, 4], **variant)
    labels = np.where(y > np.median(y), "hi", "lo")
    assert set(clf.fit(X, labels).predict(X[:10])) <= {"hi", "lo"}


def test_unseen_categories():
    rng = np.random.default_rng(5)
    X, y = _task(60, rng)
    X[:, 2] = np.where(X[:, 2] == 3, 0, X[:, 2])  # code 3 never seen in fit
    m = agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(X, y)
    Xn = X[:5].copy()
    Xn[0, 2] = 3
    with pytest.raises(ValueError, match=r"not seen in fit: \[3\]"):
        m.predict(Xn)
    Xs = X[:5].copy()
    Xs[1, 4] = "zzz"
    with pytest.raises(ValueError, match="not seen in fit"):
        m.predict(Xs)
    ign = agop.RFMRegressor(iters=1, categorical_features=[2, 4], handle_unknown="ignore")
    ign.fit(X, y)
    # an unknown category is embedded as the zero vector
    _, Xe, _ = ign._categorical_encoding().transform(X[:5])
    code_block = ign.feature_blocks_[1]  # the 3 codes seen in fit: columns 3..5
    assert code_block.tolist() == [3, 4, 5]
    Xe[0, code_block] = 0.0
    f = KernelMachine.build(ign.kernel_, ign.X_fit_, ign.coef_[:, None], ign.M_)
    np.testing.assert_allclose(ign.predict(Xn), f.predict(Xe)[:, 0], rtol=1e-12)
    # codes embedded by categorical_vectors are all known, seen in fit or not
    vec = agop.RFMRegressor(iters=1, categorical_features=[2, 4],
                            categorical_vectors={2: np.eye(4)}).fit(X, y)
    assert np.all(np.isfinite(vec.predict(Xn)))
    assert vec.categories_[0].tolist() == [0, 1, 2, 3]


def test_input_validation():
    rng = np.random.default_rng(6)
    X, y = _task(40, rng)
    with pytest.raises(TypeError, match="strings"):  # a string in a numerical column
        Xb = X.copy()
        Xb[0, 0] = "oops"
        agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(Xb, y)
    # strings without categorical_features: the error points to it
    with pytest.raises(TypeError, match="categories in categorical_features="):
        agop.RFMRegressor(iters=0).fit(X, y)
    Xn = X.copy()
    Xn[0, 2] = np.nan
    with pytest.raises(ValueError, match="missing"):
        agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(Xn, y)
    Xf = X.copy()
    Xf[0, 2] = 1.5
    with pytest.raises(TypeError, match="neither strings nor integer"):
        agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(Xf, y)
    Xm = X.copy()
    Xm[0, 4] = 7
    with pytest.raises(TypeError, match="mixes strings"):
        agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(Xm, y)
    for bad, err in (([5], ValueError), ([2, 2], ValueError), ([2.0], TypeError),
                     (np.ones(3, bool), ValueError), ([[2]], ValueError)):
        with pytest.raises(err):
            agop.RFMRegressor(iters=0, categorical_features=bad).fit(X, y)
    with pytest.raises(ValueError, match="handle_unknown"):
        agop.RFMRegressor(categorical_features=[2], handle_unknown="zero").fit(X, y)
    with pytest.raises(ValueError, match="not in categorical_features"):
        agop.RFMRegressor(categorical_features=[2, 4],
                          categorical_vectors={0: np.eye(2)}).fit(X, y)
    with pytest.raises(ValueError, match="does not embed"):
        agop.RFMRegressor(categorical_features=[2, 4],
                          categorical_vectors={2: np.eye(2)}).fit(X, y)
    with pytest.raises(ValueError, match="needs categorical_features"):
        agop.RFMRegressor(categorical_vectors={2: np.eye(4)}).fit(X, y)
    m = agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(X, y)
    with pytest.raises(ValueError, match="expecting 5 features"):
        m.predict(X[:, :4])
    Xt = X.copy()
    Xt[:, 4] = 1
    with pytest.raises(TypeError, match="coded as str"):
        m.predict(Xt)
    assert resolve_features([-1, 0], 5) == (0, 4)
    assert resolve_features(np.array([True, False, True]), 3) == (0, 2)


def test_mask_all_categorical_validation_data_and_torch():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, size=(120, 2))
    y = np.array([0.0, 1.0, 3.0])[codes[:, 0]] - codes[:, 1]
    m = agop.RFMRegressor(iters=2, categorical_features=np.array([True, True]))
    m.fit(codes[:90], y[:90], X_val=codes[90:], y_val=y[90:])
    assert np.mean((m.predict(codes[90:]) - y[90:]) ** 2) < 1e-2
    assert m.history_[0]["val_metric"] is not None
    torch = pytest.importorskip("torch")
    X, yy = _task(60, rng)
    Xnum = torch.asarray(np.column_stack([X[:, 0].astype(float), X[:, 2].astype(int)]))
    t = agop.RFMRegressor(iters=1, categorical_features=[1]).fit(Xnum, torch.asarray(yy))
    assert isinstance(t.M_, torch.Tensor) and isinstance(t.predict(Xnum), torch.Tensor)
    assert t.M_.shape == (5, 5)


def test_params_work_through_clone_and_set_params():
    sklearn_base = pytest.importorskip("sklearn.base")
    rng = np.random.default_rng(8)
    X, y = _task(50, rng)
    est = agop.RFMRegressor(iters=1, categorical_features=[2, 4],
                            categorical_vectors={2: np.eye(4)})
    c = sklearn_base.clone(est)
    assert c.get_params()["categorical_features"] == [2, 4]
    np.testing.assert_array_equal(c.get_params()["categorical_vectors"][2], np.eye(4))
    params = {"kernel": "l1", "iters": 1, "categorical_features": [2, 4]}
    leaf = agop.RFMClassifier().set_params(**params)
    assert leaf.fit(X, y > 0).score(X, y > 0) > 0.8
    np.testing.assert_array_equal(sklearn_base.clone(leaf).fit(X, y > 0).predict(X),
                                  leaf.predict(X))


@pytest.mark.parametrize("cls", ["regressor", "classifier"])
def test_save_load_bit_identical(tmp_path, cls):
    rng = np.random.default_rng(9)
    X, y = _task(80, rng)
    vectors = {4: {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}}
    kw = dict(iters=2, categorical_features=np.array([False, False, True, False, True]),
              categorical_vectors=vectors, handle_unknown="ignore")
    if cls == "regressor":
        m = agop.RFMRegressor(**kw).fit(X, y)
    else:
        m = agop.RFMClassifier(**kw).fit(X, np.where(y > 0, "pos", "neg"))
    path = agop.save(m, tmp_path / "cat")
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype.kind != "O" for k in f.files)
    r = agop.load(path)
    Xq = X.copy()
    Xq[0, 4] = "unseen"
    np.testing.assert_array_equal(r.predict(Xq), m.predict(Xq))
    np.testing.assert_array_equal(r.M_, m.M_)
    assert r.handle_unknown == "ignore"
    np.testing.assert_array_equal(r.categorical_features, kw["categorical_features"])
    assert r.categorical_vectors[4]["c"].tolist() == [1.0, 1.0]
    assert [c.tolist() for c in r.categories_] == [c.tolist() for c in m.categories_]
    assert [b.tolist() for b in r.feature_blocks_] == [b.tolist() for b in m.feature_blocks_]
    # refitting the reloaded hyperparameters gives the same model
    again = type(m)(**r.get_params()).fit(X, y if cls == "regressor" else
                                          np.where(y > 0, "pos", "neg"))
    np.testing.assert_array_equal(again.predict(X), m.predict(X))


def test_pandas_mixed_columns():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(10)
    X, y = _task(60, rng)
    df = pd.DataFrame({"a": X[:, 0].astype(float), "b": X[:, 1].astype(float),
                       "code": X[:, 2].astype(int), "c": X[:, 3].astype(float),
                       "label": X[:, 4].astype(str)})
    m = agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(df, y)
    np.testing.assert_allclose(m.predict(df), agop.RFMRegressor(
        iters=1, categorical_features=[2, 4]).fit(X, y).predict(X), rtol=1e-12)
    assert list(m.feature_names_in_) == ["a", "b", "code", "c", "label"]


def test_integer_codes_out_of_int64_range_raise():
    """Codes are stored as int64: a larger code raises instead of wrapping around (1e20
    would silently become -2**63, and two different codes could share a category)."""
    x = np.random.default_rng(11).normal(size=4)
    for X in (np.column_stack([x, [0.0, 1e20, 1.0, 1e20]]),  # float codes
              np.array([[0, 2**63 + 5], [1, 1]], dtype=np.uint64)):
        with pytest.raises(ValueError, match="int64"):
            fit_encoding(X, [1])
    with pytest.raises(ValueError, match="int64"):
        fit_encoding(np.array([[0.5, 2**70], [0.1, 1]], dtype=object), [1])
    with pytest.raises(ValueError, match="int64"):
        fit_encoding(np.zeros((2, 2)), [1], {1: {2**64: [1.0], 0: [0.0]}})
    # the largest codes that fit are kept exactly
    top = np.iinfo(np.int64).max
    enc = fit_encoding(np.array([[0.5, top], [0.1, -top - 1]], dtype=object), [1])
    assert enc.categories[0].tolist() == [-top - 1, top]


def test_list_of_rows_with_strings():
    """A list of mixed rows (NumPy alone would turn every number into a string) fits and
    predicts like the object array of the same rows; a string number stays an error."""
    rng = np.random.default_rng(12)
    X, y = _task(40, rng)
    rows = [list(r) for r in X]
    m = agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(rows, y)
    ref = agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(X, y)
    np.testing.assert_array_equal(m.predict(rows[:5]), ref.predict(X[:5]))
    np.testing.assert_array_equal(m.M_, ref.M_)
    bad = [list(r) for r in X]
    bad[0][0] = "0.5"
    with pytest.raises(TypeError, match="strings"):
        agop.RFMRegressor(iters=0, categorical_features=[2, 4]).fit(bad, y)


def test_handle_unknown_is_read_at_predict_time():
    """As for scikit-learn's OneHotEncoder: set_params(handle_unknown=...) on a fitted
    model takes effect, the same way for the model and for its pickled copy."""
    import pickle

    rng = np.random.default_rng(13)
    X, y = _task(50, rng)
    Xu = X[:4].copy()
    Xu[0, 4] = "unseen"
    m = agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(X, y)
    ign = agop.RFMRegressor(iters=1, categorical_features=[2, 4], handle_unknown="ignore")
    ref = ign.fit(X, y).predict(Xu)
    with pytest.raises(ValueError, match="not seen in fit"):
        m.predict(Xu)
    m.set_params(handle_unknown="ignore")
    np.testing.assert_array_equal(m.predict(Xu), ref)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).predict(Xu), ref)
    m.set_params(handle_unknown="error")
    for model in (m, pickle.loads(pickle.dumps(m))):
        with pytest.raises(ValueError, match="not seen in fit"):
            model.predict(Xu)
    m.set_params(handle_unknown="zero")
    with pytest.raises(ValueError, match="handle_unknown must be one of"):
        m.predict(Xu)


def test_categorical_vectors_mapping_values_are_checked():
    X = np.column_stack([np.linspace(0, 1, 6), [0, 1, 2, 0, 1, 2]])
    for bad in ({0: "a", 1: "b", 2: "c"}, {0: ["1"], 1: ["0"], 2: ["1"]},
                {0: [1j], 1: [0], 2: [1]}, {0: {"x": 1}, 1: [0], 2: [1]}):
        with pytest.raises(TypeError, match=r"categorical_vectors\[1\]\[0\] must be a vector "
                                            "of real numbers"):
            fit_encoding(X, [1], {1: bad})
    with pytest.raises(ValueError, match=r"categorical_vectors\[1\] are empty"):
        agop.RFMRegressor(iters=0, categorical_features=[1],
                          categorical_vectors={1: {0: [], 1: [], 2: []}}).fit(X, X[:, 0])
    enc = fit_encoding(X, [1], {1: {0: 1, 1: [2.0], 2: np.array([3])}})
    np.testing.assert_array_equal(enc.embeddings[0], [[1.0], [2.0], [3.0]])


def test_missing_values_in_a_string_column_are_named_missing():
    pd = pytest.importorskip("pandas")
    labels = np.array(["a", "b", "a", "c"], dtype=object)
    for missing in (None, np.nan, pd.NA):
        col = labels.copy()
        col[1] = missing
        X = np.empty((4, 2), dtype=object)
        X[:, 0], X[:, 1] = np.arange(4.0), col
        with pytest.raises(ValueError, match="missing values"):
            fit_encoding(X, [1])
    df = pd.DataFrame({"x": np.arange(4.0), "s": pd.array(["a", None, "a", "c"],
                                                          dtype="string")})
    with pytest.raises(ValueError, match="missing values"):
        agop.RFMRegressor(iters=0, categorical_features=[1]).fit(df, np.arange(4.0))


def test_float32_codes_keep_float32_without_numerical_columns():
    """float32 input stays float32 whether or not it has numerical columns."""
    rng = np.random.default_rng(14)
    codes = rng.integers(0, 3, size=(40, 2))
    y = codes[:, 0] - 0.5 * codes[:, 1]
    arrays = [codes.astype(np.float32)]
    torch = pytest.importorskip("torch")
    arrays.append(torch.asarray(codes.astype(np.float32)))
    for X in arrays:
        yy = y.astype(np.float32) if isinstance(X, np.ndarray) else torch.asarray(
            y, dtype=torch.float32)
        m = agop.RFMRegressor(iters=1, categorical_features=[0, 1]).fit(X, yy)
        P = m.predict(X)
        assert m.M_.dtype == X.dtype and m.X_fit_.dtype == X.dtype and P.dtype == X.dtype
    m64 = agop.RFMRegressor(iters=1, categorical_features=[0, 1]).fit(codes, y)
    assert m64.M_.dtype == np.float64  # integer codes: the default float


@pytest.mark.parametrize("centering", [None, "pooled"])
def test_block_agop_equals_xrfm_get_agop_categorical(centering):
    """The block-diagonal AGOP (normalize=None: the sum over points) against xRFM 0.4.5's
    get_agop_categorical on one-hot blocks, with its pooled gradient centering."""
    torch = pytest.importorskip("torch")
    kernels = pytest.importorskip("xrfm.rfm_src.kernels")
    rng = np.random.default_rng(15)
    X = _mixed(30, rng)
    enc = fit_encoding(X, [2, 4])
    _, Xe, _ = enc.transform(X)
    b = enc.blocks
    M = _block_M(rng, [len(blk) for blk in b])
    coef = rng.normal(size=(30, 2))
    theirs = kernels.LaplaceKernel(bandwidth=1.5, exponent=1.0)
    theirs.set_categorical_indices(torch.tensor(b[0]), [torch.tensor(b[1]), torch.tensor(b[2])],
                                   [torch.eye(4, dtype=torch.float64),
                                    torch.eye(3, dtype=torch.float64)], device="cpu")
    ref = theirs.get_agop(torch.asarray(Xe), torch.asarray(Xe), torch.asarray(coef.T),
                          torch.asarray(psd_sqrt(M)), center_grads=centering is not None)
    machine = KernelMachine.build(agop.Laplace(1.5), Xe, coef, M)
    A = AGOPUpdate(normalize=None, centering=centering, blocks=b)(machine, Xe, None)
    np.testing.assert_allclose(A, ref.numpy(), rtol=1e-7, atol=1e-9 * float(np.abs(A).max()))


def test_categorical_vectors_naming_a_column_twice_raise():
    """-1 and d-1 are the same column: two embeddings for it must not overwrite silently."""
    X = np.column_stack([np.linspace(0, 1, 6), [0, 1, 2, 0, 1, 2]])
    with pytest.raises(ValueError, match="column 1 twice"):
        fit_encoding(X, [1], {1: np.eye(3), -1: 2 * np.eye(3)})


def test_unseen_category_in_validation_data_names_x_val():
    rng = np.random.default_rng(16)
    X, y = _task(50, rng)
    X[:, 2] = np.where(X[:, 2] == 3, 0, X[:, 2])
    Xv = X[:5].copy()
    Xv[0, 2] = 3
    with pytest.raises(ValueError, match=r"column 2 of X_val has categories not seen in fit"):
        agop.RFMRegressor(iters=1, categorical_features=[2, 4]).fit(X, y, X_val=Xv,
                                                                      y_val=y[:5])
    clf = agop.RFMClassifier(iters=1, categorical_features=[2, 4], handle_unknown="ignore")
    clf.fit(X, y > 0, X_val=Xv, y_val=y[:5] > 0)
    assert clf.history_[0]["val_metric"] is not None
