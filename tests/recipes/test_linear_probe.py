import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.data import ArraySource
from keras_mae.recipes.linear_probe import build_linear_probe
from keras_mae.recipes.linear_probe import linear_probe
from tests.conftest import to_numpy
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import SMALLEST
from tests.helpers.tiny import smallest_encoder

# SMALLEST, the recipes' model: its 8x8 grey images tell the classes by their top or bottom half.
SHAPE = SMALLEST["image_shape"]


def separable_source(count, seed):
    """Bright-top vs bright-bottom images (unchanged by horizontal flips)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.random((count, *SHAPE)).astype("float32") * 0.2
    images[labels == 0, :4] += 0.8
    images[labels == 1, 4:] += 0.8
    return ArraySource(images, labels)


def test_probe_model_is_frozen_encoder_cls_bn_dense():
    encoder = smallest_encoder()
    model = build_linear_probe(encoder, num_classes=3)
    assert not encoder.trainable
    # Only the Dense head trains: BatchNorm has no affine parameters.
    assert sorted(v.path for v in model.trainable_variables) == [
        "probe/probe_head/bias",
        "probe/probe_head/kernel",
    ]
    norm = model.get_layer("probe").get_layer("probe_norm")
    assert (norm.center, norm.scale, norm.epsilon) == (False, False, 1e-6)
    images = np.random.default_rng(0).random((BATCH, *SHAPE)).astype("float32")
    # Inference: BN with its initial statistics (mean 0, var 1) is the identity.
    cls = to_numpy(encoder(images))[:, 0]
    head = model.get_layer("probe").get_layer("probe_head")
    expected = cls / np.sqrt(1 + 1e-6) @ to_numpy(head.kernel) + to_numpy(head.bias)
    np.testing.assert_allclose(
        to_numpy(model(images, training=False)), expected, rtol=1e-4, atol=1e-6
    )


def test_probe_on_cached_features_learns_a_separable_task():
    encoder = smallest_encoder()
    result = linear_probe(
        # LARS moves a weight by lr x 0.001 x its norm per step: it needs the
        # large learning rate of the official batch (0.1 x 16384 / 256 = 6.4).
        encoder,
        separable_source(64, 0),
        separable_source(32, 1),
        epochs=40,
        batch_size=16,
        base_learning_rate=100.0,
        warmup_epochs=2,
    )
    assert result["accuracy"] >= 0.9


def test_augmented_probe_trains_only_the_head():
    encoder = smallest_encoder()
    before = [to_numpy(w).copy() for w in encoder.weights]
    result = linear_probe(
        encoder,
        separable_source(32, 0),
        separable_source(16, 1),
        epochs=2,
        batch_size=16,
        base_learning_rate=100.0,
        warmup_epochs=1,
        cache_features=False,
    )
    model = result["model"]
    assert len(result["history"]["loss"]) == 2 and all(np.isfinite(result["history"]["loss"]))
    for b, w in zip(before, encoder.weights):  # the encoder never changes
        np.testing.assert_array_equal(b, to_numpy(w))
    kernel = to_numpy(model.get_layer("probe").get_layer("probe_head").kernel)
    assert np.std(kernel) > 0.0
    assert 0.0 <= result["accuracy"] <= 1.0


def separable_arrays(count, seed, dtype="float32"):
    """`separable_source` as in-memory `(images, labels)`."""
    source = separable_source(count, seed)
    images = source.images
    if dtype == "uint8":
        images = np.round(np.clip(images, 0.0, 1.0) * 255).astype("uint8")
    return images, source.labels


def brightness_arrays(count, seed):
    """Dark vs light uint8 images: any crop or flip keeps the label."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.integers(0, 128, (count, *SHAPE)) + 127 * labels[:, None, None, None]
    return images.astype("uint8"), labels


def test_in_memory_probe_augments_inside_the_step_and_learns():
    encoder = smallest_encoder()
    before = [to_numpy(w).copy() for w in encoder.weights]
    result = linear_probe(
        encoder,
        brightness_arrays(64, 0),
        brightness_arrays(32, 1),
        epochs=30,
        batch_size=16,
        base_learning_rate=100.0,
        warmup_epochs=2,
        cache_features=False,
    )
    assert result["accuracy"] >= 0.9
    model = result["model"]
    assert model.input.dtype == "uint8"  # raw batches go to the step
    crop = model.get_layer("augmentation").get_layer("crop")
    assert crop.scale == (0.08, 1.0)  # the probe's crops
    # The crop drew its boxes inside the compiled step: its seed state moved.
    fresh = keras_mae.RandomResizedCrop(*SHAPE[:2], seed=0).seed_generator.state
    assert not np.array_equal(to_numpy(crop.seed_generator.state), to_numpy(fresh))
    for b, w in zip(before, encoder.weights):  # the encoder never changes
        np.testing.assert_array_equal(b, to_numpy(w))


def test_in_memory_cached_features_are_the_normalised_encoder_outputs():
    from keras_mae.recipes.augmentation import image_augmentation
    from keras_mae.recipes.linear_probe import encoder_features

    encoder = smallest_encoder()
    images, labels = separable_arrays(6, 0, "uint8")
    augmentation = image_augmentation(SHAPE, mean=(0.4,), std=(0.2,), max_value=255.0)
    features, got_labels = encoder_features(
        encoder, (images, labels), ("cls", "mean"), batch_size=4, augmentation=augmentation
    )
    tokens = to_numpy(encoder((images / 255.0 - 0.4) / 0.2))
    np.testing.assert_allclose(features["cls"], tokens[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features["mean"], tokens[:, 1:].mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_labels, labels)


def test_several_poolings_and_rates_from_one_encoder_pass():
    import keras_mae.recipes.linear_probe as probe_module

    encoder = smallest_encoder()
    train, test = separable_arrays(64, 0), separable_arrays(32, 1)
    settings = dict(epochs=40, batch_size=16, warmup_epochs=2)
    passes = []
    original = probe_module.encoder_features

    def counting(*args, **kwargs):
        passes.append(args[2])
        return original(*args, **kwargs)

    probe_module.encoder_features = counting
    try:
        results = linear_probe(
            encoder, train, test, ["cls", "mean"], base_learning_rate=[1.0, 100.0], **settings
        )
    finally:
        probe_module.encoder_features = original
    assert passes == [("cls", "mean"), ("cls", "mean")]  # train and test, once each
    assert [(r["pooling"], r["base_learning_rate"]) for r in results] == [
        ("cls", 1.0),
        ("cls", 100.0),
        ("mean", 1.0),
        ("mean", 100.0),
    ]
    assert results[1]["accuracy"] >= 0.9 and results[3]["accuracy"] >= 0.9
    # Each probe starts from the same seed: a single probe gives the same number.
    alone = linear_probe(encoder, train, test, "mean", base_learning_rate=100.0, **settings)
    assert alone["accuracy"] == results[3]["accuracy"]


def test_probe_rejects_mixed_or_misplaced_inputs():
    encoder = smallest_encoder()
    arrays, source = separable_arrays(16, 0), separable_source(16, 1)
    with pytest.raises(ValueError, match="of one kind"):
        linear_probe(encoder, arrays, source, epochs=1)
    with pytest.raises(ValueError, match="in-memory"):
        linear_probe(encoder, source, source, epochs=1, augmentation=keras.layers.Identity())
    with pytest.raises(ValueError, match="not both"):
        linear_probe(
            encoder, arrays, arrays, epochs=1, augmentation=keras.layers.Identity(), mean=(0.5,)
        )


def clustered_features(count, seed, classes=4, dim=8):
    """Features of `classes` well separated Gaussian clusters, labels in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    centres = np.random.default_rng(0).normal(size=(classes, dim)) * 3
    return (centres[labels] + rng.normal(size=(count, dim))).astype("float32"), labels


def test_held_out_split_takes_a_share_of_every_class():
    from keras_mae.recipes.linear_probe import held_out_split

    labels = np.repeat([0, 1, 2], [20, 10, 3])
    train, held = held_out_split(labels, fraction=0.1, seed=0)
    assert sorted(np.concatenate([train, held])) == list(range(len(labels)))
    assert [int((labels[held] == c).sum()) for c in range(3)] == [2, 1, 1]
    again = held_out_split(labels, fraction=0.1, seed=0)
    np.testing.assert_array_equal(again[1], held)  # the same seed, the same split


def test_probe_learning_rate_is_chosen_on_held_out_training_data():
    from keras_mae.recipes.linear_probe import choose_base_learning_rate

    features, labels = clustered_features(80, 0)
    # LARS moves the head by lr x 0.001 of its norm per step: in 50 steps 0.1 leaves it
    # where it started and 1e12 throws it about; 1e4 separates the four clusters.
    rate, scores = choose_base_learning_rate(
        features,
        labels,
        4,
        rates=(0.1, 1e4, 1e12),
        epochs=10,
        batch_size=16,
        warmup_epochs=1,
        fraction=0.25,
    )
    assert rate == 1e4
    assert list(scores) == [0.1, 1e4, 1e12]
    assert scores[1e4] == 1.0 and scores[0.1] < 0.5 and scores[1e12] < 0.5


def test_auto_probe_trains_the_chosen_rate_and_never_looks_at_test(monkeypatch):
    import keras_mae.recipes.linear_probe as probe_module

    monkeypatch.setattr(probe_module, "PROBE_BASE_LEARNING_RATES", (0.1, 100.0))
    encoder = smallest_encoder()
    train = separable_arrays(64, 0)
    images, labels = separable_arrays(32, 1)
    # blr "auto", the default. No accuracy is asserted: a few epochs show the choice.
    settings = dict(epochs=4, batch_size=16, warmup_epochs=1)
    ours = linear_probe(encoder, train, (images, labels), **settings)
    flipped = linear_probe(encoder, train, (images, 1 - labels), **settings)
    scores = ours["held_out_accuracy"]
    assert list(scores) == [0.1, 100.0]
    best = max(scores.values())
    assert ours["base_learning_rate"] == min(r for r, a in scores.items() if a == best)
    # The test labels play no part: the same choice, the same scores, the same head
    # (its test accuracy on flipped labels is the complement).
    assert flipped["base_learning_rate"] == ours["base_learning_rate"]
    assert flipped["held_out_accuracy"] == scores
    assert abs(ours["accuracy"] + flipped["accuracy"] - 1.0) < 1e-6
    alone = linear_probe(
        encoder, train, (images, labels), base_learning_rate=ours["base_learning_rate"], **settings
    )
    assert alone["accuracy"] == ours["accuracy"]  # "auto" then trains exactly that rate
    with pytest.raises(ValueError, match="'auto' alone"):
        linear_probe(encoder, train, (images, labels), base_learning_rate=["auto", 0.1])
