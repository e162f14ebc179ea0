"""The examples' command-line vocabulary: one name, meaning and default per flag.

Each recipe's flags are added by one function, so every example that
pre-trains, probes or fine-tunes spells them alike. A flag named after a
recipe argument carries its name (`--base-learning-rate` is
`base_learning_rate`, always `lr = blr x batch / 256`); the flags of a second
recipe in the same script take its prefix (`--probe-epochs`,
`--finetune-base-learning-rate`). Hyper-parameter flags default to None and
`fill_defaults` (after parsing) gives each the recipe's default for the chosen
`--dataset` (`keras_mae.recipes.defaults`); the help line names it.
"""

import argparse

from keras_mae.recipes.defaults import default_help
from keras_mae.recipes.defaults import fill_defaults

POOLINGS = ("cls", "mean")


def flag(prefix, name):
    return "--" + (f"{prefix}-{name}" if prefix else name)


def add_run_arguments(parser, output_dir=None):
    """`--seed`, `--verbose` and, when `output_dir` is given, `--output-dir`."""
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of weights, masks, augmentation and data order (default: 0)",
    )
    if output_dir is not None:
        parser.add_argument(
            "--output-dir",
            default=output_dir,
            help=f"where results are written (default: {output_dir})",
        )
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        help="Keras fit verbosity (default: 2, one line per epoch)",
    )


def add_dataset_argument(parser, choices="digits | tfds:NAME | folder:PATH"):
    """`--dataset`, default `digits`; `choices` says which forms the example reads."""
    parser.add_argument(
        "--dataset",
        default="digits",
        help=f"{choices} (default: digits; folder: PATH/train/<class>/*.jpg and "
        "PATH/test/ or PATH/val/)",
    )


def add_pretrain_arguments(parser):
    """The pre-training flags (`keras_mae.recipes.pretrain.pretrain` and the model's)."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="pre-training epochs (0: none, e.g. to evaluate the random initialisation); "
        + default_help("pretrain", "epochs"),
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per step (the global batch under a distribution); "
        + default_help("pretrain", "batch_size"),
    )
    parser.add_argument(
        "--base-learning-rate",
        type=float,
        default=None,
        help="peak lr = blr x batch x accumulation steps / 256; "
        + default_help("pretrain", "base_learning_rate"),
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="epochs of linear warmup; " + default_help("pretrain", "warmup_epochs"),
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="AdamW weight decay (none on biases and norms); "
        + default_help("pretrain", "weight_decay"),
    )
    parser.add_argument(
        "--accumulation-steps",
        type=int,
        default=None,
        help="gradient accumulation: effective batch = batch x steps (default: none)",
    )
    parser.add_argument(
        "--mask-ratio",
        type=float,
        default=None,
        help="fraction of patches removed (default: the preset's; 0.75 official)",
    )
    parser.add_argument(
        "--norm-pix-loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="regress per-patch normalised pixels (the paper's best); "
        + default_help("pretrain", "norm_pix_loss"),
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop pre-training after the epoch that passes this many minutes "
        "(default: 0, no limit); the checkpoint resumes it",
    )
    parser.add_argument(
        "--image-every",
        type=int,
        default=10,
        help="epochs between reconstruction PNGs (default: 10)",
    )
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policy (default: float32)",
    )


def add_linear_probe_arguments(parser, prefix=""):
    """The linear-probe flags (`keras_mae.recipes.linear_probe.linear_probe`).

    Args:
        parser: an `argparse.ArgumentParser`.
        prefix: `""` where the probe is the script's recipe, `"probe"` beside
            pre-training (`--probe-epochs`, ...).
    """
    what = "linear-probe " if prefix else ""
    parser.add_argument(
        flag(prefix, "epochs"),
        type=int,
        default=None,
        help=f"{what}epochs; " + default_help("linear_probe", "epochs"),
    )
    parser.add_argument(
        flag(prefix, "batch-size"),
        type=int,
        default=None,
        help=f"{what}batch size (official 16384); " + default_help("linear_probe", "batch_size"),
    )
    parser.add_argument(
        flag(prefix, "base-learning-rate"),
        type=float,
        nargs="+",
        default=None,
        help=f"{what}base lr, lr = blr x batch / 256; several are each probed on the same "
        "features; " + default_help("linear_probe", "base_learning_rate"),
    )
    parser.add_argument(
        flag(prefix, "warmup-epochs"),
        type=float,
        default=None,
        help=f"{what}warmup epochs; " + default_help("linear_probe", "warmup_epochs"),
    )
    parser.add_argument(
        flag(prefix, "pooling"),
        nargs="+",
        default=list(POOLINGS),
        choices=POOLINGS,
        help="probe features: the cls token (official) and/or the mean of the patch tokens, "
        "from one encoder pass (default: cls mean)",
    )


def add_finetune_arguments(parser, prefix=""):
    """The fine-tuning flags (`keras_mae.recipes.finetune.finetune`); `prefix` as
    for `add_linear_probe_arguments` (`"finetune"` beside pre-training)."""
    what = "fine-tuning " if prefix else ""

    def add(name, kind, help_text):
        key = name.replace("-", "_")
        parser.add_argument(
            flag(prefix, name),
            type=kind,
            default=None,
            help=f"{what}{help_text}; " + default_help("finetune", key),
        )

    add("epochs", int, "epochs" + (" (0 skips fine-tuning)" if prefix else ""))
    add("batch-size", int, "batch size (official 1024)")
    add("base-learning-rate", float, "base lr, lr = blr x batch / 256")
    add("warmup-epochs", float, "warmup epochs")
    add("weight-decay", float, "AdamW weight decay")
    add("layer-decay", float, "layer-wise lr decay (official ViT-L/H: 0.75)")
    add("drop-path-rate", float, "stochastic depth of the last block")
    add("randaugment-magnitude", float, "RandAugment magnitude 0-10 (0: off)")
    add("mixup", float, "MixUp alpha (0: off)")
    add("cutmix", float, "CutMix factor (0: off)")
    add("label-smoothing", float, "label smoothing")
    add("random-erasing", float, "random erasing factor (0: off)")


def resolve(args, recipes):
    """`fill_defaults` for each `(recipe, prefix)` of `recipes`; returns `args`."""
    for recipe, prefix in recipes:
        fill_defaults(args, recipe, prefix=f"{prefix}_" if prefix else "")
    return args
