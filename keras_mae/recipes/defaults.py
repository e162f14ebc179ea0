"""The recipes' settings and their defaults, in one place.

`PretrainSettings`, `ProbeSettings` and `FinetuneSettings` hold every setting of
`keras_mae.recipes.pretrain.pretrain`, `keras_mae.recipes.linear_probe.linear_probe`
and `keras_mae.recipes.finetune.finetune` (each argument but the model, the data,
the augmentation layer and the callbacks), with its default: the recipe takes
its defaults from them and hands its settings on as one such object.

`DEFAULTS[recipe]` are the hyper-parameters among them that the examples expose
as flags: the values of the paper (He et al., 2022,
https://arxiv.org/abs/2111.06377) and of the official `main_pretrain.py`,
`main_linprobe.py` and `main_finetune.py` (fine-tuning: the ViT-B recipe), with
one exception: the batch size is 256 per step for every recipe, the reference
batch of `lr = base_lr x batch / 256`. The official effective batches (4096,
16384 and 1024) come from many devices and gradient accumulation; the scaling
rule keeps the learning rate per image when the batch is smaller.

`DIGITS[recipe]` holds the few values that the bundled 8x8 digits (1,438
training images, `--dataset digits`, the examples' default) need instead, each
with its reason. The examples fill the flags a user did not give with
`fill_defaults`.

The linear probe's base learning rate defaults to `"auto"`: the best of
`PROBE_BASE_LEARNING_RATES` (the official 0.1 and four larger values) on a
held-out tenth of the training split. The official 0.1 is tuned for 7,000 LARS
steps at batch 16,384; a small data set gives a few hundred steps, in which it
barely moves the head: on 2,000 CIFAR-10 training images (200 test images,
`mae_vit_tiny_patch4` after one epoch, 90 probe epochs at batch 256, cls token)
0.1 gave 0.215 test accuracy; the choice, 6.4 (held-out 0.21, 0.25, 0.31, 0.33
for 0.1 to 6.4), gave 0.365.

`preset_for_images` picks the architecture from the data's image shape when no
preset is named, and `SHORT_BUDGET` holds the settings of the short-budget
recipe (`--recipe short`).
"""

import argparse
import dataclasses
import math

# `verbose` of every recipe (and the examples' `--verbose`): "auto" draws
# `keras_mae.recipes.progress.ProgressBar` on a terminal and prints one line per
# epoch elsewhere, 1 always draws the bar, 2 prints one line per epoch, 0 nothing.
VERBOSITIES = ("auto", 0, 1, 2)


def verbosity(value):
    """`value` as a recipe's `verbose`: "auto", 0, 1 or 2 (digits given as text count).

    Raises:
        ValueError: for anything else, naming the choices.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if not isinstance(value, str) and value in VERBOSITIES[1:]:
        return int(value)
    raise ValueError(
        f"verbose={value!r} is not one of 'auto', 0, 1, 2: 'auto' draws a "
        "progress bar on a terminal and prints one line per epoch otherwise, 1 always "
        "draws the bar, 2 prints one line per epoch, 0 prints nothing."
    )


def verbosity_flag(text):
    """`--verbose`'s argparse type: `verbosity`, refusing with its message."""
    try:
        return verbosity(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """The settings of a `pretrain` run (see its arguments), with their defaults."""

    epochs: int = 800
    batch_size: int = 256
    base_learning_rate: float = 1.5e-4
    warmup_epochs: float = 40
    weight_decay: float = 0.05
    accumulation_steps: int | None = None
    output_dir: str | None = None
    mean: tuple | None = None
    std: tuple | None = None
    image_every: int = 10
    seed: int = 0
    verbose: int | str = "auto"
    allow_new_settings: bool = False

    def __post_init__(self):
        verbosity(self.verbose)  # refused before any work


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """The settings of a `linear_probe` run (see its arguments), with their defaults."""

    pooling: str | tuple = "cls"
    epochs: int = 90
    batch_size: int = 256
    # "auto": the best of PROBE_BASE_LEARNING_RATES (0.1 official) on a held-out
    # tenth of the training split; see linear_probe.choose_base_learning_rate.
    base_learning_rate: float | str | tuple = "auto"
    warmup_epochs: int = 10
    cache_features: bool = True
    mean: tuple | None = None
    std: tuple | None = None
    crop_fraction: float = 1.0
    seed: int = 0
    verbose: int | str = 0

    def __post_init__(self):
        verbosity(self.verbose)  # refused before any work


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """The settings of a `finetune` run (see its arguments), with their defaults."""

    epochs: int = 100
    batch_size: int = 256
    base_learning_rate: float = 5e-4
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    drop_path_rate: float = 0.1
    warmup_epochs: int = 5
    randaugment_magnitude: float = 9
    random_erasing: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    image_shape: tuple | None = None
    mean: tuple | None = None
    std: tuple | None = None
    crop_fraction: float = 1.0
    seed: int = 0
    verbose: int | str = 0

    def __post_init__(self):
        verbosity(self.verbose)  # refused before any work


def official(settings, *names):
    """`{name: default}` of the fields `names` of a settings class, in that order."""
    return {name: getattr(settings, name) for name in names}


DEFAULTS = {
    "pretrain": {
        **official(
            PretrainSettings,
            "epochs",
            "batch_size",
            "base_learning_rate",
            "warmup_epochs",
            "weight_decay",
        ),
        "norm_pix_loss": True,
    },
    "linear_probe": official(
        ProbeSettings, "epochs", "batch_size", "base_learning_rate", "warmup_epochs"
    ),
    "finetune": official(
        FinetuneSettings,
        "epochs",
        "batch_size",
        "base_learning_rate",
        "warmup_epochs",
        "weight_decay",
        "layer_decay",
        "drop_path_rate",
        "randaugment_magnitude",
        "mixup",
        "cutmix",
        "label_smoothing",
        "random_erasing",
    ),
}

DIGITS = {
    "pretrain": {
        "epochs": (100, "800 epochs would take about 18 minutes on 2 CPU cores; 100 take 2"),
        "batch_size": (
            128,
            "the measured digits run: 11 full steps per epoch (at 256 the 1,438 images give 5)",
        ),
        "base_learning_rate": (
            4e-3,
            "the measured digits run, peak lr 2e-3 at batch 128: its cls-token probe "
            "reaches 0.94 (mean 0.95) against 0.88 at random init; at the official 1.5e-4, 0.87",
        ),
        "warmup_epochs": (5, "40 of the 100 epochs would be warmup"),
    },
    "linear_probe": {
        "base_learning_rate": (
            6.4,
            "the official per-step lr (0.1 x 16384 / 256): at batch 256 the official "
            "blr moves the LARS head 64 times less per step, and the digits cls-token "
            "probe reaches 0.48 instead of 0.96 (measured with the last partial batch kept)",
        ),
    },
}


# A short-budget recipe for small data: a 128-d x 4 encoder, a 64-d x 2 decoder, 12
# epochs. Measured by benchmarks/short_budget.py on 10,000 CIFAR-10 images (JAX, 2 shared
# CPU cores): 527 CPU-seconds of pre-training (4.4 minutes of 2 cores); linear probe on
# 3,000 held-out images 48.9% (cls) / 49.4% (mean) against 42.5% / 41.9% for the same
# encoder at random init (docs/recipes.md, the short-budget section).
SHORT_BUDGET = {
    "preset": "mae_vit_tiny_patch4",
    "hidden_dim": 128,
    "num_layers": 4,
    "num_heads": 4,
    "decoder_hidden_dim": 64,
    "decoder_num_layers": 2,
    "decoder_num_heads": 4,
    "mask_ratio": 0.75,
    "norm_pix_loss": True,
    "epochs": 12,
    "batch_size": 64,
    "base_learning_rate": 3e-3,
    "warmup_epochs": 1,
    "weight_decay": 0.05,
    "crop_min_scale": 0.2,
}


# The probe's learning-rate sweep: the official 0.1, then x4 steps up to 6.4, the
# official per-step lr at batch 256 (0.1 x 16384 / 256).
# 25.6: the short-budget CIFAR-10 probes chose it for most encoders (docs/recipes.md).
PROBE_BASE_LEARNING_RATES = (0.1, 0.4, 1.6, 6.4, 25.6)
NOTES = {
    ("linear_probe", "base_learning_rate"): "the best of "
    + ", ".join(map(str, PROBE_BASE_LEARNING_RATES))
    + " (0.1 official) on a held-out tenth of the training split",
}


def preset_for_images(image_shape, presets=None):
    """The preset and overrides that fit images of `image_shape` `(H, W, C)`.

    A preset made for that shape is taken as it is (8x8x1: `mae_vit_micro_patch2`,
    32x32x3: `mae_vit_tiny_patch4`, 224x224x3: `mae_vit_base_patch16`). Otherwise a
    small family is resized to the images: up to 16 pixels on the shorter side the
    micro family with the patch that makes a grid closest to 4x4 (mask ratio
    0.5, as the digits); up to 64 the tiny family with the patch that makes a
    grid closest to 8x8 (as CIFAR-10's 32x32 at patch 4; 28x28 takes patch 4, a
    7x7 grid); the patch divides both sides. Larger images go to `mae_vit_base_patch16` at
    its 224x224 (the crop resizes them), with the images' channel count.

    Args:
        image_shape: `(H, W, C)` of the data's images.
        presets: the preset table; defaults to `keras_mae.PRESETS`.

    Returns:
        `(name, overrides, reason)`: the preset, the constructor arguments that
        differ from it (`image_shape`, `patch_size`) and a few words on why.

    Raises:
        ValueError: when the patch size of the family does not divide both sides;
            the message lists the presets of the same channel count.
    """
    from keras_mae.models.presets import PRESETS

    presets = PRESETS if presets is None else presets
    height, width, channels = (int(d) for d in image_shape)
    for name, preset in presets.items():
        if tuple(preset["config"]["image_shape"]) == (height, width, channels):
            return name, {}, f"made for {height}x{width}x{channels} images"
    side = min(height, width)
    if side > 64:
        overrides = {} if channels == 3 else {"image_shape": (224, 224, channels)}
        return (
            "mae_vit_base_patch16",
            overrides,
            f"{height}x{width} images are larger than 64 pixels: cropped and resized to 224",
        )
    family, grid = ("mae_vit_micro_patch2", 4) if side <= 16 else ("mae_vit_tiny_patch4", 8)
    common = math.gcd(height, width)
    patches = [p for p in range(1, common + 1) if common % p == 0 and side // p <= 2 * grid]
    if not patches:
        fitting = [
            f"{name} ({'x'.join(map(str, p['config']['image_shape']))})"
            for name, p in sorted(presets.items())
            if p["config"]["image_shape"][-1] == channels
        ]
        raise ValueError(
            f"no preset fits {height}x{width}x{channels} images: the {family} family "
            f"needs a patch size that divides both {height} and {width} into at most "
            f"{2 * grid} patches on the shorter side, and none does. Give --preset NAME "
            "(the images are cropped and resized to its size); presets for "
            f"{channels}-channel images: "
            + (", ".join(fitting) or "none (any preset, with the images converted)")
            + "."
        )
    patch = min(patches, key=lambda p: (abs(side / p - grid), p))
    overrides = {"image_shape": (height, width, channels), "patch_size": patch}
    return (
        family,
        overrides,
        f"its family resized to {height}x{width}x{channels}, patch {patch} "
        f"(grid {height // patch}x{width // patch})",
    )


def recipe_defaults(recipe, dataset=None):
    """The default hyper-parameters of `recipe` for `dataset` (a fresh dict).

    Args:
        recipe: `"pretrain"`, `"linear_probe"` or `"finetune"`.
        dataset: the `--dataset` value; `"digits"` takes `DIGITS[recipe]` over
            `DEFAULTS[recipe]`.
    """
    if recipe not in DEFAULTS:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {', '.join(DEFAULTS)}.")
    values = dict(DEFAULTS[recipe])
    if dataset == "digits":
        values.update({key: value for key, (value, _) in DIGITS.get(recipe, {}).items()})
    return values


def default_help(recipe, key):
    """How the default of `key` reads in a flag's help, e.g. `"default: 0.00015
    (official); --dataset digits: 0.004 (reason)"`."""
    if (recipe, key) in NOTES:
        text = f"{DEFAULTS[recipe][key]!r}, {NOTES[recipe, key]}"
    else:
        text = f"{DEFAULTS[recipe][key]!r}" + ("" if key == "batch_size" else " (official)")
    if key in DIGITS.get(recipe, {}):
        value, reason = DIGITS[recipe][key]
        text += f"; --dataset digits: {value!r} ({reason})"
    return f"default: {text}".replace("%", "%%")  # argparse formats help with %


def fill_defaults(args, recipe, prefix=""):
    """Give every flag of `recipe` that was left at None its default for `args.dataset`.

    Args:
        args: an `argparse.Namespace` with a `dataset` attribute.
        recipe: see `recipe_defaults`.
        prefix: the flags' prefix, e.g. `"probe_"` for `--probe-epochs`.

    Returns:
        `args`, updated in place.
    """
    for key, value in recipe_defaults(recipe, args.dataset).items():
        name = prefix + key
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, value)
    return args
