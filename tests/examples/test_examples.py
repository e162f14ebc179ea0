import importlib.util
import os
import zlib

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.recipes.visualization import write_png

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_example(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "examples", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_png(path):
    """Decode the 8-bit, filter-0 PNGs that write_png makes."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    channels = {0: 1, 2: 3}[data[25]]
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = zlib.decompress(data[start : start + length])
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, channels)


@pytest.mark.backend_free
def test_write_png_roundtrip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    write_png(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), image)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_png(tmp_path / "b.png", np.zeros((4, 4, 2)))


def test_pretrain_example_end_to_end_quick(tmp_path, capsys):
    pretrain = load_example("pretrain")
    out = str(tmp_path)
    pretrain.main(["--epochs", "1", "--probe-epochs", "3", "--verbose", "0", "--output-dir", out])
    printed = capsys.readouterr().out
    assert "pre-training: 1 epochs" in printed
    lines = [line for line in printed.splitlines() if line.startswith("linear probe")]
    assert len(lines) == 2
    for line in lines:
        trained, random = (float(part.split()[-1]) for part in line.split("|"))
        assert 0.0 <= trained <= 1.0 and 0.0 <= random <= 1.0
    grid = read_png(os.path.join(out, "reconstructions.png"))
    assert grid.shape == (8 * 66 + 2, 3 * 66 + 2, 1)  # 8 digits x (original, masked, recon)
    encoder = keras.models.load_model(os.path.join(out, "encoder.keras"))
    assert isinstance(encoder, keras_mae.MAEEncoder)
    mae = keras.models.load_model(os.path.join(out, "mae.keras"))
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(encoder(images)), keras.ops.convert_to_numpy(mae.encoder(images))
    )


@pytest.mark.backend_free
def test_pretrain_example_rejects_unknown_dataset():
    pretrain = load_example("pretrain")
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--dataset", "imagenet"])


def test_pretrain_and_evaluate_example_on_an_image_folder(tmp_path, capsys):
    """The in-memory folder example end to end (micro preset, grey 8x8 PNGs):
    pre-training with on-device augmentation, probe and fine-tune, both encoders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(["dark", "light"]):
        folder = tmp_path / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 128, (8, 8)) + 127 * label
            Image.fromarray(pixels.astype("uint8")).save(folder / f"{i:02d}.png")
    example = load_example("pretrain_and_evaluate")
    out = tmp_path / "out"
    example.main(
        [
            "--dataset",
            f"folder:{tmp_path / 'data'}",
            "--holdout-per-class",
            "4",
            "--preset",
            "mae_vit_micro_patch2",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--probe-epochs",
            "30",
            "--probe-batch-size",
            "8",
            "--probe-base-learning-rate",
            "6.4",
            "--finetune-epochs",
            "2",
            "--finetune-batch-size",
            "8",
            "--finetune-randaugment-magnitude",  # RandAugment on 8x8 grey images is noise
            "0",
            "--verbose",
            "0",
            "--output-dir",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "40 training and 8 held-out images of 2 classes" in printed
    assert "pre-training: 2 epochs" in printed
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["pretraining"]["epochs"] == 2
    for name in ("pre-trained", "random init"):
        assert 0.0 <= results[f"finetune {name}"] <= 1.0
    # The two classes differ in brightness alone: even the random-init cls token
    # separates them.
    assert results["probe random init cls"]["6.4"] >= 0.75
    grid = read_png(out / "reconstructions.png")
    assert grid.shape == (8 * (4 * 8 + 2) + 2, 3 * (4 * 8 + 2) + 2, 1)
    # Row i, first column: held-out image i (files 20-23 of each class, taken in
    # turn from each class), 4x upscaled, back on its own 0-255 scale after
    # normalisation and un-normalisation.
    held_out = [
        tmp_path / "data" / "train" / c / f"{i:02d}.png"
        for i in range(20, 24)
        for c in ("dark", "light")
    ]
    for row, path in enumerate(held_out):
        tile = grid[2 + row * 34 : 2 + row * 34 + 32 : 4, 2:34:4, 0].astype(int)
        assert np.abs(tile - np.asarray(Image.open(path), int)).max() <= 1
    encoder = keras.models.load_model(out / "encoder.keras")
    assert isinstance(encoder, keras_mae.MAEEncoder)


EXAMPLES = ("pretrain", "pretrain_and_evaluate", "linear_probe", "finetune")
# The recipe each flag prefix belongs to, and the example where it has no prefix.
PREFIXES = {"probe": "linear_probe", "finetune": "finetune"}
REQUIRED = {"linear_probe": ["--encoder", "x.keras"], "finetune": ["--encoder", "x.keras"]}


def example_flags(name):
    """`{option: action}` of an example's command line."""
    parser = load_example(name).build_parser()
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


def signature(action):
    def frozen(value):
        return tuple(value) if isinstance(value, list) else value

    return (
        frozen(action.default),
        action.type,
        action.nargs,
        frozen(action.choices),
        action.required,
    )


def recipe_flags(recipe):
    """`{option: action}` of one recipe's flags as the arguments module adds them."""
    import argparse

    from keras_mae.recipes import arguments

    parser = argparse.ArgumentParser()
    {
        "pretrain": arguments.add_pretrain_arguments,
        "linear_probe": arguments.add_linear_probe_arguments,
        "finetune": arguments.add_finetune_arguments,
    }[recipe](parser)
    return {o: a for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}


# The recipes each example runs, and the prefix of each recipe's flags there.
RECIPES = {
    "pretrain": {"pretrain": "", "linear_probe": "probe"},
    "pretrain_and_evaluate": {"pretrain": "", "linear_probe": "probe", "finetune": "finetune"},
    "linear_probe": {"linear_probe": ""},
    "finetune": {"finetune": ""},
}


@pytest.mark.backend_free
def test_examples_share_one_vocabulary():
    flags = {name: example_flags(name) for name in EXAMPLES}
    retired = {"--learning-rate", "--blr", "--data", "--probe-blr", "--finetune-blr"}
    retired |= {"--drop-path", "--smoothing", "--randaugment"}
    for name, options in flags.items():
        assert not retired & set(options), (name, retired & set(options))
        for option, action in options.items():  # a help line that shows the default
            assert action.help and ("default" in action.help or action.required), (name, option)
    # Each recipe's flags: in every example that runs it, all of them, alike, under
    # the recipe's prefix.
    recipe_options = {name: set() for name in EXAMPLES}
    for name, recipes in RECIPES.items():
        for recipe, prefix in recipes.items():
            for option, action in recipe_flags(recipe).items():
                named = f"--{prefix}-{option[2:]}" if prefix else option
                assert named in flags[name], (name, named)
                assert signature(flags[name][named]) == signature(action), (name, named)
                recipe_options[name].add(named)
    # Every other flag in several examples means and defaults the same in each
    # (each example writes its results into a folder of its own).
    others = {name: set(flags[name]) - recipe_options[name] for name in EXAMPLES}
    for option in set().union(*others.values()) - {"--output-dir"}:
        owners = [name for name in EXAMPLES if option in others[name]]
        signatures = {signature(flags[name][option]) for name in owners}
        assert len(signatures) == 1, (option, owners, signatures)
    assert all({"--dataset", "--seed", "--verbose"} <= others[name] for name in EXAMPLES)
    assert {"--output-dir", "--preset"} <= others["pretrain"] & others["pretrain_and_evaluate"]
    assert {"--data-dir", "--crop-fraction"} <= others["linear_probe"] & others["finetune"]
    # A flag outside the recipes' vocabulary is one of these, each explained in its help.
    assert set().union(*others.values()) == {
        "--dataset",
        "--data-dir",
        "--holdout-per-class",
        "--preset",
        "--recipe",
        "--crop-min-scale",
        "--distribution",
        "--encoder",
        "--crop-fraction",
        "--no-cache",
        "--image-size",
        "--seed",
        "--output-dir",
        "--verbose",
    }


@pytest.mark.backend_free
@pytest.mark.parametrize("dataset", ["digits", "folder:images"])
def test_examples_fill_the_recipe_defaults_of_the_dataset(dataset):
    import inspect

    from keras_mae.recipes.defaults import DEFAULTS
    from keras_mae.recipes.defaults import recipe_defaults
    from keras_mae.recipes.finetune import finetune
    from keras_mae.recipes.linear_probe import linear_probe
    from keras_mae.recipes.pretrain import pretrain

    # The library's defaults are the table's (the official values).
    for recipe, function in [
        ("pretrain", pretrain),
        ("linear_probe", linear_probe),
        ("finetune", finetune),
    ]:
        parameters = inspect.signature(function).parameters
        for key, value in DEFAULTS[recipe].items():
            if key in parameters:
                assert parameters[key].default == value, (recipe, key)
    uses = {
        "pretrain": [("pretrain", ""), ("linear_probe", "probe_")],
        "pretrain_and_evaluate": [
            ("pretrain", ""),
            ("linear_probe", "probe_"),
            ("finetune", "finetune_"),
        ],
        "linear_probe": [("linear_probe", "")],
        "finetune": [("finetune", "")],
    }
    for name, recipes in uses.items():
        args = load_example(name).parse_args(["--dataset", dataset] + REQUIRED.get(name, []))
        for recipe, prefix in recipes:
            for key, value in recipe_defaults(recipe, dataset).items():
                if hasattr(args, prefix + key):
                    assert getattr(args, prefix + key) == value, (name, prefix + key)
    if dataset == "digits":  # the measured digits run: blr 4e-3 at batch 128
        args = load_example("pretrain").parse_args([])
        assert (args.base_learning_rate, args.batch_size, args.epochs) == (4e-3, 128, 100)
        assert args.probe_base_learning_rate == 6.4
    else:
        args = load_example("pretrain").parse_args(["--dataset", dataset])
        assert (args.base_learning_rate, args.warmup_epochs, args.epochs) == (1.5e-4, 40, 800)
        args = load_example("finetune").parse_args(["--dataset", dataset, "--encoder", "e"])
        assert (args.base_learning_rate, args.layer_decay, args.drop_path_rate) == (5e-4, 0.65, 0.1)
    # A flag given on the command line wins over the dataset's default.
    args = load_example("pretrain").parse_args(["--dataset", dataset, "--base-learning-rate", "1"])
    assert args.base_learning_rate == 1.0
