"""Helper run in a subprocess: N train steps of the tiny config on D simulated CPU devices.

  python tests/steps_on_devices.py DEVICES STEPS OUT.npz
Writes the per-step losses and the final parameters and batch statistics (flattened).
"""

import os
import sys

devices, steps, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402

from configs import tiny  # noqa: E402
from eaau_jax import input_pipeline, models, train  # noqa: E402

assert jax.device_count() == devices, jax.devices()
config = tiny.get_config()
# PyTorch's AdaGrad (the paper's form) makes its first step lr * sign(g): a parameter whose gradient
# is ~0 moves by +-lr on float reduction-order noise, which differs between 1 and 4 devices. MXNet's
# form (eps inside the root) is smooth in g, so it shows what this test is about: the data-parallel
# step computes the single-device step.
config.optimizer.form, config.optimizer.eps = "mxnet", 1e-7
mesh = input_pipeline.make_mesh()
src = input_pipeline.open_source(config.dataset, "train")
loader = input_pipeline.TrainLoader(src, config.batch_size, config.input.crop_size,
                                    config.input.base_size, 100.0, 40.0, seed=config.seed)
state = train.create_train_state(config, models.model_from_config(config.model), 100, mesh)
p_train, _ = train.compile_steps(config, mesh)
losses = []
for batch in list(loader.batches(0))[:steps]:
  state, m = p_train(state, input_pipeline.to_global(mesh, batch))
  losses.append(float(m["loss"]))
flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
        jax.tree_util.tree_flatten_with_path({"params": state.params,
                                              "batch_stats": state.batch_stats})[0]}
np.savez(out, losses=np.array(losses), **flat)
print("devices", jax.device_count(), "losses", losses)
