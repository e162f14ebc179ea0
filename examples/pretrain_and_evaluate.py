"""Pre-train a MAE on an image folder held in memory, then score it the paper's two ways.

    KERAS_BACKEND=jax python examples/pretrain_and_evaluate.py \
        --data cifar10 --holdout-per-class 500 --epochs 100

`--data` is an ImageFolder (`DIR/train/<class>/*.jpg`, and `DIR/test/` unless
`--holdout-per-class N` holds out the last N files of each class instead). The
images are decoded once into a uint8 array (Pillow; no TensorFlow needed), and
augmentation runs on the accelerator inside the compiled step: RandomResizedCrop
(scale 0.2-1 for pre-training, 0.08-1 for fine-tuning), horizontal flip and
mean/std normalisation, as Keras layers in the model. Then:

1. pre-training, norm_pix_loss, AdamW (0.9, 0.95), wd 0.05, warmup + cosine;
2. linear probe on the frozen cls token (BatchNorm without affine + Dense,
   LARS, warmup + cosine) for each learning rate of `--probe-blr`, features
   cached;
3. fine-tuning (mean-pooled tokens + LayerNorm + head, layer-wise lr decay,
   drop path, label smoothing);

steps 2 and 3 for the pre-trained encoder and for the same encoder at random
initialisation (`--epochs 0`: the random-init baseline alone). It prints one
line per result and writes `results.json`, `reconstructions.png` and
`encoder.keras` into `--output-dir`. The README's
CIFAR-10 table comes from this script (the command is there).
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import keras_mae
from keras_mae.data.image_folder import load_image_folder
from keras_mae.data.image_folder import split_per_class
from keras_mae.models.presets import preset_config
from keras_mae.recipes.finetune import build_classifier
from keras_mae.recipes.finetune import compile_classifier
from keras_mae.recipes.linear_probe import probe_on_features
from keras_mae.recipes.optimizers import pretraining_optimizer
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for
from keras_mae.recipes.visualization import image_grid
from keras_mae.recipes.visualization import write_png


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with train/<class>/*")
    parser.add_argument(
        "--holdout-per-class",
        type=int,
        default=0,
        help="hold out the last N files of each training class as the "
        "evaluation split (default: use DIR/test)",
    )
    parser.add_argument(
        "--preset", default="mae_vit_tiny_patch4", choices=sorted(keras_mae.PRESETS)
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="pre-training epochs (0: evaluate the random-init encoder only)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="stop pre-training after this long (0: no limit); the epochs done are reported",
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--blr", type=float, default=1.5e-3, help="pre-training base lr: lr = blr x batch / 256"
    )
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--probe-epochs", type=int, default=90)
    parser.add_argument("--probe-batch-size", type=int, default=1024)
    parser.add_argument(
        "--probe-blr",
        type=float,
        nargs="+",
        default=[0.1, 1.6],
        help="linear-probe base lrs to try (lr = blr x batch / 256)",
    )
    parser.add_argument(
        "--probe-pooling",
        nargs="+",
        default=["cls"],
        choices=["cls", "mean"],
        help="probe features: the cls token (official) and/or the mean of the patch tokens",
    )
    parser.add_argument("--finetune-epochs", type=int, default=20, help="0 skips it")
    parser.add_argument("--finetune-batch-size", type=int, default=512)
    parser.add_argument("--finetune-blr", type=float, default=1e-3)
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="mae_eval_output")
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args(argv)


def load(args):
    images, labels, class_names = load_image_folder(args.data, "train")
    if args.holdout_per_class:
        train, held = split_per_class(labels, args.holdout_per_class)
        return (images[train], labels[train]), (images[held], labels[held]), class_names
    test_images, test_labels, _ = load_image_folder(args.data, "test")
    return (images, labels), (test_images, test_labels), class_names


def normalization(mean, std):
    return keras.layers.Normalization(mean=mean, variance=np.square(std))


def augmentation(image_shape, mean, std, scale, seed):
    """On-device augmentation: random resized crop, flip, normalisation."""
    height, width, _ = image_shape
    return keras.Sequential(
        [
            keras_mae.RandomResizedCrop(height, width, scale=scale, seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
            normalization(mean, std),
        ],
        name="augmentation",
    )


class ShuffledBatches(keras.utils.PyDataset):
    """Full batches of `arrays` in a new random order each epoch (no partial
    batch, so a compiled step never sees a second shape)."""

    def __init__(self, arrays, batch_size, seed):
        super().__init__()
        if len(arrays[0]) < batch_size:
            raise ValueError(
                f"{len(arrays[0])} training images are fewer than one batch of "
                f"{batch_size}: lower the batch size."
            )
        self.arrays, self.batch_size = arrays, batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return len(self.arrays[0]) // self.batch_size

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        batch = tuple(a[rows] for a in self.arrays)
        return batch if len(batch) > 1 else batch[0]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.arrays[0]))


class TimeLimit(keras.callbacks.Callback):
    def __init__(self, minutes):
        super().__init__()
        self.limit = minutes * 60
        self.epochs_done = 0

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        if self.limit and time.time() - self.start > self.limit:
            print(f"time limit reached after epoch {epoch + 1}: stopping pre-training")
            self.model.stop_training = True


def pretrain(args, train_images, mean, std, held_out):
    mae = keras_mae.MaskedAutoencoder.from_preset(
        args.preset,
        norm_pix_loss=True,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        augmentation=augmentation(
            preset_config(args.preset)["image_shape"], mean, std, (0.2, 1.0), args.seed
        ),
    )
    batches = ShuffledBatches((train_images,), args.batch_size, args.seed)
    steps = len(batches)
    lr = scaled_learning_rate(args.blr, args.batch_size)
    schedule = warmup_cosine_for(lr, args.epochs, steps, args.warmup_epochs)
    mae.compile(optimizer=pretraining_optimizer(mae, schedule))
    if args.epochs == 0:
        return mae, {"epochs": 0, "seconds": 0.0}
    limit = TimeLimit(args.max_minutes)
    start = time.time()
    history = mae.fit(batches, epochs=args.epochs, verbose=args.verbose, callbacks=[limit])
    seconds = time.time() - start
    losses = history.history["loss"]
    print(
        f"pre-training: {limit.epochs_done} epochs in {seconds:.0f} s, "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}",
        flush=True,
    )
    write_reconstructions(
        mae, held_out, mean, std, os.path.join(args.output_dir, "reconstructions.png")
    )
    return mae, {
        "epochs": limit.epochs_done,
        "seconds": round(seconds, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_lr": lr,
    }


def write_reconstructions(mae, images, mean, std, path):
    masked, filled = mae.reconstruct(images)
    normalized = mae.augmentation(images, training=False)

    def to_unit(x):  # normalised -> [0, 1] (mean and std are on the 0-255 scale)
        x = np.asarray(keras.ops.convert_to_numpy(x), "float32")
        return np.clip((x * std + mean) / 255.0, 0.0, 1.0)

    write_png(path, image_grid([to_unit(normalized), to_unit(masked), to_unit(filled)], scale=4))


def frozen_features(encoder, images, mean, std, batch_size, poolings):
    """`{pooling: features}` of the frozen encoder (after its final norm) on
    uncropped images, from one pass."""
    inputs = keras.Input(images.shape[1:], dtype="uint8")
    normalized = normalization(mean, std)(inputs)
    tokens = encoder(normalized, training=False)
    outputs = {pooling: keras_mae.TokenPooling(pooling)(tokens) for pooling in poolings}
    features = keras.Model(inputs, outputs).predict(images, batch_size=batch_size, verbose=0)
    return {pooling: np.asarray(features[pooling], "float32") for pooling in poolings}


def linear_probe(args, encoder, train, test, mean, std, num_classes):
    """`{pooling: {blr: held-out accuracy}}` of the official linear probe."""
    x_train = frozen_features(
        encoder, train[0], mean, std, args.probe_batch_size, args.probe_pooling
    )
    x_test = frozen_features(encoder, test[0], mean, std, args.probe_batch_size, args.probe_pooling)
    results = {}
    for pooling in args.probe_pooling:
        results[pooling] = {}
        for blr in args.probe_blr:
            keras.utils.set_random_seed(args.seed)
            results[pooling][str(blr)], _, _ = probe_on_features(
                x_train[pooling],
                train[1],
                x_test[pooling],
                test[1],
                num_classes,
                args.probe_epochs,
                args.probe_batch_size,
                blr,
            )
    return results


def finetune(args, encoder, train, test, mean, std, num_classes):
    keras.utils.set_random_seed(args.seed)
    classifier = build_classifier(encoder, num_classes, drop_path_rate=0.1)
    images = keras.Input(train[0].shape[1:], dtype="uint8", name="images")
    augment = augmentation(encoder.image_shape, mean, std, (0.08, 1.0), args.seed)
    model = keras.Model(images, classifier(augment(images)), name="finetune")
    one_hot = np.eye(num_classes, dtype="float32")
    batches = ShuffledBatches((train[0], one_hot[train[1]]), args.finetune_batch_size, args.seed)
    compile_classifier(
        model,
        encoder.num_layers,
        args.finetune_epochs,
        len(batches),
        args.finetune_batch_size,
        args.finetune_blr,
        layer_decay=args.layer_decay,
        label_smoothing=0.1,
    )
    model.fit(batches, epochs=args.finetune_epochs, verbose=0)
    logits = model.predict(test[0], batch_size=args.finetune_batch_size, verbose=0)
    return float((np.asarray(logits).argmax(-1) == test[1]).mean())


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    start = time.time()
    train, test, class_names = load(args)
    print(
        f"backend {keras.backend.backend()}: {len(train[0])} training and "
        f"{len(test[0])} held-out images of {len(class_names)} classes, decoded in "
        f"{time.time() - start:.0f} s",
        flush=True,
    )
    pixels = train[0].reshape(-1, train[0].shape[-1]).astype("float32") / 255.0
    mean, std = pixels.mean(0), pixels.std(0)
    # Normalisation layers work on the 0-255 scale of the uint8 inputs.
    mean, std = 255.0 * mean, 255.0 * std

    mae, pretraining = pretrain(args, train[0], mean, std, test[0][:8])
    mae.encoder.save(os.path.join(args.output_dir, "encoder.keras"))
    if args.epochs:
        random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())
        encoders = {"pre-trained": mae.encoder, "random init": random_encoder}
    else:  # --epochs 0: the baseline alone
        encoders = {"random init": mae.encoder}
    results = {"args": vars(args), "pretraining": pretraining, "backend": keras.backend.backend()}

    def save():  # after every result, so an interrupted run keeps what it measured
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=float)

    for name, encoder in encoders.items():
        probes = linear_probe(args, encoder, train, test, mean, std, len(class_names))
        for pooling, probe in probes.items():
            print(
                f"linear probe ({name}, {pooling}): "
                + ", ".join(f"blr {blr}: {acc:.4f}" for blr, acc in probe.items()),
                flush=True,
            )
            results[f"probe {name} {pooling}"] = probe
        save()
        if args.finetune_epochs:
            accuracy = finetune(args, encoder, train, test, mean, std, len(class_names))
            print(f"fine-tune ({name}), {args.finetune_epochs} epochs: {accuracy:.4f}", flush=True)
            results[f"finetune {name}"] = accuracy
            save()
    save()
    print(f"total {time.time() - start:.0f} s; results in {args.output_dir}/results.json")


if __name__ == "__main__":
    main()
