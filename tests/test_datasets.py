"""Bundled data sets equal scikit-learn's copies; the generated ones are seeded."""

from __future__ import annotations

import numpy as np
import pytest

from agop.datasets import dataset_names, load_dataset


@pytest.mark.parametrize(
    "name, shape, task, n_classes",
    [
        ("breast_cancer", (569, 30), "classification", 2),
        ("wine", (178, 13), "classification", 3),
        ("diabetes", (442, 10), "regression", None),
        ("digits", (1797, 64), "classification", 10),
        ("lowrank", (4000, 20), "regression", None),
    ],
)
def test_shapes_and_tasks(name, shape, task, n_classes):
    ds = load_dataset(name)
    assert ds.X.shape == shape and ds.X.dtype == np.float64 and ds.y.shape == (shape[0],)
    assert ds.task == task and len(ds.feature_names) == shape[1]
    if n_classes:
        assert len(np.unique(ds.y)) == n_classes
    assert np.isfinite(ds.X).all()


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "diabetes", "digits"])
def test_bundled_values_equal_scikit_learn(name):
    skd = pytest.importorskip("sklearn.datasets")
    loader = getattr(skd, f"load_{name}")
    ref = loader(scaled=False) if name == "diabetes" else loader()
    ds = load_dataset(name)
    np.testing.assert_allclose(ds.X, ref.data, rtol=1e-9)
    assert ds.feature_names == [str(f) for f in ref.feature_names]
    if ds.task == "classification":
        names = [str(t) for t in ref.target_names]
        codes = np.array([names.index(str(v)) for v in ds.y])
        np.testing.assert_array_equal(codes, ref.target)
    else:
        np.testing.assert_allclose(ds.y, ref.target)


def test_names_and_errors():
    assert dataset_names() == ["lowrank", "breast_cancer", "diabetes", "digits", "wine"]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("iris")
    with pytest.raises(TypeError):
        load_dataset(3)
    a, b = load_dataset("lowrank", random_state=1), load_dataset("lowrank", random_state=1)
    np.testing.assert_array_equal(a.X, b.X)
