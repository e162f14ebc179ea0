"""TensorFlow: MirroredStrategy over 2 logical CPU devices matches one device.

Run by tests/distribute/test_distribution.py in a subprocess with `KERAS_BACKEND=tensorflow`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from keras_mae.distribute import tf_distribution  # noqa: E402

DEVICES = tf_distribution.split_cpu(2)  # before any TensorFlow op

import numpy as np  # noqa: E402

from tests.helpers import distributed_common as common  # noqa: E402


def train(strategy, weights, images, noise):
    with strategy.scope():
        model = common.make_model()
        model.set_weights(weights)
        model.compile(optimizer=common.make_optimizer())
    losses = common.fit_keras(model, images, noise, common.GLOBAL_BATCH)
    return losses, [np.array(w) for w in model.get_weights()]


def main():
    images, noise = common.make_data()
    weights = common.initial_weights()
    single_losses, single_weights = train(
        tf_distribution.make_strategy("none"), weights, images, noise
    )
    strategy = tf_distribution.make_strategy("mirrored", devices=DEVICES)
    losses, trained = train(strategy, weights, images, noise)
    common.report(
        devices=DEVICES,
        replicas=strategy.num_replicas_in_sync,
        single_losses=single_losses,
        mirrored={
            "losses": losses,
            "max_weight_diff": common.max_weight_difference(single_weights, trained),
            "max_weight_change": common.max_weight_difference(weights, trained),
        },
    )


if __name__ == "__main__":
    main()
