"""Compiled CPU kernels for training steps (C sources in `csrc/`, built on first use).

`compiled` builds and loads them; `batch_norm_act` is BN + activation in one kernel. Nothing
here depends on the elastic layers, so the static networks use it too.
"""
