"""The paper's training recipes, as library functions over Keras' `fit`.

- `optimizers`: AdamW for pre-training, LARS for the linear probe, layer-wise
  learning-rate decay for fine-tuning.
- `schedules`: warmup + cosine, and `lr = base_lr x batch / 256`.
- `callbacks`: atomic per-epoch checkpoints, a non-finite-loss stop, a time
  limit, reconstruction pictures, TensorBoard.
- `augmentation`: crop, flip, RandAugment, erasing and normalisation as Keras
  layers, for in-memory images (inside the compiled step).
- `defaults`: the recipes' default hyper-parameters (official, and those the
  bundled digits need instead).
- `pretrain`: the resumable pre-training run.
- `linear_probe`: the linear probe (frozen encoder, cls token, BatchNorm +
  linear, LARS), on arrays or tf.data sources.
- `finetune`: end-to-end fine-tuning (mean pooling, LayerNorm, linear head,
  layer-wise decay), on arrays or tf.data sources.
- `visualization`: PNG grids of reconstructions (no imaging library needed).
"""
