import keras
import numpy as np
import pytest

from keras_mae.recipes.optimizers import LARS
from keras_mae.recipes.optimizers import LayerDecayAdamW
from keras_mae.recipes.optimizers import layer_decay_multipliers
from keras_mae.recipes.optimizers import layer_decay_optimizer
from keras_mae.recipes.optimizers import pretraining_optimizer
from tests.conftest import to_numpy
from tests.helpers.tiny import tiny_encoder


def lars_reference(params, grad_steps, lr, momentum=0.9, weight_decay=0.0, trust=0.001):
    """The official util/lars.py rule, in numpy."""
    params = [p.astype("float64").copy() for p in params]
    mus = [np.zeros_like(p) for p in params]
    for grads in grad_steps:
        for p, g, mu in zip(params, grads, mus):
            d = g.astype("float64")
            if p.ndim > 1:
                d = d + weight_decay * p
                pn, un = np.linalg.norm(p), np.linalg.norm(d)
                q = trust * pn / un if pn > 0 and un > 0 else 1.0
                d = d * q
            mu *= momentum
            mu += d
            p -= lr * mu
    return params


def adamw_reference(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW, in numpy."""
    p = p.astype("float64").copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


def variables_and_grads(rng, steps):
    shapes = [(3, 4), (4,)]
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(steps)]
    return values, grads


def test_lars_matches_official_rule():
    rng = np.random.default_rng(0)
    values, grads = variables_and_grads(rng, 3)
    variables = [keras.Variable(v) for v in values]
    optimizer = LARS(learning_rate=0.5, weight_decay=0.01)
    for step in grads:
        optimizer.apply_gradients(zip(step, variables))
    expected = lars_reference(values, grads, 0.5, weight_decay=0.01)
    for variable, reference in zip(variables, expected):
        np.testing.assert_allclose(to_numpy(variable), reference, rtol=1e-5, atol=1e-6)
    assert int(to_numpy(optimizer.iterations)) == 3


def test_lars_gradient_accumulation_averages_micro_batches():
    rng = np.random.default_rng(1)
    values, grads = variables_and_grads(rng, 2)
    variables = [keras.Variable(v) for v in values]
    optimizer = LARS(learning_rate=0.5, gradient_accumulation_steps=2)
    optimizer.apply_gradients(zip(grads[0], variables))
    np.testing.assert_allclose(to_numpy(variables[0]), values[0])  # not updated yet
    optimizer.apply_gradients(zip(grads[1], variables))
    mean = [(a + b) / 2 for a, b in zip(*grads)]
    expected = lars_reference(values, [mean], 0.5)
    for variable, reference in zip(variables, expected):
        np.testing.assert_allclose(to_numpy(variable), reference, rtol=1e-5, atol=1e-6)


def test_lars_config_round_trip():
    optimizer = LARS(learning_rate=0.2, momentum=0.8, weight_decay=0.1, trust_coefficient=0.01)
    clone = LARS.from_config(optimizer.get_config())
    assert (clone.momentum, clone.lars_weight_decay, clone.trust_coefficient) == (0.8, 0.1, 0.01)
    assert clone.weight_decay is None  # Keras' decoupled decay stays off
    with pytest.raises(ValueError, match="momentum"):
        LARS(momentum=1.5)


def test_layer_decay_adamw_matches_torch_adamw_with_multipliers():
    rng = np.random.default_rng(2)
    values, grads = variables_and_grads(rng, 3)
    variables = [keras.Variable(v, name=f"v{i}") for i, v in enumerate(values)]
    optimizer = LayerDecayAdamW(
        learning_rate=0.01,
        weight_decay=0.1,
        learning_rate_multipliers={variables[0].path: 0.25},
        no_decay_paths=[variables[1].path],
    )
    for step in grads:
        optimizer.apply_gradients(zip(step, variables))
    first = adamw_reference(values[0], [g[0] for g in grads], lr=0.0025, wd=0.1)
    second = adamw_reference(values[1], [g[1] for g in grads], lr=0.01, wd=0.0)
    np.testing.assert_allclose(to_numpy(variables[0]), first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(variables[1]), second, rtol=1e-5, atol=1e-6)
    clone = LayerDecayAdamW.from_config(optimizer.get_config())
    assert clone.learning_rate_multipliers == {variables[0].path: 0.25}


def test_pretraining_optimizer_skips_decay_on_biases_and_norms():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.LayerNormalization()]
    )
    optimizer = pretraining_optimizer(model, learning_rate=0.1, weight_decay=0.5)
    assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.95)
    before = [to_numpy(v).copy() for v in model.trainable_variables]
    zeros = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables))
    after = [to_numpy(v) for v in model.trainable_variables]
    np.testing.assert_allclose(after[0], before[0] * (1 - 0.1 * 0.5), rtol=1e-6)  # kernel
    for b, a in zip(before[1:], after[1:]):  # bias, gamma, beta
        np.testing.assert_allclose(a, b)


def test_layer_decay_tables_for_a_vit():
    encoder = tiny_encoder(num_layers=3)  # three blocks: a first, a middle and a last
    table = layer_decay_multipliers(encoder.trainable_variables, 3, 0.5)
    by_path = {path: scale for path, scale in table.items()}
    assert by_path["patch_encoder/projection/kernel"] == pytest.approx(0.5**4)
    assert by_path["class_token/token"] == pytest.approx(0.5**4)
    assert by_path["block_0/qkv/kernel"] == pytest.approx(0.5**3)
    assert by_path["block_2/fc2/bias"] == pytest.approx(0.5)
    assert by_path["norm/gamma"] == pytest.approx(1.0)
    optimizer = layer_decay_optimizer(encoder, 3, 1e-3, layer_decay=0.5)
    assert "class_token/token" in optimizer.no_decay_paths
    assert "block_0/qkv/bias" in optimizer.no_decay_paths
    assert "block_0/qkv/kernel" not in optimizer.no_decay_paths


def test_layer_decay_optimizer_trains_in_fit():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1, name="head")(keras.layers.Dense(4, name="block_0")(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = layer_decay_optimizer(model, 1, 0.05, layer_decay=0.5)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_layer_decay_optimizer_defaults_to_the_official_vit_b_decay():
    from keras_mae.recipes.defaults import DEFAULTS

    encoder = tiny_encoder(num_layers=3)
    optimizer = layer_decay_optimizer(encoder, 3, 1e-3)
    assert DEFAULTS["finetune"]["layer_decay"] == 0.65
    multipliers = optimizer.learning_rate_multipliers
    assert multipliers["block_0/qkv/kernel"] == pytest.approx(0.65**3)
    assert multipliers["patch_encoder/projection/kernel"] == pytest.approx(0.65**4)
