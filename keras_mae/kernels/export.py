"""A model exported for serving: Keras' `Model.export`, with what each backend needs.

`export(model, filepath, format)` writes what `keras.Model.export` writes
(`"tf_saved_model"`: a SavedModel whose `serve` endpoint takes a batch of
images; `"onnx"`: one `.onnx` file), with the batch size left free, and works
around what stops Keras' export of this package's models:

- JAX: the model is traced with every kernel's `keras.ops` reference
  (`kernels.references`). JAX's `erf` (the GELU fast path) serialises as a
  StableHLO composite that TensorFlow's `XlaCallModule` (which runs a JAX
  SavedModel) cannot read; the reference GELU goes through `erfc`, which it
  reads. (Under TensorFlow the fast path stays: its `erf` is an ONNX op, the
  reference's `erfc` is not.)
- PyTorch, ONNX: `torch.onnx.export(dynamo=True)` with a dynamic batch
  dimension. For a free batch size Keras takes the TorchScript exporter, which
  fails at `LayerNormalization` (the shape `F.layer_norm` receives is traced as
  a tensor: `SymbolicValueError` at an `onnx::Gather`).
- ONNX: the model is called once on one zero image first; Keras refuses to
  export a model that has never been called.
"""

import contextlib

import keras

from keras_mae.kernels.kernel import references

FORMATS = ("tf_saved_model", "onnx")


def run_once(model):
    inputs = model.inputs[0]
    model(keras.ops.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype))


def torch_onnx_export(model, filepath, verbose=None, opset_version=None):
    """ONNX through `torch.export`, with the batch as a dynamic dimension."""
    import torch

    inputs = model.inputs[0]
    # Two samples: torch.export specialises a dimension of size 0 or 1.
    sample = torch.zeros((2, *inputs.shape[1:]), dtype=getattr(torch, inputs.dtype))
    batch = torch.export.Dim("batch", min=1)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            (sample,),
            input_names=[inputs.name],
            dynamo=True,
            dynamic_shapes=(({0: batch},),),
            opset_version=opset_version,
            verbose=bool(verbose),
        )
    finally:
        model.train(was_training)
    program.optimize()
    program.save(str(filepath))
    if verbose or verbose is None:
        print(f"Saved artifact at '{filepath}'.")


def export(model, filepath, format="tf_saved_model", verbose=None, **kwargs):
    """Export `model`, a functional model of one image input, for serving.

    Args:
        model: a `keras.Model` with one input `(batch, H, W, C)`.
        filepath: str, the SavedModel folder or the `.onnx` file.
        format: `"tf_saved_model"` (TensorFlow and JAX backends) or `"onnx"`.
        verbose: bool or None, as `keras.Model.export`.
        **kwargs: passed to `keras.Model.export` (e.g. `input_signature`,
            `opset_version`).
    """
    if format not in FORMATS:
        raise ValueError(
            f"format must be one of {FORMATS} (see keras.Model.export). Received: format={format!r}"
        )
    backend = keras.backend.backend()
    scope = references() if backend == "jax" else contextlib.nullcontext()
    with scope:
        if format == "onnx":
            run_once(model)
        if backend == "torch" and format == "onnx" and kwargs.get("input_signature") is None:
            return torch_onnx_export(model, filepath, verbose, kwargs.get("opset_version"))
        return keras.Model.export(model, filepath, format=format, verbose=verbose, **kwargs)
