"""Saved files load as users load them, and broken ones are refused clearly.

Every compiled model the recipes save (the pre-training MAE, the linear probe,
the fine-tuning classifier on sources and on arrays) reloads with a plain
`keras.models.load_model`: the same optimizer class, config and schedule, and
one more training step equal to the original model's (optimizer state and
decay rules restored). A truncated or foreign `.keras` file is refused by
`keras_mae.load_model` (and the converter) with its path and what to do.
"""

import zipfile

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae import convert
from keras_mae.recipes import finetune
from keras_mae.recipes import linear_probe
from keras_mae.recipes.optimizers import pretraining_optimizer
from keras_mae.recipes.schedules import warmup_cosine_for
from keras_mae.saving import check_keras_file
from tests.helpers.tiny import SMALLEST
from tests.helpers.tiny import smallest_encoder
from tests.helpers.tiny import smallest_mae


def batch(seed=0, count=4):
    rng = np.random.default_rng(seed)
    images = rng.random((count, *SMALLEST["image_shape"])).astype("float32")
    return images, rng.integers(0, 3, count)


def pretraining_model():
    """As `keras_mae.recipes.pretrain.pretrain` compiles it (noise fixed: same masks)."""
    mae = smallest_mae()
    schedule = warmup_cosine_for(1e-2, epochs=4, steps_per_epoch=2, warmup_epochs=1)
    mae.compile(optimizer=pretraining_optimizer(mae, schedule, weight_decay=0.5))
    images, _ = batch()
    noise = np.random.default_rng(1).random((len(images), mae.num_patches)).astype("float32")
    return mae, ({"images": images, "noise": noise},)


def probe_model():
    """As `linear_probe` compiles it: frozen encoder, BN + linear head, LARS."""
    model = linear_probe.build_linear_probe(smallest_encoder(), 3)
    linear_probe.compile_probe(model, linear_probe.lars_for(4, 2, 4, 0.1, 1))
    images, labels = batch()
    return model, (images, labels)


def classifier_model():
    """As `finetune` on sources compiles it: layer-decay AdamW, smoothed cross-entropy."""
    model = finetune.build_classifier(smallest_encoder(), 3, drop_path_rate=0.0)
    finetune.compile_classifier(model, 1, 4, 2, 4, 5e-1, 0.65, 0.05, 1, label_smoothing=0.1)
    images, labels = batch()
    return model, (images, np.eye(3, dtype="float32")[labels])


def augmented_classifier_model():
    """As `finetune` on arrays compiles it: `AugmentedClassifier` (no random parts here)."""
    classifier = finetune.build_classifier(smallest_encoder(), 3, drop_path_rate=0.0)
    model = finetune.AugmentedClassifier(classifier, 3, label_smoothing=0.1, seed=2)
    model.compile(optimizer=finetune.finetuning_optimizer(model, 1, 4, 2, 4, 5e-1, 0.65, 0.05, 1))
    images, labels = batch()
    return model, ({"images": images, "labels": labels},)


def values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


@pytest.mark.parametrize(
    "make",
    [pretraining_model, probe_model, classifier_model, augmented_classifier_model],
    ids=lambda make: make.__name__,
)
def test_compiled_recipe_model_reloads_and_trains_on_identically(make, tmp_path):
    model, data = make()
    model.train_on_batch(*data)  # optimizer built, moments and step count non-zero
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # plain Keras, after `import keras_mae`
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    schedule = loaded.optimizer.get_config()["learning_rate"]
    assert schedule["registered_name"] == "keras_mae>WarmupCosine"
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 1
    for a, b in zip(values(loaded), values(model)):
        np.testing.assert_array_equal(a, b)
    model.train_on_batch(*data)
    loaded.train_on_batch(*data)
    for a, b, v in zip(values(loaded), values(model), model.variables):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=v.path)


def test_pretraining_optimizer_decays_no_1d_parameter_after_reload(tmp_path):
    mae, _ = pretraining_model()
    mae.optimizer.build(mae.trainable_variables)
    mae.save(tmp_path / "mae.keras")
    loaded = keras.models.load_model(tmp_path / "mae.keras")
    optimizer = loaded.optimizer
    assert type(optimizer).__name__ == "PretrainingAdamW"
    decayed = {v.path: optimizer._use_weight_decay(v) for v in loaded.trainable_variables}
    assert not any(decayed[v.path] for v in loaded.trainable_variables if len(v.shape) <= 1)
    assert all(decayed[v.path] for v in loaded.trainable_variables if len(v.shape) > 1)


def test_layer_decay_optimizer_for_another_model_is_refused():
    model, _ = classifier_model()
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="other")])
    with pytest.raises(ValueError, match="it was made for another model"):
        model.optimizer.build(other.trainable_variables)


def saved_encoder(tmp_path):
    path = str(tmp_path / "encoder.keras")
    smallest_encoder().save(path)
    return path


def test_truncated_and_foreign_keras_files_are_refused_with_the_path(tmp_path):
    path = saved_encoder(tmp_path)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as info:
        keras_mae.load_model(cut)
    message = str(info.value)
    assert repr(str(cut)) in message and "truncated" in message
    assert "Save the model again, download the file again" in message
    with pytest.raises(SystemExit, match="error: .*cut.keras.*truncated"):
        convert.main([str(cut), "--output", str(tmp_path / "out.keras")])
    (tmp_path / "text.keras").write_bytes(b"not a model\n" * 8)
    with pytest.raises(ValueError, match="it is not a zip archive, as every .keras file is"):
        keras_mae.load_model(tmp_path / "text.keras")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="holds no config.json.*members: readme.txt"):
        check_keras_file(tmp_path / "other.keras")
    # A flipped byte inside a member: the archive's checksum finds it.
    damaged = bytearray(data)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    damaged[start] ^= 0xFF
    (tmp_path / "flipped.keras").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="model.weights.h5' fails its checksum|is damaged"):
        keras_mae.load_model(tmp_path / "flipped.keras")
    with pytest.raises(FileNotFoundError, match="no saved model at"):
        keras_mae.load_model(tmp_path / "absent.keras")
    encoder = keras_mae.load_model(path)  # the complete file loads
    assert isinstance(encoder, keras_mae.MAEEncoder)
