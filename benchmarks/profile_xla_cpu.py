"""Where the time of keras_mae's JAX training step goes on the CPU, op by op.

Runs the CPU benchmark configuration (`train_step.py --config cpu`: preset
`mae_vit_tiny_patch4`, batch 128, float32, AdamW) for a few steps under
`jax.profiler`, with XLA's optimised HLO dumped, and prints the time per step
of each kind of XLA op (fusion kinds: `ynn_fusion` are the matmuls, the rest
mostly elementwise), then the ops grouped by the model operation they came
from (block indices folded, so the 12 encoder blocks add up), with their
output shapes. This is how the quadratic residual-gradient fusion described
in BENCHMARKS.md was found: one op kind whose time grew with block depth.

Usage:
    python benchmarks/profile_xla_cpu.py [--steps 3] [--top 30] [--preset NAME]

JAX only (it sets KERAS_BACKEND=jax); the numbers are profiler-inflated, so
compare them with each other, and time changes with `train_step.py`.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--top", type=int, default=30, help="rows of the per-op table")
    parser.add_argument("--preset", default="mae_vit_tiny_patch4")
    parser.add_argument("--batch-size", type=int, default=128)
    return parser.parse_args()


def op_times(trace_dir, steps):
    """{XLA op name: milliseconds per step} from the profiler's trace events."""
    (path,) = glob.glob(os.path.join(trace_dir, "plugins/profile/*/*.trace.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    times = collections.Counter()
    for event in events:
        name = event.get("name", "")
        # Python frames are "$file:line"; executor and client spans wrap the ops.
        if event.get("ph") != "X" or name.startswith("$") or "::" in name or "(" in name:
            continue
        times[name] += event["dur"] / 1e3 / steps
    return times


def hlo_ops(dump_dir):
    """{op name: (output shape, model operation)} from the optimised train-step HLO."""
    (path,) = glob.glob(os.path.join(dump_dir, "*jit_train_step.cpu_after_optimizations.txt"))
    with open(path) as f:
        text = f.read()
    ops = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (\S+) .*$", text, re.M):
        name, shape = match.groups()
        origin = re.search(r'op_name="([^"]*)"', match.group(0))
        origin = origin.group(1) if origin else ""
        origin = re.sub(r"block_\d+", "block_*", origin.replace("jit(train_step)/", ""))
        ops[name] = (shape.split("{")[0], origin[:90])
    return ops


def main():
    args = parse_args()
    os.environ["KERAS_BACKEND"] = "jax"
    dump_dir = tempfile.mkdtemp(prefix="xla_dump_")
    trace_dir = tempfile.mkdtemp(prefix="jax_trace_")
    flags = f"--xla_dump_to={dump_dir} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=train_step"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()

    import jax
    import numpy as np
    from train_step import CONFIGS  # benchmarks/ is on the path of its scripts
    from train_step import build_keras_mae

    mae = build_keras_mae(dict(CONFIGS["cpu"], preset=args.preset))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size * args.steps, *mae.image_shape), "float32")
    fit = dict(batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
    mae.fit(images, **fit)  # compiles
    with jax.profiler.trace(trace_dir):
        mae.fit(images, **fit)

    times, ops = op_times(trace_dir, args.steps), hlo_ops(dump_dir)
    total = sum(times.values())
    by_kind, by_origin = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        by_kind[re.sub(r"\.\d+$", "", name)] += ms
        shape, origin = ops.get(name, ("?", "?"))
        by_origin[(re.sub(r"\.\d+$", "", name), shape, origin)] += ms
    print(f"{args.preset}, batch {args.batch_size}: XLA ops {total:.0f} ms per step")
    print("\nms/step  share  op kind")
    for kind, ms in by_kind.most_common(12):
        print(f"{ms:7.1f}  {ms / total:5.1%}  {kind}")
    print("\nms/step  op kind  output  model operation (all blocks together)")
    for (kind, shape, origin), ms in by_origin.most_common(args.top):
        print(f"{ms:7.1f}  {kind}  {shape}  {origin}")


if __name__ == "__main__":
    main()
