"""Peak host memory of MAE pre-training steps with and without activation checkpointing.

    python benchmarks/remat_memory.py --backends jax,tensorflow,torch

Each (backend, remat) setting runs in a fresh Python process: it builds
`MaskedAutoencoder.from_preset(--preset, remat=...)`, compiles AdamW and
`fit`s one step (under JAX and TensorFlow that step compiles, and XLA's
compiler has a peak of its own), then restarts the kernel's peak-RSS counter
(`/proc/self/clear_refs`, Linux) and `fit`s `--steps` more steps of
`--batch-size` random images. On a CPU the step's activations live in host
memory: the peak RSS of those steps above the RSS before them is the training
step's own. Also reported: the whole process's peak
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, compilation included). Prints
one line per backend, side by side; `--output` appends one JSON line per
setting.

Defaults: `mae_vit_tiny_patch4` (32x32x3, 12 encoder blocks of 192, 4 decoder
blocks of 128) at batch 256, 2 measured steps.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def status_mib(field):
    """`VmRSS` (now) or `VmHWM` (peak since the last reset) of this process, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def reset_peak_rss():
    """Linux: restart `VmHWM` from the current RSS (`clear_refs` value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(args):
    """One setting, in this process; prints one JSON line."""
    import keras
    import numpy as np

    import keras_mae

    keras.utils.set_random_seed(0)
    mae = keras_mae.MaskedAutoencoder.from_preset(args.preset, remat=args.remat, seed=0)
    mae.compile(optimizer=keras.optimizers.AdamW(1e-4))
    shape = mae.image_shape
    images = np.random.default_rng(0).random((args.batch_size * args.steps, *shape), "float32")
    fit = dict(batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    before = peak_rss_mib()
    # One step first: it compiles (JAX, TensorFlow), whose own peak is not the step's.
    mae.fit(images[: args.batch_size], **fit)
    steady = status_mib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    history = mae.fit(images, **fit)
    seconds = time.perf_counter() - start
    result = {
        "backend": keras.backend.backend(),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "remat": args.remat,
        "peak_rss_before_fit_mib": round(before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_after_first_step_mib": round(steady, 1),
        "peak_rss_of_steps_mib": round(status_mib("VmHWM"), 1),
        "seconds_per_step": round(seconds / args.steps, 2),
        "loss": float(history.history["loss"][-1]),
    }
    print(json.dumps(result))


def run_setting(backend, remat, args):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--preset",
        args.preset,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
    ] + (["--remat"] if remat else [])
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the {backend} run with remat={remat} failed (exit {done.returncode}):\n"
            + done.stderr[-3000:]
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backends", default="jax,tensorflow,torch", help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--preset", default="mae_vit_tiny_patch4", help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="(default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=2, help="measured training steps (default: %(default)s)"
    )
    parser.add_argument("--output", default=None, help="a .jsonl file to append results to")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--remat", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{args.preset}, batch {args.batch_size}, {args.steps} steps, peak RSS (MiB)")
    for backend in args.backends.split(","):
        plain, remat = (run_setting(backend, flag, args) for flag in (False, True))
        if args.output:
            with open(args.output, "a") as f:
                for result in (plain, remat):
                    f.write(json.dumps(result) + "\n")
        step = [r["peak_rss_of_steps_mib"] - r["rss_after_first_step_mib"] for r in (plain, remat)]
        print(
            f"{backend:10s} peak of the steps {plain['peak_rss_of_steps_mib']:6.0f} -> "
            f"{remat['peak_rss_of_steps_mib']:6.0f} "
            f"({remat['peak_rss_of_steps_mib'] / plain['peak_rss_of_steps_mib']:.2f}x) | "
            f"above the RSS before them {step[0]:6.0f} -> {step[1]:6.0f} "
            f"({step[1] / max(step[0], 1):.2f}x) | s/step {plain['seconds_per_step']:.1f} -> "
            f"{remat['seconds_per_step']:.1f} | loss {plain['loss']:.6f} / {remat['loss']:.6f}"
        )


if __name__ == "__main__":
    main()
