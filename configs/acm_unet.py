"""ACM-U-Net (Dai et al., WACV 2021; ``ASKCResUNet``) on SIRST idx_320: Table 3's ACM-U-Net row.

Compares with the paper's Table 3 ACM-U-Net (IoU 0.745 / nIoU 0.727, copied from the ACM paper) and
with its authors' released weights, imported:

  python main.py --mode eval --config configs/acm_unet.py --workdir DIR --protocol acm,native \
      --import-weights ../shared/weights/acm/0.7442-ResUNet_AsymBi_DENTIST_Puma1_GPU_0-IoU-288-best.params
  python main.py --mode import --config configs/acm_unet.py --import-weights FILE --workdir DIR
  python main.py --config configs/acm_unet.py --workdir DIR     # train it with our pipeline

The model is the released net's (tiny stem, 4 blocks per stage, channels 8/16/32/64, AsymBi
fusion). Everything else is configs/sirst.py's recipe (the one EAAU-Net trains with), except:
  * input: RGB as ACM's loader read it (``config.dataset.color = "rgb"``, PIL ``convert('RGB')``)
    with 3 channels. Normalised with the train split's pooled mean/std: the nets begin with a
    BatchNorm of the input (no affine), which standardises each channel, so any per-channel affine
    normalisation (ImageNet's, as ACM used) trains the same net. Imported weights always carry
    ImageNet's (their running statistics were gathered under it); ``rgb_imagenet`` selects it for
    training too (needs train.data_and_stats to keep per-channel statistics).
  * evaluation: ``eval_pad_multiple = 1``, so a batch holds images of one exact size and nothing is
    padded (these nets cannot mask padding: see eaau_jax/baselines.py); native evaluation compiles
    once per distinct image size.
"""

import ml_collections

from configs import sirst


def baseline_config(name: str, **model_fields) -> ml_collections.ConfigDict:
  """configs/sirst.py with model ``name`` (baselines.BASELINES) and its fields, RGB input."""
  config = sirst.get_config()
  config.model = ml_collections.ConfigDict({"name": name, **model_fields})
  config.dataset.color = "rgb"  # grey | rgb | rgb_imagenet (input_pipeline.COLORS)
  config.input.channels = 3
  config.input.eval_pad_multiple = 1  # exact-size batches: no padding reaches these nets
  return config


def get_config() -> ml_collections.ConfigDict:
  return baseline_config("acm_unet", layers=(4, 4, 4), channels=(8, 16, 32, 64),
                         fuse_mode="AsymBi", tiny=True, dropout=0.1)
