"""The paper's recipe: EAAU-Net (b = 3, EAA fusion) on SIRST's idx_320 split (5:2:3), `acm` protocol.

Compares with the paper's Table 3 (IoU 0.771 / nIoU 0.746): its CNN rows are copied from the ACM and
ALCNet papers, whose code evaluates every test image resized to 512 x 512, so the paper's EAAU-Net
number is read under that protocol (``config.eval.protocol = "acm"``; see README "Protocols").

  python main.py --config configs/sirst.py --workdir DIR     # train on train, best checkpoint on val
  python main.py --mode eval --workdir DIR --protocol acm,native   # report on test

Every field the paper states (section 4.2) is the paper's: split ratio, AdaGrad in PyTorch's form,
lr 0.05, weight decay 1e-4, batch 8, 300 epochs, 480 x 480 crops, 4x4 stride-2 transposed convs.
Any field can be overridden with --config.<field>=<value>.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init, dropout, data order and augmentation all derive from it

  config.dataset = d = ml_collections.ConfigDict()
  d.name = "sirst"  # synthetic | sirst | sirst_v2 | folder (tfds_sirst builder configs)
  # sirst only: idx_320 (160/64/96 = the paper's 5:2:3, ACM's released weights) | idx_427 (256/85/86)
  d.split_folder = "idx_320"
  d.data_dir = "~/tensorflow_datasets"  # where the array_record build is written / read
  # The release as downloaded (images/, masks/, idx_320/, idx_427/). Empty: `sirst` downloads it.
  d.manual_dir = "../shared/datasets/sirst"
  # For name == "folder": SirstConfig fields overriding the `folder` layout's (image_dir, mask_dir,
  # mask_suffix, split_dir, split_files as [[split, file], ...], name: default "custom").
  d.folder = config_dict.placeholder(dict)
  d.train_split = "train"  # paper: train on train, pick the checkpoint on val, report on test
  d.eval_split = "val"
  d.test_split = "test"
  # Normalisation; None: the train split's pooled pixel mean/std, computed at start.
  d.mean = config_dict.placeholder(float)
  d.std = config_dict.placeholder(float)
  d.synthetic = s = ml_collections.ConfigDict()  # used when name == "synthetic"
  s.num_train, s.num_val, s.num_test = 512, 64, 64
  s.seed = 0
  s.size_range = (96, 160)  # image height and width are drawn from this range

  config.input = i = ml_collections.ConfigDict()
  i.crop_size = 480  # paper 4.2: random 480x480 crops
  i.base_size = 512  # ACM's base size: training scale reference and the `acm` protocol's size
  # Training rescale: long side to U[scale_range] x reference, where the reference is base_size
  # ("base", ACM's transform, which matches the `acm` protocol) or the image's own long side
  # ("image", which matches the `native` protocol: train at the scale you test at).
  i.scale_reference = "base"
  i.scale_range = (0.5, 2.0)
  i.blur_p = 0.5  # Gaussian blur probability
  i.channels = 1  # 1: grayscale; 3: the grey image repeated (as RGB-trained peers)
  i.workers = 4  # augmentation threads per process (grain's prefetch threads)
  # grain worker processes per process (mp_prefetch), each with `workers` threads; 0: threads only
  i.worker_processes = 0
  i.eval_batch_size = 8  # global; must divide by the number of devices
  i.eval_pad_multiple = 128  # native protocol: images padded to multiples of this (few jit shapes)
  # Validation keeps its prepared batches (read, resized, normalised once per run, not per
  # validation) while they fit in this many MB per process; 0: read the split every time.
  i.eval_cache_mb = 1024

  config.eval = e = ml_collections.ConfigDict()
  # acm: every image resized to base_size x base_size (ACM's testval; Table 3's protocol) | native.
  # Used for validation during training and by --mode=eval (its --protocol flag overrides it).
  e.protocol = "acm"

  config.model = m = ml_collections.ConfigDict()
  m.name = "eaau_net"  # the model registry's key (models.MODELS)
  m.widths = (16, 32, 64)  # paper Table 1
  m.blocks = 3  # b residual blocks per stage ("ResNet-20", paper 3.1)
  m.fusion = "eaa"  # eaa | single_sa | only_baa | only_sa | blam | tgam
  m.sa_groups = 4  # shuffle-attention groups; 2 * groups must divide every width
  m.reduction = 4  # BAA reduction ratio r (ACM's 4)
  # transpose: the paper's 4x4 stride-2 transposed conv, computed as one conv + depth-to-space
  # (exact; a 2x2 conv on the CPU, a 3x3 one elsewhere: the faster where measured,
  # benchmarks/upsampling.py) | transpose_2x2, transpose_3x3 (the same, one form everywhere) |
  # transpose_xla (the same layer through nn.ConvTranspose) |
  # subpixel (a 3x3 conv + depth-to-space, a superset of the layer with more parameters).
  m.upsampling = "transpose"
  m.head_dropout = 0.1

  config.loss = l = ml_collections.ConfigDict()
  l.reduction = "batch"  # batch: ACM's soft-IoU over the whole batch; image: mean of per-image
  l.smooth = 1.0  # ACM's smoothing constant

  config.optimizer = o = ml_collections.ConfigDict()
  o.name = "adagrad"  # adagrad (paper) | adam
  # pytorch: torch.optim.Adagrad (the paper's platform, 4.2): accumulator 0, eps outside the square
  # root, weight decay added to the gradient | mxnet: ACM's gluon AdaGrad (eps inside, gradients
  # divided by the batch size, decoupled decay). See train.create_optimizer.
  o.form = "pytorch"
  o.learning_rate = 0.05  # paper 4.2
  o.weight_decay = 1e-4  # paper 4.2
  o.initial_accumulator_value = 0.0  # PyTorch's default
  o.eps = 1e-10  # PyTorch's default
  o.warmup_steps = 0  # linear learning-rate warm-up from 0
  o.schedule = "constant"  # constant (the paper states no schedule) | cosine

  config.batch_size = 8  # global, split over all devices (paper 4.2)
  # float32 | bfloat16: what the train and eval steps compute in (train.model_apply). bfloat16
  # casts the params and images on the way in, the logits back on the way out: params, optimizer
  # state, BatchNorm statistics, loss and metrics stay float32.
  config.compute_dtype = "float32"
  config.num_epochs = 300  # paper 4.2
  config.log_every_steps = 20
  config.eval_every_epochs = 5
  config.checkpoint_every_steps = 500  # and at the end; best/ at an evaluation that improves
  config.keep_checkpoints = 3  # the last K; the best by val IoU is kept separately
  config.num_eval_images_logged = 4  # prediction | mask image panels per evaluation
  # TensorBoard event files through CLU's writer, which imports TensorFlow (~5 s of start-up on a
  # 2-core CPU; where TensorFlow is missing there are none either way). metrics.jsonl is always
  # written.
  config.tensorboard = True
  return config
