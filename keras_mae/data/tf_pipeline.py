"""Input pipelines built on `tf.data` (the one backend-specific module of keras_mae.data).

`tf.data` feeds `fit` under every Keras backend (TensorFlow, JAX, PyTorch); all
augmentation here is written with TensorFlow ops so it runs inside the
pipeline's graph, in parallel with training, whichever backend trains.

Sources (`load_source`):
    "digits"          scikit-learn's bundled 8x8 digits (offline).
    "tfds:NAME"       a tensorflow-datasets data set prepared under `data_dir`.
    "folder:PATH"     the ImageFolder layout `PATH/<split>/<class>/*.jpg|png`.
    numpy arrays      `ArraySource(images, labels)`.

Training streams (`train_dataset`) are a pure function of `(seed, epoch, position)`:
the order of each epoch and every random crop and flip are drawn with stateless
ops from those numbers, so a run resumed at epoch k sees exactly the batches an
uninterrupted run would have seen: in-memory and folder sources by a stateless
permutation of each epoch, tfds sources by a shuffle buffer seeded from
`(seed, epoch)`. Every source can `describe()` itself (kind, name or path, size,
content digest of arrays): what a checkpoint records of its data.
"""

import dataclasses
import hashlib
import os

import keras
import numpy as np

from keras_mae.data.arrays import fingerprint
from keras_mae.data.image_folder import EVAL_SPLITS
from keras_mae.data.image_folder import check_image_files
from keras_mae.data.image_folder import list_image_folder
from keras_mae.data.statistics import default_mean_std
from keras_mae.data.tensorflow_import import import_tensorflow
from keras_mae.layers.random_resized_crop import TRIES
from keras_mae.layers.random_resized_crop import candidate_sizes

tf = import_tensorflow()  # quietly; GPUs hidden from it unless Keras runs on it


@dataclasses.dataclass
class ArraySource:
    """Images held in memory.

    Args:
        images: `(N, H, W, C)` uint8 in [0, 255] or float in [0, 1].
        labels: `(N,)` ints, or None.
        class_names: optional list of class names.
    """

    images: np.ndarray
    labels: np.ndarray = None
    class_names: list = None

    def __post_init__(self):
        self.images = np.asarray(self.images)
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4:
            raise ValueError(
                "images must have shape (N, H, W, C) or (N, H, W). "
                f"Received shape {self.images.shape}"
            )
        if self.labels is None:
            self.labels = np.zeros(len(self.images), "int64")
        self.labels = np.asarray(self.labels).astype("int64")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self):
        return len(self.images)

    @property
    def channels(self):
        return self.images.shape[-1]

    @property
    def num_classes(self):
        if self.class_names:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def load(self, index):
        images = self.images
        if images.dtype == np.uint8:
            table = tf.constant(images)
            return tf.cast(tf.gather(table, index), tf.float32) / 255.0
        return tf.gather(tf.constant(images.astype("float32")), index)

    def label(self, index):
        return tf.gather(tf.constant(self.labels), index)

    def describe(self):
        return {"source": "arrays", **fingerprint(self.images)}


@dataclasses.dataclass
class FolderSource:
    """Image files listed by class folder (`<split dir>/<class>/<file>`)."""

    paths: list
    labels: np.ndarray
    class_names: list
    channels: int
    root: str = None
    split: str = None

    def __len__(self):
        return len(self.paths)

    def describe(self):
        listing = hashlib.sha1("\n".join(map(str, self.paths)).encode()).hexdigest()
        return {
            "source": "folder",
            "path": self.root,
            "split": self.split,
            "images": len(self.paths),
            "classes": len(self.class_names),
            "channels": int(self.channels),
            "files_sha1": listing,
        }

    @property
    def num_classes(self):
        return len(self.class_names)

    def explain_read_error(self, error):
        """A `ValueError` naming the damaged files behind a decoding `error`, or None.

        Listing the folder checks every file's header and end; damage in the
        middle of a file shows only when TensorFlow decodes it, mid-epoch, with
        a message that names no file. Then every file is decoded once (about
        3 s for 10,000 small JPEGs) to name the culprits.
        """
        if not isinstance(error, tf.errors.InvalidArgumentError):
            return None
        try:
            check_image_files(self.paths, "decode", where=self.root)
        except ValueError as named:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            return ValueError(
                f"{named} TensorFlow stopped reading them in the middle of an epoch ({reason}); "
                "the last completed epoch's checkpoint, if any, is intact."
            )
        return None

    def load(self, index):
        data = tf.io.read_file(tf.gather(tf.constant(self.paths), index))
        image = tf.io.decode_image(data, channels=self.channels, expand_animations=False)
        image.set_shape([None, None, self.channels])
        return tf.cast(image, tf.float32) / 255.0

    def label(self, index):
        return tf.gather(tf.constant(self.labels), index)


@dataclasses.dataclass
class TFDSSource:
    """A prepared tensorflow-datasets split, streamed (not held in memory)."""

    dataset: tf.data.Dataset
    num_examples: int
    class_names: list
    channels: int
    image_key: str
    label_key: str
    name: str = None
    split: str = None

    def __len__(self):
        return self.num_examples

    def describe(self):
        return {
            "source": "tfds",
            "name": self.name,
            "split": self.split,
            "images": int(self.num_examples),
            "channels": int(self.channels),
        }

    @property
    def num_classes(self):
        return len(self.class_names)

    def decode(self, example):
        """`(image, label)` of one example: float32 in [0, 1], int64 (0 without labels)."""
        image = tf.cast(example[self.image_key], tf.float32) / 255.0
        label = example[self.label_key] if self.label_key else tf.constant(0, tf.int64)
        return image, tf.cast(label, tf.int64)


def load_source(dataset, split="train", data_dir=None, channels=None):
    """Load a named image source.

    Args:
        dataset: `"digits"`, `"tfds:NAME"` or `"folder:PATH"`.
        split: `"train"` or `"test"` (for folders, `"test"` falls back to `val`
            or `validation`; for tfds, to `validation`).
        data_dir: tensorflow-datasets data directory (tfds only).
        channels: force 1 or 3 channels when decoding files; by default the
            first image of the folder decides.

    Returns:
        An `ArraySource`, `FolderSource` or `TFDSSource` (all have `len()`,
        `num_classes`, `channels`, `class_names`).
    """
    if dataset == "digits":
        from keras_mae.data.digits import load_digits

        train, test = load_digits()
        images, labels = train if split == "train" else test
        return ArraySource(images, labels, [str(i) for i in range(10)])
    if dataset.startswith("folder:"):
        return load_folder(dataset[len("folder:") :], split, channels)
    if dataset.startswith("tfds:"):
        return load_tfds(dataset[len("tfds:") :], split, data_dir)
    raise ValueError(
        f"unknown dataset {dataset!r}: expected 'digits', 'tfds:NAME' "
        "(e.g. tfds:cifar10) or 'folder:PATH' (PATH/train/<class>/*.jpg)."
    )


def load_folder(root, split="train", channels=None):
    """Image files in `root/<split>/<class>/`, classes sorted by name."""
    paths, labels, class_names = list_image_folder(root, split)
    if channels is None:
        first = tf.io.decode_image(tf.io.read_file(paths[0]), expand_animations=False)
        channels = 1 if first.shape[-1] == 1 else 3
    return FolderSource(
        paths, labels, class_names, channels, root=os.path.abspath(root), split=split
    )


def load_tfds(name, split="train", data_dir=None):
    """A tensorflow-datasets split that is already prepared locally.

    Fails at once with a clear message when it is not (tensorflow-datasets would
    otherwise try to download it, retrying for minutes when offline).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "tfds:NAME sources need tensorflow-datasets: "
            "pip install tensorflow-datasets importlib_resources"
        ) from error
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as error:  # unknown names raise several error types
        raise ValueError(f"tensorflow-datasets has no data set {name!r}: {error}") from error
    splits = builder.info.splits  # empty when not prepared
    if splits and split not in splits:
        fallback = [s for s in EVAL_SPLITS if s in splits] if split != "train" else []
        if not fallback:
            raise ValueError(f"{name!r} has no split {split!r}; it has {sorted(splits)}.")
        split = fallback[0]
    features = builder.info.features
    image_key = (
        "image"
        if "image" in features
        else next(k for k, f in features.items() if isinstance(f, tfds.features.Image))
    )
    label_key = "label" if "label" in features else None
    class_names = features[label_key].names if label_key else []
    channels = features[image_key].shape[-1] or 3
    try:
        # Reads local files only (never downloads); raises when not prepared.
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as error:
        raise FileNotFoundError(
            f"tensorflow-datasets data set {name!r} is not prepared under "
            f"{builder.data_dir!r} and nothing is downloaded here. Prepare it where "
            f"there is network (`tfds build {name}` or "
            f"`tfds.builder({name!r}).download_and_prepare()`) and pass --data-dir, "
            "or use --dataset folder:PATH."
        ) from error
    count = int(dataset.cardinality())
    if count < 0:
        count = splits[split].num_examples
    return TFDSSource(
        dataset, count, class_names, channels, image_key, label_key, name=name, split=split
    )


def materialize(source):
    """Decode a `FolderSource` of equally sized images once into an `ArraySource`.

    Small data sets (CIFAR-sized) then skip JPEG decoding every epoch, which
    leaves the CPU to training. Images are kept as uint8.
    """
    if isinstance(source, ArraySource):
        return source
    if not isinstance(source, FolderSource):
        raise ValueError("materialize takes a FolderSource or an ArraySource.")
    stream = tf.data.Dataset.range(len(source)).map(
        lambda i: tf.cast(tf.round(source.load(i) * 255.0), tf.uint8),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    try:
        images = np.concatenate(list(stream.batch(1024).as_numpy_iterator()), 0)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            "materialize needs images of one size; this folder mixes sizes. "
            "Use the folder source directly (it crops each image on the fly)."
        ) from error
    return ArraySource(images, source.labels, source.class_names)


# === Augmentation (TensorFlow ops, usable inside tf.data under every backend) ===


def random_resized_crop_box(height, width, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """The crop box of torchvision's RandomResizedCrop, drawn statelessly.

    Ten tries of an area in `scale` (a fraction of the image) and a log-uniform
    aspect ratio in `ratio`, sized as `RandomResizedCrop` sizes them
    (`candidate_sizes`), each at its own offset; the first box that fits wins;
    if none does, the centre crop with the ratio clamped into range
    (torchvision's fallback).

    Returns:
        `(top, left, crop_height, crop_width)` int32 scalars.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    # Draws of its own, not the layer's (`candidate_sizes` says why).
    draws = tf.random.stateless_uniform([4, TRIES], seed=seed)
    crop_h, crop_w, fits = candidate_sizes(
        h, w, draws[0], draws[1], scale=scale, ratio=ratio, math_ops=tf.math
    )
    top = tf.floor(draws[2] * (h - crop_h + 1))
    left = tf.floor(draws[3] * (w - crop_w + 1))

    # Fallback: the centre crop, aspect ratio clamped to `ratio`.
    in_ratio = w / h
    fb_w = tf.where(
        in_ratio < ratio[0], w, tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    )
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    fb_top = tf.floor((h - fb_h) / 2)
    fb_left = tf.floor((w - fb_w) / 2)

    first = tf.argmax(tf.cast(fits, tf.int32))
    any_fits = tf.reduce_any(fits)
    box = tf.where(
        any_fits,
        tf.stack([top[first], left[first], crop_h[first], crop_w[first]]),
        tf.stack([fb_top, fb_left, fb_h, fb_w]),
    )
    return tuple(tf.unstack(tf.cast(box, tf.int32)))


def random_resized_crop(
    image, size, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic"
):
    """RandomResizedCrop of one image `(H, W, C)` to `size` `(h, w)`, stateless.

    Bicubic by default (the official recipe); values are clipped to the input
    range [0, 1] because bicubic overshoots.
    """
    shape = tf.shape(image)
    top, left, crop_h, crop_w = random_resized_crop_box(shape[0], shape[1], seed, scale, ratio)
    crop = tf.slice(image, [top, left, 0], [crop_h, crop_w, -1])
    out = tf.image.resize(crop, size, method=interpolation, antialias=False)
    out.set_shape([size[0], size[1], image.shape[-1]])
    return tf.clip_by_value(out, 0.0, 1.0)


def eval_resize_center_crop(image, size, crop_fraction=0.875, interpolation="bicubic"):
    """Evaluation transform: resize the shorter side to `size / crop_fraction`, centre crop.

    `crop_fraction=0.875` is the ImageNet convention (256 -> 224); 1.0 resizes
    straight to the crop size's shorter side.
    """
    channels = image.shape[-1]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    target = tf.cast(tf.reduce_max(size), tf.float32) / crop_fraction
    factor = target / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * factor - 1e-3), tf.int32)
    new = tf.maximum(new, tf.constant(size, tf.int32))
    image = tf.image.resize(image, new, method=interpolation)
    top = (new[0] - size[0]) // 2
    left = (new[1] - size[1]) // 2
    image = tf.slice(image, [top, left, 0], [size[0], size[1], -1])
    image.set_shape([size[0], size[1], channels])
    return tf.clip_by_value(image, 0.0, 1.0)


def normalize(image, mean, std):
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def denormalize(images, mean, std):
    """Map normalised numpy images back to [0, 1] (for pictures)."""
    return np.clip(np.asarray(images) * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def size_pair(image_size):
    if isinstance(image_size, int):
        return (image_size, image_size)
    return tuple(int(s) for s in image_size[:2])


# === Pipelines ===


def concatenate_balanced(datasets):
    """`datasets` one after the other, as a balanced tree of `concatenate` (shallow
    for hundreds of epochs); None for an empty list."""
    while len(datasets) > 1:
        pairs = [a.concatenate(b) for a, b in zip(datasets[::2], datasets[1::2])]
        datasets = pairs + ([datasets[-1]] if len(datasets) % 2 else [])
    return datasets[0] if datasets else None


# Offsets that keep the seeds of flips and of batches apart from the crops'
# `(seed, element)` (an element number never reaches 2**40).
FLIP_SEED_OFFSET = 1 << 40
BATCH_SEED_OFFSET = 1 << 41


def train_dataset(
    source,
    image_size,
    batch_size,
    epochs=1,
    initial_epoch=0,
    seed=0,
    scale=(0.2, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip=True,
    mean=None,
    std=None,
    with_labels=False,
    one_hot=None,
    batch_transform=None,
    image_transform=None,
):
    """The training stream: shuffled, RandomResizedCrop + flip, normalised, batched.

    The stream holds the batches of epochs `initial_epoch .. epochs - 1` back to
    back (`steps_per_epoch` each, the last incomplete batch of an epoch dropped,
    as the official pre-training); pass `steps_per_epoch`, `epochs` and
    `initial_epoch` to `fit` as well. Epoch e's order and augmentation depend
    only on `(seed, e)`, so resuming gives the batches an uninterrupted run gets.

    Args:
        source: from `load_source`, or an `ArraySource`.
        image_size: int or `(height, width)` of the crops.
        batch_size: int.
        epochs, initial_epoch: ints, as for `fit`.
        seed: int.
        scale: area range of RandomResizedCrop (0.2-1 for MAE pre-training,
            0.08-1 for fine-tuning and linear probing).
        ratio: aspect-ratio range. Defaults to (3/4, 4/3).
        flip: bool, random horizontal flips.
        mean, std: normalisation; default ImageNet's for RGB, 0.5 for grey.
        with_labels: yield `(images, labels)` instead of images.
        one_hot: int number of classes: labels become one-hot float vectors.
        image_transform: optional `fn(image in [0,1], seed) -> image`, before
            normalisation (e.g. RandAugment).
        batch_transform: optional `fn(images, labels) -> (images, labels)` on
            normalised batches (e.g. mixup / cutmix); with an attribute
            `takes_seed = True` it is called as `fn(images, labels, seed)`
            with a stateless `(2,)` seed of `(seed, batch index)`.

    Returns:
        `(dataset, steps_per_epoch)`.
    """
    steps = epoch_steps(len(source), batch_size)
    if mean is None or std is None:
        mean, std = default_mean_std(source.channels)
    augment = element_augmentation(
        size_pair(image_size),
        seed,
        scale=scale,
        ratio=ratio,
        flip=flip,
        mean=mean,
        std=std,
        image_transform=image_transform,
    )

    def example(image, label, element):
        """Element `element` of the run: the augmented image, and its label if asked."""
        image = augment(image, element)
        if one_hot:
            label = tf.one_hot(label, one_hot)
        return (image, label) if with_labels else image

    run_epochs = range(initial_epoch, epochs)
    per_epoch = steps * batch_size
    examples = streamed_examples if isinstance(source, TFDSSource) else permuted_examples
    stream = examples(source, seed, run_epochs, per_epoch, example)
    stream = stream.batch(batch_size, drop_remainder=True)
    if batch_transform is not None:
        batches = range(initial_epoch * steps, epochs * steps)
        stream = transform_batches(stream, batch_transform, seed, batches)
    return stream.prefetch(tf.data.AUTOTUNE), steps


def epoch_steps(count, batch_size):
    """The full batches of `batch_size` in `count` images (an epoch's steps, at least 1)."""
    steps = count // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {count} training images.")
    return steps


def element_augmentation(size, seed, *, scale, ratio, flip, mean, std, image_transform):
    """`fn(image, element)`: crop, flip, `image_transform`, normalisation of one image.

    Element e of a run draws its crop from the stateless seed `(seed, e)` and
    its flip from `(seed, e + FLIP_SEED_OFFSET)`, whatever order the parallel
    map runs in.
    """

    def augment(image, element):
        element_seed = tf.stack([tf.constant(seed, tf.int64), element])
        image = random_resized_crop(image, size, element_seed, scale, ratio)
        if flip:
            image = tf.image.stateless_random_flip_left_right(
                image, tf.stack([tf.constant(seed, tf.int64), element + FLIP_SEED_OFFSET])
            )
        if image_transform is not None:
            image = image_transform(image, element_seed)
        return normalize(image, mean, std)

    return augment


def element_numbers(epochs, per_epoch):
    """The run's element numbers `epochs.start * per_epoch ..` (int64), one per example."""
    return tf.data.Dataset.range(epochs.start * per_epoch, epochs.stop * per_epoch)


def permuted_examples(source, seed, epochs, per_epoch, example):
    """`example(image, label, element)` over `epochs` of an indexed source (arrays, files).

    Element e is position `e % per_epoch` of epoch `e // per_epoch`, in a
    stateless permutation of the source seeded from `(seed, epoch)`.
    """

    def element_example(element):
        epoch = element // per_epoch
        position = element % per_epoch
        index = tf.random.experimental.index_shuffle(
            position, tf.stack([tf.constant(seed, tf.int64), epoch]), len(source) - 1
        )
        return example(source.load(index), source.label(index), element)

    return element_numbers(epochs, per_epoch).map(
        element_example, num_parallel_calls=tf.data.AUTOTUNE
    )


def streamed_examples(source, seed, epochs, per_epoch, example):
    """`example(image, label, element)` over `epochs` of a streamed tfds source.

    Each epoch is the split read in order through a shuffle buffer seeded from
    `(seed, epoch)` alone, so a resumed run (started at `initial_epoch`,
    nothing skipped) sees what an uninterrupted one sees.
    """
    # (Python-int seeds: tf.data refuses tensor seeds under a global seed.)
    epoch_streams = [
        source.dataset.shuffle(
            min(10_000, len(source)), seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False
        ).take(per_epoch)
        for epoch in epochs
    ]
    stream = concatenate_balanced(epoch_streams) or source.dataset.take(0)
    stream = tf.data.Dataset.zip((stream, element_numbers(epochs, per_epoch)))
    return stream.map(
        lambda item, element: example(*source.decode(item), element),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def transform_batches(stream, batch_transform, seed, batches):
    """`batch_transform` over a batched stream whose batches are numbered `batches`.

    A `batch_transform` with `takes_seed = True` gets the stateless seed
    `(seed, b + BATCH_SEED_OFFSET)` for batch b of the run, whatever the order.
    """
    if not getattr(batch_transform, "takes_seed", False):
        return stream.map(batch_transform, num_parallel_calls=tf.data.AUTOTUNE)

    def seeded_batch_transform(batch, index):
        batch_seed = tf.stack([tf.constant(seed, tf.int64), index + BATCH_SEED_OFFSET])
        return batch_transform(*batch, batch_seed)

    indices = tf.data.Dataset.range(batches.start, batches.stop)
    return tf.data.Dataset.zip((stream, indices)).map(
        seeded_batch_transform, num_parallel_calls=tf.data.AUTOTUNE
    )


def eval_dataset(
    source,
    image_size,
    batch_size,
    crop_fraction=1.0,
    mean=None,
    std=None,
    with_labels=True,
    interpolation="bicubic",
):
    """The evaluation stream: in order, resize + centre crop, normalised, batched.

    Args:
        crop_fraction: float in (0, 1]; 0.875 is the ImageNet 256 -> 224
            convention, 1.0 (the default) keeps the whole image (small images).
    """
    size = size_pair(image_size)
    if mean is None or std is None:
        mean, std = default_mean_std(source.channels)

    def prepare(image, label):
        image = eval_resize_center_crop(image, size, crop_fraction, interpolation)
        image = normalize(image, mean, std)
        return (image, label) if with_labels else image

    if isinstance(source, TFDSSource):
        stream = source.dataset.map(
            lambda example: prepare(*source.decode(example)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        stream = tf.data.Dataset.range(len(source)).map(
            lambda i: prepare(source.load(i), source.label(i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return stream.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def take_images(dataset, count):
    """The first `count` images of a dataset of images or `(images, labels)`, as numpy."""
    images = []
    for batch in dataset:
        batch = batch[0] if isinstance(batch, tuple) else batch
        images.append(np.asarray(batch))
        if sum(len(b) for b in images) >= count:
            break
    return np.concatenate(images)[:count]


def measure_throughput(dataset, batches=50):
    """Images per second a dataset yields (after one warm-up batch)."""
    import time

    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        batch = next(iterator, None)
        if batch is None:
            break
        batch = batch[0] if isinstance(batch, tuple) else batch
        images += int(batch.shape[0])
    return images / (time.perf_counter() - start)


class ElementSeed(keras.random.SeedGenerator):
    """A `SeedGenerator` whose draws are stateless: the `k`-th draw is
    `fold_in(seed, k)` of a `(2,)` seed tensor, so a Keras random layer called
    with it inside a parallel tf.data map gives the same result in any order."""

    def __init__(self, seed):  # no state variable: nothing is shared between elements
        self.seed = tf.cast(seed, tf.int64)
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.seed, self.draws)


def seeded_call(layer, data, seed):
    """`layer(data, training=True)`, its random transformation drawn from `seed`
    (`ElementSeed`) instead of the layer's own, stateful generator."""
    fixed = ElementSeed(seed)
    cls = type(layer)

    def get_random_transformation(data, training=True, seed=None):
        return cls.get_random_transformation(layer, data, training=training, seed=fixed)

    def seed_generator(backend=None):
        return fixed

    # RandAugment draws its op choice and its sub-layers' transformations from
    # `_get_seed_generator` rather than the `seed` argument: both are redirected.
    overrides = {
        "get_random_transformation": get_random_transformation,
        "_get_seed_generator": seed_generator,
    }
    for name, function in overrides.items():
        object.__setattr__(layer, name, function)
    try:
        return layer(data, training=True)
    finally:
        for name in overrides:
            object.__delattr__(layer, name)


def finetune_augmentations(
    num_classes,
    randaugment_magnitude=9,
    random_erasing=0.25,
    mixup=0.8,
    cutmix=1.0,
    label_smoothing=0.1,
    seed=0,
):
    """The fine-tuning augmentation as `(image_transform, batch_transform)` for
    `train_dataset` (TensorFlow-side; Keras layers in tf.data): RandAugment,
    random erasing, then label smoothing and mixup or cutmix per batch.

    Deterministic inside parallel maps: every layer draws from a stateless seed
    of the element (or batch) it transforms (`seeded_call`), never from its own
    stateful generator, so a stream is a function of `(seed, epoch)` alone."""
    layers = {}
    if randaugment_magnitude:
        layers["randaugment"] = keras.layers.RandAugment(
            value_range=(0, 1), num_ops=2, factor=randaugment_magnitude / 10, seed=seed
        )
    if random_erasing:
        layers["erasing"] = keras.layers.RandomErasing(
            factor=random_erasing, value_range=(0, 1), seed=seed
        )
    mix = keras.layers.MixUp(alpha=mixup, seed=seed) if mixup else None
    cut = keras.layers.CutMix(factor=cutmix, seed=seed) if cutmix else None

    def image_transform(image, element_seed):
        for offset, key in enumerate(("randaugment", "erasing")):
            if key in layers:
                seed = tf.random.experimental.stateless_fold_in(element_seed, 101 + offset)
                image = seeded_call(layers[key], image, seed)
        return tf.clip_by_value(image, 0.0, 1.0)

    def batch_transform(images, labels, batch_seed):
        labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
        if not (mix or cut):
            return images, labels

        def apply(layer):
            def fn():
                data = {"images": images, "labels": labels}
                out = seeded_call(
                    layer, data, tf.random.experimental.stateless_fold_in(batch_seed, 1)
                )
                return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)

            return fn

        if mix and cut:
            coin = tf.random.stateless_uniform((), seed=batch_seed)
            return tf.cond(coin < 0.5, apply(mix), apply(cut))
        return apply(mix or cut)()

    batch_transform.takes_seed = True  # train_dataset passes (seed, batch index)
    return image_transform, batch_transform
