"""The paper's setup: EAAU-Net (b = 3, EAA fusion) on SIRST's official idx_427 split.

  python main.py --config configs/sirst.py --workdir DIR \
      --config.dataset.manual_dir=/path/to/sirst     # images/, masks/, idx_427/

Any field can be overridden with --config.<field>=<value>.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init, dropout, data order and augmentation all derive from it

  config.dataset = d = ml_collections.ConfigDict()
  d.name = "sirst"  # synthetic | sirst | sirst_v2 | folder (tfds_sirst builder configs)
  d.data_dir = "~/tensorflow_datasets"  # where the array_record build is written / read
  # The release as downloaded (images/, masks/, idx_427/). Empty: `sirst` downloads it.
  d.manual_dir = "../shared/datasets/sirst"
  # For name == "folder": SirstConfig fields overriding the `folder` layout's (image_dir, mask_dir,
  # mask_suffix, split_dir, split_files as [[split, file], ...], name: default "custom").
  d.folder = config_dict.placeholder(dict)
  d.train_split = "train"  # paper: train on train, pick the checkpoint on val, report on test
  d.eval_split = "val"
  d.test_split = "test"
  # Normalisation; None: the train split's pixel mean/std, computed at start (SIRST: ~101 / ~35).
  d.mean = config_dict.placeholder(float)
  d.std = config_dict.placeholder(float)
  d.synthetic = s = ml_collections.ConfigDict()  # used when name == "synthetic"
  s.num_train, s.num_val, s.num_test = 512, 64, 64
  s.seed = 0
  s.size_range = (96, 160)  # image height and width are drawn from this range

  config.input = i = ml_collections.ConfigDict()
  i.crop_size = 480  # paper 4.2: random 480x480 crops
  i.base_size = 512  # ACM: long side resized to a random size in [0.5, 2] x base
  i.blur_p = 0.5  # Gaussian blur probability
  i.channels = 1  # 1: grayscale; 3: the grey image repeated (as RGB-trained peers)
  i.workers = 4  # augmentation threads per process
  i.eval_batch_size = 8  # global; must divide by the number of devices
  i.eval_pad_multiple = 128  # eval images are padded to multiples of this (few jit shapes)

  config.model = m = ml_collections.ConfigDict()
  m.widths = (16, 32, 64)  # paper Table 1
  m.blocks = 3  # b residual blocks per stage ("ResNet-20")
  m.fusion = "eaa"  # eaa | single_sa | only_baa | only_sa | blam | tgam
  m.sa_groups = 4  # shuffle-attention groups; 2 * groups must divide every width
  m.reduction = 4  # BAA reduction ratio r (ACM's 4)
  m.upsampling = "subpixel"  # subpixel | transpose (1.4x slower on CPU: benchmarks/upsampling.py)
  m.head_dropout = 0.1

  config.loss = l = ml_collections.ConfigDict()
  l.reduction = "batch"  # batch: ACM's soft-IoU over the whole batch; image: mean of per-image
  l.smooth = 1.0  # ACM's smoothing constant

  config.optimizer = o = ml_collections.ConfigDict()
  o.name = "adagrad"  # adagrad (paper) | adam (BasicIRSTD)
  o.learning_rate = 0.05  # paper 4.2
  o.weight_decay = 1e-4  # paper 4.2
  # MXNet AdaGrad, as ACM trained: accumulator starts at 0, eps inside the square root
  # (g / sqrt(sum g^2 + eps)), gradients rescaled by 1/batch (gluon's trainer.step(batch_size)),
  # weight decay added to the normalised step (decoupled). See README "Training" for the measured
  # effect of each on the collapse to all-background.
  o.initial_accumulator_value = 0.0
  o.eps = 1e-7
  o.grad_scale = 1.0 / 8  # 1 / batch_size
  o.weight_decay_mode = "decoupled"  # decoupled (MXNet AdaGrad) | l2 (added to the gradient)
  o.warmup_steps = 0  # linear learning-rate warm-up from 0
  o.schedule = "constant"  # constant (ACM: the poly schedule is built but never used) | cosine

  config.batch_size = 8  # global, split over all devices
  config.num_epochs = 300
  config.log_every_steps = 20
  config.eval_every_epochs = 5
  config.checkpoint_every_steps = 500  # also at every evaluation and at the end
  config.keep_checkpoints = 3  # the last K; the best by val IoU is kept separately
  config.num_eval_images_logged = 4  # prediction | mask image panels per evaluation
  return config
