"""torch: one rank of a resumable 2-process pre-training through the DDP loop.

Started by tests/distribute/test_ddp_resume.py once per rank with the
environment torchrun sets (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `KERAS_BACKEND=torch`):

    python tests/helpers/distributed_resume_worker.py OUTPUT_DIR

It calls `keras_mae.recipes.pretrain` with `run = runner.start("ddp")` on the
smallest MAE of tests/helpers/tiny.py and tiny random images, so the
pre-training callbacks (checkpoint, non-finite stop, pictures, TensorBoard) run
in the DDP loop, and a recorder callback on every rank writes what it saw to
`OUTPUT_DIR/events_rank{R}.json`; each `EpochCheckpoint` write is appended to
`OUTPUT_DIR/writes_rank{R}.txt`.
Rank 0 prints `BATCH epoch step` at the start of every batch; with
`HOLD_AT="epoch step"` it prints `HOLD epoch step` there and waits, for the
test to kill both processes mid-epoch. The same command continues a killed run.
"""

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_mae.distribute import runner  # noqa: E402
from keras_mae.recipes import callbacks as recipe_callbacks  # noqa: E402
from keras_mae.recipes.pretrain import pretrain  # noqa: E402
from tests.helpers.tiny import smallest_mae  # noqa: E402

EPOCHS = 3
BATCH = 8
IMAGES = 48  # 6 global batches per epoch


class Recorder(keras.callbacks.Callback):
    """Records the callback events this rank sees; rank 0 announces each batch."""

    def __init__(self, rank, output_dir):
        super().__init__()
        self.rank, self.output_dir = rank, output_dir
        self.events = {"epochs": [], "batch_losses": [], "epoch_logs": [], "checkpoints": []}

    def on_train_begin(self, logs=None):
        self.events["params"] = dict(self.params)

    def on_epoch_begin(self, epoch, logs=None):
        self.events["epochs"].append(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.rank == 0:
            point = f"{self.events['epochs'][-1]} {batch}"
            print(f"BATCH {point}", flush=True)
            if point == os.environ.get("HOLD_AT"):
                # Wait here to be killed: rank 1 waits in this step's gradient all-reduce.
                print(f"HOLD {point}", flush=True)
                time.sleep(3600)

    def on_train_batch_end(self, batch, logs=None):
        self.events["batch_losses"].append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.events["epoch_logs"].append({k: float(v) for k, v in logs.items()})
        if self.rank == 0:  # the writer; pretrain() puts its callbacks before this one
            checkpoint = os.path.join(self.output_dir, "checkpoint")
            self.events["checkpoints"].append(recipe_callbacks.checkpoint_epoch(checkpoint))

    def on_train_end(self, logs=None):
        self.events["stop_training"] = bool(self.model.stop_training)
        path = os.path.join(self.output_dir, f"events_rank{self.rank}.json")
        with open(path, "w") as f:
            json.dump(self.events, f)


def count_checkpoint_writes(rank, output_dir):
    """Append every `EpochCheckpoint` write of this rank to `writes_rank{rank}.txt`."""
    write = recipe_callbacks.EpochCheckpoint.on_epoch_end

    def counted(self, epoch, logs=None):
        with open(os.path.join(output_dir, f"writes_rank{rank}.txt"), "a") as f:
            f.write(f"{epoch + 1}\n")
        return write(self, epoch, logs)

    recipe_callbacks.EpochCheckpoint.on_epoch_end = counted


def main():
    output_dir = sys.argv[1]
    torch.set_num_threads(1)
    run = runner.start("ddp")
    rank = run.context.rank
    count_checkpoint_writes(rank, output_dir)
    images = np.random.default_rng(0).uniform(size=(IMAGES, 8, 8, 1)).astype("float32")
    # keras.utils.set_random_seed(0) without its TensorFlow import (seconds per process).
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    mae = smallest_mae(seed=0)
    pretrain(
        mae,
        images,
        epochs=EPOCHS,
        batch_size=BATCH,
        base_learning_rate=1e-2,
        warmup_epochs=1,
        output_dir=output_dir,
        held_out_images=images[:2],
        image_every=1,
        validation_data=(images[:8],),
        verbose=0,
        callbacks=[Recorder(rank, output_dir)],
        run=run,
    )
    print("DONE", flush=True)  # rank 0 only: the other ranks exit after training


if __name__ == "__main__":
    main()
