"""A tiny config for tests: a few seconds a run on one CPU core."""

from configs import synthetic


def get_config():
  config = synthetic.get_config()
  config.dataset.synthetic.num_train = 16
  config.dataset.synthetic.num_val = 8
  config.dataset.synthetic.num_test = 8
  config.dataset.synthetic.size_range = (40, 72)
  config.input.crop_size = 32
  config.input.base_size = 48
  config.input.eval_batch_size = 4
  config.input.eval_pad_multiple = 32
  config.input.workers = 2
  config.model.widths = (8, 16, 16)
  config.batch_size = 4
  config.num_epochs = 2
  config.eval_every_epochs = 1
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.num_eval_images_logged = 2
  return config
