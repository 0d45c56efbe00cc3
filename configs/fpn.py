"""FPN on SIRST idx_320: Table 3's FPN row (IoU 0.721 / nIoU 0.704, from the ACM paper).

ACM-FPN's backbone with additive fusion (``DirectAddFuseReduce``), as ACM's ablation built its FPN
baseline: tiny stem, 4 blocks per stage, channels 8/16/32/64. Recipe, input colour and evaluation
padding as configs/acm_unet.py (which see).

  python main.py --config configs/fpn.py --workdir DIR
"""

from configs.acm_unet import baseline_config


def get_config():
  return baseline_config("fpn", layers=(4, 4, 4), channels=(8, 16, 32, 64),
                         fuse_mode="DirectAdd", tiny=True, dropout=0.1)
