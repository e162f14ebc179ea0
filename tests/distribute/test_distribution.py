"""Data-parallel training on each backend equals one device (same loss, same weights).

Each check runs in a subprocess (device counts are fixed when a framework
starts) and only from the pytest run of its own backend:
- JAX: `keras.distribution` DataParallel and ModelParallel on 4 host devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=4`).
- TensorFlow: `MirroredStrategy` on 2 logical CPU devices.
- torch: `DistributedDataParallel` on 2 gloo processes started by torchrun.
A tiny MAE trains 3 steps of global batch 8 with fixed initial weights and
fixed masking noise; see tests/helpers/distributed_common.py.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = keras.backend.backend()
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def run_check(command, backend, extra_env=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    extra_env = dict(extra_env or {})
    if "XLA_FLAGS" in extra_env:  # added to the suite's flags (tests/conftest.py)
        extra_env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {extra_env['XLA_FLAGS']}".strip()
    env.update(extra_env)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(
        f"{' '.join(command)} exited with {done.returncode} and no RESULT line:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )


def assert_matches_single_device(single_losses, result):
    np.testing.assert_allclose(result["losses"], single_losses, rtol=LOSS_RTOL)
    # Training moved the weights, and the distributed run moved them the same way.
    assert result["max_weight_change"] > 1e-2, result
    assert result["max_weight_diff"] < WEIGHT_ATOL, result


@pytest.mark.skipif(BACKEND != "jax", reason="runs from the JAX pass only")
@pytest.mark.serial
def test_jax_data_and_model_parallel_match_one_device():
    result = run_check(
        [sys.executable, "tests/helpers/distributed_jax_check.py"],
        "jax",
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert result["devices"] == 4
    assert len(result["single_losses"]) == 3
    for name in ("data_parallel", "model_parallel"):
        assert_matches_single_device(result["single_losses"], result[name])
    # Weights stay replicated under DataParallel; ModelParallel shards the block
    # kernels over the model axis (column-parallel qkv, row-parallel fc2).
    assert result["data_parallel"]["specs"]["block_0/qkv/kernel"] == "P(None, None)"
    specs = result["model_parallel"]["specs"]
    assert specs["block_0/qkv/kernel"] == "P(None, 'model')"
    assert specs["decoder/block_0/fc2/kernel"] == "P('model', None)"
    assert specs["norm/gamma"] == "P(None,)"


@pytest.mark.skipif(BACKEND != "tensorflow", reason="runs from the TensorFlow pass only")
@pytest.mark.serial
def test_tf_mirrored_strategy_matches_one_device():
    result = run_check([sys.executable, "tests/helpers/distributed_tf_check.py"], "tensorflow")
    assert result["replicas"] == 2
    assert_matches_single_device(result["single_losses"], result["mirrored"])


@pytest.mark.skipif(BACKEND != "torch", reason="runs from the torch pass only")
@pytest.mark.serial
def test_torch_ddp_matches_one_process():
    result = run_check(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "tests/helpers/distributed_torch_check.py",
        ],
        "torch",
        {"OMP_NUM_THREADS": "1"},
    )
    assert result["world_size"] == 2
    assert result["ddp"]["max_rank_diff"] == 0.0
    assert_matches_single_device(result["single_losses"], result["ddp"])
    # The callbacks' logged losses are all-reduced: the same numbers on every rank.
    assert result["loss_ranks"][0] == result["loss_ranks"][1] == result["ddp"]["losses"]
    # A stop asked for on rank 1 after its second batch stopped both ranks there.
    assert result["stopped_after"] == [[2.0], [2.0]]
    # A loss that overflows on rank 1 only stops both ranks with the same message.
    assert "the training loss became" in result["non_finite_message"], result
    assert "epoch 1, batch 1" in result["non_finite_message"], result
    assert result["non_finite_message_crc"][0] == result["non_finite_message_crc"][1]


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on JAX")
def test_layout_map_shards_every_block_kernel_and_nothing_else():
    import keras_mae
    from keras_mae.distribute import jax_distribution

    mesh = keras.distribution.DeviceMesh(
        (1, 1), ("batch", "model"), keras.distribution.list_devices()[:1]
    )
    layout_map = jax_distribution.mae_layout_map(mesh)
    mae = keras_mae.MaskedAutoencoder.from_preset(
        "mae_vit_micro_patch2", num_layers=2, decoder_num_layers=1
    )
    sharded = {}
    for weight in mae.weights:
        layout = layout_map[weight.path]
        if layout is not None:
            sharded[weight.path] = tuple(layout.axes)
    expected = {}
    for block in ("block_0", "block_1", "decoder/block_0"):
        expected[f"{block}/qkv/kernel"] = (None, "model")
        expected[f"{block}/qkv/bias"] = ("model",)
        expected[f"{block}/fc1/kernel"] = (None, "model")
        expected[f"{block}/fc1/bias"] = ("model",)
        expected[f"{block}/proj/kernel"] = ("model", None)
        expected[f"{block}/fc2/kernel"] = ("model", None)
    assert sharded == expected


@pytest.mark.skipif(BACKEND != "torch", reason="torch_ddp needs the torch backend")
def test_rank_batches_partition_each_global_batch():
    from keras_mae.distribute import torch_ddp

    arrays = {"images": np.arange(20), "noise": -np.arange(20)}
    parts = []
    for rank in range(2):
        context = torch_ddp.DDPContext(rank, 2, rank, None)
        parts.append(list(torch_ddp.rank_batches(arrays, 8, context, shuffle_seed=3)))
    assert len(parts[0]) == len(parts[1]) == 2  # 20 // 8 steps; the rest is dropped
    order = np.random.default_rng(3).permutation(20)
    for step in range(2):
        joined = np.concatenate([parts[0][step]["images"], parts[1][step]["images"]])
        np.testing.assert_array_equal(joined, order[step * 8 : (step + 1) * 8])
        np.testing.assert_array_equal(parts[0][step]["noise"], -parts[0][step]["images"])
    with pytest.raises(ValueError, match="divisible"):
        next(torch_ddp.rank_batches(arrays, 7, torch_ddp.DDPContext(0, 2, 0, None)))


def test_runner_rejects_a_distribution_of_another_backend():
    from keras_mae.distribute import runner

    other = {"jax": "mirrored", "tensorflow": "ddp", "torch": "data_parallel"}[BACKEND]
    with pytest.raises(ValueError, match="KERAS_BACKEND="):
        runner.start(other)
    with pytest.raises(ValueError, match="choose one of"):
        runner.start("horovod")
    assert runner.start("none").is_main


@pytest.mark.skipif(BACKEND != "torch", reason="torch_ddp needs the torch backend")
def test_ddp_runs_writing_callbacks_on_rank_0_and_the_others_everywhere(tmp_path):
    from keras_mae.distribute import torch_ddp
    from keras_mae.recipes import callbacks

    class Writer(keras.callbacks.Callback):
        main_process_only = True

    class Plain(keras.callbacks.Callback):
        pass

    writing = [
        callbacks.EpochCheckpoint(str(tmp_path)),
        callbacks.ReconstructionImages(np.zeros((1, 8, 8, 1)), str(tmp_path), (0,), (1,)),
        keras.callbacks.TensorBoard(str(tmp_path)),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "model.keras")),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        keras.callbacks.ProgbarLogger(),
        Writer(),
    ]
    steering = [
        callbacks.StopOnNonFiniteLoss(),
        callbacks.TimeLimit(1),
        keras.callbacks.EarlyStopping(),
        keras.callbacks.TerminateOnNaN(),
        Plain(),
    ]
    every = writing + steering
    rank0 = torch_ddp.DDPContext(0, 2, 0, None)
    rank1 = torch_ddp.DDPContext(1, 2, 1, None)
    assert torch_ddp.rank_callbacks(every, rank0) == every
    assert torch_ddp.rank_callbacks(every, rank1) == steering
    with pytest.raises(ValueError, match="BackupAndRestore does not run in the DDP loop"):
        torch_ddp.rank_callbacks([keras.callbacks.BackupAndRestore(str(tmp_path))], rank0)


@pytest.mark.skipif(BACKEND != "torch", reason="torch_ddp needs the torch backend")
def test_ddp_epoch_order_depends_on_seed_and_epoch_only():
    from keras_mae.data.arrays import epoch_order
    from keras_mae.distribute import torch_ddp

    arrays = {"images": np.arange(24)}
    single = torch_ddp.DDPContext(0, 1, 0, None)

    def order(seed, epoch):
        batches = torch_ddp.rank_batches(
            arrays, 8, single, torch_ddp.epoch_seed(seed, epoch), steps=2
        )
        return np.concatenate([b["images"] for b in batches])

    assert len(order(0, 5)) == 16  # steps=2 of the 3 batches
    np.testing.assert_array_equal(order(0, 5), order(0, 5))
    assert not np.array_equal(order(0, 5), order(0, 6))
    assert not np.array_equal(order(0, 5), order(1, 5))
    # The same permutation as the single-process in-memory feed of pretrain().
    np.testing.assert_array_equal(order(3, 2), epoch_order(24, 3, 2)[:16])
