"""torch: DistributedDataParallel over 2 gloo processes matches one process.

Run by tests/distribute/test_distribution.py as
`KERAS_BACKEND=torch python -m torch.distributed.run --nproc_per_node=2 ...`.
Rank 0 also trains the single-process reference on the full global batches.
Then two short runs check that the ranks stop together: one where only rank 1
asks to stop (as `TimeLimit` does from its own clock), one where only rank 1's
images overflow the loss to infinity (`StopOnNonFiniteLoss` must raise on both
ranks at the same step, since the logged loss is the all-reduced one).
"""

import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_mae.distribute import torch_ddp  # noqa: E402
from keras_mae.recipes.callbacks import NonFiniteLossError  # noqa: E402
from keras_mae.recipes.callbacks import StopOnNonFiniteLoss  # noqa: E402
from tests.helpers import distributed_common as common  # noqa: E402


def train(weights, images, noise, context, callbacks=(), epochs=1):
    model = common.make_model()
    model.set_weights(weights)
    optimizer = common.make_optimizer()
    model.compile(optimizer=optimizer)
    losses = common.LossHistory()
    torch_ddp.fit(
        model,
        optimizer,
        images,
        common.GLOBAL_BATCH,
        epochs=epochs,
        noise=noise,
        context=context,
        shuffle_seed=None,
        callbacks=[losses, *callbacks],
    )
    return losses.losses, [np.array(w) for w in model.get_weights()]


class StopOnOneRank(keras.callbacks.Callback):
    """Asks to stop after batch 1 of epoch 1, on rank `rank` only."""

    def __init__(self, context, rank):
        super().__init__()
        self.context, self.rank = context, rank
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.context.rank == self.rank and batch == 1:
            self.model.stop_training = True


def gather(values, context):
    """`values` (a list of floats) of every rank."""
    flat = torch.tensor(values, dtype=torch.float64)
    gathered = [torch.zeros_like(flat) for _ in range(context.world_size)]
    torch.distributed.all_gather(gathered, flat)
    return [g.tolist() for g in gathered]


def main():
    torch.set_num_threads(1)
    context = torch_ddp.init_process_group("gloo")
    images, noise = common.make_data()
    weights = common.initial_weights()
    ddp_losses, ddp_weights = train(weights, images, noise, context)
    # Every rank must end with the same weights.
    flat = torch.from_numpy(np.concatenate([w.ravel() for w in ddp_weights]))
    gathered = [torch.zeros_like(flat) for _ in range(context.world_size)]
    torch.distributed.all_gather(gathered, flat)
    rank_diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
    loss_ranks = gather(ddp_losses, context)

    # A stop asked for on rank 1 alone stops both ranks after the same batch.
    stop = StopOnOneRank(context, rank=1)
    train(weights, images, noise, context, callbacks=[stop], epochs=2)
    stopped_after = gather([float(stop.batches)], context)

    # Finite images whose loss overflows, on rank 1 only: both ranks raise at the same step.
    poisoned = images.copy()
    poisoned[common.GLOBAL_BATCH // 2 : common.GLOBAL_BATCH] = 1e30  # rank 1's rows
    try:
        train(weights, poisoned, noise, context, callbacks=[StopOnNonFiniteLoss()])
        raised = ""
    except NonFiniteLossError as error:
        raised = str(error)
    raised_ranks = gather([float(zlib.crc32(raised.encode()))], context)
    if context.is_main:
        single = torch_ddp.DDPContext(0, 1, 0, torch.device("cpu"))
        single_losses, single_weights = train(weights, images, noise, single)
        common.report(
            world_size=context.world_size,
            single_losses=single_losses,
            ddp={
                "losses": ddp_losses,
                "max_weight_diff": common.max_weight_difference(single_weights, ddp_weights),
                "max_weight_change": common.max_weight_difference(weights, ddp_weights),
                "max_rank_diff": rank_diff,
            },
            loss_ranks=loss_ranks,
            stopped_after=stopped_after,
            non_finite_message=raised,
            non_finite_message_crc=raised_ranks,
        )
    torch_ddp.destroy_process_group()


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main()
