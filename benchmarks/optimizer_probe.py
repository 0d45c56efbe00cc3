"""Does the paper's AdaGrad recipe collapse to all-background? A probe over optimizer variants.

Trains EAAU-Net (b = 3) from the same init on the same batches with each variant and prints, every
--every steps, the loss, the mean score on target pixels, on background pixels, and the fraction of
pixels predicted positive (the collapse of the design notes shows as target score -> 0).

  python benchmarks/optimizer_probe.py --steps 60 --crop 256 [--variants pytorch,mxnet,adam]
"""

import argparse
import time

import jax
import numpy as np
from absl import logging

from configs import sirst
from eaau_jax import input_pipeline, models, train

VARIANTS = {
    # torch.optim.Adagrad, the paper's platform (configs/sirst.py): eps 1e-10 outside the root.
    "pytorch": dict(name="adagrad", form="pytorch", initial_accumulator_value=0.0, eps=1e-10),
    # optax's default accumulator 0.1 (the first trap of the notes), otherwise PyTorch's form.
    "optax_default": dict(name="adagrad", form="pytorch", initial_accumulator_value=0.1, eps=1e-10),
    # MXNet 1.x AdaGrad as ACM ran it: eps 1e-7 inside the root, grads / batch, decoupled decay.
    "mxnet": dict(name="adagrad", form="mxnet", initial_accumulator_value=0.0, eps=1e-7),
    "pytorch_warmup": dict(name="adagrad", form="pytorch", initial_accumulator_value=0.0,
                           eps=1e-10, warmup_steps=100),
    "adam": dict(name="adam", learning_rate=5e-4),
}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=60)
  ap.add_argument("--every", type=int, default=5)
  ap.add_argument("--crop", type=int, default=256)
  ap.add_argument("--blocks", type=int, default=3)
  ap.add_argument("--dataset", default="sirst", help="sirst (../shared/datasets/sirst) or synthetic")
  ap.add_argument("--split", default="trainval")
  ap.add_argument("--variants", default="pytorch,mxnet,adam")
  ap.add_argument("--loss_reduction", default="batch", help="soft-IoU over the batch, or per image")
  ap.add_argument("--smooth", type=float, default=1.0, help="soft-IoU smoothing (ACM: 1)")
  ap.add_argument("--upsampling", default="transpose",
                  help="transpose, transpose_xla or subpixel")
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)

  config = sirst.get_config()
  config.dataset.name = args.dataset
  config.dataset.split_folder = "idx_427"  # the split the README's probe table used
  config.dataset.train_split = args.split if args.dataset != "synthetic" else "train"
  config.model.blocks = args.blocks
  config.input.crop_size = args.crop
  source = input_pipeline.open_source(config.dataset, config.dataset.train_split)
  mean, std = input_pipeline.mean_std(source)
  loader = input_pipeline.TrainLoader(source, 8, args.crop, config.input.base_size, mean, std,
                                      seed=0)
  batches = []
  for epoch in range(args.steps // loader.steps_per_epoch + 1):
    batches.extend(loader.batches(epoch))
  batches = batches[:args.steps]
  mesh = input_pipeline.make_mesh()
  print(f"{args.dataset}/{config.dataset.train_split}: b = {args.blocks}, crop {args.crop}, "
        f"batch 8, {args.steps} steps, soft-IoU over the {args.loss_reduction} with smooth "
        f"{args.smooth:g}, {args.upsampling} upsampling, same init and batches for every variant")
  for name in args.variants.split(","):
    cfg = sirst.get_config()
    cfg.update_from_flattened_dict({f"optimizer.{k}": v for k, v in VARIANTS[name].items()})
    cfg.model.blocks = args.blocks
    cfg.loss.reduction, cfg.loss.smooth = args.loss_reduction, args.smooth
    cfg.model.upsampling = args.upsampling
    state = train.create_train_state(cfg, models.model_from_config(cfg.model), args.steps, mesh)
    p_train, _ = train.compile_steps(cfg, mesh)
    t0 = time.time()
    rows = []
    for i, batch in enumerate(batches, 1):
      state, m = p_train(state, input_pipeline.to_global(mesh, batch))
      rows.append(jax.device_get(m))
      if i % args.every == 0:
        r = {k: np.mean([x[k] for x in rows]) for k in rows[0]}
        rows = []
        print(f"{name:15s} step {i:4d} loss {r['loss']:.4f} target_score "
              f"{r['target_score']:.3f} background_score {r['background_score']:.4f} "
              f"positive_fraction {r['positive_fraction']:.4f}", flush=True)
    print(f"{name}: {(time.time() - t0) / args.steps:.2f} s/step", flush=True)


if __name__ == "__main__":
  main()
