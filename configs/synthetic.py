"""The embedded default: the paper's model and recipe on the synthetic dataset, sized for a CPU.

  python main.py --workdir DIR          # this config; needs no download (minutes on 2 CPU cores)

Only what differs from configs/sirst.py is set here; everything else is the paper's setup.
"""

from configs import sirst


def get_config():
  config = sirst.get_config()
  config.dataset.name = "synthetic"
  config.dataset.manual_dir = ""
  config.dataset.synthetic.num_train = 256  # 32 steps/epoch at batch 8
  config.dataset.synthetic.num_val = 48
  config.dataset.synthetic.num_test = 48
  config.dataset.synthetic.size_range = (96, 160)
  config.input.crop_size = 96  # synthetic images are ~128 px, not SIRST's ~300
  config.input.base_size = 128
  config.input.scale_reference = "image"  # train at the native scale the `native` protocol tests
  config.eval.protocol = "native"
  config.input.eval_pad_multiple = 64
  config.model.blocks = 1  # b = 1 keeps a step well under a second on 2 cores
  config.num_epochs = 40  # 1280 steps: ~4 min on 2 CPU cores
  config.eval_every_epochs = 4
  config.log_every_steps = 8
  config.checkpoint_every_steps = 64
  return config
