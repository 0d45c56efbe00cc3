"""ACM-FPN (Dai et al., WACV 2021; ``ASKCResNetFPN``) on SIRST idx_320: Table 3's ACM-FPN row.

Compares with the paper's Table 3 ACM-FPN (IoU 0.736 / nIoU 0.722, from the ACM paper). Tiny stem,
4 blocks per stage, channels 8/16/32/64, AsymBi fusion (``AsymBiChaFuseReduce``). Recipe, input
colour and evaluation padding as configs/acm_unet.py (which see).

  python main.py --config configs/acm_fpn.py --workdir DIR
"""

from configs.acm_unet import baseline_config


def get_config():
  return baseline_config("acm_fpn", layers=(4, 4, 4), channels=(8, 16, 32, 64),
                         fuse_mode="AsymBi", tiny=True, dropout=0.1)
