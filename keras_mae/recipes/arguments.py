"""The examples' command-line vocabulary: one name, meaning and default per flag.

Each recipe's flags are added by one function, so every example that
pre-trains, probes or fine-tunes spells them alike. A flag named after a
recipe argument carries its name (`--base-learning-rate` is
`base_learning_rate`, always `lr = blr x batch / 256`); the flags of a second
recipe in the same script take its prefix (`--probe-epochs`,
`--finetune-base-learning-rate`). Hyper-parameter flags default to None and
`fill_defaults` (after parsing) gives each the recipe's default for the chosen
`--dataset` (`keras_mae.recipes.defaults`); the help line names it. Two
pre-training defaults left out fit the run, each said in one line at start:
the warm-up of a run shorter than it (`fit_warmup_to_run`, at parsing) and the
batch of data smaller than it (`fit_batch_to_data`, once the data is loaded).

Every learning-rate flag is a base rate: `lr = blr x batch / 256`.
`--preset` left out lets the data choose the architecture
(`keras_mae.recipes.defaults.preset_for_images`); `--recipe short` fills the
flags a user did not give from `keras_mae.recipes.defaults.SHORT_BUDGET`.
`quiet_output` keeps TensorFlow's start-up lines and Keras' warning about
shuffling a `tf.data` stream out of the examples' output.
"""

import argparse
import importlib.util
import warnings

from keras_mae.recipes import defaults
from keras_mae.recipes.checks import check_output_dir
from keras_mae.recipes.defaults import default_help
from keras_mae.recipes.defaults import fill_defaults

POOLINGS = ("cls", "mean")


def flag(prefix, name):
    return "--" + (f"{prefix}-{name}" if prefix else name)


def learning_rate_or_auto(text):
    """An argparse type: a float, or `auto` (chosen on held-out training data)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def quiet_output():
    """Keep TensorFlow's start-up log lines and one misplaced Keras warning out of the output.

    TensorFlow (the `tf.data` pipeline, and TensorBoard's writer) is imported
    now, quietly and with its GPUs hidden unless Keras runs on it
    (`keras_mae.data.tensorflow_import`); nothing happens when it is not
    installed. Keras warns that `shuffle=True` is ignored for a `tf.data`
    stream: the library's streams are shuffled by the pipeline (a stateless
    permutation per epoch), so the warning says nothing to a user.
    """
    warnings.filterwarnings(
        "ignore", message=r"`shuffle=True` was passed, but will be ignored since the data"
    )
    if importlib.util.find_spec("tensorflow") is not None:
        from keras_mae.data.tensorflow_import import import_tensorflow

        import_tensorflow()


def add_preset_argument(parser):
    """`--preset`: left out, the data's image shape chooses (see `choose_preset`)."""
    from keras_mae.models.presets import PRESETS

    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="architecture (default: chosen from the data's images: a preset made for "
        "their shape, e.g. mae_vit_micro_patch2 for the 8x8 digits and "
        "mae_vit_tiny_patch4 for 32x32 RGB; otherwise the micro family up to 16 "
        "pixels (grid near 4x4), the tiny family up to 64 (grid near 8x8), "
        "mae_vit_base_patch16 at 224 beyond, with the images' channel count)",
    )


def add_recipe_argument(parser):
    """`--recipe official | short`."""
    parser.add_argument(
        "--recipe",
        default="official",
        choices=["official", "short"],
        help="where the flags left out take their values: official (the paper's, or "
        "the --dataset digits values) or short (keras_mae.recipes.defaults.SHORT_BUDGET: "
        "a small ViT and few epochs for a budget of minutes; applied to every flag not "
        "given) (default: official)",
    )


def apply_recipe(args):
    """Fill the flags left at None from `SHORT_BUDGET` when `args.recipe == "short"`.

    Keys naming a flag fill it (listed in `args.from_recipe`); the architecture
    keys (a preset's constructor arguments, e.g. `num_layers`) go to
    `args.model_overrides`, used only when the preset comes from the recipe
    too. Returns the keys this example cannot apply (e.g. a crop setting of a
    pipeline it does not build).
    """
    args.model_overrides = {}
    if getattr(args, "recipe", "official") != "short":
        return []
    from keras_mae.models.presets import preset_config

    budget = dict(defaults.SHORT_BUDGET)
    preset = budget.pop("preset", None)
    from_recipe = args.preset is None and preset is not None
    if from_recipe:
        args.preset = preset
    architecture = preset_config(args.preset) if args.preset else {}
    unused = []
    args.from_recipe = []
    for key, value in budget.items():
        if hasattr(args, key):
            if getattr(args, key) is None:
                setattr(args, key, value)
                args.from_recipe.append(key)
        elif key in architecture or key in ("hidden_dim", "num_layers", "num_heads"):
            if from_recipe:
                args.model_overrides[key] = value
        else:
            unused.append(key)
    return unused


def choose_preset(args, image_shape):
    """`(preset, overrides, reason)` for data of `image_shape` `(H, W, C)`.

    `--preset` wins (and `--recipe short`'s architecture keys with its preset);
    otherwise `keras_mae.recipes.defaults.preset_for_images`.
    """
    if args.preset is not None:
        reason = "--preset" if not getattr(args, "model_overrides", None) else "--recipe short"
        return args.preset, dict(getattr(args, "model_overrides", {})), reason
    name, overrides, reason = defaults.preset_for_images(image_shape)
    return name, overrides, f"chosen for the data: {reason}"


def describe_model(mae, preset, reason):
    """One line: preset, image shape, patch grid and mask ratio of `mae`."""
    rows, cols = mae.encoder.grid_size
    patches = rows * cols
    kept = patches - int(round(patches * mae.mask_ratio))
    shape = "x".join(str(d) for d in mae.image_shape)
    return (
        f"model: {preset} ({reason}); images {shape}, patch {mae.patch_size}, "
        f"grid {rows}x{cols} = {patches} patches, mask ratio {mae.mask_ratio:g} "
        f"({kept} visible)"
    )


def rate_text(result):
    """A probe result's base learning rate as printed: `1.6`, or with `auto` its
    choice, e.g. `1.6 (chosen on held-out training images: 0.1 0.52, 0.4 0.61, ...)`."""
    rate = result["base_learning_rate"]
    scores = result.get("held_out_accuracy")
    if not scores:
        return f"{rate:g}" if isinstance(rate, float) else str(rate)
    tried = ", ".join(f"{r:g} {a:.2f}" for r, a in scores.items())
    return f"{rate:g}, chosen on held-out training images: {tried}"


def schedule_notes(args, recipes):
    """Notes on flags whose schedule cannot run as asked: warm-up not shorter than the run.

    The recipes then warm up over the whole run (the learning rate reaches its
    peak at the last step and never decays); the note says so and what to give.

    Args:
        args: the parsed flags (defaults filled).
        recipes: `[(recipe, prefix)]` as for `resolve`.
    """
    notes = []
    for _, prefix in recipes:
        key = f"{prefix}_" if prefix else ""
        epochs, warmup = (
            getattr(args, key + "epochs", None),
            getattr(args, key + "warmup_epochs", None),
        )
        if epochs and warmup is not None and warmup >= epochs:
            name = flag(prefix, "")
            notes.append(
                f"note: {name}warmup-epochs {warmup:g} is not shorter than {name}epochs "
                f"{epochs}: the whole run is warm-up (the learning rate reaches its peak "
                f"at the last step and never decays). Give {name}warmup-epochs "
                f"{max(epochs * 0.1, 0.1):g} (a tenth of the run) or more {name}epochs."
            )
    return notes


def comparison_note(trained, random, epochs, what="linear probe"):
    """A note when the pre-trained encoder scores below its random initialisation.

    Returns None otherwise. Such a run is too short to judge the pre-training:
    its features have moved from the random ones without yet becoming good.
    """
    if trained >= random:
        return None
    return (
        f"note: the pre-trained encoder scores below its random initialisation in the "
        f"{what} ({trained:.4f} vs {random:.4f}): {epochs} epochs of pre-training are "
        "too few to judge it. Pre-train longer (--epochs; on the digits the default "
        "100 epochs reach 0.96 against 0.88), or for a budget of minutes use "
        "--recipe short."
    )


def output_folder(path):
    """`--output-dir`'s type: refused at parsing, before any work, if it cannot be written."""
    try:
        return check_output_dir(path, "--output-dir")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
            type=output_folder,
            default=output_dir,
            help=f"where results are written (default: {output_dir})",
        )
    parser.add_argument(
        "--verbose",
        type=defaults.verbosity_flag,
        default="auto",
        help="auto: a progress bar on a terminal, one line per epoch otherwise (logs, "
        "pipes); 1: the bar; 2: one line per epoch; 0: nothing (default: auto)",
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
    add_pretrain_schedule_arguments(parser)
    add_pretrain_objective_arguments(parser)
    add_pretrain_run_length_arguments(parser)
    add_pretrain_compute_arguments(parser)


def add_pretrain_schedule_arguments(parser):
    """The optimisation schedule: `--epochs`, `--batch-size`, `--base-learning-rate`,
    `--warmup-epochs`, `--weight-decay` and `--accumulation-steps`."""
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
        + default_help("pretrain", "batch_size")
        + "; left out, at most the number of training images",
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
        help="epochs of linear warmup; "
        + default_help("pretrain", "warmup_epochs")
        + "; left out, a run of folder: or tfds: data no longer than it warms up over "
        "a tenth of its epochs",
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


def add_pretrain_objective_arguments(parser):
    """The masked-reconstruction objective: `--mask-ratio` and `--norm-pix-loss`."""
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


def add_pretrain_run_length_arguments(parser):
    """Time limit, resuming and progress images: `--max-minutes`,
    `--continue-with-new-settings` and `--image-every`."""
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop pre-training after the epoch that passes this many minutes "
        "(default: 0, no limit); the checkpoint resumes it",
    )
    parser.add_argument(
        "--continue-with-new-settings",
        action="store_true",
        help="go on from the checkpoint in --output-dir although it was written with "
        "other settings (printing each change); without it such a re-run is refused "
        "(default: off)",
    )
    parser.add_argument(
        "--image-every",
        type=int,
        default=10,
        help="epochs between reconstruction PNGs (default: 10)",
    )


def add_pretrain_compute_arguments(parser):
    """Precision and memory: `--precision` and `--remat`."""
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policy (default: float32)",
    )
    parser.add_argument(
        "--remat",
        action="store_true",
        help="activation checkpointing in every encoder and decoder block: less memory "
        "per step, one more forward pass of the blocks, the same gradients (default: off)",
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
        help=f"{what}epochs"
        + (" (0 skips the probe)" if prefix else "")
        + "; "
        + default_help("linear_probe", "epochs"),
    )
    parser.add_argument(
        flag(prefix, "batch-size"),
        type=int,
        default=None,
        help=f"{what}batch size (official 16384); " + default_help("linear_probe", "batch_size"),
    )
    parser.add_argument(
        flag(prefix, "base-learning-rate"),
        type=learning_rate_or_auto,
        nargs="+",
        default=None,
        help=f"{what}base lr, lr = blr x batch / 256; several are each probed on the same "
        "features; auto chooses on a held-out tenth of the training split; "
        + default_help("linear_probe", "base_learning_rate"),
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
    add(
        "base-learning-rate",
        float,
        "base lr, lr = blr x batch / 256 (not swept: each try is a whole fine-tuning run)",
    )
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
    """`fill_defaults` for each `(recipe, prefix)` of `recipes`; returns `args`.

    Records the flags it fills (`args.left_out`: the user did not give them),
    and fits the pre-training warm-up left out to a short run
    (`fit_warmup_to_run`); `args.fitted` holds a line for each default so
    fitted, to print at start.
    """
    args.left_out = []
    for recipe, prefix in recipes:
        key = f"{prefix}_" if prefix else ""
        args.left_out += [
            key + name
            for name in defaults.recipe_defaults(recipe, args.dataset)
            if getattr(args, key + name, 0) is None
        ]
        fill_defaults(args, recipe, prefix=key)
    args.fitted = []
    if ("pretrain", "") in recipes:
        args.fitted += [line for line in [fit_warmup_to_run(args)] if line]
    return args


def fit_warmup_to_run(args):
    """A tenth of a short run as warm-up, when `--warmup-epochs` was left out; a line or None.

    With `--dataset folder:PATH` or `tfds:NAME`, the official 40 warm-up epochs
    would take the whole of a run of 40 epochs or fewer (the learning rate would
    never decay); such a run warms up over a tenth of its epochs instead. The
    digits' own default (5 of 100 epochs) and a warm-up given (by the user or
    `--recipe short`) are kept.
    """
    epochs, warmup = args.epochs, args.warmup_epochs
    if args.dataset == "digits" or "warmup_epochs" not in getattr(args, "left_out", ()):
        return None
    if not epochs or warmup < epochs:
        return None
    args.warmup_epochs = epochs / 10
    return (
        f"warm-up: {args.warmup_epochs:g} epochs, a tenth of the {epochs} epochs (the "
        f"official {warmup:g} would make the whole run warm-up); give --warmup-epochs "
        "to choose another"
    )


def fit_batch_to_data(args, images):
    """Fit the pre-training batch to `images` training images; a line saying so, or None.

    A `--batch-size` left out that is larger than the data (the official 256
    on a small folder) becomes the number of images: the largest batch that
    gives an epoch one full batch. One that was given (or that `--recipe
    short` gave) is refused with a `ValueError` that says what to pass.

    Args:
        args: the parsed flags (`resolve`d).
        images: int, the number of training images.
    """
    batch = args.batch_size
    if images < 1 or batch <= images:
        return None
    if "batch_size" in getattr(args, "left_out", ()):
        args.batch_size = images
        return (
            f"batch size: {images} (the official {batch} capped to the {images} training "
            "images, one full batch per epoch); give --batch-size to choose another"
        )
    source = (
        "--recipe short's batch size"
        if "batch_size" in getattr(args, "from_recipe", ())
        else "--batch-size"
    )
    raise ValueError(
        f"{source} {batch} is larger than the {images} training images of {args.dataset}: "
        f"an epoch would hold no full batch. Pass --batch-size {images} or fewer, or add "
        "images."
    )
