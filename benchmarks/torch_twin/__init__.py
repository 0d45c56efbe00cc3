"""A PyTorch EAAU-Net, written for comparison only: an independent check of eaau_jax/models.py
(same weights -> same logits and soft-IoU gradients, tests/test_torch_twin.py) and the PyTorch side
of benchmarks/speed.py. Nothing in the project imports it; it needs `torch` (requirements.txt here).

  model.py    the network (NCHW), every fusion of models.FUSIONS, both upsampling layers, soft-IoU
  convert.py  Flax variables (params + batch_stats) -> the twin's state_dict

What the twin leaves out, on purpose:
  * the ``valid`` mask. The twin pads an input whose sides are not multiples of 4 with zeros and
    crops the logits, unmasked, so it equals the JAX model only on unpadded inputs (sides
    multiples of 4, ``valid=None``), which is all the twin test compares. Its cost for timing at
    other sizes is the unmasked path's.
  * BatchNorm's running variance: ``nn.BatchNorm2d`` updates it with the *unbiased* batch variance
    (n / (n - 1)), Flax's ``nn.BatchNorm`` with the biased one. The normalisation in training
    mode is the same (biased, both); the test checks the running statistics with that factor.
"""
