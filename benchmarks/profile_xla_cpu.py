"""Where the time of keras_mae's JAX training step goes on the CPU, op by op.

Runs the CPU benchmark configuration (`train_step.py --config cpu`: preset
`mae_vit_tiny_patch4`, batch 128, float32, AdamW) for a few steps under
`jax.profiler`, with XLA's optimised HLO dumped, and prints the time per step
of each kind of XLA op (fusion kinds: `ynn_fusion` are the matmuls and
reductions, the rest mostly elementwise), the step's time by part (dense
matmuls with their GFLOP/s, attention, GELU, YNNPACK reductions, AdamW,
masking, the elementwise rest; the weight-gradient matmuls run outside YNNPACK
and asynchronously, so their row shows FLOPs but not their time), then the ops
grouped by the model operation they came from (block indices folded, so the 12
encoder blocks add up), with their output shapes. This is how the quadratic residual-gradient fusion
described in BENCHMARKS.md was found: one op kind whose time grew with block
depth.

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

# The JAX attention kernel's name scope in an op's `op_name`
# (`keras_mae.kernels.attention.PROFILE_SCOPE`; keras is imported only later,
# once the backend is set).
ATTENTION_SCOPE = re.compile(r"(^|[/(])attention[/)]")


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


def hlo_text(dump_dir):
    (path,) = glob.glob(os.path.join(dump_dir, "*jit_train_step.cpu_after_optimizations.txt"))
    with open(path) as f:
        return f.read()


def hlo_ops(text):
    """{op name: (output shape, model operation)} from the optimised train-step HLO."""
    ops = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (\S+) .*$", text, re.M):
        name, shape = match.groups()
        origin = re.search(r'op_name="([^"]*)"', match.group(0))
        origin = origin.group(1) if origin else ""
        origin = re.sub(r"block_\d+", "block_*", origin.replace("jit(train_step)/", ""))
        ops[name] = (shape.split("{")[0], origin[:90])
    return ops


def dims(shape):
    """`f32[2176,768]` -> [2176, 768]."""
    inside = re.search(r"\[([\d,]*)\]", shape).group(1)
    return [int(d) for d in inside.split(",") if d]


def fusion_contents(text):
    """{fusion op name: (set of HLO opcodes inside, matmul FLOPs or 0)}.

    A fusion with a `dot` counts 2 x (output elements) x (contracted size).
    """
    bodies = dict(re.findall(r"^(%\S+) .*?\{\n(.*?)\n\}\n", text, re.M | re.S))
    contents = {}
    for name, computation in re.findall(r"%(\S+) = \S+ fusion\(.*?calls=(%[\w.]+)", text):
        body = bodies.get(computation, "")
        opcodes = set(re.findall(r"= \S+ (\w+)\(", body)) - {"parameter"}
        flops = 0
        dot = re.search(r"= (\S+) dot\((%[\w.]+), .*?lhs_contracting_dims=\{([\d,]*)\}", body)
        shapes = dict(re.findall(r"(%[\w.]+) = (\S+) ", body))  # every value's shape
        if dot and dot.group(2) in shapes:
            lhs = dims(shapes[dot.group(2)])
            contracted = 1
            for axis in dot.group(3).split(","):
                contracted *= lhs[int(axis)]
            flops = 2 * contracted * prod(dims(dot.group(1)))
        contents[name] = (opcodes, flops)
    # Dots outside fusions (the weight gradients, which contract the rows: not
    # YNNPACK's) run through XLA's own dot thunk; it returns once the work is
    # queued on the thread pool, so a trace times their launch, and their work
    # shows up in the ops that wait on it.
    entry = text[text.index("\nENTRY") :] if "\nENTRY" in text else ""
    shapes = dict(re.findall(r"(%[\w.]+) = (\S+) ", entry))
    for match in re.finditer(
        r"%([\w.]+) = (\S+) dot\((%[\w.]+), .*?lhs_contracting_dims=\{([\d,]*)\}", entry
    ):
        name, out, lhs, axes = match.groups()
        contracted = prod(dims(shapes[lhs])[int(axis)] for axis in axes.split(","))
        contents[name] = ({"unfused dot"}, 2 * contracted * prod(dims(out)))
    return contents


def prod(values):
    out = 1
    for value in values:
        out *= value
    return out


def category(name, origin, contents):
    """Which part of the step an XLA op belongs to (the model operation first)."""
    opcodes, flops = contents.get(name, (set(), 0))
    if ATTENTION_SCOPE.search(origin):
        return "attention (matmuls, softmax, layout copies)"
    if "erf" in origin:
        return "GELU"
    if "adam_w" in origin:
        return "AdamW"
    if "masking" in origin or "take_along_axis" in origin:
        return "masking (noise, argsort, gathers) and their gradients"
    if "unfused dot" in opcodes:
        return "unfused matmuls (weight gradients; launch time only)"
    if flops:
        return "dense matmuls (with what YNNPACK fused into them)"
    if name.startswith("ynn_fusion"):
        return "YNNPACK reductions (bias and LayerNorm gradients, means)"
    return "elementwise rest (LayerNorm, residuals, loss, copies)"


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

    text = hlo_text(dump_dir)
    times, ops, contents = op_times(trace_dir, args.steps), hlo_ops(text), fusion_contents(text)
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
    by_category, category_flops = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        part = category(name, ops.get(name, ("?", ""))[1], contents)
        by_category[part] += ms
        category_flops[part] += contents.get(name, (None, 0))[1]
    print("\nms/step  share  GFLOP/s  part of the step")
    for part, ms in by_category.most_common():
        timed = category_flops[part] and "launch" not in part
        rate = f"{category_flops[part] / ms / 1e6:7.1f}" if timed else "      -"
        print(f"{ms:7.1f}  {ms / total:5.1%}  {rate}  {part}")
    print("\nms/step  op kind  output  model operation (all blocks together)")
    for (kind, shape, origin), ms in by_origin.most_common(args.top):
        print(f"{ms:7.1f}  {kind}  {shape}  {origin}")


if __name__ == "__main__":
    main()
