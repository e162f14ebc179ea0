"""The recipes' default hyper-parameters, in one place.

`DEFAULTS[recipe]` are the defaults of `keras_mae.recipes.pretrain.pretrain`,
`keras_mae.recipes.linear_probe.linear_probe` and
`keras_mae.recipes.finetune.finetune`: the values of the paper (He et al., 2022,
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
"""

DEFAULTS = {
    "pretrain": {
        "epochs": 800,
        "batch_size": 256,
        "base_learning_rate": 1.5e-4,
        "warmup_epochs": 40,
        "weight_decay": 0.05,
        "norm_pix_loss": True,
    },
    "linear_probe": {
        "epochs": 90,
        "batch_size": 256,
        "base_learning_rate": 0.1,
        "warmup_epochs": 10,
    },
    "finetune": {
        "epochs": 100,
        "batch_size": 256,
        "base_learning_rate": 5e-4,
        "warmup_epochs": 5,
        "weight_decay": 0.05,
        "layer_decay": 0.65,
        "drop_path_rate": 0.1,
        "randaugment_magnitude": 9,
        "mixup": 0.8,
        "cutmix": 1.0,
        "label_smoothing": 0.1,
        "random_erasing": 0.25,
    },
}

DIGITS = {
    "pretrain": {
        "epochs": (100, "800 epochs would take about 18 minutes on 2 CPU cores; 100 take 2"),
        "batch_size": (
            128,
            "the measured digits run: 12 steps per epoch (at 256 the 1,438 images give 6)",
        ),
        "base_learning_rate": (
            4e-3,
            "the measured digits run, peak lr 2e-3 at batch 128: its cls-token probe "
            "reaches 0.96 against 0.88 at random init; at the official 1.5e-4, 0.87",
        ),
        "warmup_epochs": (5, "40 of the 100 epochs would be warmup"),
    },
    "linear_probe": {
        "base_learning_rate": (
            6.4,
            "the official per-step lr (0.1 x 16384 / 256): at batch 256 the official "
            "blr moves the LARS head 64 times less per step, and the digits cls-token "
            "probe reaches 0.48 instead of 0.96",
        ),
    },
}


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
