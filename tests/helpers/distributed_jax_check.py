"""JAX: DataParallel and ModelParallel over 4 host devices match one device.

Run by tests/distribute/test_distribution.py in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mae.distribute import jax_distribution  # noqa: E402
from tests.helpers import distributed_common as common  # noqa: E402


def train(distribution, weights, images, noise):
    keras.distribution.set_distribution(distribution)
    try:
        model = common.make_model()
        model.set_weights(weights)
        model.compile(optimizer=common.make_optimizer())
        losses = common.fit_keras(model, images, noise, common.GLOBAL_BATCH)
        specs = {
            w.path: str(getattr(w.value.sharding, "spec", None))
            for w in model.weights
            if w.path in ("block_0/qkv/kernel", "decoder/block_0/fc2/kernel", "norm/gamma")
        }
        return losses, [np.array(w) for w in model.get_weights()], specs
    finally:
        keras.distribution.set_distribution(None)


def main():
    assert len(jax.devices()) == 4, jax.devices()
    images, noise = common.make_data()
    weights = common.initial_weights()
    single_losses, single_weights, _ = train(None, weights, images, noise)
    results = {"devices": len(jax.devices()), "single_losses": single_losses}
    for name, distribution in (
        ("data_parallel", jax_distribution.data_parallel()),
        ("model_parallel", jax_distribution.model_parallel(model_parallelism=2)),
    ):
        losses, trained, specs = train(distribution, weights, images, noise)
        results[name] = {
            "losses": losses,
            "max_weight_diff": common.max_weight_difference(single_weights, trained),
            "max_weight_change": common.max_weight_difference(weights, trained),
            "specs": specs,
        }
    common.report(**results)


if __name__ == "__main__":
    main()
