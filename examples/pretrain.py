"""Pre-train a Masked Autoencoder, then check what its encoder learned.

    KERAS_BACKEND=jax python examples/pretrain.py

With no arguments this pre-trains the `mae_vit_micro_patch2` preset on
scikit-learn's bundled 8x8 digits (nothing is downloaded; 2.5 minutes on 2 CPU
cores with JAX; `tensorflow` and `torch` work the same way) and writes to
`--output-dir` (default `mae_output/`):

    mae.keras               the whole pre-trained model
    encoder.keras           the encoder alone, a Keras backbone
                            (keras.models.load_model after `import keras_mae`)
    reconstructions.png     held-out digits: original | masked | reconstruction
    checkpoint/             the last completed epoch: the same command resumes

It prints the pre-training run, then (unless `--probe-epochs 0`) the official linear probe (LARS,
BatchNorm without affine + linear head, 90 epochs, cached features) on
held-out digits, for the pre-trained encoder next to the same encoder randomly
initialised (JAX; other backends differ in the last digits):

    pre-training: 100 epochs in 146 s (peak lr 0.002), loss 1.2015 -> 0.2171, held-out loss 0.2337
    linear probe on held-out digits (cls pooling, blr 6.4): pre-trained 0.9387 | random init 0.8802
    linear probe on held-out digits (mean pooling, blr 6.4): pre-trained 0.9499 | random init 0.8635

`--dataset folder:PATH` (PATH/train/<class>/*.jpg) or `tfds:NAME` streams
images through the tf.data pipeline (RandomResizedCrop + flip + normalisation)
instead and skips the probe (run examples/linear_probe.py on encoder.keras);
`reconstructions.png` then shows 8 test images taken in turn from each class.
Without `--preset` the data's image shape chooses the architecture (32x32 RGB:
`mae_vit_tiny_patch4`; see `--help`); the first line names the preset, image
shape, patch grid and mask ratio. Every flag left out takes the official
value, or for `--dataset digits` the value its help names; `--recipe short`
takes `keras_mae.recipes.defaults.SHORT_BUDGET` instead. On a folder or tfds
data set, a batch size left out is capped to the training images (16 images:
batch 16) and a run of 40 epochs or fewer warms up over a tenth of its epochs,
each said in one line at start.
"""

import argparse
import dataclasses
import os

import keras
import numpy as np

import keras_mae
from keras_mae.data.statistics import default_mean_std
from keras_mae.distribute import runner
from keras_mae.recipes import arguments
from keras_mae.recipes.callbacks import TimeLimit
from keras_mae.recipes.linear_probe import linear_probe
from keras_mae.recipes.pretrain import pretrain
from keras_mae.recipes.visualization import save_reconstruction_grid
from keras_mae.recipes.visualization import spread_over_classes

RECIPES = [("pretrain", ""), ("linear_probe", "probe")]


def build_parser():
    """The command line; recipe flags left out stay None until `parse_args`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_dataset_argument(parser)
    parser.add_argument(
        "--data-dir", default=None, help="tensorflow-datasets data directory (default: tfds')"
    )
    arguments.add_preset_argument(parser)
    arguments.add_recipe_argument(parser)
    arguments.add_pretrain_arguments(parser)
    arguments.add_linear_probe_arguments(parser, prefix="probe")
    parser.add_argument(
        "--distribution",
        default="none",
        choices=runner.CHOICES,
        help="jax: data_parallel | model_parallel; tensorflow: mirrored | "
        "multi_worker | tpu; torch: ddp (launch with torchrun); --batch-size is "
        "the global batch (default: none)",
    )
    arguments.add_run_arguments(parser, output_dir="mae_output")
    return parser


def parse_args(argv=None):
    """The flags, with every default the user left out filled in."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset != "digits" and not args.dataset.startswith(("tfds:", "folder:")):
        parser.error(f"unknown dataset {args.dataset!r}; expected digits, tfds:NAME or folder:PATH")
    if args.epochs is not None and args.epochs < 0:
        parser.error(f"--epochs must be 0 or more, got {args.epochs}")
    args.unused_recipe_keys = arguments.apply_recipe(args)
    return arguments.resolve(args, RECIPES)


def data_image_shape(source):
    """`(H, W, C)` of a source's images: the first file of a folder, a tfds feature."""
    if hasattr(source, "images"):
        return tuple(source.images.shape[1:])
    if hasattr(source, "paths"):
        from keras_mae.data.tensorflow_import import import_tensorflow

        tf = import_tensorflow()
        first = tf.io.decode_image(tf.io.read_file(source.paths[0]), expand_animations=False)
        return tuple(int(d) for d in first.shape[:2]) + (source.channels,)
    element = next(iter(source.dataset.take(1)))
    return tuple(int(d) for d in element[source.image_key].shape[:2]) + (source.channels,)


def held_out_subset(source, count=8):
    """`count` images of `source` taken in turn from each class, as a source."""
    labels = getattr(source, "labels", None)
    if labels is None or not hasattr(source, "paths"):
        return source  # a stream: its first images
    chosen = spread_over_classes(labels, count)
    return dataclasses.replace(
        source, paths=[source.paths[i] for i in chosen], labels=np.asarray(labels)[chosen]
    )


@dataclasses.dataclass
class Data:
    """What pre-training reads, the images it pictures, and the digits' labelled splits."""

    train: object  # images in memory, or a source streamed through tf.data
    validation: object  # `(x_test,)` for the held-out loss, or None
    held_out: object  # the 8 images of `reconstructions.png`
    labelled: tuple | None = None  # digits: `((x_train, y_train), (x_test, y_test))` for the probe


def start_run(argv):
    """Parse the flags, print their notes, start the distribution, set precision and seed."""
    arguments.quiet_output()
    args = parse_args(argv)
    for note in args.fitted + arguments.schedule_notes(args, RECIPES):
        print(note, flush=True)
    if args.unused_recipe_keys:
        print(
            "note: --recipe short: this example's tf.data crop is the official one; "
            f"{', '.join(args.unused_recipe_keys)} apply in examples/pretrain_and_evaluate.py",
            flush=True,
        )
    run = runner.start(args.distribution)  # before the model exists
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    return args, run


def digits_and_model(args, overrides):
    """The bundled digits in memory and the MAE their shape chooses."""
    from keras_mae.data.digits import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits(seed=args.seed)
    print(
        f"backend {keras.backend.backend()}: {len(x_train)} training and "
        f"{len(x_test)} held-out digits images of shape {x_train.shape[1:]}"
    )
    preset, architecture, reason = arguments.choose_preset(args, x_train.shape[1:])
    architecture["image_shape"] = x_train.shape[1:]
    mae = keras_mae.MaskedAutoencoder.from_preset(
        preset, seed=args.seed, **{**architecture, **overrides}
    )
    held_out = x_test[spread_over_classes(y_test, 8)]
    data = Data(x_train, (x_test,), held_out, labelled=((x_train, y_train), (x_test, y_test)))
    print(arguments.describe_model(mae, preset, reason), flush=True)
    return data, mae


def stream_and_model(args, overrides):
    """A folder or tfds source streamed through tf.data and the MAE its image shape chooses."""
    from keras_mae.data import eval_dataset
    from keras_mae.data import load_source
    from keras_mae.data import take_images

    train_data = load_source(args.dataset, "train", args.data_dir)
    preset, architecture, reason = arguments.choose_preset(args, data_image_shape(train_data))
    mae = keras_mae.MaskedAutoencoder.from_preset(
        preset, seed=args.seed, **{**architecture, **overrides}
    )
    channels = mae.image_shape[-1]
    if channels != train_data.channels:
        train_data = load_source(args.dataset, "train", args.data_dir, channels=channels)
    test = load_source(args.dataset, "test", args.data_dir, channels=channels)
    print(
        f"backend {keras.backend.backend()}: {len(train_data)} training and {len(test)} "
        f"held-out images from {args.dataset}, cropped to {mae.image_shape}"
    )
    held_out = take_images(
        eval_dataset(held_out_subset(test), mae.image_shape[:2], 8, with_labels=False), 8
    )
    print(arguments.describe_model(mae, preset, reason), flush=True)
    return Data(train_data, None, held_out), mae


def pretrain_model(args, mae, data, run):
    """Pre-train `mae` (resuming its checkpoint); its summary, printed in one line."""
    summary = pretrain(
        mae,
        data.train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        accumulation_steps=args.accumulation_steps,
        output_dir=args.output_dir,
        held_out_images=data.held_out,
        image_every=args.image_every,
        validation_data=data.validation,
        seed=args.seed,
        verbose=args.verbose,
        callbacks=[TimeLimit(args.max_minutes)],
        allow_new_settings=args.continue_with_new_settings,
        run=run,
    )
    if "last_loss" in summary:
        held_out_loss = summary["history"].get("val_loss", [None])[-1]
        print(
            f"pre-training: {summary['epochs'] - summary['initial_epoch']} epochs in "
            f"{summary['seconds']:.0f} s (peak lr {summary['peak_learning_rate']:.3g}), loss "
            f"{summary['first_loss']:.4f} -> {summary['last_loss']:.4f}"
            + ("" if held_out_loss is None else f", held-out loss {held_out_loss:.4f}")
        )
    return summary


def save_reconstructions(args, mae, held_out):
    """Draw `reconstructions.png` and print what was saved (and, for a stream, what next)."""
    encoder_path = os.path.join(args.output_dir, "encoder.keras")
    png_path = os.path.join(args.output_dir, "reconstructions.png")
    if args.dataset != "digits":
        mean, std = default_mean_std(mae.image_shape[-1])  # the pipeline's normalisation
        scale = max(1, 128 // max(mae.image_shape[:2]))
        save_reconstruction_grid(mae, held_out, png_path, mean=mean, std=std, scale=scale)
        print(
            f"saved {args.output_dir}/mae.keras, {encoder_path} and {png_path}; evaluate "
            f"with examples/linear_probe.py --encoder {encoder_path} --dataset {args.dataset}"
        )
        return
    save_reconstruction_grid(mae, held_out, png_path, scale=8)
    print(f"saved {args.output_dir}/mae.keras, {encoder_path} and {png_path}")


def probe_digits(args, trained_encoder, random_encoder, labelled, *, epochs):
    """The linear probe of both encoders on held-out digits, printed side by side."""
    # The digits MAE regresses raw [0, 1] pixels: the probe normalises nothing either.
    probe = dict(
        pooling=args.probe_pooling,
        epochs=args.probe_epochs,
        batch_size=args.probe_batch_size,
        base_learning_rate=args.probe_base_learning_rate,
        warmup_epochs=args.probe_warmup_epochs,
        mean=(0.0,),
        std=(1.0,),
        seed=args.seed,
    )
    train, test = labelled
    trained = linear_probe(trained_encoder, train, test, **probe)
    random = linear_probe(random_encoder, train, test, **probe)
    for ours, theirs in zip(trained, random):
        print(
            f"linear probe on held-out digits ({ours['pooling']} pooling, blr "
            f"{arguments.rate_text(ours)}): pre-trained {ours['accuracy']:.4f} | "
            f"random init {theirs['accuracy']:.4f}"
            + (
                ""
                if theirs["base_learning_rate"] == ours["base_learning_rate"]
                else f" (blr {arguments.rate_text(theirs)})"
            )
        )
    gaps = [(ours["accuracy"], theirs["accuracy"]) for ours, theirs in zip(trained, random)]
    note = arguments.comparison_note(*min(gaps, key=lambda g: g[0] - g[1]), epochs)
    if note:
        print(note)


def main(argv=None):
    """Pre-train on the chosen data, save the model and a picture, then probe the digits."""
    args, run = start_run(argv)
    overrides = {"norm_pix_loss": args.norm_pix_loss, "remat": args.remat}
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    if args.dataset == "digits":
        data, mae = digits_and_model(args, overrides)
    else:
        data, mae = stream_and_model(args, overrides)
    fitted = arguments.fit_batch_to_data(args, len(data.train))
    if fitted:
        print(fitted, flush=True)
    random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())
    summary = pretrain_model(args, mae, data, run)
    save_reconstructions(args, mae, data.held_out)
    # A stream is probed by examples/linear_probe.py; --probe-epochs 0: pre-training alone.
    if args.dataset != "digits" or not args.probe_epochs:
        return
    probe_digits(args, mae.encoder, random_encoder, data.labelled, epochs=summary["epochs"])


if __name__ == "__main__":
    main()
