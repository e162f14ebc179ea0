"""Named data sets loaded into memory as numpy arrays, without TensorFlow.

For the recipes' in-memory path: the arrays feed `fit` directly and the
augmentation runs inside the model's compiled step.
"""

import numpy as np

IN_MEMORY_DATASETS = "'digits' or 'folder:PATH' (PATH/train/<class>/*.jpg)"


def load_arrays(dataset, holdout_per_class=0, channels=None):
    """Load `dataset` into memory: `((x_train, y_train), (x_test, y_test), class_names)`.

    Args:
        dataset: `"digits"` (scikit-learn's 8x8 digits, float32 in [0, 1], its
            stratified 80/20 split) or `"folder:PATH"` (`PATH/train/<class>/*`,
            decoded with Pillow into uint8, and `PATH/test/` or `PATH/val/`).
        holdout_per_class: int; for folders, hold out the last
            `holdout_per_class` files of each training class as the test split
            instead of reading `PATH/test/`. Defaults to 0.
        channels: 1 or 3 for folders; by default the first image decides.

    Returns:
        `((x_train, y_train), (x_test, y_test), class_names)`: images
        `(N, H, W, C)`, integer labels `(N,)`.
    """
    if dataset == "digits":
        from keras_mae.data.digits import load_digits

        if holdout_per_class:
            raise ValueError(
                f"holdout_per_class={holdout_per_class} applies to folder data sets; "
                "'digits' has its own held-out split. Leave it at 0."
            )
        train, test = load_digits()
        return train, test, [str(i) for i in range(10)]
    if not dataset.startswith("folder:"):
        raise ValueError(
            f"cannot load {dataset!r} into memory: expected {IN_MEMORY_DATASETS}. "
            "Streamed tfds sources go through keras_mae.data.load_source instead."
        )
    from keras_mae.data.image_folder import load_image_folder
    from keras_mae.data.image_folder import split_per_class

    root = dataset[len("folder:") :]
    images, labels, class_names = load_image_folder(root, "train", channels=channels)
    if holdout_per_class:
        train, held = split_per_class(labels, holdout_per_class)
        return (images[train], labels[train]), (images[held], labels[held]), class_names
    test_images, test_labels, _ = load_image_folder(root, "test", channels=images.shape[-1])
    return (images, labels), (test_images, test_labels), class_names


def is_arrays(data):
    """Whether `data` is in-memory `(images, labels)` rather than a `load_source` source."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(hasattr(part, "shape") for part in data)
    )


def check_arrays(data, name):
    """`(images, labels)` as numpy, validated; `name` is the argument's name for errors."""
    images, labels = (np.asarray(part) for part in data)
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{name} must be (images, labels) with images (N, H, W, C) and integer "
            f"labels (N,). Received shapes {images.shape} and {labels.shape}."
        )
    return images, labels
