"""U-Net on SIRST idx_320: Table 3's U-Net row (IoU 0.736 / nIoU 0.723, from the ACM paper).

ACM-U-Net's backbone with additive skip fusion (``DirectAddFuse``), as ACM's ablation built its
U-Net baseline: tiny stem, 4 blocks per stage, channels 8/16/32/64. Recipe, input colour and
evaluation padding as configs/acm_unet.py (which see).

  python main.py --config configs/unet.py --workdir DIR
"""

from configs.acm_unet import baseline_config


def get_config():
  return baseline_config("unet", layers=(4, 4, 4), channels=(8, 16, 32, 64),
                         fuse_mode="DirectAdd", tiny=True, dropout=0.1)
