"""torch DDP: the pre-training callbacks run, and a killed 2-process run resumes exactly.

`keras_mae.recipes.pretrain` runs through `runner.start("ddp")` in 2 gloo
processes on CPU, started as torchrun starts them (`MASTER_ADDR`,
`MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`), on the smallest MAE for 3
epochs of 6 steps (tests/helpers/distributed_resume_worker.py):

- an uninterrupted run: every callback event reaches both ranks with the same
  all-reduced losses, rank 0 alone writes the checkpoint (once per epoch, in
  place when the epoch ends), the pictures and the TensorBoard logs;
- a run killed with SIGKILL (both processes) at a random step of epoch 2 or 3
  (rank 0 holds there until killed, rank 1 waits in the step's all-reduce),
  then the same command again: it resumes after the last completed epoch, and
  its final model and optimizer variables equal the uninterrupted run's bit for
  bit. With 2 ranks each gradient element is one sum `a/2 + b/2`, which gloo
  and float addition give the same in any order, so nothing but the data
  order, the restored state and the per-epoch seeds could make them differ.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "helpers", "distributed_resume_worker.py")
EPOCHS, STEPS = 3, 6  # the worker's
TIMEOUT = 600  # seconds per launch; far more than an idle 2-core machine needs

pytestmark = [
    pytest.mark.serial,
    pytest.mark.skipif(
        keras.backend.backend() != "torch", reason="the DDP loop runs on the torch backend"
    ),
]


def free_ports(count):
    """`count` distinct free ports (all held open while drawn)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(output_dir, port, hold_at=None):
    """Start the 2 ranks as torchrun would; rank 0's stdout is a pipe, the rest go to files."""
    os.makedirs(output_dir, exist_ok=True)
    processes = []
    for rank in range(2):
        env = dict(
            os.environ,
            KERAS_BACKEND="torch",
            OMP_NUM_THREADS="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
        )
        env.pop("HOLD_AT", None)
        if hold_at is not None:
            env["HOLD_AT"] = f"{hold_at[0]} {hold_at[1]}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        log = open(os.path.join(output_dir, f"stderr_rank{rank}.txt"), "ab")
        processes.append(
            subprocess.Popen(
                [sys.executable, WORKER, output_dir],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE if rank == 0 else log,
                stderr=log,
                text=rank == 0,
            )
        )
    return processes


def failure(processes, output_dir, what):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    logs = []
    for rank in range(2):
        path = os.path.join(output_dir, f"stderr_rank{rank}.txt")
        if os.path.exists(path):
            logs.append(f"rank {rank}:\n" + open(path, errors="replace").read()[-3000:])
    return AssertionError(f"{what}\n" + "\n".join(logs))


def finish(processes, output_dir):
    """Wait for both ranks to exit 0; returns rank 0's stdout."""
    deadline = time.monotonic() + TIMEOUT
    try:
        out = processes[0].communicate(timeout=TIMEOUT)[0]
        for process in processes[1:]:
            process.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise failure(processes, output_dir, f"the ranks did not finish in {TIMEOUT} s") from None
    codes = [process.returncode for process in processes]
    if codes != [0, 0] or "DONE" not in out:
        raise failure(processes, output_dir, f"exit codes {codes}; rank 0 printed:\n{out[-2000:]}")
    return out


def kill_when_held(processes, output_dir, epoch, step):
    """SIGKILL both ranks once rank 0 holds at batch `step` of `epoch` (0-based).

    Rank 0 waits in that batch's `on_train_batch_begin`, rank 1 in the batch's
    gradient all-reduce: the job is mid-epoch, past at least one checkpoint.
    """
    target = f"HOLD {epoch} {step}"
    for line in processes[0].stdout:
        if line.strip() == target:
            break
    else:
        raise failure(processes, output_dir, f"rank 0 ended without printing {target!r}")
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, process.returncode


def events(output_dir, rank):
    with open(os.path.join(output_dir, f"events_rank{rank}.json")) as f:
        return json.load(f)


def checkpoint_writes(output_dir, rank):
    path = os.path.join(output_dir, f"writes_rank{rank}.txt")
    if not os.path.exists(path):
        return []
    return [int(line) for line in open(path).read().split()]


def checkpoint_arrays(output_dir):
    with np.load(os.path.join(output_dir, "checkpoint", "variables.npz")) as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.mark.serial
def test_ddp_pretraining_runs_callbacks_and_resumes_bit_identically(tmp_path):
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    epoch, step = random.randint(1, EPOCHS - 1), random.randint(1, STEPS - 2)
    where = f"killed at epoch {epoch + 1}, step {step + 1}"
    # The reference and the run to be killed start together (imports take most of the time).
    ports = free_ports(2)
    reference = launch(whole, ports[0])
    interrupted = launch(killed, ports[1], hold_at=(epoch, step))
    kill_when_held(interrupted, killed, epoch, step)
    finish(reference, whole)

    # (a) The callbacks ran on both ranks, with the same (all-reduced) numbers.
    rank0, rank1 = events(whole, 0), events(whole, 1)
    assert rank0["params"] == rank1["params"] == {"verbose": 0, "epochs": EPOCHS, "steps": STEPS}
    assert rank0["epochs"] == rank1["epochs"] == list(range(EPOCHS))
    assert len(rank0["batch_losses"]) == EPOCHS * STEPS
    assert rank0["batch_losses"] == rank1["batch_losses"]
    assert rank0["epoch_logs"] == rank1["epoch_logs"]
    assert all(np.isfinite(logs["val_loss"]) for logs in rank0["epoch_logs"])
    # Rank 0 wrote each epoch's checkpoint once, before the next callback ran; rank 1 none.
    assert rank0["checkpoints"] == [1, 2, 3]
    assert checkpoint_writes(whole, 0) == [1, 2, 3]
    assert checkpoint_writes(whole, 1) == []
    pictures = sorted(name for name in os.listdir(whole) if name.endswith(".png"))
    assert pictures == [f"reconstruction_epoch_{e:04d}.png" for e in (1, 2, 3)]
    assert os.listdir(os.path.join(whole, "logs"))  # TensorBoard, from rank 0

    # (b) The killed run left the checkpoint of its last completed epoch ...
    done = len(checkpoint_writes(killed, 0))
    assert done == epoch, (where, done)
    assert checkpoint_writes(killed, 1) == []
    # ... and the same command resumes after it, on both ranks ...
    finish(launch(killed, free_ports(1)[0]), killed)
    for rank in range(2):
        assert events(killed, rank)["epochs"] == list(range(done, EPOCHS)), (where, rank)
    assert checkpoint_writes(killed, 0) == [*range(1, done + 1), *range(done + 1, EPOCHS + 1)]
    # ... to the uninterrupted run's losses and variables, bit for bit.
    assert events(killed, 0)["batch_losses"] == rank0["batch_losses"][done * STEPS :], where
    expected, resumed = checkpoint_arrays(whole), checkpoint_arrays(killed)
    assert sorted(resumed) == sorted(expected)
    assert any(name.startswith("optimizer/") for name in expected)
    for name in expected:
        if name.startswith(("model/", "optimizer/")):
            assert expected[name].dtype == resumed[name].dtype, name
            assert expected[name].tobytes() == resumed[name].tobytes(), (where, name)
