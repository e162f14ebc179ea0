import math
import os
import time

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from keras_mae.data import IMAGENET_MEAN  # noqa: E402
from keras_mae.data import IMAGENET_STD  # noqa: E402
from keras_mae.data import ArraySource  # noqa: E402
from keras_mae.data import eval_dataset  # noqa: E402
from keras_mae.data import load_source  # noqa: E402
from keras_mae.data import materialize  # noqa: E402
from keras_mae.data import random_resized_crop  # noqa: E402
from keras_mae.data import random_resized_crop_box  # noqa: E402
from keras_mae.data import train_dataset  # noqa: E402

COLORS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def write_folder(root):
    """PATH/{train,test}/{cat,dog}/*.png|jpg, each class one flat colour."""
    for split, count in (("train", 3), ("test", 2)):
        for name, color in COLORS.items():
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(count):
                image = np.zeros((12, 10, 3), "uint8") + np.array(color, "uint8")
                data = (
                    tf.io.encode_png(image) if i % 2 == 0 else tf.io.encode_jpeg(image, quality=100)
                )
                ext = "png" if i % 2 == 0 else "jpg"
                tf.io.write_file(os.path.join(folder, f"{i}.{ext}"), data)
    return root


@pytest.mark.backend_free
def test_random_resized_crop_box_follows_the_official_ranges():
    areas, ratios = [], []
    for i in range(200):
        top, left, h, w = (
            int(v)
            for v in random_resized_crop_box(
                64, 48, tf.constant([7, i], tf.int64), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)
            )
        )
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48
        areas.append(h * w / (64 * 48))
        ratios.append(w / h)
    areas, ratios = np.array(areas), np.array(ratios)
    assert areas.min() >= 0.19 and areas.max() <= 1.0
    assert ratios.min() >= 0.72 and ratios.max() <= 1.36  # 3/4 .. 4/3 up to rounding
    assert areas.mean() == pytest.approx(0.55, abs=0.1)  # uniform area in [0.2, 1]


@pytest.mark.backend_free
def test_random_resized_crop_box_falls_back_to_centre_crop():
    # A 4x100 strip: no box of aspect ratio in [3/4, 4/3] and area >= 20% fits.
    top, left, h, w = (
        int(v) for v in random_resized_crop_box(4, 100, tf.constant([0, 0], tf.int64))
    )
    assert (h, w) == (4, 5) and (top, left) == (0, 47)  # ratio clamped to 4/3


@pytest.mark.backend_free
def test_random_resized_crop_is_stateless_and_identity_at_full_scale():
    image = tf.random.stateless_uniform((8, 8, 3), seed=[0, 0])
    seed = tf.constant([3, 4], tf.int64)
    a = random_resized_crop(image, (8, 8), seed)
    b = random_resized_crop(image, (8, 8), seed)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (
        a.shape == (8, 8, 3) and 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 1.0
    )
    full = random_resized_crop(image, (8, 8), seed, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(full.numpy(), image.numpy(), atol=1e-5)


def test_folder_source_labels_and_eval_normalisation(tmp_path):
    root = write_folder(str(tmp_path))
    train = load_source(f"folder:{root}", "train")
    assert (len(train), train.class_names, train.channels) == (6, ["cat", "dog"], 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    test = load_source(f"folder:{root}", "test")
    images, labels = next(iter(eval_dataset(test, (8, 6), batch_size=4)))
    assert images.shape == (4, 8, 6, 3)
    np.testing.assert_array_equal(labels.numpy(), [0, 0, 1, 1])
    red = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(images.numpy()[0], np.broadcast_to(red, (8, 6, 3)), atol=0.02)
    arrays = materialize(train)
    assert arrays.images.dtype == np.uint8 and arrays.images.shape == (6, 12, 10, 3)


def test_folder_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source(f"folder:{tmp_path}/missing")
    os.makedirs(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match="PATH/test"):
        load_source(f"folder:{tmp_path}", "test")
    with pytest.raises(ValueError, match="folder:PATH"):
        load_source("imagenet")


def index_images(count):
    """Image i is filled with the value i / count, so a batch shows which images it holds."""
    return ArraySource(
        np.ones((count, 4, 4, 1), "float32") * (np.arange(count) / count)[:, None, None, None]
    )


def batches_of(dataset):
    return [b.numpy() for b in dataset]


def test_each_epoch_is_a_permutation_and_resume_replays_the_same_batches():
    source = index_images(10)
    kwargs = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, mean=(0.0,), std=(1.0,))
    full, steps = train_dataset(source, 4, batch_size=3, epochs=3, seed=5, **kwargs)
    assert steps == 3  # 10 // 3, remainder dropped
    batches = batches_of(full)
    assert len(batches) == 9
    for epoch in range(3):
        ids = np.concatenate(
            [np.round(b[:, 0, 0, 0] * 10) for b in batches[3 * epoch : 3 * epoch + 3]]
        )
        assert len(set(ids.tolist())) == 9  # no image twice within an epoch
    resumed, _ = train_dataset(source, 4, batch_size=3, epochs=3, initial_epoch=1, seed=5, **kwargs)
    for a, b in zip(batches_of(resumed), batches[3:]):
        np.testing.assert_array_equal(a, b)
    other, _ = train_dataset(source, 4, batch_size=3, epochs=1, seed=6, **kwargs)
    assert not np.array_equal(batches_of(other)[0], batches[0])


def test_augmented_stream_is_reproducible_and_feeds_fit():
    rng = np.random.default_rng(0)
    source = ArraySource((rng.random((16, 8, 8, 3)) * 255).astype("uint8"), np.arange(16) % 4)
    a, steps = train_dataset(source, 8, 4, epochs=1, seed=1, with_labels=True)
    b, _ = train_dataset(source, 8, 4, epochs=1, seed=1, with_labels=True)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(a, epochs=1, steps_per_epoch=steps, verbose=0)
    assert math.isfinite(history.history["loss"][0])


def test_digits_source():
    pytest.importorskip("sklearn")
    train = load_source("digits", "train")
    test = load_source("digits", "test")
    assert len(train) + len(test) == 1797 and train.channels == 1 and train.num_classes == 10


def test_tfds_unprepared_fails_fast_and_mock_data_loads(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    start = time.time()
    with pytest.raises(FileNotFoundError, match="not prepared"):
        load_source("tfds:mnist", data_dir=str(tmp_path))
    assert time.time() - start < 60
    with tfds.testing.mock_data(num_examples=6):
        source = load_source("tfds:mnist", "train", data_dir=str(tmp_path))
        assert (len(source), source.channels, source.num_classes) == (6, 1, 10)
        images, labels = next(iter(eval_dataset(source, 28, batch_size=6)))
        assert images.shape == (6, 28, 28, 1) and labels.shape == (6,)
        stream, steps = train_dataset(source, 16, 3, epochs=2)
        assert len(batches_of(stream)) == 2 * steps == 4


def stream_batches(source, initial_epoch=0, **augmentations):
    from keras_mae.data import finetune_augmentations

    image_transform, batch_transform = finetune_augmentations(2, **augmentations)
    stream, steps = train_dataset(
        source,
        8,
        8,
        epochs=3,
        initial_epoch=initial_epoch,
        seed=3,
        with_labels=True,
        one_hot=2,
        image_transform=image_transform,
        batch_transform=batch_transform,
    )
    return [(np.asarray(x), np.asarray(y)) for x, y in stream], steps


def test_finetune_augmentations_are_deterministic_in_parallel_maps_and_on_resume():
    """RandAugment, random erasing, mixup and cutmix draw from stateless seeds of
    (seed, element) and (seed, batch): the same stream every time, and a stream
    started at epoch 1 replays the uninterrupted one."""
    rng = np.random.default_rng(0)
    source = ArraySource(rng.random((32, 8, 8, 1)).astype("float32"), np.arange(32) % 2)
    settings = dict(randaugment_magnitude=9, random_erasing=1.0, mixup=0.8, cutmix=1.0)
    first, steps = stream_batches(source, **settings)
    again, _ = stream_batches(source, **settings)
    resumed, _ = stream_batches(source, initial_epoch=1, **settings)
    assert len(first) == 3 * steps and len(resumed) == 2 * steps
    for (x, y), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    for (x, y), (x2, y2) in zip(first[steps:], resumed):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    # Still random: epochs differ, and labels are mixed (not only smoothed one-hots).
    assert not np.array_equal(first[0][0], first[steps][0])
    labels = np.concatenate([y for _, y in first])
    assert np.any((labels > 0.06) & (labels < 0.94))


@pytest.mark.backend_free
def test_epoch_batches_are_a_function_of_seed_and_epoch():
    from keras_mae.data.arrays import EpochBatches
    from keras_mae.data.arrays import epoch_order

    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    full = EpochBatches(images, 3, epochs=3, seed=7)
    resumed = EpochBatches(images, 3, epochs=3, initial_epoch=2, seed=7)
    assert (len(full), full.steps, len(resumed)) == (9, 3, 3)  # full batches only
    batches = [full[i][0].ravel() for i in range(len(full))]
    for epoch in range(3):  # each epoch: 9 distinct images in the epoch's order
        seen = np.concatenate(batches[3 * epoch : 3 * epoch + 3])
        np.testing.assert_array_equal(seen, epoch_order(10, 7, epoch)[:9])
    for i in range(3):
        np.testing.assert_array_equal(resumed[i][0].ravel(), batches[6 + i])
    assert not np.array_equal(batches[0], batches[3])
    assert not np.array_equal(epoch_order(10, 7, 0), epoch_order(10, 8, 0))
    with pytest.raises(IndexError):
        full[9]
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatches(images, 11, epochs=1)
