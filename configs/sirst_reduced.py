"""A reduced SIRST run that finishes on a 2-core CPU in under an hour: accuracy evidence, not the paper.

configs/sirst_native.py (idx_320, `native` protocol, train at each image's own scale, PyTorch
AdaGrad lr 0.05, transposed-conv upsampling, EAA) with what a CPU can afford:
  * b = 1 residual block per stage (the paper: 3), so 16/32/64 channels and 0.14 M parameters;
  * 128 x 128 crops (the paper: 480 at ACM's 2x scale); at native scale a SIRST target is
    ~3 x 3 px, so a 128 crop still shows it with its context;
  * 150 epochs of the 160 training images (3,000 steps at batch 8; the paper: 300 epochs).
Numbers from it are labelled "reduced" in RESULTS.md and compare with native-protocol figures only.

  python -m eaau_jax.reproduce --config configs/sirst_reduced.py --seeds 1 --workdir runs/reduced
"""

from configs import sirst_native


def get_config():
  config = sirst_native.get_config()
  config.model.blocks = 1
  config.input.crop_size = 128
  config.num_epochs = 150
  config.eval_every_epochs = 10
  config.checkpoint_every_steps = 200
  config.log_every_steps = 20
  return config
