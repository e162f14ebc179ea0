"""One check for every public layer and model of the package.

In the spirit of keras-hub's `TestCase.run_layer_test` and
`run_model_saving_test`: a new layer gets config and JSON round trips,
symbolic and eager calls, a `.keras` reload, weight counts, mixed precision
and gradients from one call. `run_layer_test(cls, init_kwargs, input_data,
...)` constructs `cls(**init_kwargs)` afresh for each step and checks:

1. Config: `get_config()` holds exactly the constructor's arguments (the given
   values, the signature's defaults for the others) plus Keras' base keys
   (`name`, `trainable`, `dtype`); nothing missing, nothing extra. The config
   is JSON; `from_config(get_config())` and `serialize_keras_object` -> JSON ->
   `deserialize_keras_object` give the same class, the same config and the
   same attributes; the class is registered as `keras_mae>ClassName`.
2. Build and weights: the numbers of trainable and non-trainable weights (and
   of trainable parameters), the same whether the layer was built by a
   symbolic or an eager call; `trainable = False` makes every weight
   non-trainable.
3. Calls: a symbolic call (KerasTensors of the data's shapes, and
   `keras.Input`s of unknown batch size) and an eager call give the same
   output structure, shapes and dtypes; floating outputs are in the compute
   dtype; a deterministic call repeats exactly.
4. Config reproduces outputs: a layer made from the config, given the
   original's weights, computes the same outputs exactly (a seeded random
   layer draws the same numbers).
5. Saving: a `.keras` file (of the model itself, or of a functional
   `keras.Model` around the layer) reloads to the same class and reproduces
   the outputs exactly.
6. Mixed precision (`"mixed_bfloat16"`): float variables stay float32,
   floating outputs are bfloat16 in the symbolic and the eager call, and the
   outputs are close to the float32 layer's with the same weights (integer
   outputs equal).
7. Gradients: every trainable weight receives a finite, non-zero gradient of
   a random linear function of the floating outputs.

Conventions: `input_data` is an array, a dict (one structured argument, as
`MaskedAutoencoder` takes) or a tuple (positional arguments). `call_kwargs`
holds Python values only (e.g. `training=False`); arrays belong in
`input_data`. Random layers are called with a seed, fixed noise or
`training=False`; `deterministic=False` marks calls that draw new numbers on
every call (only the checks that compare fresh layers' first calls run on
their values).
"""

import copy
import inspect
import json
import os

import keras
import numpy as np
from keras import ops

from tests.conftest import to_numpy
from tests.helpers.backend_grads import value_and_grads

BASE_KEYS = ("name", "trainable", "dtype")
MIXED_POLICY = "mixed_bfloat16"


# --- Calling ---------------------------------------------------------------------


def as_args(input_data):
    return input_data if isinstance(input_data, tuple) else (input_data,)


def call(layer, input_data, call_kwargs):
    return layer(*as_args(input_data), **call_kwargs)


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def is_float(dtype):
    return dtype in ("float16", "bfloat16", "float32", "float64")


def keras_tensors(input_data, batch_size):
    """KerasTensors shaped like `input_data`, with `batch_size` (int or None) first."""
    return keras.tree.map_structure(
        lambda x: keras.KerasTensor((batch_size, *x.shape[1:]), dtype=dtype_of(x)), input_data
    )


def keras_inputs(input_data):
    """`keras.Input`s of unknown batch size shaped like `input_data` (a list for a tuple)."""

    def make(x, name=None):
        return keras.Input(batch_shape=(None, *x.shape[1:]), dtype=dtype_of(x), name=name)

    if isinstance(input_data, dict):
        return {key: make(x, key) for key, x in input_data.items()}
    if isinstance(input_data, tuple):
        return [make(x) for x in input_data]
    return make(input_data)


def model_inputs(input_data):
    """`input_data` in the form a functional model over `keras_inputs` takes."""
    return list(input_data) if isinstance(input_data, tuple) else input_data


def flat_numpy(outputs):
    return [to_numpy(x) for x in keras.tree.flatten(outputs)]


def assert_outputs_equal(actual, expected, what):
    actual, expected = flat_numpy(actual), flat_numpy(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: output {i}")


def fresh_kwargs(init_kwargs, **overrides):
    """`init_kwargs` with a fresh copy of every Keras layer in it, so that each
    instance owns its sublayers (an augmentation, say)."""

    def fresh(value):
        if isinstance(value, keras.layers.Layer):
            serialized = keras.saving.serialize_keras_object(value)
            return keras.saving.deserialize_keras_object(serialized)
        return copy.deepcopy(value)

    return {**{key: fresh(value) for key, value in init_kwargs.items()}, **overrides}


# --- 1. Config -------------------------------------------------------------------


def plain(value):
    """A config value in JSON's terms: tuples become lists."""
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def constructor_arguments(cls):
    """The named parameters of `cls.__init__` (Keras' own when it has none)."""
    parameters = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in parameters.items() if name != "self" and p.kind in named}


def check_config_holds_constructor_arguments(cls, init_kwargs, config):
    arguments = constructor_arguments(cls)
    missing = sorted(set(arguments) - set(config) - set(BASE_KEYS))
    extra = sorted(set(config) - set(arguments) - set(BASE_KEYS))
    assert not missing, f"{cls.__name__}.get_config() misses constructor arguments {missing}"
    assert not extra, f"{cls.__name__}.get_config() holds non-arguments {extra}"
    for key in BASE_KEYS:
        assert key in config, f"{cls.__name__}.get_config() misses the base key {key!r}"
    for name, parameter in arguments.items():
        if name == "dtype":
            continue
        given = name in init_kwargs
        if not given and name in BASE_KEYS:
            continue  # a default name or trainable flag: Keras' business
        expected = init_kwargs[name] if given else parameter.default
        assert expected is not inspect.Parameter.empty, f"{name} is required: pass it"
        if isinstance(expected, keras.layers.Layer):
            revived = keras.saving.deserialize_keras_object(copy.deepcopy(config[name]))
            assert type(revived) is type(expected), f"config[{name!r}] revives a {type(revived)}"
            assert revived.name == expected.name, f"config[{name!r}] revives {revived.name!r}"
        else:
            assert plain(config[name]) == plain(expected), (
                f"{cls.__name__}.get_config()[{name!r}] is {config[name]!r}, "
                f"constructed with {expected!r}"
            )
    policy = keras.dtype_policies.get(copy.deepcopy(config["dtype"]))
    given = init_kwargs.get("dtype") or keras.config.dtype_policy()
    assert policy.name == keras.dtype_policies.get(given).name, (
        f"{cls.__name__}.get_config()['dtype'] is {policy.name!r}, constructed with "
        f"{keras.dtype_policies.get(given).name!r}"
    )


def public_attributes(layer):
    return {name for name in dir(layer) if not name.startswith("_")}


def check_serialization(layer):
    """`from_config` and the JSON round trip give the same class, config and attributes."""
    cls = type(layer)
    config = layer.get_config()
    config_json = json.dumps(config, sort_keys=True)  # JSON, or this raises

    revived = cls.from_config(copy.deepcopy(config))
    assert type(revived) is cls
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert public_attributes(revived) == public_attributes(layer)

    registered = f"keras_mae>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == registered, (
        f"{cls.__name__} is not registered as {registered!r}: decorate it with "
        '`keras.saving.register_keras_serializable(package="keras_mae")`'
    )
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == registered
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(revived) is cls
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert public_attributes(revived) == public_attributes(layer)


def check_config(cls, init_kwargs):
    """The config of a fresh layer holds its constructor arguments and
    survives `from_config` and the JSON round trip."""
    layer = cls(**fresh_kwargs(init_kwargs))
    config = layer.get_config()
    check_config_holds_constructor_arguments(cls, init_kwargs, config)
    check_serialization(layer)


# --- 2. Weights ------------------------------------------------------------------


def check_weights(layer, num_trainable, num_non_trainable, num_trainable_params, when):
    assert layer.built, f"not built after the {when} call"
    name = type(layer).__name__
    assert len(layer.trainable_weights) == num_trainable, (
        f"{name} after the {when} call: {len(layer.trainable_weights)} trainable weights "
        f"({[w.path for w in layer.trainable_weights]}), expected {num_trainable}"
    )
    assert len(layer.non_trainable_weights) == num_non_trainable, (
        f"{name} after the {when} call: {len(layer.non_trainable_weights)} non-trainable "
        f"weights ({[w.path for w in layer.non_trainable_weights]}), expected {num_non_trainable}"
    )
    if num_trainable_params is not None:
        count = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        assert count == num_trainable_params, f"{name}: {count} trainable parameters"


def check_trainable_flag(layer, num_weights):
    layer.trainable = False
    assert not layer.trainable_weights
    assert len(layer.non_trainable_weights) == num_weights
    layer.trainable = True
    assert len(layer.weights) == num_weights


# --- 3. Calls --------------------------------------------------------------------


def output_shapes(outputs):
    return keras.tree.map_structure(lambda x: tuple(x.shape), outputs)


def output_dtypes(outputs):
    return keras.tree.map_structure(dtype_of, outputs)


def default_dtypes(outputs, compute_dtype):
    """Floating outputs in `compute_dtype`, others as they are."""
    return keras.tree.map_structure(
        lambda x: compute_dtype if is_float(dtype_of(x)) else dtype_of(x), outputs
    )


def with_unknown_batch(shapes):
    return keras.tree.map_shape_structure(lambda shape: (None, *shape[1:]), shapes)


def check_symbolic_call(cls, init_kwargs, input_data, call_kwargs, expected_shape, dtype=None):
    """Returns the layer, built by the symbolic call, and the output specs."""
    layer = cls(**fresh_kwargs(init_kwargs, **({"dtype": dtype} if dtype else {})))
    batch_size = keras.tree.flatten(input_data)[0].shape[0]
    specs = call(layer, keras_tensors(input_data, batch_size), call_kwargs)
    assert plain(output_shapes(specs)) == plain(expected_shape), "symbolic call: shapes"
    unknown = call(layer, keras_tensors(input_data, None), call_kwargs)
    assert plain(output_shapes(unknown)) == plain(with_unknown_batch(expected_shape)), (
        "symbolic call with an unknown batch size: shapes"
    )
    assert plain(output_dtypes(unknown)) == plain(output_dtypes(specs))
    return layer, specs


def check_calls(cls, init_kwargs, input_data, call_kwargs, *, shape, dtype, counts, deterministic):
    """Symbolic then eager build and call: weights, shapes and dtypes agree.

    `counts` is `(trainable weights, non-trainable weights, trainable params)`;
    `dtype` None expects floating outputs in float32. Returns the layer built
    by the eager call and its outputs.
    """
    symbolic_layer, specs = check_symbolic_call(cls, init_kwargs, input_data, call_kwargs, shape)
    check_weights(symbolic_layer, *counts, when="symbolic")

    layer = cls(**fresh_kwargs(init_kwargs))
    outputs = call(layer, input_data, call_kwargs)
    check_weights(layer, *counts, when="eager")
    assert plain(output_shapes(outputs)) == plain(shape), "eager call: shapes"
    if dtype is None:
        dtype = default_dtypes(outputs, "float32")
    assert plain(output_dtypes(specs)) == plain(dtype), "symbolic call: dtypes"
    assert plain(output_dtypes(outputs)) == plain(dtype), "eager call: dtypes"
    if deterministic:
        assert_outputs_equal(call(layer, input_data, call_kwargs), outputs, "a repeated call")
    num_trainable, num_non_trainable, _ = counts
    check_trainable_flag(layer, num_trainable + num_non_trainable)
    return layer, outputs


# --- 4. Config reproduces outputs ------------------------------------------------


def check_config_reproduces_outputs(cls, init_kwargs, input_data, call_kwargs):
    """A layer from the config, given the weights, computes the same outputs."""
    original = cls(**fresh_kwargs(init_kwargs))
    clone = cls.from_config(copy.deepcopy(original.get_config()))
    call(original, input_data, call_kwargs)
    call(clone, input_data, call_kwargs)
    clone.set_weights(original.get_weights())
    assert_outputs_equal(
        call(clone, input_data, call_kwargs),
        call(original, input_data, call_kwargs),
        "a layer from the config with the same weights",
    )


# --- 5. Saving -------------------------------------------------------------------


def check_saving(layer, input_data, call_kwargs, expected, directory):
    """Save `layer` (or a functional model around it) as `.keras`; reload; compare."""
    if isinstance(layer, keras.Model):
        model, arguments, kwargs = layer, input_data, call_kwargs
    else:
        inputs = keras_inputs(input_data)
        outputs = layer(*(inputs if isinstance(inputs, list) else [inputs]), **call_kwargs)
        model = keras.Model(inputs, outputs)
        arguments, kwargs = model_inputs(input_data), {}
    before = call(model, arguments, kwargs)
    assert_outputs_equal(before, expected, "the model to save vs the eager call")
    path = os.path.join(directory, f"{type(layer).__name__}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    if isinstance(layer, keras.Model):
        assert type(reloaded) is type(layer)
    else:
        assert any(type(sublayer) is type(layer) for sublayer in reloaded.layers)
    assert_outputs_equal(call(reloaded, arguments, kwargs), before, ".keras reload")


# --- 6. Mixed precision ----------------------------------------------------------

# Keras' torch backend traces a symbolic call on the "meta" device, where each
# variable stands in at its variable dtype (float32), not autocast: a traced
# call (a class without `compute_output_shape`, such as a subclassed model)
# reports float32 outputs under a mixed policy where the eager call gives
# bfloat16. There the symbolic dtypes may be either; the eager ones are checked.
TORCH_TRACES_WITHOUT_AUTOCAST = keras.backend.backend() == "torch"


def is_traced(layer):
    """Whether Keras infers the layer's symbolic outputs by tracing its `call`."""
    return type(layer).compute_output_shape is keras.layers.Layer.compute_output_shape


def check_mixed_precision(
    cls, init_kwargs, input_data, call_kwargs, expected_shape, expected_dtype, tolerance
):
    reference = cls(**fresh_kwargs(init_kwargs))
    call(reference, keras_tensors(input_data, None), call_kwargs)  # same draws as below
    reference_outputs = flat_numpy(call(reference, input_data, call_kwargs))

    layer, specs = check_symbolic_call(
        cls, init_kwargs, input_data, call_kwargs, expected_shape, dtype=MIXED_POLICY
    )
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    config = layer.get_config()
    check_config_holds_constructor_arguments(cls, {**init_kwargs, "dtype": MIXED_POLICY}, config)
    revived = cls.from_config(copy.deepcopy(config))
    assert revived.dtype_policy.name == MIXED_POLICY, "from_config loses the policy"
    for weight in layer.weights:
        if is_float(dtype_of(weight)):
            assert dtype_of(weight) == "float32", f"{weight.path} is {dtype_of(weight)}"
    layer.set_weights(reference.get_weights())
    outputs = call(layer, input_data, call_kwargs)
    if expected_dtype is None:
        expected_dtype = default_dtypes(outputs, "bfloat16")
    spec_dtypes = keras.tree.flatten(output_dtypes(specs))
    wanted = keras.tree.flatten(expected_dtype)
    if TORCH_TRACES_WITHOUT_AUTOCAST and is_traced(layer):
        spec_dtypes = [
            want if (got, want) == ("float32", "bfloat16") else got
            for got, want in zip(spec_dtypes, wanted)
        ]
    assert spec_dtypes == wanted, "mixed precision, symbolic call: dtypes"
    assert plain(output_dtypes(outputs)) == plain(expected_dtype), (
        "mixed precision, eager call: dtypes"
    )
    revived_outputs = call(revived, input_data, call_kwargs)
    assert plain(output_dtypes(revived_outputs)) == plain(expected_dtype), (
        "mixed precision, a layer from the config: dtypes"
    )
    for i, (got, want) in enumerate(zip(flat_numpy(outputs), reference_outputs)):
        if is_float(str(want.dtype)):
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(
                got.astype("float32"),
                want,
                atol=tolerance * scale,
                err_msg=f"mixed precision vs float32: output {i}",
            )
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"mixed precision: output {i}")


# --- 7. Gradients ----------------------------------------------------------------


def check_gradients(layer, input_data, call_kwargs, outputs):
    variables = list(layer.trainable_variables)
    rng = np.random.default_rng(0)
    coefficients = [
        ops.convert_to_tensor(rng.normal(size=x.shape).astype("float32"))
        if is_float(str(x.dtype))
        else None
        for x in flat_numpy(outputs)
    ]
    tensors = keras.tree.map_structure(ops.convert_to_tensor, input_data)

    def linear_function(_):
        flat = keras.tree.flatten(call(layer, tensors, call_kwargs))
        terms = [
            ops.sum(ops.cast(x, "float32") * c) for x, c in zip(flat, coefficients) if c is not None
        ]
        return ops.sum(ops.stack(terms)), None

    _, _, grads = value_and_grads(linear_function, variables)
    for variable, grad in zip(variables, grads):
        assert grad.shape == tuple(variable.shape), variable.path
        assert np.all(np.isfinite(grad)), f"{variable.path}: non-finite gradient"
        assert np.any(grad != 0), f"{variable.path}: zero gradient"


# --- All of it -------------------------------------------------------------------


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights=0,
    expected_num_non_trainable_weights=0,
    expected_num_trainable_params=None,
    call_kwargs=None,
    expected_output_dtype=None,
    expected_mixed_precision_dtype=None,
    deterministic=True,
    tmp_path=None,
    run_mixed_precision_check=True,
    mixed_precision_tolerance=5e-2,
    run_gradient_check=True,
):
    """Run the checks of this module's docstring on `cls(**init_kwargs)`.

    Args:
        cls: the layer or model class.
        init_kwargs: dict, constructor arguments.
        input_data: array, dict of arrays, or tuple of arrays (positional).
        expected_output_shape: the output shapes, in the outputs' structure.
        expected_num_trainable_weights: int, after build.
        expected_num_non_trainable_weights: int, after build.
        expected_num_trainable_params: int or None, total trainable entries.
        call_kwargs: dict of Python values for every call (e.g. `training`).
        expected_output_dtype: output dtypes in the outputs' structure; by
            default floating outputs are float32 and others as computed.
        expected_mixed_precision_dtype: the same under `mixed_bfloat16`; by
            default floating outputs are bfloat16.
        deterministic: bool, whether a second call repeats the first. False
            skips the checks that compare calls of one layer (the repeat, the
            reload, the functional model).
        tmp_path: a directory for the `.keras` file; None skips the reload.
        run_mixed_precision_check: bool.
        mixed_precision_tolerance: float, the largest difference between the
            bfloat16 and float32 outputs, relative to the outputs' scale (at
            least 1).
        run_gradient_check: bool; only where there are trainable weights.

    Returns:
        `(layer, outputs)`: a layer built by an eager call with the float32
        policy, and its outputs as numpy in the outputs' structure, for
        further assertions on numbers.
    """
    call_kwargs = dict(call_kwargs or {})
    counts = (
        expected_num_trainable_weights,
        expected_num_non_trainable_weights,
        expected_num_trainable_params,
    )

    # 1. Config.
    check_config(cls, init_kwargs)

    # 2, 3. Symbolic build and call, then eager build and call.
    layer, outputs = check_calls(
        cls,
        init_kwargs,
        input_data,
        call_kwargs,
        shape=expected_output_shape,
        dtype=expected_output_dtype,
        counts=counts,
        deterministic=deterministic,
    )

    # 4. A layer from the config, given the weights, computes the same outputs.
    check_config_reproduces_outputs(cls, init_kwargs, input_data, call_kwargs)

    # 5. `.keras` reload.
    if tmp_path is not None and deterministic:
        check_saving(layer, input_data, call_kwargs, outputs, str(tmp_path))

    # 6. Mixed precision.
    if run_mixed_precision_check:
        check_mixed_precision(
            cls,
            init_kwargs,
            input_data,
            call_kwargs,
            expected_output_shape,
            expected_mixed_precision_dtype,
            mixed_precision_tolerance,
        )

    # 7. Gradients.
    if run_gradient_check and expected_num_trainable_weights:
        check_gradients(layer, input_data, call_kwargs, outputs)

    return layer, keras.tree.map_structure(to_numpy, outputs)
