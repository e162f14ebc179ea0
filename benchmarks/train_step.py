"""Time the MAE training step of keras_mae on each backend next to Hugging Face.

One training step is forward + backward + AdamW (betas 0.9/0.95, weight decay
0.05) on a fixed batch, mask ratio 0.75. keras_mae runs its own `fit` (the
step Keras compiles for the backend: XLA under JAX; under TensorFlow XLA on a
GPU and a graph without XLA on a CPU-only machine, where Keras'
`jit_compile="auto"` turns XLA off; eager under PyTorch); Hugging Face
`ViTMAEForPreTraining` (sdpa attention) runs a plain torch loop with
`torch.optim.AdamW` on the same architecture and batch. Each
implementation runs in its own subprocess and times `--windows` windows of
`--steps` steps after a warm-up window; only one process works at a time.
With `--schedule interleaved` (the default on the CPU) the processes take
turns window by window, so each ratio compares windows taken seconds apart
(a shared or virtual machine's speed drifts by tens of percent over minutes);
`sequential` (the default on a GPU, where each process needs the device's
memory) runs them one after the other. The whole round is repeated
`--repeats` times.

Configurations:
    cpu: preset `mae_vit_tiny_patch4` (32x32, patch 4, 192-d x 12 blocks, 3
        heads, decoder 128-d x 4), batch 128, float32.
    gpu: preset `mae_vit_base_patch16` (ViT-B/16 at 224, decoder 512-d x 8),
        batch 256, bf16 (`mixed_bfloat16` policy; torch autocast for HF),
        norm_pix_loss.

Usage:
    python benchmarks/train_step.py --config cpu --repeats 2
    python benchmarks/train_step.py --config gpu --impls hf jax torch --repeats 2
    python benchmarks/train_step.py --config gpu --impls jax --pad-attention none
    python benchmarks/train_step.py --config gpu --impls jax torch --repeats 1 \
        --preset mae_vit_large_patch16 --batch-size 128

Prints one JSON line per measurement and then a markdown table with images/s
(median over repeats), the ratio to Hugging Face (median of the per-round
ratios), TFLOP/s from the analytic count (`training_flops_per_image`), images
per CPU-second (process CPU time over all threads: steadier than wall time
when other work shares the machine) with its ratio, and the peak memory
(process peak RSS on the CPU, device peak on a GPU).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "cpu": {
        "preset": "mae_vit_tiny_patch4",
        "batch_size": 128,
        "precision": "float32",
        "norm_pix_loss": False,
    },
    "gpu": {
        "preset": "mae_vit_base_patch16",
        "batch_size": 256,
        "precision": "bfloat16",
        "norm_pix_loss": True,
    },
}
BACKENDS = ("jax", "tensorflow", "torch")
MASK_RATIO = 0.75

if "KERAS_BACKEND" not in os.environ:
    # The driver and the HF worker read the presets through keras_mae, which
    # imports keras: give it a backend that is installed (GPU machines often
    # have no TensorFlow, Keras' default).
    import importlib.util

    os.environ["KERAS_BACKEND"] = next((b for b in BACKENDS if importlib.util.find_spec(b)), "jax")


def preset_architecture(name):
    # Read the preset table without importing keras (the driver stays light).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from keras_mae.models.presets import preset_config

    config = preset_config(name)
    config.setdefault("mlp_ratio", 4.0)
    return config


def training_flops_per_image(config, mask_ratio=MASK_RATIO):
    """Matmul FLOPs (2 per multiply-add, attention included) of one training image.

    The patch projection runs on every patch, the encoder on the
    `int(L * (1 - mask_ratio))` visible patches + cls, the decoder on all
    `1 + L` tokens (its head included); training = 3 x forward. Gives 58.7,
    124.5 and 291.4 GFLOP for ViT-B/16, L/16 and H/14 at 224.
    """
    height, width, channels = config["image_shape"]
    p = config["patch_size"]
    num_patches = (height // p) * (width // p)
    patch_dim = p * p * channels
    ratio = config["mlp_ratio"]

    def blocks(depth, tokens, dim):
        linear = 2 * tokens * dim * dim * (3 + 1 + 2 * ratio)  # qkv, proj, fc1, fc2
        attention = 2 * 2 * tokens * tokens * dim  # q @ k and weights @ v
        return depth * (linear + attention)

    dim, dec_dim = config["hidden_dim"], config["decoder_hidden_dim"]
    encoder_tokens = 1 + int(num_patches * (1 - mask_ratio))
    decoder_tokens = 1 + num_patches
    forward = (
        2 * num_patches * patch_dim * dim
        + blocks(config["num_layers"], encoder_tokens, dim)
        + 2 * encoder_tokens * dim * dec_dim
        + blocks(config["decoder_num_layers"], decoder_tokens, dec_dim)
        + 2 * decoder_tokens * dec_dim * patch_dim
    )
    return 3 * forward


def clocks():
    """(wall, process CPU, Unix time) seconds; CPU time counts every thread."""
    return time.perf_counter(), time.process_time(), time.time()


def elapsed(start):
    """(wall, CPU) seconds since `start = clocks()`, and the Unix time it began."""
    wall, cpu, _ = clocks()
    return wall - start[0], cpu - start[1], start[2]


def peak_host_memory_gib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


# --------------------------------------------------------------------------- keras


def build_keras_mae(config, jit_compile="auto", attention_padding="auto"):
    """keras_mae's model of `config`, seeded, compiled with the benchmark's AdamW."""
    import keras

    import keras_mae

    keras.utils.set_random_seed(0)
    mae = keras_mae.MaskedAutoencoder.from_preset(
        config["preset"],
        norm_pix_loss=config["norm_pix_loss"],
        mask_ratio=MASK_RATIO,
        attention_padding=attention_padding,
    )
    mae.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=1.5e-4, beta_1=0.9, beta_2=0.95, weight_decay=0.05
        ),
        jit_compile=jit_compile,
    )
    return mae


def run_keras(args, config):
    import keras
    import numpy as np

    backend = keras.backend.backend()
    gpu = on_gpu(backend)
    if config["precision"] == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    padding = {"auto": "auto", "none": None}.get(args.pad_attention, args.pad_attention)
    padding = padding if padding in ("auto", None) else int(padding)
    mae = build_keras_mae(config, args.jit_compile, padding)
    batch = config["batch_size"]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, *mae.image_shape), dtype="float32")
    if args.feed == "device" or (args.feed == "auto" and gpu):
        # The batch lives on the GPU, as HF's does: the step is timed, not a
        # host-to-device copy of 154 MB per step (ViT-B/16, batch 256).
        device_batch = keras.ops.convert_to_tensor(images)

        def batches():
            while True:
                yield (device_batch,)

        data, fit_kwargs = batches(), {"steps_per_epoch": args.steps}
    else:
        # One epoch = `steps` steps over the same batch, so each epoch is one window.
        data = np.concatenate([images] * args.steps)
        fit_kwargs = {"batch_size": batch, "shuffle": False}

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.windows = []

        def on_epoch_begin(self, epoch, logs=None):
            if epoch:  # the first epoch runs in the turn that built the model
                wait_for_turn()
            self.start = clocks()

        def on_epoch_end(self, epoch, logs=None):
            # `logs` holds the loss as a Python float: the step queue has drained.
            self.windows.append(elapsed(self.start))
            self.loss = logs["loss"]

    timer = Timer()
    # The first epoch compiles and warms up; the others are timed.
    mae.fit(data, epochs=1 + args.windows, verbose=0, callbacks=[timer], **fit_kwargs)
    return {
        "impl": backend,
        "windows_s": [w[0] for w in timer.windows[1:]],
        "windows_cpu_s": [w[1] for w in timer.windows[1:]],
        "windows_began": [w[2] for w in timer.windows[1:]],  # Unix time
        "first_window_s": timer.windows[0][0],
        "loss": timer.loss,
        "peak_gib": peak_device_memory_gib(backend) if gpu else peak_host_memory_gib(),
        "device": device_name(backend),
        "versions": {"keras": keras.__version__, backend: backend_version(backend)},
    }


def on_gpu(backend):
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def device_name(backend):
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend in ("torch", "hf"):
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
        if gpus
        else "cpu"
    )


def backend_version(backend):
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[backend]
    return __import__(module).__version__


def peak_device_memory_gib(backend):
    if backend == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**30
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30


# --------------------------------------------------------------------------- HF


def run_hf(args, config):
    import numpy as np
    import torch
    import transformers

    arch = preset_architecture(config["preset"])
    height, _, channels = arch["image_shape"]
    hf_config = transformers.ViTMAEConfig(
        image_size=height,
        patch_size=arch["patch_size"],
        num_channels=channels,
        hidden_size=arch["hidden_dim"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        intermediate_size=int(arch["hidden_dim"] * arch["mlp_ratio"]),
        decoder_hidden_size=arch["decoder_hidden_dim"],
        decoder_num_hidden_layers=arch["decoder_num_layers"],
        decoder_num_attention_heads=arch["decoder_num_heads"],
        decoder_intermediate_size=int(arch["decoder_hidden_dim"] * arch["mlp_ratio"]),
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        mask_ratio=MASK_RATIO,
        norm_pix_loss=config["norm_pix_loss"],
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    model = transformers.ViTMAEForPreTraining(hf_config).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05
    )
    batch = config["batch_size"]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, height, height, channels), dtype="float32")
    pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    autocast = torch.autocast(
        device_type=device,
        dtype=torch.bfloat16,
        enabled=config["precision"] == "bfloat16",
    )

    def step():
        with autocast:
            loss = model(pixel_values=pixel_values).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    windows = []
    for window in range(1 + args.windows):
        if window:  # the first window runs in the turn that built the model
            wait_for_turn()
        start = clocks()
        for _ in range(args.steps):
            loss = step()
        loss = float(loss)  # waits for the queue on a GPU
        windows.append(elapsed(start))
    return {
        "impl": "hf",
        "windows_s": [w[0] for w in windows[1:]],
        "windows_cpu_s": [w[1] for w in windows[1:]],
        "windows_began": [w[2] for w in windows[1:]],  # Unix time
        "first_window_s": windows[0][0],
        "loss": loss,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else peak_host_memory_gib(),
        "device": device_name("hf"),
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


# --------------------------------------------------------------------------- driver


def wait_for_turn():
    """Tell the driver this worker is idle, and wait until it says to go on."""
    print("READY", flush=True)
    if not sys.stdin.readline():
        sys.exit("benchmark driver went away")


def worker(args):
    wait_for_turn()  # before the imports: building a model is work too
    config = dict(CONFIGS[args.config])
    if args.batch_size:
        config["batch_size"] = args.batch_size
    if args.preset:
        config["preset"] = args.preset
    result = run_hf(args, config) if args.impl == "hf" else run_keras(args, config)
    per_step = statistics.median(result["windows_s"]) / args.steps
    cpu_per_step = statistics.median(result["windows_cpu_s"]) / args.steps
    result.update(
        images_per_cpu_s=config["batch_size"] / cpu_per_step,
        config=args.config,
        batch_size=config["batch_size"],
        steps_per_window=args.steps,
        images_per_s=config["batch_size"] / per_step,
        step_ms=1000 * per_step,
    )
    print("RESULT " + json.dumps(result), flush=True)


class Worker:
    """One implementation's benchmark process, run one turn at a time.

    The process builds its model and warms up in its first turn and times one
    window in each later turn; between turns it waits on its stdin, idle.
    """

    def __init__(self, args, impl):
        self.impl = impl
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if impl != "hf":
            env["KERAS_BACKEND"] = impl
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--impl",
            impl,
            "--config",
            args.config,
            "--steps",
            str(args.steps),
            "--windows",
            str(args.windows),
            "--jit-compile",
            args.jit_compile,
            "--feed",
            args.feed,
            "--pad-attention",
            args.pad_attention,
        ]
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        if args.preset:
            command += ["--preset", args.preset]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.output = []
        self.result = None
        self.read_until_idle()  # started and waiting for its first turn

    def read_until_idle(self):
        """Read the worker's output up to READY (True) or its RESULT (False)."""
        for line in self.process.stdout:
            if line.startswith("READY"):
                return True
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT ") :])
                self.process.wait()
                return False
            self.output.append(line)
        self.process.wait()
        self.stderr.seek(0)
        sys.stderr.write("".join(self.output)[-3000:] + self.stderr.read()[-3000:])
        raise RuntimeError(f"{self.impl} benchmark failed with exit code {self.process.returncode}")

    def turn(self):
        """Let the worker run its next turn; False once it has reported."""
        try:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it died: read_until_idle reports how
            pass
        return self.read_until_idle()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def run_round(args):
    """{impl: result} of one round, in the schedule's order of turns."""
    interleaved = args.schedule == "interleaved" or (
        args.schedule == "auto" and args.config == "cpu"
    )
    results, workers = {}, []

    def start(impl):
        try:
            workers.append(Worker(args, impl))
            return workers[-1]
        except RuntimeError as error:  # report it, keep the others' numbers
            print(f"FAILED {impl}: {error}", flush=True)

    def take_turn(worker):
        try:
            if worker.turn():
                return True
            results[worker.impl] = worker.result
            print(json.dumps(worker.result), flush=True)
        except RuntimeError as error:
            print(f"FAILED {worker.impl}: {error}", flush=True)
        return False

    try:
        if interleaved:
            active = [worker for worker in map(start, args.impls) if worker]
            while active:
                active = [worker for worker in active if take_turn(worker)]
        else:
            for impl in args.impls:
                worker = start(impl)
                while worker and take_turn(worker):
                    pass
    finally:
        for worker in workers:
            worker.kill()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument(
        "--impls",
        nargs="+",
        default=["hf", *BACKENDS],
        help="hf and/or Keras backends; each runs in its own process",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all impls")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per run")
    parser.add_argument("--batch-size", type=int, default=0, help="override the config")
    parser.add_argument(
        "--preset",
        default="",
        help="override the config's preset "
        "(e.g. mae_vit_large_patch16 to check that it fits in memory)",
    )
    parser.add_argument(
        "--pad-attention",
        default="auto",
        help="keras_mae: pad attention to a multiple of N tokens (cuDNN "
        "flash attention), 'none', or 'auto' (the library default: 64 "
        "under JAX on a GPU in 16-bit, none elsewhere)",
    )
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument(
        "--feed",
        default="auto",
        choices=["auto", "device", "host"],
        help="keras_mae: the batch as a device tensor (auto: on a GPU) or "
        "numpy arrays through fit (auto: on a CPU)",
    )
    parser.add_argument(
        "--schedule",
        default="auto",
        choices=["auto", "interleaved", "sequential"],
        help="interleaved: the processes take turns window by window; "
        "sequential: one after the other (auto: interleaved on the cpu "
        "config, sequential on the gpu one)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
        return worker(args)

    # `timeout` (gpu_checks.sh) stops the driver with SIGTERM: exit through the
    # `finally` of run_round, which kills the workers, so that none of them goes
    # on holding the device into the next step.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    rounds = [run_round(args) for _ in range(args.repeats)]
    args.impls = [i for i in args.impls if all(i in r for r in rounds)]
    if args.impls:
        print_table(args, rounds)


def print_table(args, rounds):
    config = dict(CONFIGS[args.config])
    config["preset"] = args.preset or config["preset"]
    arch = preset_architecture(config["preset"])
    flops = training_flops_per_image(arch)
    print(
        f"\nconfig {args.config}: {config['preset']}, batch "
        f"{args.batch_size or config['batch_size']}, {config['precision']}, "
        f"{flops / 1e9:.3f} GFLOP per training image, {len(rounds)} round(s), "
        f"device {rounds[0][args.impls[0]]['device']}"
    )
    print(
        "| implementation | images/s (median) | all rounds | ratio to HF | TFLOP/s "
        "| images per CPU-s | CPU ratio to HF | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def median_ratio(key, impl):
        if "hf" not in args.impls:
            return "-"
        ratios = [r[impl][key] / r["hf"][key] for r in rounds]
        return f"{statistics.median(ratios):.2f}"

    for impl in args.impls:
        speeds = [r[impl]["images_per_s"] for r in rounds]
        speed = statistics.median(speeds)
        cpu_speed = statistics.median(r[impl]["images_per_cpu_s"] for r in rounds)
        name = "HF ViTMAEForPreTraining (torch)" if impl == "hf" else f"keras_mae ({impl})"
        peak = max(r[impl]["peak_gib"] for r in rounds)
        print(
            f"| {name} | {speed:.1f} | {', '.join(f'{s:.1f}' for s in speeds)} "
            f"| {median_ratio('images_per_s', impl)} | {speed * flops / 1e12:.3f} "
            f"| {cpu_speed:.1f} | {median_ratio('images_per_cpu_s', impl)} | {peak:.2f} |"
        )


if __name__ == "__main__":
    main()
