"""Multi-device and multi-host training of keras_mae with each backend's own machinery.

One module per backend, imported on its own so that `import keras_mae` never
pulls a second framework in:

- `keras_mae.distribute.jax_distribution`: `keras.distribution` data parallel
  and model parallel (a `LayoutMap` over the ViT kernels) on JAX, multi-host
  through `jax.distributed.initialize`.
- `keras_mae.distribute.tf_distribution`: `tf.distribute` strategies
  (Mirrored, MultiWorkerMirrored, TPU) around model creation and `fit`.
- `keras_mae.distribute.torch_ddp`: a `DistributedDataParallel` training loop
  for the torch backend, launched by `torchrun`, data sharded per rank.

Each module's docstring gives the launch command; `examples/pretrain.py --distribution`
selects one.
"""
