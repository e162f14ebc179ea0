"""Named data sets loaded into memory as numpy arrays, without TensorFlow.

For the recipes' in-memory path: the arrays feed `fit` and the augmentation
runs inside the model's compiled step. `EpochBatches` feeds them in an order
that is a pure function of `(seed, epoch)` (`epoch_order`), so that a run
resumed at epoch k sees the batches an uninterrupted run sees; `fingerprint`
identifies the arrays a checkpoint was trained on.
"""

import hashlib

import keras
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


def epoch_order(count, seed, epoch):
    """The order of `count` images in `epoch`: a permutation drawn from `(seed, epoch)` alone."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(count)


class EpochBatches(keras.utils.PyDataset):
    """In-memory images as the batches of epochs `initial_epoch .. epochs - 1`, back to back.

    Epoch e holds `len(images) // batch_size` full batches, in the order
    `epoch_order(len(images), seed, e)` (the last, incomplete batch of an
    epoch dropped, as the official pre-training and the tf.data streams do), so
    batch `i` is the same whether the run started at epoch 0 or resumed at
    `initial_epoch`. Fit it with `shuffle=False`, `steps_per_epoch=steps`,
    `epochs=epochs` and `initial_epoch=initial_epoch`.

    Args:
        images: `(N, H, W, C)` array (kept, not copied).
        batch_size: int, at most N.
        epochs, initial_epoch: ints, as for `fit`.
        seed: int.
    """

    def __init__(self, images, batch_size, epochs, initial_epoch=0, seed=0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images = images
        self.batch_size = int(batch_size)
        self.steps = len(images) // self.batch_size
        if self.steps < 1:
            raise ValueError(
                f"{len(images)} images are fewer than one batch of {batch_size}: "
                "lower the batch size."
            )
        self.epochs = int(epochs)
        self.initial_epoch = int(initial_epoch)
        self.seed = int(seed)
        self._order = (None, None)  # (epoch, its permutation), the last one used

    def __len__(self):
        return self.steps * max(self.epochs - self.initial_epoch, 0)

    def order(self, epoch):
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.images), self.seed, epoch))
        return self._order[1]

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        epoch = self.initial_epoch + index // self.steps
        start = (index % self.steps) * self.batch_size
        return (self.images[self.order(epoch)[start : start + self.batch_size]],)


def fingerprint(images):
    """`{"images", "shape", "dtype", "sha1"}` of an array: what a checkpoint records of it."""
    images = np.ascontiguousarray(images)
    return {
        "images": int(len(images)),
        "shape": [int(d) for d in images.shape[1:]],
        "dtype": str(images.dtype),
        "sha1": hashlib.sha1(images.view(np.uint8).reshape(-1)).hexdigest(),
    }
