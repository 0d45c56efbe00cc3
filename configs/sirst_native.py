"""EAAU-Net on SIRST idx_320 trained and evaluated at native resolution (`native` protocol).

Not comparable with the paper's Table 3 (whose CNN rows are all under the `acm` 512 x 512 resize,
configs/sirst.py); comparable with other native-resolution numbers, such as ACM's released
ACM-U-Net re-run at native size (IoU 0.6944 on idx_320 test; README "Protocols").

Train at the scale you test at: the long side of each training image is rescaled to
U[0.5, 2] x its *own* long side (not x 512, which would show SIRST's ~300 px targets at ~2x the
size they have at test time). Crops are 256, not 480: at native scale a SIRST image (~300 x 200)
rescaled by 0.5-2 fits a 256 crop far better than a 480 one, which would be mostly padding.
Everything else is configs/sirst.py (the paper's recipe).
"""

from configs import sirst


def get_config():
  config = sirst.get_config()
  config.input.scale_reference = "image"  # long side x U[scale_range] of the image's own
  config.input.scale_range = (0.5, 2.0)
  config.input.crop_size = 256
  config.eval.protocol = "native"
  return config
