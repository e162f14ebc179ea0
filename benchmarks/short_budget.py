"""Does a short MAE pre-training on a small image set beat the same encoder at random init?

Measures one pre-training recipe end to end on an ImageFolder training split
(e.g. CIFAR-10's `train/<class>/*.jpg`):

1. split: from each class, `--train-per-class` images (pre-training and probe
   training) and a disjoint `--held-out-per-class` (probe evaluation only),
   drawn with `--seed`;
2. pre-training (`keras_mae.recipes.pretrain.pretrain`, images in memory,
   RandomResizedCrop + flip + normalisation inside the step) with the given
   architecture and recipe, timed in wall seconds and in process CPU seconds
   (user + system, all threads): on a shared machine CPU time is the steadier
   measure of the work;
3. the linear probe, the same for the pre-trained encoder and for the same
   encoder at random initialisation (built from its config before
   pre-training): frozen encoder, features cached once with the evaluation
   transform (normalisation), BatchNorm without affine + linear head, LARS
   (`keras_mae.recipes.linear_probe.probe_on_features`). For each pooling
   (`cls`, `mean`) the probe's base learning rate is picked from
   `--probe-learning-rates` on a validation part of the training split
   (`--probe-val-fraction`), then the probe is retrained on the whole training
   split with it and scored once on the held-out images.

Prints one JSON line (settings, accuracies, CPU and wall minutes) and appends it
to `--output` when given. CPU minutes are reported as "minutes of 2 cores"
(CPU seconds / 120) next to the raw CPU seconds.

Usage (the measured recipe, `keras_mae.recipes.defaults.SHORT_BUDGET`; results and
the measured numbers in docs/recipes.md, "A short pre-training that beats random init"):

    KERAS_BACKEND=jax python benchmarks/short_budget.py --data PATH/cifar10/train \
        --probe-learning-rates 0.4 1.6 6.4 25.6 \
        --output benchmarks/results/short_budget.jsonl

Any setting can be changed by a flag, e.g. `--epochs 20 --hidden-dim 192`; `--epochs 0`
probes two random initialisations (the MAE's untrained encoder, and the one built from
its config).
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


ARCHITECTURE_FLAGS = (
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "decoder_hidden_dim",
    "decoder_num_layers",
    "decoder_num_heads",
)


def cpu_seconds():
    """User + system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_parser():
    from keras_mae.recipes.defaults import SHORT_BUDGET

    recipe = SHORT_BUDGET
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        required=True,
        help="the training folder of an ImageFolder data set: PATH/train/<class>/*.jpg",
    )
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--held-out-per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default=recipe["preset"])
    for name in ARCHITECTURE_FLAGS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=recipe.get(name),
            help=f"overrides the preset's (default: {recipe.get(name)})",
        )
    parser.add_argument("--mask-ratio", type=float, default=recipe["mask_ratio"])
    parser.add_argument(
        "--norm-pix-loss",
        action=argparse.BooleanOptionalAction,
        default=recipe["norm_pix_loss"],
    )
    parser.add_argument("--epochs", type=int, default=recipe["epochs"])
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"])
    parser.add_argument(
        "--base-learning-rate",
        type=float,
        default=recipe["base_learning_rate"],
        help="peak lr = blr x batch / 256",
    )
    parser.add_argument("--warmup-epochs", type=float, default=recipe["warmup_epochs"])
    parser.add_argument("--weight-decay", type=float, default=recipe["weight_decay"])
    parser.add_argument(
        "--crop-min-scale",
        type=float,
        default=recipe["crop_min_scale"],
        help="RandomResizedCrop area range (MIN, 1) of pre-training",
    )
    parser.add_argument("--probe-epochs", type=int, default=90)
    parser.add_argument("--probe-batch-size", type=int, default=256)
    parser.add_argument(
        "--probe-learning-rates",
        type=float,
        nargs="+",
        default=[0.4, 1.6, 6.4, 25.6, 102.4],
        help="base learning rates of the probe's sweep",
    )
    parser.add_argument("--probe-val-fraction", type=float, default=0.2)
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean"])
    parser.add_argument("--label", default="", help="free text stored with the result")
    parser.add_argument("--output", help="a .jsonl file the result line is appended to")
    parser.add_argument("--verbose", type=int, default=2)
    return parser


def split_indices(labels, train_per_class, held_out_per_class, seed):
    """Per class, a seeded shuffle: the first `train_per_class` train, the next held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if train_per_class + held_out_per_class > len(members):
            raise ValueError(
                f"class {label} has {len(members)} images, fewer than "
                f"--train-per-class {train_per_class} + --held-out-per-class "
                f"{held_out_per_class}: lower them."
            )
        train.append(members[:train_per_class])
        held.append(members[train_per_class : train_per_class + held_out_per_class])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def load_split(folder, train_per_class, held_out_per_class, seed):
    """`(x_train, y_train), (x_held, y_held), class_names`, decoding only the chosen files."""
    from concurrent.futures import ThreadPoolExecutor

    from keras_mae.data.image_folder import decode
    from keras_mae.data.image_folder import list_image_folder

    folder = os.path.normpath(folder)
    root, split = os.path.dirname(folder), os.path.basename(folder)
    if split != "train":
        raise ValueError(
            f"--data must name a training folder PATH/train (with <class>/ folders "
            f"inside). Received: {folder!r}"
        )
    paths, labels, class_names = list_image_folder(root, split)
    train, held = split_indices(labels, train_per_class, held_out_per_class, seed)

    def images(indices):
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            return np.stack(list(pool.map(lambda i: decode(paths[i], None, "RGB"), indices)))

    return (images(train), labels[train]), (images(held), labels[held]), class_names


class EpochClock:
    """A Keras callback recording the process CPU and wall seconds at each epoch's end."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.cpu, self.wall = [], []  # stay empty when no epoch runs
                self.start = cpu_seconds()

            def on_train_begin(self, logs=None):
                self.cpu, self.wall = [], []
                self.start = cpu_seconds()

            def on_epoch_end(self, epoch, logs=None):
                self.cpu.append(cpu_seconds())
                self.wall.append(time.time())
                print(f"epoch {epoch + 1}: {self.cpu[-1] - self.start:.0f} CPU s", flush=True)

        return Clock()


def probe_encoder(encoder, train, held, normalization, args):
    """Probe accuracies of `encoder` per pooling, the lr picked on a validation part."""
    import keras

    from keras_mae.recipes.linear_probe import encoder_features
    from keras_mae.recipes.linear_probe import probe_on_features

    start = time.time()
    f_train, y_train = encoder_features(
        encoder, train, args.poolings, args.probe_batch_size, normalization
    )
    f_held, y_held = encoder_features(
        encoder, held, args.poolings, args.probe_batch_size, normalization
    )
    rng = np.random.default_rng(args.seed + 1)
    order = rng.permutation(len(y_train))
    n_val = int(round(len(order) * args.probe_val_fraction))
    val, fit = order[:n_val], order[n_val:]
    num_classes = int(max(y_train.max(), y_held.max())) + 1
    results = {}
    for pooling in args.poolings:
        x, x_held = f_train[pooling], f_held[pooling]
        sweep = {}
        for rate in args.probe_learning_rates:
            keras.utils.set_random_seed(args.seed)
            sweep[rate], _, _ = probe_on_features(
                x[fit],
                y_train[fit],
                x[val],
                y_train[val],
                num_classes,
                epochs=args.probe_epochs,
                batch_size=args.probe_batch_size,
                base_learning_rate=rate,
            )
        best = max(sweep, key=sweep.get)
        keras.utils.set_random_seed(args.seed)
        accuracy, _, history = probe_on_features(
            x,
            y_train,
            x_held,
            y_held,
            num_classes,
            epochs=args.probe_epochs,
            batch_size=args.probe_batch_size,
            base_learning_rate=best,
        )
        results[pooling] = {
            "held_out_accuracy": accuracy,
            "train_accuracy": float(history.history["accuracy"][-1]),
            "base_learning_rate": best,
            "val_accuracy_by_lr": {str(k): v for k, v in sweep.items()},
        }
    results["seconds"] = time.time() - start
    return results


def load_images(args, start):
    """`(train, held, class_names)` of the split, decoded; prints their counts."""
    import keras

    train, held, class_names = load_split(
        args.data, args.train_per_class, args.held_out_per_class, args.seed
    )
    print(
        f"backend {keras.backend.backend()}: {len(train[0])} training and "
        f"{len(held[0])} held-out images of {len(class_names)} classes, decoded in "
        f"{time.time() - start:.0f} s",
        flush=True,
    )
    return train, held, class_names


def build_model(args, image_shape, *, mean, std):
    """`(mae, config)`: the preset with the flags' architecture, its augmentation inside."""
    import keras_mae
    from keras_mae.models.presets import preset_config
    from keras_mae.recipes.augmentation import image_augmentation

    architecture = {
        name: getattr(args, name) for name in ARCHITECTURE_FLAGS if getattr(args, name) is not None
    }
    config = preset_config(args.preset)
    config.update(architecture, image_shape=image_shape)
    augmentation = image_augmentation(
        image_shape,
        scale=(args.crop_min_scale, 1.0),
        mean=mean,
        std=std,
        max_value=255.0,
        seed=args.seed,
    )
    mae = keras_mae.MaskedAutoencoder(
        **config,
        mask_ratio=args.mask_ratio,
        norm_pix_loss=args.norm_pix_loss,
        seed=args.seed,
        augmentation=augmentation,
    )
    return mae, config


def pretrain_timed(args, mae, images):
    """Pre-train `mae`, timed: its summary and `{"cpu", "wall", "epoch_cpu"}` seconds."""
    from keras_mae.recipes.pretrain import pretrain

    clock = EpochClock()
    cpu_start, wall_start = cpu_seconds(), time.time()
    summary = pretrain(
        mae,
        images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        verbose=args.verbose,
        callbacks=[clock],
    )
    cpu_pretrain, wall_pretrain = cpu_seconds() - cpu_start, time.time() - wall_start
    print(
        f"pre-training: {args.epochs} epochs, {cpu_pretrain:.0f} CPU s "
        f"({cpu_pretrain / 120:.1f} min of 2 cores), {wall_pretrain:.0f} s wall, "
        f"loss {summary.get('first_loss', float('nan')):.4f} -> "
        f"{summary.get('last_loss', float('nan')):.4f}",
        flush=True,
    )
    epoch_cpu = np.diff([cpu_start] + clock.cpu)
    return summary, {"cpu": cpu_pretrain, "wall": wall_pretrain, "epoch_cpu": epoch_cpu}


def probe_encoders(encoders, train, held, normalization, args):
    """`{name: probe_encoder results}` of each named encoder, printed one line each."""
    probes = {}
    for name, encoder in encoders:
        probes[name] = probe_encoder(encoder, train, held, normalization, args)
        print(
            f"probe ({name}): "
            + ", ".join(
                f"{p} {probes[name][p]['held_out_accuracy']:.4f} "
                f"(blr {probes[name][p]['base_learning_rate']})"
                for p in args.poolings
            ),
            flush=True,
        )
    return probes


def settings_record(args, config, peak_learning_rate):
    """The result line's `settings`: the preset, its architecture and the recipe."""
    return {
        "preset": args.preset,
        **{k: v for k, v in config.items() if k != "image_shape"},
        "image_shape": list(config["image_shape"]),
        "mask_ratio": args.mask_ratio,
        "norm_pix_loss": args.norm_pix_loss,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "base_learning_rate": args.base_learning_rate,
        "peak_learning_rate": peak_learning_rate,
        "warmup_epochs": args.warmup_epochs,
        "weight_decay": args.weight_decay,
        "crop_min_scale": args.crop_min_scale,
        "probe_epochs": args.probe_epochs,
        "probe_batch_size": args.probe_batch_size,
        "probe_learning_rates": args.probe_learning_rates,
        "probe_val_fraction": args.probe_val_fraction,
    }


def pretrain_record(summary, seconds, parameters):
    """The result line's `pretrain`: CPU and wall time, losses, encoder parameters."""
    cpu_pretrain, wall_pretrain, epoch_cpu = seconds["cpu"], seconds["wall"], seconds["epoch_cpu"]
    return {
        "cpu_seconds": cpu_pretrain,
        "cpu_minutes_of_2_cores": cpu_pretrain / 120,
        "wall_minutes": wall_pretrain / 60,
        "first_epoch_cpu_seconds": float(epoch_cpu[0]) if len(epoch_cpu) else None,
        "median_epoch_cpu_seconds": float(np.median(epoch_cpu)) if len(epoch_cpu) else None,
        "first_loss": summary.get("first_loss"),
        "last_loss": summary.get("last_loss"),
        "parameters": parameters,
    }


def write_line(line, output):
    """Print the result line as JSON and append it to `output` when given."""
    text = json.dumps(line)
    print(text, flush=True)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "a") as file:
            file.write(text + "\n")


def main(argv=None):
    """Split, pre-train, probe both encoders; print and store one JSON result line."""
    args = build_parser().parse_args(argv)
    import keras

    import keras_mae
    from keras_mae.data.statistics import pixel_mean_std
    from keras_mae.recipes.augmentation import image_augmentation

    keras.utils.set_random_seed(args.seed)
    start = time.time()
    train, held, class_names = load_images(args, start)
    mean, std = pixel_mean_std(train[0])
    image_shape = tuple(train[0].shape[1:])
    mae, config = build_model(args, image_shape, mean=mean, std=std)
    random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())
    summary, seconds = pretrain_timed(args, mae, train[0])
    # The evaluation transform: the augmentation in inference mode (normalisation).
    normalization = image_augmentation(image_shape, mean=mean, std=std, max_value=255.0)
    encoders = (("pretrained", mae.encoder), ("random_init", random_encoder))
    probes = probe_encoders(encoders, train, held, normalization, args)
    line = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__, "python": platform.python_version()},
        "cpu_count": os.cpu_count(),
        "data": {
            "train_images": len(train[0]),
            "held_out_images": len(held[0]),
            "classes": len(class_names),
            "split_seed": args.seed,
        },
        "settings": settings_record(args, config, summary["peak_learning_rate"]),
        "pretrain": pretrain_record(summary, seconds, int(mae.encoder.count_params())),
        "probe": probes,
        "gain_points": {
            p: 100
            * (
                probes["pretrained"][p]["held_out_accuracy"]
                - probes["random_init"][p]["held_out_accuracy"]
            )
            for p in args.poolings
        },
        "total_wall_minutes": (time.time() - start) / 60,
        "command": " ".join(sys.argv),
    }
    write_line(line, args.output)
    return line


if __name__ == "__main__":
    main()
