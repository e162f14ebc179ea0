"""Defaults that fit the user's data: the architecture from the images, the probe's
learning rate, notes on runs too short to judge, --help, pictures, quiet output."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.recipes import arguments
from keras_mae.recipes.defaults import SHORT_BUDGET
from keras_mae.recipes.defaults import preset_for_images
from keras_mae.recipes.visualization import MASK_FILL
from keras_mae.recipes.visualization import MASK_LINE
from keras_mae.recipes.visualization import reconstruction_grid
from keras_mae.recipes.visualization import spread_over_classes
from tests.examples.test_examples import EXAMPLES
from tests.examples.test_examples import REQUIRED
from tests.examples.test_examples import ROOT
from tests.examples.test_examples import load_example
from tests.examples.test_examples import read_png

FILL, LINE = round(MASK_FILL * 255), round(MASK_LINE * 255)


@pytest.mark.backend_free
def test_the_image_shape_chooses_the_preset():
    assert preset_for_images((32, 32, 3)) == (
        "mae_vit_tiny_patch4",
        {},
        "made for 32x32x3 images",
    )
    assert preset_for_images((8, 8, 1))[:2] == ("mae_vit_micro_patch2", {})
    # 28x28 grey (MNIST): the tiny family, patch 4 divides 28 into a 7x7 grid.
    assert preset_for_images((28, 28, 1))[:2] == (
        "mae_vit_tiny_patch4",
        {"image_shape": (28, 28, 1), "patch_size": 4},
    )
    assert preset_for_images((64, 48, 3))[1] == {"image_shape": (64, 48, 3), "patch_size": 8}
    assert preset_for_images((16, 16, 3))[:2] == (
        "mae_vit_micro_patch2",
        {"image_shape": (16, 16, 3), "patch_size": 4},
    )
    assert preset_for_images((96, 96, 3))[:2] == ("mae_vit_base_patch16", {})
    with pytest.raises(ValueError) as error:
        preset_for_images((31, 29, 3))  # coprime sides: no patch divides both
    message = str(error.value)
    assert "31x29x3" in message and "--preset" in message
    assert "mae_vit_tiny_patch4 (32x32x3)" in message
    assert "mae_vit_micro_patch2" not in message  # a grey preset does not fit RGB


@pytest.mark.backend_free
def test_preset_flag_and_short_recipe_fill_only_what_was_not_given():
    pretrain = load_example("pretrain")
    args = pretrain.parse_args(["--dataset", "folder:x"])
    assert args.preset is None and args.recipe == "official"
    assert arguments.choose_preset(args, (32, 32, 3))[0] == "mae_vit_tiny_patch4"
    args = pretrain.parse_args(["--dataset", "folder:x", "--recipe", "short", "--epochs", "3"])
    assert args.epochs == 3  # given: kept
    for key in ("batch_size", "base_learning_rate", "warmup_epochs", "mask_ratio"):
        if key in SHORT_BUDGET:
            assert getattr(args, key) == SHORT_BUDGET[key], key
    assert args.preset == SHORT_BUDGET["preset"]
    architecture = set(keras_mae.PRESETS[args.preset]["config"]) | {"num_layers"}
    expected = {k: v for k, v in SHORT_BUDGET.items() if k in architecture}
    assert arguments.choose_preset(args, (32, 32, 3)) == (
        SHORT_BUDGET["preset"],
        expected,
        "--recipe short",
    )
    evaluate = load_example("pretrain_and_evaluate")
    args = evaluate.parse_args(["--dataset", "folder:x", "--recipe", "short"])
    assert args.crop_min_scale == SHORT_BUDGET.get("crop_min_scale", 0.2)
    assert evaluate.parse_args(["--dataset", "folder:x"]).crop_min_scale == 0.2


@pytest.mark.backend_free
def test_notes_for_runs_too_short_to_judge():
    pretrain = load_example("pretrain")
    args = pretrain.parse_args(["--epochs", "3", "--warmup-epochs", "5", "--probe-epochs", "20"])
    notes = arguments.schedule_notes(args, pretrain.RECIPES)
    assert len(notes) == 1  # the probe's 10 warmup epochs fit in its 20
    assert "--warmup-epochs 5 is not shorter than --epochs 3" in notes[0]
    assert "whole run is warm-up" in notes[0] and "--warmup-epochs 0.3" in notes[0]
    args = pretrain.parse_args(["--probe-epochs", "8"])
    (note,) = arguments.schedule_notes(args, pretrain.RECIPES)
    assert "--probe-warmup-epochs 10 is not shorter than --probe-epochs 8" in note
    assert arguments.comparison_note(0.96, 0.88, 100) is None
    note = arguments.comparison_note(0.109, 0.655, 3)
    assert "below its random initialisation" in note and "(0.1090 vs 0.6550)" in note
    assert "3 epochs of pre-training are too few" in note and "--recipe short" in note


@pytest.mark.backend_free
def test_every_flag_of_every_example_shows_help_and_default_in_help_output():
    for name in EXAMPLES:
        parser = load_example(name).build_parser()
        os.environ["COLUMNS"] = "200"
        text = parser.format_help()
        for action in parser._actions:
            if "--help" in action.option_strings:
                continue
            option = max(action.option_strings, key=len)
            # The help block of this option: from its line to the next option's.
            block = re.search(
                rf"^  {re.escape(action.option_strings[0])}\b.*?(?=^  -|\Z)",
                text,
                re.M | re.S,
            )
            assert block, (name, option)
            words = " ".join(block.group(0).split())
            assert len(words) > len(option) + 10, (name, option, words)  # a help line
            assert "default" in words or "required" in words, (name, option, words)
        load_example(name).parse_args(REQUIRED.get(name, []))


@pytest.mark.backend_free
def test_spread_over_classes_takes_each_class_in_turn():
    labels = np.repeat([0, 1, 2], [5, 2, 4])  # stored in class order
    np.testing.assert_array_equal(spread_over_classes(labels, 8), [0, 5, 7, 1, 6, 8, 2, 9])
    assert len(spread_over_classes(labels[:3], 8)) == 3


def test_masked_patches_are_drawn_grey_with_a_grid():
    mae = keras_mae.MaskedAutoencoder(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        decoder_hidden_dim=8,
        decoder_num_layers=1,
        decoder_num_heads=2,
        mask_ratio=0.5,
    )
    rng = np.random.default_rng(0)
    images = rng.random((2, 8, 8, 3)).astype("float32")
    images[0] = 0.0  # black, what masked patches used to be
    noise = np.array([[0.1, 0.9, 0.8, 0.2], [0.9, 0.1, 0.2, 0.8]], "float32")
    grid = reconstruction_grid(mae, images, noise=noise, scale=2)
    grid = np.round(grid * 255).astype(int)
    tile = 8 * 2  # image side on screen
    for row, removed in enumerate([[1, 2], [0, 3]]):  # the two largest noises go
        top = 2 + row * (tile + 2)
        masked = grid[top : top + tile, 2 + tile + 2 : 2 + 2 * tile + 2]
        original = grid[top : top + tile, 2 : 2 + tile]
        for patch in range(4):
            y, x = 8 * (patch // 2), 8 * (patch % 2)
            shown = masked[y : y + 8, x : x + 8]
            if patch in removed:
                # Mid grey inside, a one-pixel darker grid on the patch's border.
                assert (shown[1:-1, 1:-1] == FILL).all()
                for edge in (shown[0], shown[-1], shown[:, 0], shown[:, -1]):
                    assert (edge == LINE).all()
            else:
                np.testing.assert_array_equal(shown, original[y : y + 8, x : x + 8])
    assert FILL != 0 and LINE != 0  # never the digits' black background


def make_folder(root, size=32, per_class=4):
    """Red and blue 32x32 RGB PNGs, `train/` and `test/` (each stored in class order)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(["blue", "red"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, (size, size, 3))
                pixels[..., 2 - 2 * label] += 170
                Image.fromarray(pixels.astype("uint8")).save(folder / f"{i}.png")


def test_pretrain_example_takes_the_folder_image_shape(tmp_path, capsys):
    """32x32 RGB files without --preset: a 32x32x3 encoder, its shape printed."""
    make_folder(tmp_path / "data", size=32)
    out = tmp_path / "out"
    pretrain = load_example("pretrain")
    pretrain.main(
        ["--dataset", f"folder:{tmp_path / 'data'}", "--epochs", "0"]
        + ["--batch-size", "8", "--output-dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert "model: mae_vit_tiny_patch4 (chosen for the data: made for 32x32x3 images)" in printed
    assert "images 32x32x3, patch 4, grid 8x8 = 64 patches, mask ratio 0.75" in printed
    encoder = keras.models.load_model(out / "encoder.keras")
    assert tuple(encoder.image_shape) == (32, 32, 3)


def test_pretrain_example_on_a_folder_is_quiet_and_draws_both_classes(tmp_path):
    """In a fresh process, as a user runs it: 16x16 RGB files take the micro family
    at patch 4; a note on the too-short schedule; a picture of both classes with
    the removed patches grey; no TensorFlow or Keras noise in the output."""
    make_folder(tmp_path / "data", size=16)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user's shell has
    command = [sys.executable, os.path.join(ROOT, "examples", "pretrain.py")]
    command += ["--dataset", f"folder:{tmp_path / 'data'}", "--epochs", "1"]
    command += ["--warmup-epochs", "5", "--batch-size", "8", "--output-dir", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "model: mae_vit_micro_patch2 (chosen for the data: its family resized to " in printed
    assert "images 16x16x3, patch 4, grid 4x4 = 16 patches, mask ratio 0.5 (8 visible)" in printed
    assert "--warmup-epochs 5 is not shorter than --epochs 1" in printed
    noises = ["cuInit", "shuffle"]
    if keras.backend.backend() != "tensorflow":
        # TensorFlow is only the pipeline here, imported quietly. Under its own
        # backend `import keras` imports it first, and its kernels log notices
        # (oneDNN's, as I0000 / E0000 lines) while the model trains.
        noises += ["E0000", "I0000", "absl::InitializeLog"]
    for noise in noises:
        assert noise not in printed, (noise, printed)
    grid = read_png(out / "reconstructions.png")
    tile = 16 * 8  # 128 // 16 = 8x upscaling
    assert grid.shape == (8 * (tile + 2) + 2, 3 * (tile + 2) + 2, 3)
    for row in range(8):
        top = 2 + row * (tile + 2)
        original = grid[top : top + tile, 2 : 2 + tile].reshape(-1, 3).mean(0)
        blue = original[2] > original[0]
        assert blue == (row % 2 == 0)  # the test files alternate: blue, red, blue, ...
        masked = grid[top : top + tile, 4 + tile : 4 + 2 * tile]
        removed = 0
        for y in range(0, tile, 32):
            for x in range(0, tile, 32):
                shown = masked[y : y + 32, x : x + 32]
                if (shown[1:-1, 1:-1] == FILL).all() and (shown[0] == LINE).all():
                    removed += 1
        assert removed == 8  # half of the 16 patches


@pytest.mark.backend_free
def test_defaults_left_out_fit_a_small_folder_and_a_short_run(tmp_path, capsys):
    """16 training images, 5 epochs: the official batch 256 becomes 16 and the official
    40 warm-up epochs a tenth of the run, each said in one line; a batch given too
    large is refused with the batch that fits."""
    import time

    make_folder(tmp_path / "data", size=8, per_class=8)
    dataset = f"folder:{tmp_path / 'data'}"
    evaluate = load_example("pretrain_and_evaluate")
    args = evaluate.start_run(
        ["--dataset", dataset, "--epochs", "5", "--output-dir", str(tmp_path / "out")]
    )
    (train, _), _ = evaluate.load_images(args, time.time())
    printed = capsys.readouterr().out
    warmup = (
        "warm-up: 0.5 epochs, a tenth of the 5 epochs (the official 40 would make the whole "
        "run warm-up); give --warmup-epochs to choose another"
    )
    assert args.warmup_epochs == 0.5 and warmup in printed
    assert "not shorter than" not in printed  # no note: the run is no longer all warm-up
    assert (args.batch_size, len(train)) == (256, 16)
    assert arguments.fit_batch_to_data(args, len(train)) == (
        "batch size: 16 (the official 256 capped to the 16 training images, one full batch "
        "per epoch); give --batch-size to choose another"
    )
    assert args.batch_size == 16
    # Given flags are kept; a batch given too large says what to pass.
    args = evaluate.parse_args(
        ["--dataset", dataset, "--epochs", "5", "--warmup-epochs", "2", "--batch-size", "32"]
    )
    assert (args.warmup_epochs, args.fitted) == (2, [])
    with pytest.raises(ValueError) as raised:
        arguments.fit_batch_to_data(args, 16)
    assert str(raised.value) == (
        f"--batch-size 32 is larger than the 16 training images of {dataset}: an epoch "
        "would hold no full batch. Pass --batch-size 16 or fewer, or add images."
    )
    assert arguments.fit_batch_to_data(args, 32) is None and args.batch_size == 32
    args = evaluate.parse_args(["--dataset", dataset, "--recipe", "short"])
    with pytest.raises(ValueError, match="--recipe short's batch size 64 is larger than the 16"):
        arguments.fit_batch_to_data(args, 16)
    # The streaming example alike; a run longer than the official warm-up keeps it.
    pretrain = load_example("pretrain")
    for epochs, expected in [(40, 4.0), (41, 40)]:
        args = pretrain.parse_args(["--dataset", "tfds:x", "--epochs", str(epochs)])
        assert args.warmup_epochs == expected, epochs
    # The digits keep their own defaults and notes.
    args = pretrain.parse_args(["--epochs", "3"])
    assert (args.warmup_epochs, args.fitted, args.batch_size) == (5, [], 128)
    assert "--warmup-epochs 5 is not shorter than --epochs 3" in "".join(
        arguments.schedule_notes(args, pretrain.RECIPES)
    )
    assert arguments.fit_batch_to_data(args, 1438) is None and args.batch_size == 128


def test_pretrain_refuses_a_source_smaller_than_a_batch_with_the_batch_that_fits():
    from keras_mae.data.tf_pipeline import ArraySource
    from keras_mae.recipes.pretrain import pretrain
    from tests.helpers.tiny import smallest_mae

    source = ArraySource(np.zeros((12, 8, 8, 1), "uint8"))
    with pytest.raises(ValueError) as raised:
        pretrain(smallest_mae(), source, epochs=1, batch_size=16)
    assert str(raised.value) == (
        "batch_size=16 is larger than the 12 training images: an epoch would hold no full "
        "batch. Pass batch_size=12 or fewer (--batch-size 12 in the examples), or add images."
    )
