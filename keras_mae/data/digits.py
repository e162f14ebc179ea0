"""Small data sets that ship with a package, so examples and tests run offline."""

import numpy as np


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's bundled 8x8 handwritten digits as images in [0, 1].

    1,797 grey images of the digits 0-9, split at random (stratified by class)
    into training and held-out parts. Needs scikit-learn (`pip install
    keras-mae[examples]`); nothing is downloaded.

    Args:
        test_fraction: float in (0, 1), the held-out share. Defaults to 0.2.
        seed: int, seed of the split. Defaults to 0.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images float32 `(N, 8, 8, 1)`,
        labels int32 `(N,)`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction}"
        )
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError(
            "the 'digits' data set comes with scikit-learn: "
            "pip install scikit-learn (or keras-mae[examples])"
        ) from error
    data = sklearn_digits()
    images = (data.images / 16.0).astype("float32")[..., None]  # (N, 8, 8, 1)
    labels = data.target.astype("int32")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test[members[: int(round(len(members) * test_fraction))]] = True
    return (images[~test], labels[~test]), (images[test], labels[test])
