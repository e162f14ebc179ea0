"""torch: DistributedDataParallel over 2 gloo processes matches one process.

Run by tests/distribute/test_distribution.py as
`KERAS_BACKEND=torch python -m torch.distributed.run --nproc_per_node=2 ...`.
Rank 0 also trains the single-process reference on the full global batches.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_mae.distribute import torch_ddp  # noqa: E402
from tests.helpers import distributed_common as common  # noqa: E402


def train(weights, images, noise, context):
    model = common.make_model()
    model.set_weights(weights)
    optimizer = common.make_optimizer()
    history = torch_ddp.fit(
        model,
        optimizer,
        images,
        common.GLOBAL_BATCH,
        noise=noise,
        context=context,
        shuffle_seed=None,
        log_every=1,
    )
    return history["loss"], [np.array(w) for w in model.get_weights()]


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
        )
    torch_ddp.destroy_process_group()


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main()
