"""Is this host steady enough to profile? One ONNX sub-network timed in a tight loop, in rounds.

Shared VMs change speed over minutes (another tenant on the same physical core, frequency
changes), and thread CPU time does not hide it. Before `ofa-profile` or
`bench/profile_repeatability.py`, this prints the spread of per-round medians of one model
(the largest sub-network of the `mnist` supernet, ONNX Runtime, one thread) over a few
seconds, in thread CPU time and wall time. Run it twice a few minutes apart: if the two
medians differ by more than ~5 %, or the spread inside a run exceeds ~5 %, profile later.

    .venv/bin/python bench/host_steadiness.py [--rounds 40] [--round-ms 40]
"""

from __future__ import annotations

import argparse
import io
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch

from ofa.cli import make_console
from ofa.networks import OFAMobileNetV3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--round-ms", type=float, default=40.0)
    args = parser.parse_args()
    console = make_console()

    net = OFAMobileNetV3.from_preset("mnist")
    arch = net.space.largest(max(net.space.resolutions))
    buf = io.BytesIO()
    shape = (1, net.space.in_channels, arch.r, arch.r)
    with warnings.catch_warnings():  # the legacy exporter is deprecated, and the fastest here
        warnings.simplefilter("ignore")
        torch.onnx.export(net.extract_subnet(arch).eval(), torch.randn(shape), buf, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(50):
        session.run(None, feed)

    cpu, wall = [], []
    for _ in range(args.rounds):
        calls, start = [], time.perf_counter()
        while time.perf_counter() - start < args.round_ms / 1e3:
            t = time.thread_time()
            session.run(None, feed)
            calls.append(time.thread_time() - t)
        cpu.append(1e3 * float(np.median(calls)))
        wall.append(1e3 * (time.perf_counter() - start) / len(calls))
    for name, v in (("thread CPU", np.array(cpu)), ("wall", np.array(wall))):
        console.print(
            f"{name:>10}: median {np.median(v):.3f} ms per inference, CV across rounds {v.std() / v.mean():.3f}, "
            f"max/min {v.max() / v.min():.2f}"
        )


if __name__ == "__main__":
    main()
