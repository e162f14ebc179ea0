"""Pre-train a MAE on images held in memory, then score it the paper's two ways.

    KERAS_BACKEND=jax python examples/pretrain_and_evaluate.py \
        --dataset folder:cifar10 --holdout-per-class 500 --preset mae_vit_tiny_patch4

`--dataset` is `digits` (the default) or an ImageFolder `folder:DIR`
(`DIR/train/<class>/*.jpg`, and `DIR/test/` unless `--holdout-per-class N`
holds out the last N files of each class instead). The images are decoded once
into a uint8 array (Pillow; no TensorFlow needed), and all augmentation runs
on the accelerator inside the compiled step, as Keras layers in the model
(`keras_mae.recipes.augmentation.image_augmentation`, normalised with the
training images' own mean and std). Then, with the library's recipes:

1. pre-training (`keras_mae.recipes.pretrain.pretrain`): RandomResizedCrop
   0.2-1 + flip, AdamW (0.9, 0.95), warmup + cosine, resumable from
   `--output-dir/checkpoint`;
2. the linear probe (`keras_mae.recipes.linear_probe.linear_probe`): frozen
   encoder, BatchNorm without affine + Dense, LARS, features cached, each
   `--probe-pooling` x `--probe-base-learning-rate`;
3. fine-tuning (`keras_mae.recipes.finetune.finetune`): mean-pooled tokens +
   LayerNorm + head, layer-wise lr decay, drop path, RandAugment, random
   erasing, mixup / cutmix and label smoothing in the step;

steps 2 and 3 for the pre-trained encoder and for the same encoder at random
initialisation (`--epochs 0`: the random-init baseline alone). It prints one
line per result, e.g.

    linear probe (pre-trained, cls): blr 0.1: 0.xxxx
    fine-tune (pre-trained), 100 epochs: 0.xxxx

and writes `results.json`, `reconstructions.png` (8 held-out images taken in
turn from each class), `mae.keras` and `encoder.keras` into `--output-dir`.
Without `--preset` the images' shape chooses the architecture (32x32 RGB:
`mae_vit_tiny_patch4`; see `--help`); the first lines name the preset, image
shape, patch grid and mask ratio. The probe's base learning rate is chosen on
a held-out tenth of the training split unless given. Every flag left out takes
the official value, or for `--dataset digits` the value its help names;
`--recipe short` takes `keras_mae.recipes.defaults.SHORT_BUDGET` instead. On a
folder, a pre-training batch size left out is capped to the training images and
a pre-training run of 40 epochs or fewer warms up over a tenth of its epochs,
each said in one line at start.
"""

import argparse
import json
import os
import time

import keras

import keras_mae
from keras_mae.data.arrays import load_arrays
from keras_mae.data.statistics import max_pixel_value
from keras_mae.data.statistics import pixel_mean_std
from keras_mae.recipes import arguments
from keras_mae.recipes.augmentation import image_augmentation
from keras_mae.recipes.callbacks import TimeLimit
from keras_mae.recipes.finetune import finetune
from keras_mae.recipes.linear_probe import linear_probe
from keras_mae.recipes.pretrain import pretrain
from keras_mae.recipes.visualization import save_reconstruction_grid
from keras_mae.recipes.visualization import spread_over_classes

RECIPES = [("pretrain", ""), ("linear_probe", "probe"), ("finetune", "finetune")]
OFFICIAL_CROP_MIN_SCALE = 0.2


def build_parser():
    """The command line; recipe flags left out stay None until `parse_args`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_dataset_argument(parser, choices="digits | folder:PATH")
    parser.add_argument(
        "--holdout-per-class",
        type=int,
        default=0,
        help="hold out the last N files of each training class as the evaluation "
        "split (default: 0, use PATH/test)",
    )
    arguments.add_preset_argument(parser)
    arguments.add_recipe_argument(parser)
    arguments.add_pretrain_arguments(parser)
    parser.add_argument(
        "--crop-min-scale",
        type=float,
        default=None,
        help="smallest area fraction of the pre-training RandomResizedCrop "
        f"(default: {OFFICIAL_CROP_MIN_SCALE}, official; --recipe short: its own)",
    )
    arguments.add_linear_probe_arguments(parser, prefix="probe")
    arguments.add_finetune_arguments(parser, prefix="finetune")
    arguments.add_run_arguments(parser, output_dir="mae_eval_output")
    return parser


def parse_args(argv=None):
    """The flags, with every default the user left out filled in."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset != "digits" and not args.dataset.startswith("folder:"):
        parser.error(
            f"unknown dataset {args.dataset!r}: this example holds the images in memory, "
            "from digits or folder:PATH (tfds:NAME streams through examples/pretrain.py)"
        )
    arguments.apply_recipe(args)
    if args.crop_min_scale is None:
        args.crop_min_scale = OFFICIAL_CROP_MIN_SCALE
    return arguments.resolve(args, RECIPES)


def start_run(argv):
    """Parse the flags, print their notes, make the output folder, set precision and seed."""
    arguments.quiet_output()
    args = parse_args(argv)
    for note in args.fitted + arguments.schedule_notes(args, RECIPES):
        print(note, flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    return args


def load_images(args, start):
    """`(train, test)` as `(uint8 images, labels)` pairs, decoded once; prints their counts."""
    train, test, class_names = load_arrays(args.dataset, args.holdout_per_class)
    print(
        f"backend {keras.backend.backend()}: {len(train[0])} training and "
        f"{len(test[0])} held-out images of {len(class_names)} classes, decoded in "
        f"{time.time() - start:.0f} s",
        flush=True,
    )
    return train, test


def build_model(args, images, *, mean, std):
    """The MAE for `images`, its augmentation inside; prints its preset and patch grid."""
    preset, architecture, reason = arguments.choose_preset(args, images.shape[1:])
    image_shape = {**keras_mae.PRESETS[preset]["config"], **architecture}["image_shape"]
    if image_shape[-1] != images.shape[-1]:  # the preset's size, the images' channels
        image_shape = (*image_shape[:2], images.shape[-1])
        architecture["image_shape"] = image_shape
    overrides = {"norm_pix_loss": args.norm_pix_loss, "remat": args.remat, **architecture}
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    augmentation = image_augmentation(
        image_shape,
        scale=(args.crop_min_scale, 1.0),
        mean=mean,
        std=std,
        max_value=max_pixel_value(images),
        seed=args.seed,
        input_shape=images.shape[1:],
    )
    mae = keras_mae.MaskedAutoencoder.from_preset(
        preset, seed=args.seed, augmentation=augmentation, **overrides
    )
    print(arguments.describe_model(mae, preset, reason), flush=True)
    return mae


def pretrain_model(args, mae, images, held_out, *, mean, std):
    """Pre-train `mae` (resuming its checkpoint); its summary, printed in one line."""
    pretraining = pretrain(
        mae,
        images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        accumulation_steps=args.accumulation_steps,
        output_dir=args.output_dir,
        held_out_images=held_out,
        mean=mean,
        std=std,
        image_every=args.image_every,
        verbose=args.verbose,
        callbacks=[TimeLimit(args.max_minutes)],
        allow_new_settings=args.continue_with_new_settings,
    )
    if "last_loss" in pretraining:
        print(
            f"pre-training: {pretraining['epochs'] - pretraining['initial_epoch']} epochs in "
            f"{pretraining['seconds']:.0f} s, "
            f"loss {pretraining['first_loss']:.4f} -> {pretraining['last_loss']:.4f}",
            flush=True,
        )
    return pretraining


def probe_encoder(args, name, encoder, *, train, test, mean, std):
    """The linear probe of `encoder`: `{result key: accuracies by base lr}`, printed per pooling."""
    probes = linear_probe(
        encoder,
        train,
        test,
        pooling=args.probe_pooling,
        epochs=args.probe_epochs,
        batch_size=args.probe_batch_size,
        base_learning_rate=args.probe_base_learning_rate,
        warmup_epochs=args.probe_warmup_epochs,
        mean=mean,
        std=std,
        seed=args.seed,
    )
    results = {}
    for pooling in args.probe_pooling:
        mine = [p for p in probes if p["pooling"] == pooling]
        accuracies = {str(p["base_learning_rate"]): p["accuracy"] for p in mine}
        print(
            f"linear probe ({name}, {pooling}): "
            + ", ".join(f"blr {arguments.rate_text(p)}: {p['accuracy']:.4f}" for p in mine),
            flush=True,
        )
        results[f"probe {name} {pooling}"] = accuracies
        for p in mine:
            if "held_out_accuracy" in p:
                results[f"probe {name} {pooling} held-out"] = {
                    str(rate): score for rate, score in p["held_out_accuracy"].items()
                }
    return results


def finetune_encoder(args, name, encoder, *, train, test, mean, std):
    """Fine-tune `encoder` from the seed; its held-out accuracy, printed."""
    keras.utils.set_random_seed(args.seed)
    tuned = finetune(
        encoder,
        train,
        test,
        epochs=args.finetune_epochs,
        batch_size=args.finetune_batch_size,
        base_learning_rate=args.finetune_base_learning_rate,
        layer_decay=args.finetune_layer_decay,
        weight_decay=args.finetune_weight_decay,
        drop_path_rate=args.finetune_drop_path_rate,
        warmup_epochs=args.finetune_warmup_epochs,
        randaugment_magnitude=args.finetune_randaugment_magnitude,
        random_erasing=args.finetune_random_erasing,
        mixup=args.finetune_mixup,
        cutmix=args.finetune_cutmix,
        label_smoothing=args.finetune_label_smoothing,
        mean=mean,
        std=std,
        seed=args.seed,
    )
    print(
        f"fine-tune ({name}), {args.finetune_epochs} epochs: {tuned['accuracy']:.4f}",
        flush=True,
    )
    return tuned["accuracy"]


def save_results(results, output_dir):
    """Write `results.json`: after every result, so an interrupted run keeps what it measured."""
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def print_comparisons(results, epochs):
    """A note for each of probe and fine-tune whose pre-trained score is below random init's."""
    for kind in ("probe", "finetune"):
        pairs = []
        for key in results:
            if key.startswith(f"{kind} pre-trained") and not key.endswith("held-out"):
                ours = results[key]
                theirs = results[key.replace("pre-trained", "random init")]
                if isinstance(ours, dict):
                    pairs.append((max(ours.values()), max(theirs.values())))
                else:
                    pairs.append((ours, theirs))
        if pairs:
            what = "linear probe" if kind == "probe" else "fine-tune"
            note = arguments.comparison_note(*min(pairs, key=lambda p: p[0] - p[1]), epochs, what)
            if note:
                print(note, flush=True)


def main(argv=None):
    """Pre-train, picture held-out images, then probe and fine-tune each encoder."""
    args = start_run(argv)
    start = time.time()
    train, test = load_images(args, start)
    fitted = arguments.fit_batch_to_data(args, len(train[0]))
    if fitted:
        print(fitted, flush=True)
    mean, std = pixel_mean_std(train[0])  # on the [0, 1] scale
    mae = build_model(args, train[0], mean=mean, std=std)
    held_out = test[0][spread_over_classes(test[1], 8)]
    random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())
    pretraining = pretrain_model(args, mae, train[0], held_out, mean=mean, std=std)
    png_path = os.path.join(args.output_dir, "reconstructions.png")
    save_reconstruction_grid(mae, held_out, png_path, mean=mean, std=std, scale=4)
    if args.epochs:
        encoders = {"pre-trained": mae.encoder, "random init": random_encoder}
    else:  # --epochs 0: the baseline alone
        encoders = {"random init": mae.encoder}
    pretraining.pop("history")
    results = {
        "args": vars(args),
        "pretraining": pretraining,
        "backend": keras.backend.backend(),
    }
    data = {"train": train, "test": test, "mean": mean, "std": std}
    for name, encoder in encoders.items():
        if args.probe_epochs:  # 0: no probe
            results.update(probe_encoder(args, name, encoder, **data))
        save_results(results, args.output_dir)
        if args.finetune_epochs:
            results[f"finetune {name}"] = finetune_encoder(args, name, encoder, **data)
            save_results(results, args.output_dir)
    save_results(results, args.output_dir)
    if len(encoders) == 2:
        print_comparisons(results, pretraining["epochs"])
    print(f"total {time.time() - start:.0f} s; results in {args.output_dir}/results.json")


if __name__ == "__main__":
    main()
