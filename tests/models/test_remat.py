"""Activation checkpointing (`remat=True`): the same loss and gradients, and it is on.

Each ViT block then wraps its attention and MLP branches in `keras.remat`,
which is `jax.checkpoint` under JAX, `tf.recompute_grad` under TensorFlow
and `torch.utils.checkpoint.checkpoint` under PyTorch; the tests look for
each backend's own mechanism in the backward pass, and that the plain model
has none of it.
"""

import keras
import numpy as np
import pytest

import keras_mae
from tests.helpers.backend_grads import outputs_loss_grads
from tests.helpers.backend_grads import rel_err
from tests.helpers.backend_grads import value_and_grads
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_images

BACKEND = keras.backend.backend()
# Half the patches visible; the same seed gives both models the same masks.
CONFIG = {**TINY, "mask_ratio": 0.5, "seed": 0}
BLOCKS = CONFIG["num_layers"] + CONFIG["decoder_num_layers"]


def inputs():
    return {"images": tiny_images()}


def pair():
    plain = keras_mae.MaskedAutoencoder(**CONFIG)
    remat = keras_mae.MaskedAutoencoder(**CONFIG, remat=True)
    remat.set_weights(plain.get_weights())
    return plain, remat


def test_remat_gives_the_plain_models_loss_and_gradients():
    plain, remat = pair()
    outputs, loss, grads = outputs_loss_grads(plain, inputs())
    remat_outputs, remat_loss, remat_grads = outputs_loss_grads(remat, inputs())
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(remat_outputs["pred"], outputs["pred"], rtol=1e-6, atol=1e-7)
    assert sorted(remat_grads) == sorted(grads)
    for path, grad in grads.items():
        assert np.abs(grad).max() > 0, path
        assert rel_err(remat_grads[path], grad) < 1e-5, path


def test_remat_reaches_every_block_and_the_config():
    _, mae = pair()
    blocks = [*mae.encoder.blocks, *mae.decoder.blocks]
    assert len(blocks) == BLOCKS and all(block.remat for block in blocks)
    assert mae.get_config()["remat"] is True
    assert mae.encoder.get_config()["remat"] is True
    assert mae.decoder.get_config()["remat"] is True
    reloaded = keras_mae.MaskedAutoencoder.from_config(mae.get_config())
    assert all(block.remat for block in [*reloaded.encoder.blocks, *reloaded.decoder.blocks])
    # A config written before the argument existed loads without it.
    old = {k: v for k, v in mae.get_config().items() if k != "remat"}
    assert keras_mae.MaskedAutoencoder.from_config(old).remat is False
    old_encoder = {k: v for k, v in mae.encoder.get_config().items() if k != "remat"}
    assert not any(b.remat for b in keras_mae.MAEEncoder.from_config(old_encoder).blocks)
    with pytest.raises(TypeError, match="remat must be True or False. Received: remat='yes'"):
        keras_mae.ViTBlock(TINY["hidden_dim"], TINY["num_heads"], remat="yes")


def loss_function(mae, batch):
    data = {k: keras.ops.convert_to_tensor(v) for k, v in batch.items()}

    def forward(_):
        outputs = mae(data, training=True)
        return mae.compute_loss(x=data, y_pred=outputs, training=True), None

    return forward


def checkpoints_in_backward_pass(mae, monkeypatch):
    """How many times the backend's checkpoint mechanism appears in one
    forward + backward pass of the loss."""
    trainable = list(mae.trainable_variables)
    forward = loss_function(mae, inputs())
    if BACKEND == "jax":
        import jax

        def loss(values):
            with keras.StatelessScope(state_mapping=list(zip(trainable, values))):
                return forward(None)[0]

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))([v.value for v in trainable]))
        return jaxpr.count("remat") + jaxpr.count("checkpoint[")
    calls = []
    if BACKEND == "tensorflow":
        import tensorflow as tf

        original = tf.recompute_grad

        def counted(f):
            calls.append(f)
            return original(f)

        monkeypatch.setattr(tf, "recompute_grad", counted)
    else:
        import torch.utils.checkpoint

        original = torch.utils.checkpoint.checkpoint

        def counted(*args, **kwargs):
            calls.append(args[0])
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    value_and_grads(forward, trainable)
    return len(calls)


def test_remat_is_active_in_the_backward_pass(monkeypatch):
    plain, remat = pair()
    assert checkpoints_in_backward_pass(plain, monkeypatch) == 0
    # Two branches (attention, MLP) per block.
    found = checkpoints_in_backward_pass(remat, monkeypatch)
    assert found >= 2 * BLOCKS, found


def test_remat_trains_with_fit():
    plain, remat = pair()
    for mae in (plain, remat):
        mae.compile(optimizer=keras.optimizers.SGD(0.1))
    data = inputs()
    fit = dict(batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    plain_loss = plain.fit(data, **fit).history["loss"]
    remat_loss = remat.fit(data, **fit).history["loss"]
    assert remat_loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(remat.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
