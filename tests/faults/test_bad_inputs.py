"""Bad inputs are refused before any training, with a message that helps.

Each case feeds one kind of bad input (a degenerate mask ratio, integer pixels
with nothing to normalise them, noise of the wrong shape or with NaN, an empty
array, a corrupt image file, a whole MAE where an encoder is expected, a
compute dtype the device cannot run, a degenerate constructor argument) and
checks the exception's type, that its message names the value and says what to
do, and that nothing was lost: weights unchanged after a refused `fit`, files
untouched, no output written.
"""

import importlib.util
import io
import os

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.data.image_folder import check_image_files
from keras_mae.data.image_folder import list_image_folder
from keras_mae.data.image_folder import load_image_folder
from keras_mae.models.checks import check_data
from keras_mae.recipes.checks import recipe_encoder
from keras_mae.recipes.finetune import finetune
from keras_mae.recipes.linear_probe import linear_probe
from keras_mae.recipes.pretrain import pretrain
from tests.conftest import to_numpy
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_encoder
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae
from tests.helpers.tiny import tiny_noise

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMPTY = np.zeros((0, *TINY["image_shape"]), "float32")


def weights_of(model):
    return [to_numpy(w).copy() for w in model.weights]


def assert_unchanged(model, before):
    after = weights_of(model)
    assert len(after) == len(before)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)


def compiled_mae(**overrides):
    mae = tiny_mae(**overrides)
    mae.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return mae


def labels(n, classes=2):
    return (np.arange(n) % classes).astype("int64")


# --- mask_ratio --------------------------------------------------------------------

ZERO_OR_OUT_OF_RANGE = [0.0, 0, -0.1, 1.0, 1.5, float("nan")]


@pytest.mark.parametrize("ratio", ZERO_OR_OUT_OF_RANGE)
def test_mask_ratio_outside_the_open_interval_is_refused_everywhere(ratio):
    makers = {
        "MaskedAutoencoder": lambda: tiny_mae(mask_ratio=ratio),
        "RandomMasking": lambda: keras_mae.RandomMasking(ratio),
        "from_preset": lambda: keras_mae.MaskedAutoencoder.from_preset(
            "mae_vit_micro_patch2", mask_ratio=ratio
        ),
    }
    for name, make in makers.items():
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)") as error:
            make()
        message = str(error.value)
        assert f"Received: mask_ratio={ratio}" in message, name
        assert "Use e.g. 0.75" in message, name


@pytest.mark.parametrize("ratio", ["0.75", True, None])
def test_mask_ratio_that_is_not_a_number(ratio):
    with pytest.raises(ValueError, match=rf"number in \(0, 1\).*mask_ratio={ratio!r}"):
        tiny_mae(mask_ratio=ratio)


def test_a_small_mask_ratio_that_masks_one_patch_works():
    # 0 masked nothing (the loss was exactly 0 and fit changed no weight); 0.1
    # masks one patch of 6.
    out = tiny_mae(mask_ratio=0.1)(tiny_images(), noise=tiny_noise())
    np.testing.assert_array_equal(to_numpy(out["mask"]).sum(axis=1), [1] * BATCH)


@pytest.mark.parametrize(
    "ratio,problem",
    [
        (0.9, r"keeps no patch out of 6 \(int\(6 \* \(1 - 0.9\)\) = 0 kept\)"),
        (1e-17, r"masks no patch out of 6 \(int\(6 \* \(1 - 1e-17\)\) = 6 kept\)"),
    ],
)
def test_mask_ratio_must_keep_one_patch_and_mask_one(ratio, problem):
    with pytest.raises(ValueError, match=problem) as error:
        tiny_mae(mask_ratio=ratio)
    # The message says which ratios work for this patch count.
    assert r"use a mask_ratio in (0, 0.83] for 6 patches (e.g. 0.75)" in str(error.value)
    keras_mae.MaskedAutoencoder(**{**TINY, "mask_ratio": 0.83})  # the bound it names works


def test_a_single_patch_cannot_be_masked():
    with pytest.raises(ValueError, match="one patch cannot be both visible and masked"):
        keras_mae.MaskedAutoencoder(**{**TINY, "image_shape": (4, 4, 2)})


def test_random_masking_names_the_token_count_it_is_called_with():
    layer = keras_mae.RandomMasking(0.95)  # valid alone; too much for 6 tokens
    with pytest.raises(ValueError, match=r"keeps no token out of 6.*\(0, 0.83\] for 6 tokens"):
        layer(np.zeros((2, 6, 4), "float32"))


# --- integer images ----------------------------------------------------------------


def test_integer_images_without_augmentation_are_refused_by_fit_and_call():
    mae = compiled_mae()
    before = weights_of(mae)
    images = tiny_images(dtype="uint8")
    for data in (images, {"images": images}, (images,)):
        with pytest.raises(ValueError, match="images are uint8") as error:
            mae.fit(data, batch_size=4, epochs=1, verbose=0)
        message = str(error.value)
        assert "astype('float32') / 255" in message
        assert "keras.layers.Rescaling(1 / 255)" in message
    with pytest.raises(ValueError, match="images are int32.*no augmentation"):
        mae(images.astype("int32"))
    with pytest.raises(ValueError, match="images are uint8.*no augmentation"):
        mae.evaluate(images, verbose=0)
    assert_unchanged(mae, before)
    # The advice works: the same pixels as floats pass, and the loss is small.
    floats = images.astype("float32") / 255
    check_data(mae, floats)
    assert float(to_numpy(mae.compute_loss(floats, training=False))) < 10


def test_integer_tf_data_is_refused_before_the_first_step():
    tf = pytest.importorskip("tensorflow")
    mae = compiled_mae()
    before = weights_of(mae)
    dataset = tf.data.Dataset.from_tensor_slices(tiny_images(dtype="uint8")).batch(4)
    with pytest.raises(ValueError, match="images are uint8"):
        mae.fit(dataset, epochs=1, verbose=0)
    assert_unchanged(mae, before)


def test_integer_images_with_an_augmentation_that_does_not_normalise_warn():
    flip = keras.Sequential([keras.layers.RandomFlip("horizontal")], name="flip_only")
    mae = tiny_mae(augmentation=flip)
    with pytest.warns(UserWarning, match="'flip_only' holds no keras.layers.Rescaling"):
        mae(tiny_images(dtype="uint8"))
    rescaled = keras.Sequential([keras.layers.Rescaling(1 / 255)], name="rescale")
    mae = tiny_mae(augmentation=rescaled)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mae(tiny_images(dtype="uint8"), training=False)
    assert float(to_numpy(out["images"]).max()) <= 1.0


def test_pretrain_refuses_integer_arrays_and_writes_nothing(tmp_path):
    mae = tiny_mae()
    before = weights_of(mae)
    output = tmp_path / "run"
    for data in (tiny_images(dtype="uint8"), (tiny_images(dtype="uint8"), labels(BATCH))):
        with pytest.raises(ValueError, match="images are uint8.*Rescaling"):
            pretrain(mae, data, epochs=1, batch_size=4, output_dir=str(output), verbose=0)
    assert not output.exists()
    assert_unchanged(mae, before)


def test_recipes_warn_about_integer_images_whose_augmentation_does_not_normalise():
    encoder = tiny_encoder()
    train = (tiny_images(dtype="uint8"), labels(BATCH))
    flip = keras.layers.RandomFlip("horizontal", name="flip")
    with pytest.warns(UserWarning, match="train and test images are uint8.*'flip' holds no"):
        assert recipe_encoder(encoder, train, train, flip, "finetune") is encoder


# --- noise -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(1, NUM_PATCHES), (3, NUM_PATCHES), (BATCH, NUM_PATCHES + 1), (BATCH,), (4, 6, 1)]
)
def test_noise_must_be_one_row_per_image(shape):
    mae = tiny_mae()
    noise = np.random.default_rng(0).random(shape).astype("float32")
    for call in (
        lambda: mae(tiny_images(), noise=noise),
        lambda: mae({"images": tiny_images(), "noise": noise}),
        lambda: keras_mae.RandomMasking(0.5)(np.zeros((BATCH, NUM_PATCHES, 4), "float32"), noise),
    ):
        with pytest.raises(ValueError, match=r"noise must have shape \(batch, L\) = \(4, 6\)") as e:
            call()
        assert f"Received: noise.shape={shape} for 4 image(s)" in str(e.value)
        assert "one row per image" in str(e.value)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_noise_is_refused(value):
    noise = tiny_noise()
    noise[3, 2] = value
    with pytest.raises(ValueError, match=r"noise holds 1 non-finite value\(s\) .* out of 24"):
        tiny_mae()(tiny_images(), noise=noise)


def test_noise_of_the_wrong_length_is_refused_when_fit_traces():
    mae = compiled_mae()
    before = weights_of(mae)
    data = {"images": tiny_images(), "noise": np.zeros((BATCH, NUM_PATCHES + 1), "float32")}
    with pytest.raises(ValueError, match=r"noise must have shape \(batch, L\) = \(\w+, 6\)"):
        mae.fit(data, batch_size=4, epochs=1, verbose=0)
    assert_unchanged(mae, before)
    # One row per image passes and gives the official mask.
    noise = tiny_noise()
    mask = to_numpy(mae(tiny_images(), noise=noise)["mask"])
    np.testing.assert_array_equal(mask, np.argsort(np.argsort(noise, 1), 1) >= 1)


# --- empty arrays ------------------------------------------------------------------


def test_fit_on_no_images_says_so():
    mae = compiled_mae()
    before = weights_of(mae)
    for data in (EMPTY, {"images": EMPTY}):
        with pytest.raises(ValueError, match=r"0 images: fit received x of shape \(0, 8, 12, 2\)"):
            mae.fit(data, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="0 images: fit received validation_data"):
        mae.fit(tiny_images(), validation_data=(EMPTY,), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="0 images: evaluate received x"):
        mae.evaluate(EMPTY, verbose=0)
    assert_unchanged(mae, before)


def test_fit_on_an_empty_dataset_says_so():
    tf = pytest.importorskip("tensorflow")
    mae = compiled_mae()
    dataset = tf.data.Dataset.from_tensor_slices(EMPTY).batch(4)
    with pytest.raises(ValueError, match="0 images: the dataset given as x to fit is empty"):
        mae.fit(dataset, epochs=1, verbose=0)


def test_pretrain_on_no_images_says_so_and_writes_nothing(tmp_path):
    mae = tiny_mae()
    before = weights_of(mae)
    for data in (EMPTY, (EMPTY, labels(0))):
        with pytest.raises(ValueError, match="0 images in train_data given to pretrain"):
            pretrain(mae, data, epochs=1, batch_size=4, output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    assert_unchanged(mae, before)


def test_pretrain_refuses_an_output_dir_it_cannot_write_before_any_work(tmp_path):
    mae = tiny_mae()
    before = weights_of(mae)
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder")
    with pytest.raises(ValueError, match=r"output_dir '.*results.txt' is a file, not a folder"):
        pretrain(mae, tiny_images(), epochs=1, batch_size=4, output_dir=str(taken))
    with pytest.raises(ValueError, match=r"lies under '.*results.txt', which is a file"):
        pretrain(mae, tiny_images(), epochs=1, batch_size=4, output_dir=str(taken / "run"))
    assert taken.read_text() == "not a folder" and not mae.compiled
    assert_unchanged(mae, before)


@pytest.mark.backend_free
def test_output_dir_flag_is_refused_at_parsing_with_the_way_out(tmp_path, monkeypatch, capsys):
    from keras_mae.recipes.checks import check_output_dir
    from tests.examples.test_examples import load_example

    taken = tmp_path / "mae_output"
    taken.write_text("")
    for name in ("pretrain", "pretrain_and_evaluate"):
        with pytest.raises(SystemExit) as exit_:
            load_example(name).parse_args(["--output-dir", str(taken)])
        assert exit_.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert f"error: argument --output-dir: --output-dir {str(taken)!r} is a file" in error
        assert "Pass a new or existing folder (e.g. " in error and "_run'" in error
    # A folder that exists, or a new one in a writable folder, passes as given.
    assert check_output_dir(str(tmp_path)) == str(tmp_path)
    assert check_output_dir(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")
    # A read-only disk or a folder of another user (os.access says no; root may
    # write anywhere, so the refusal is simulated).
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot be written: '.*' is on a read-only disk"):
        check_output_dir(str(tmp_path / "new" / "run"))


@pytest.mark.parametrize("recipe", [linear_probe, finetune])
def test_probe_and_finetune_on_no_images_say_so(recipe):
    encoder = tiny_encoder()
    before = weights_of(encoder)
    some = (tiny_images(), labels(BATCH))
    with pytest.raises(ValueError, match=rf"0 images in train given to {recipe.__name__}"):
        recipe(encoder, (EMPTY, labels(0)), some, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"0 images in test .*\(images of shape \(0, 8, 12, 2\)\)"):
        recipe(encoder, some, (EMPTY, labels(0)), epochs=1, batch_size=4)
    assert_unchanged(encoder, before)


# --- corrupt image files -----------------------------------------------------------


def encoded(pixels, fmt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    """A train split of two classes, 3 good JPEG/PNG files each; returns its root."""
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16, 3)).astype("uint8")
            fmt = "JPEG" if i % 2 else "PNG"
            (folder / f"{i}.{fmt.lower()}").write_bytes(encoded(pixels, fmt))
    return tmp_path


def corrupt_files():
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype("uint8")
    jpeg, png = encoded(pixels, "JPEG"), encoded(pixels, "PNG")
    return {
        "garbage.jpg": (b"this is not a jpeg", "not a JPEG, PNG, GIF, BMP or WebP file"),
        "empty.jpg": (b"", r"empty file \(0 bytes\)"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "damaged or truncated JPEG file"),
        "no_end.jpg": (jpeg[:-2], "damaged or truncated JPEG file"),
        "header_only.jpg": (jpeg[:20], "damaged or truncated JPEG file"),
        "truncated.png": (png[: len(png) // 2], "damaged or truncated PNG file"),
    }


@pytest.mark.backend_free
@pytest.mark.parametrize("name", sorted(corrupt_files()))
def test_a_corrupt_file_is_named_when_the_folder_is_listed(image_folder, name):
    data, reason = corrupt_files()[name]
    path = image_folder / "train" / "b" / name
    path.write_bytes(data)
    files = {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file()}
    loaders = [
        lambda: list_image_folder(str(image_folder)),
        lambda: load_image_folder(str(image_folder), workers=1),
    ]
    if importlib.util.find_spec("tensorflow") is not None:
        from keras_mae.data import load_source

        loaders.append(lambda: load_source(f"folder:{image_folder}"))
    for load in loaders:
        with pytest.raises(ValueError, match=f"cannot decode image file {str(path)!r}: ") as e:
            load()
        message = str(e.value)
        assert f"{str(path)!r}: " in message and reason.replace("\\", "") in message.replace(
            "\\", ""
        )
        assert "1 of 7 files" in message and "delete or replace them" in message
    # Nothing was touched.
    assert files == {p: p.read_bytes() for p in image_folder.rglob("*") if p.is_file()}


@pytest.mark.backend_free
def test_many_corrupt_files_are_counted_and_the_first_ones_named(image_folder):
    for i in range(7):
        (image_folder / "train" / "a" / f"bad{i}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot decode image files: 7 of 13") as error:
        list_image_folder(str(image_folder))
    assert "bad0.jpg" in str(error.value) and "(and 2 more)" in str(error.value)


@pytest.mark.backend_free
def test_damage_inside_a_file_needs_the_full_decode(image_folder):
    # Signature and end intact, the middle overwritten: the fast check lets it
    # through (TensorFlow may then fail on it mid-epoch); check="decode" names it.
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype("uint8")
    jpeg = encoded(pixels, "JPEG")
    middle = jpeg[:600] + b"\x00" * 2000 + jpeg[2600:]
    path = image_folder / "train" / "a" / "middle.jpg"
    path.write_bytes(middle)
    paths, _, _ = list_image_folder(str(image_folder))
    assert str(path) in paths
    with pytest.raises(ValueError, match="middle.jpg.*damaged or truncated JPEG"):
        list_image_folder(str(image_folder), check="decode")
    with pytest.raises(ValueError, match="check must be 'header', 'decode' or None"):
        check_image_files(paths, check="full")


@pytest.mark.backend_free
def test_good_files_with_a_misleading_extension_or_trailing_bytes_pass(image_folder):
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3)).astype("uint8")
    folder = image_folder / "train" / "a"
    (folder / "png_named.jpg").write_bytes(encoded(pixels, "PNG"))  # decoders sniff content
    (folder / "padded.jpg").write_bytes(encoded(pixels, "JPEG") + b"\x00" * 4096)
    images, _, _ = load_image_folder(str(image_folder), workers=1)
    assert images.shape == (8, 16, 16, 3)


# --- a whole MAE where an encoder is expected --------------------------------------


def test_the_recipes_take_a_whole_mae_for_its_encoder(capsys):
    mae = tiny_mae()
    train = (tiny_images(), labels(BATCH))
    for recipe in ("linear_probe", "finetune"):
        assert recipe_encoder(mae, train, train, recipe=recipe) is mae.encoder
        notice = f"{recipe}: got a whole MaskedAutoencoder; using its encoder (mae.encoder"
        assert notice in capsys.readouterr().out
    for recipe in (linear_probe, finetune):
        with pytest.raises(TypeError, match="takes a keras_mae.MAEEncoder .* Received: Dense"):
            recipe(keras.layers.Dense(3), train, train, epochs=1)


def test_linear_probe_example_accepts_a_saved_mae(tmp_path, capsys):
    # `--encoder mae.keras` used to end in "'MaskedAutoencoder' object has no
    # attribute 'input_shape'".
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for name in ("a", "b"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count // 2):
                pixels = rng.integers(0, 256, (8, 12)).astype("uint8")
                Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    path = str(tmp_path / "mae.keras")
    tiny_mae(image_shape=(8, 12, 1)).save(path)
    spec = importlib.util.spec_from_file_location(
        "linear_probe_example", os.path.join(ROOT, "examples", "linear_probe.py")
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--encoder", path, "--dataset", f"folder:{tmp_path / 'data'}", "--epochs", "1"]
    example.main(argv + ["--batch-size", "4", "--base-learning-rate", "0.1", "--verbose", "0"])
    out = capsys.readouterr().out
    assert "using its encoder" in out and "test accuracy (cls pooling" in out


# --- compute dtype the device cannot run -------------------------------------------

JAX_ON_CPU = (
    keras.backend.backend() == "jax" and importlib.import_module("jax").default_backend() == "cpu"
)


@pytest.mark.skipif(not JAX_ON_CPU, reason="float16 is refused only under JAX on a CPU")
@pytest.mark.parametrize("policy", ["mixed_float16", "float16"])
def test_float16_under_jax_on_a_cpu_is_refused_at_construction(policy):
    for make, owner in ((tiny_mae, "MaskedAutoencoder"), (tiny_encoder, "MAEEncoder")):
        with pytest.raises(ValueError, match=f"dtype='{policy}' computes the {owner} in float16"):
            make(dtype=policy)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with pytest.raises(ValueError, match="Use dtype='mixed_bfloat16'"):
            tiny_mae()
    finally:
        keras.config.set_dtype_policy(previous)
    tiny_mae(dtype="mixed_bfloat16")  # what the message advises works


@pytest.mark.skipif(JAX_ON_CPU, reason="float16 cannot run under JAX on a CPU")
def test_float16_elsewhere_is_accepted():
    mae = tiny_mae(dtype="mixed_float16")
    out = mae(tiny_images(), noise=tiny_noise())
    assert keras.backend.standardize_dtype(out["pred"].dtype) == "float16"
    assert np.isfinite(float(to_numpy(mae.compute_loss(tiny_images(), y_pred=out))))


# --- degenerate constructor arguments ----------------------------------------------

BAD_ARGUMENTS = {
    "heads": ({"num_heads": 3}, "num_heads=3 does not divide hidden_dim=16", "(e.g. 2)"),
    "decoder_heads": (
        {"decoder_num_heads": 3},
        "decoder_num_heads=3 does not divide decoder_hidden_dim=8",
        "(e.g. 2)",
    ),
    "no_heads": ({"num_heads": 0}, "num_heads must be an integer >= 1", "num_heads=0"),
    "float_width": ({"hidden_dim": 16.0}, "hidden_dim must be an integer", "use 16"),
    "float_layers": ({"num_layers": 2.5}, "num_layers must be an integer", "num_layers=2.5"),
    "no_layers": ({"num_layers": 0}, "num_layers must be an integer >= 1", "num_layers=0"),
    "no_decoder_layers": ({"decoder_num_layers": 0}, "decoder_num_layers must be", "=0"),
    "decoder_width": (
        {"decoder_hidden_dim": 10},
        "decoder_hidden_dim must be a positive multiple of 4",
        "use e.g. 8",
    ),
    "width": ({"hidden_dim": -4}, "hidden_dim must be an integer >= 1", "hidden_dim=-4"),
    "mlp": ({"mlp_ratio": 0.01}, "int(16 * 0.01) = 0 MLP units", "mlp_ratio >= 0.0625"),
    "decoder_mlp": (
        {"mlp_ratio": 0.1},
        "int(decoder_hidden_dim * mlp_ratio) = int(8 * 0.1) = 0",
        "mlp_ratio >= 0.125",
    ),
    "mlp_nan": ({"mlp_ratio": float("nan")}, "mlp_ratio must be a finite number > 0", "nan"),
    "epsilon": ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon must be a finite", "=0.0"),
    "negative_epsilon": ({"layer_norm_epsilon": -1e-6}, "layer_norm_epsilon must be", "-1e-06"),
    "norm_pix_loss": ({"norm_pix_loss": "yes"}, "norm_pix_loss must be True or False", "'yes'"),
    "seed": ({"seed": "a"}, "seed must be an integer or None", "seed='a'"),
    "indivisible": ({"image_shape": (8, 13, 2)}, "image size (8, 13) is not divisible", "4"),
    "patch": ({"patch_size": 0}, "patch_size must be a positive integer", "patch_size=0"),
    "channels": ({"image_shape": (8, 12, 0)}, "positive integer channels", "(8, 12, 0)"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_degenerate_constructor_arguments_are_named(case):
    overrides, problem, value = BAD_ARGUMENTS[case]
    with pytest.raises(ValueError) as error:
        tiny_mae(**overrides)
    assert problem in str(error.value) and value in str(error.value)


def test_random_masking_seed_must_be_an_integer():
    with pytest.raises(ValueError, match="seed must be an integer or None. Received: seed=1.5"):
        keras_mae.RandomMasking(0.75, seed=1.5)
