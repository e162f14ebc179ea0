"""Host time and host waits of the torch-backend MAE training step, next to Hugging Face.

The step at ViT-B/16 MAE depth (12 encoder blocks, 8 decoder blocks) but tiny
widths (48-d encoder with 3 heads, 32-d decoder with 2 heads, 32x32x3 images,
patch 4, batch 8, float32, one thread) does almost no arithmetic, so its time
is the framework's cost per op: the host time that, on a GPU, must stay below
the device's time for the device to stay busy. keras_mae (torch backend,
`MaskedAutoencoder.fit` as users call it, AdamW with the pre-training
recipe's schedule) and Hugging Face `ViTMAEForPreTraining` (sdpa attention, a
plain loop with `torch.optim.AdamW`) run in one process and take turns round
by round, so each ratio compares rounds taken seconds apart on a machine
whose speed drifts.

Host waits: a `TorchDispatchMode` counts, in each training step, the ops that
make the host wait for a GPU: `lift_fresh` (a Python or numpy value turned
into a tensor: a blocking host-to-device copy on CUDA) and
`_local_scalar_dense` (a device value read on the host, `.item()`).
`tests/kernels/test_host_waits.py` asserts none in keras_mae's step.

Usage:
    python benchmarks/host_time.py --rounds 6 --steps 20
    python benchmarks/host_time.py --rounds 4 --jit-compile   # torch.compile the step

Prints one JSON line per round (CPU and wall ms per step of each, the ratio of
CPU times) and a summary with the median ratio and the host waits per step of
each. On a machine with a GPU both run there (Keras puts keras_mae on it; HF
is moved), and the wall time shows whether the host kept the GPU busy.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "torch")

WAIT_OPS = ("lift_fresh", "_local_scalar_dense")

ARCHITECTURE = dict(
    image_shape=(32, 32, 3),
    patch_size=4,
    hidden_dim=48,
    num_layers=12,
    num_heads=3,
    decoder_hidden_dim=32,
    decoder_num_layers=8,
    decoder_num_heads=2,
    mlp_ratio=4.0,
)
BATCH = 8
LEARNING_RATE = 1.5e-4


def host_wait_counter(record_sites=False):
    """A `TorchDispatchMode` counting `WAIT_OPS` (and, optionally, where they come from)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostWaitCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()
            self.sites = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in WAIT_OPS:
                self.counts[name] += 1
                if record_sites:
                    frames = traceback.extract_stack()[-8:-1]
                    site = " < ".join(
                        f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames)
                    )
                    self.sites[(name, site)] += 1
            return func(*args, **(kwargs or {}))

        @property
        def total(self):
            return sum(self.counts.values())

    return HostWaitCounter()


def count_fit_waits(model, images, batch_size, record_sites=False, **fit_kwargs):
    """Host waits in each training step of `model.fit(images)` (one epoch).

    The counter is on from the first callback's `on_train_batch_begin` to the
    last one's `on_train_batch_end`: Keras' torch `fit` runs exactly the step
    in between, and the given `callbacks`' batch hooks around it.

    Returns:
        `(per_step, counter)`: a list of each step's count, and the counter
        (its `counts` and, with `record_sites`, `sites`) over all steps.
    """
    import keras

    counter = host_wait_counter(record_sites)
    per_step = []

    class Start(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = counter.total
            counter.__enter__()

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counter.__exit__(None, None, None)
            per_step.append(counter.total - start.before)

    start = Start()
    callbacks = [start, *fit_kwargs.pop("callbacks", []), Stop()]
    model.fit(images, batch_size=batch_size, epochs=1, callbacks=callbacks, **fit_kwargs)
    return per_step, counter


def keras_mae_step(steps, jit_compile=False, seed=0):
    """A function running `steps` training steps of keras_mae's torch backend through `fit`."""
    import numpy as np

    import keras_mae
    from keras_mae.recipes import optimizers
    from keras_mae.recipes import schedules

    mae = keras_mae.MaskedAutoencoder(**ARCHITECTURE, seed=seed)
    schedule = schedules.WarmupCosine(LEARNING_RATE, total_steps=100_000, warmup_steps=10)
    mae.compile(
        optimizer=optimizers.PretrainingAdamW(schedule, weight_decay=0.05),
        jit_compile=jit_compile,
    )
    images = np.random.default_rng(seed).random((BATCH * steps, 32, 32, 3), dtype=np.float32)
    start = time.process_time()
    mae.fit(images[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # builds, compiles
    compile_seconds = time.process_time() - start

    def run():
        mae.fit(images, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    run.model, run.images, run.compile_seconds = mae, images, compile_seconds
    return run


def hugging_face_step(steps, seed=0):
    """A function running `steps` training steps of `ViTMAEForPreTraining` (plain loop)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.ViTMAEConfig(
        image_size=32,
        patch_size=4,
        num_channels=3,
        hidden_size=48,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=192,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=128,
        mask_ratio=0.75,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        attn_implementation="sdpa",
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Keras puts keras_mae
    model = transformers.ViTMAEForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=LEARNING_RATE,
        betas=(0.9, 0.95),
        weight_decay=0.05,
        foreach=True,  # what torch picks on a GPU; Keras updates with _foreach too
    )
    batches = torch.rand((steps, BATCH, 3, 32, 32), device=device)

    def run():
        for pixel_values in batches:
            loss = model(pixel_values=pixel_values).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    run.model, run.batches = model, batches
    run()  # warm-up
    return run


def synchronize():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hugging_face_waits(run):
    """HF's counts per step, by op. On a CPU most are torch.optim.AdamW reading
    its per-parameter step counters (`.item()`), which live in host memory
    unless `capturable=True`: reads, but no GPU waits."""
    counter = host_wait_counter()
    with counter:
        run()
    return {name: count / len(run.batches) for name, count in counter.counts.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each (default: 6)")
    parser.add_argument("--steps", type=int, default=20, help="steps per round (default: 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile keras_mae's step with torch.compile (jit_compile=True)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ours = keras_mae_step(args.steps, jit_compile=args.jit_compile)
    theirs = hugging_face_step(args.steps)
    ours()  # warm-up
    per_step, counter = count_fit_waits(ours.model, ours.images[: 4 * BATCH], BATCH, verbose=0)
    waits = {
        "keras_mae": {name: n / len(per_step) for name, n in counter.counts.items()},
        "hf": hugging_face_waits(theirs),
    }
    ratios = []
    for index in range(args.rounds):
        times, walls = {}, {}
        order = (("keras_mae", ours), ("hf", theirs))
        for name, run in order if index % 2 == 0 else reversed(order):
            synchronize()
            start, wall = time.process_time(), time.perf_counter()
            run()
            synchronize()
            times[name] = 1000 * (time.process_time() - start) / args.steps
            walls[name] = 1000 * (time.perf_counter() - wall) / args.steps
        ratios.append(times["keras_mae"] / times["hf"])
        row = {
            "round": index,
            "cpu_ms_per_step": times,
            "wall_ms_per_step": walls,
            "ratio_to_hf": round(ratios[-1], 3),
        }
        print(json.dumps(row), flush=True)
    summary = {
        "median_ratio_to_hf": round(statistics.median(ratios), 3),
        "host_waits_per_step": waits,
        "jit_compile": args.jit_compile,
        "keras_mae_first_epoch_cpu_s": round(ours.compile_seconds, 1),
        "threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "steps": args.steps,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "keras": __import__("keras").__version__,
            "transformers": __import__("transformers").__version__,
        },
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
