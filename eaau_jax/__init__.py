"""EAAU-Net for infrared small target detection in JAX/Flax.

Modules: models (EAAUNet and its fusions), losses (soft-IoU), metrics (IoU, nIoU, PR/ROC, Pd/Fa),
imageio, synthetic, input_pipeline, train, checkpoints, evaluate, reporting.
"""

__version__ = "0.1.0"
