"""ALCNet (Dai et al., TGRS 2021; ``MPCMResNetFPN``) on SIRST idx_320: Table 3's ALCNet row.

Compares with the paper's Table 3 ALCNet (IoU 0.757 / nIoU 0.728, from the ALCNet paper) and with
open-alcnet's released ``BottomUpLocal_r_1_b_4`` weights (``--import-weights FILE``): 4 blocks per
stage, channels 8/16/32/64, multi-scale local contrast (shifts 13 and 17), bottom-up local fusion.
Recipe, input colour and evaluation padding as configs/acm_unet.py (which see).

  python main.py --config configs/alcnet.py --workdir DIR
"""

from configs.acm_unet import baseline_config


def get_config():
  return baseline_config("alcnet", layers=(4, 4, 4), channels=(8, 16, 32, 64),
                         scale_mode="Multiple", pyramid_fuse="bottomuplocal", dropout=0.1)
