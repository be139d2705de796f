"""Is this host steady enough to profile? The reference sub-network timed over and over, in rounds.

Shared VMs change speed over minutes (another tenant on the same physical core, frequency
changes), and thread CPU time does not hide it. Before `ofa-profile` or
`bench/profile_repeatability.py`, this times the profile's reference sub-network (the one every
profiling group re-measures) with the profile's own backend, clock and round length, and
prints the spread of the per-round medians and the floor (the profile's `floor_quantile` of
all calls: the speed between slow spells). Run it twice a few minutes apart: if the two
medians differ by more than ~5 %, or the spread inside a run exceeds ~5 %, the host is busy;
a profile with `statistic: floor` and `normalize: reference` copes with that (see
bench/README), one with `statistic: median` does not. On a new machine type, the floor is
what to put in the profile's `timing.reference_ms`.

    .venv/bin/python bench/host_steadiness.py [--device cpu-ort] [--rounds 40]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from app.shell import make_console
from ofa.networks import OFAMobileNetV3
from predictors.measure.profile import load_profile
from predictors.measure.session import iterations_for, warm_up
from predictors.sampling import reference_arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu-ort", help="a profile under hw_profiles/")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    console = make_console()

    profile = load_profile(args.device)
    plan = profile.timing_plan()
    supernet = OFAMobileNetV3.from_preset(profile.supernet)
    arch = reference_arch(supernet.space)
    shape = (profile.batch_size, supernet.space.in_channels, arch.r, arch.r)
    with tempfile.TemporaryDirectory() as workdir, profile.make_backend(workdir) as backend:
        runner = backend.prepare(supernet.extract_subnet(arch), shape, "host-steadiness")
        try:
            warm_up(runner, plan)
            n = iterations_for(runner, plan)
            calls = [runner.time_calls(n) for _ in range(args.rounds)]
        finally:
            runner.close()
    rounds = np.array([np.median(c) for c in calls])
    floor = float(np.quantile(np.concatenate(calls), profile.timing.floor_quantile))
    console.print(
        f"{profile.name} ({profile.backend}, clock {profile.timing.clock}), reference sub-network, "
        f"{args.rounds} rounds of {n} calls: median {np.median(rounds):.3f} ms, "
        f"CV across rounds {rounds.std() / rounds.mean():.3f}, max/min {rounds.max() / rounds.min():.2f}; "
        f"floor (p{profile.timing.floor_quantile * 100:g} of all calls) {floor:.3f} ms"
    )


if __name__ == "__main__":
    main()
