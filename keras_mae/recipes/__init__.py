"""The paper's training recipes, as library functions over Keras' `fit`.

- `optimizers`: AdamW for pre-training, LARS for the linear probe, layer-wise
  learning-rate decay for fine-tuning.
- `schedules`: warmup + cosine, and `lr = base_lr x batch / 256`.
- `callbacks`: atomic per-epoch checkpoints, a stop on a non-finite loss,
  reconstruction pictures, TensorBoard.
- `pretrain`: the pre-training run.
- `linear_probe`: the linear probe (frozen encoder, cls token, BatchNorm + linear).
- `finetune`: end-to-end fine-tuning (mean pooling, LayerNorm, linear head).
- `visualization`: PNG grids of reconstructions (no imaging library needed).
"""
