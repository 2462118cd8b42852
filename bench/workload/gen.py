#!/usr/bin/env python3
"""Multi-app GPU call traces for the simulator and the live replay (bench/workload/README.md).

    python3 bench/workload/gen.py --seed 1 --apps 50 --hours 24 > trace.csv

Same arguments, same seed: the same trace, byte for byte (Python's own PRNG).
"""
import argparse
import csv
import math
import random
import sys

TIERS = ("anonymous", "free", "pro")
HEADER = ("arrival_s", "app", "visitor", "tier", "size", "gpus", "requested_s", "actual_s",
          "model_gib")
MODEL_GIB = (1, 40)


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value
    return parse


def share(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1, help="PRNG seed (default 1)")
    p.add_argument("--apps", type=positive(int), default=50, help="number of apps (default 50)")
    p.add_argument("--hours", type=positive(float), default=24, help="trace length (default 24)")
    p.add_argument("--calls", type=positive(int), help="stop after this many calls")
    p.add_argument("--rate", type=positive(float), default=10,
                   help="mean calls per app per hour over the whole trace (default 10)")
    p.add_argument("--pro-share", type=share, default=0.30, help="share of calls by pro visitors (0.30)")
    p.add_argument("--anonymous-share", type=share, default=0.40,
                   help="share by anonymous visitors (0.40); the rest are free accounts")
    p.add_argument("--xlarge-share", type=share, default=0.10,
                   help="share of calls by apps asking for xlarge (0.10; as nearly as whole "
                        "apps make it)")
    p.add_argument("--gang-share", type=share, default=0.05,
                   help="share of calls by apps asking for 2 whole GPUs (0.05; the same)")
    p.add_argument("--visitors", type=positive(int), default=5000, help="visitor population (5000)")
    p.add_argument("--default-duration-share", type=share, default=0.70,
                   help="share of apps that keep the default 60 s duration (0.70)")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    a = p.parse_args(argv)
    if a.pro_share + a.anonymous_share > 1:
        p.error("--pro-share plus --anonymous-share is more than 1")
    if a.xlarge_share + a.gang_share > 1:
        p.error("--xlarge-share plus --gang-share is more than 1")
    return a


class App:
    """What stays fixed for an app: how popular, how bursty, how long its calls run."""

    ON_MEAN_S, OFF_MEAN_S = 15 * 60, 30 * 60  # bursts: on a third of the time

    def __init__(self, index, rng, a):
        self.name = f"app{index:03d}"
        # Popularity: Pareto(1.16), the 80/20 law — a few hot apps, a long tail; capped
        # so that one app cannot be most of the trace.
        self.weight = min(rng.paretovariate(1.16), 60.0)
        # Mean call length, log-uniform over 2-40 s.
        self.mean_s = math.exp(rng.uniform(math.log(2), math.log(40)))
        # Users over-ask: most keep the default 60 s; the rest ask 3x their mean.
        if rng.random() < a.default_duration_share:
            self.requested_s = 60
        else:
            self.requested_s = min(300, 5 * math.ceil(self.mean_s * 3 / 5))
        # assign_sizes() picks the xlarge and 2-GPU apps. This draw once chose the size;
        # it stays so that the draws after it, and so every trace, stay as they were.
        rng.random()
        self.size, self.gpus = "large", 1
        # Weights on the GPU: log-uniform over 1-40 GiB, like demos from a small
        # diffusion model to a quantised LLM (its own stream: the rest stays as it was).
        model_rng = random.Random(f"{a.seed}/{self.name}/model")
        self.model_gib = math.exp(model_rng.uniform(math.log(MODEL_GIB[0]), math.log(MODEL_GIB[1])))

    def arrivals(self, rng, rate_per_s, horizon_s):
        """Poisson arrivals during on-periods of an on/off process."""
        on_share = self.ON_MEAN_S / (self.ON_MEAN_S + self.OFF_MEAN_S)
        burst_rate = rate_per_s / on_share
        t = rng.expovariate(1 / self.OFF_MEAN_S) if rng.random() > on_share else 0.0
        while t < horizon_s:
            end = min(horizon_s, t + rng.expovariate(1 / self.ON_MEAN_S))
            t += rng.expovariate(burst_rate)
            while t < end:
                yield t
                t += rng.expovariate(burst_rate)
            t = end + rng.expovariate(1 / self.OFF_MEAN_S)


def assign_sizes(apps, a):
    """Apps picked at random ask for 2 GPUs, and others for xlarge, until they make the
    shares of calls asked for (--gang-share, --xlarge-share) as nearly as whole apps can.

    Drawing each app's size on its own left the shares to chance, and with Pareto
    popularity a few apps are most of the calls: seed 1 drew no 2-GPU app at all."""
    order = list(apps)
    random.Random(f"{a.seed}/sizes").shuffle(order)
    total = sum(app.weight for app in apps)
    for size, gpus, target in (("xlarge", 2, a.gang_share), ("xlarge", 1, a.xlarge_share)):
        share = 0.0
        for app in order:
            if app.size != "large" or share >= target:
                continue
            with_it = share + app.weight / total
            if abs(with_it - target) < abs(share - target):  # nearer the target with it
                app.size, app.gpus = size, gpus
                share = with_it


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    rng = random.Random(a.seed)
    apps = [App(i, rng, a) for i in range(a.apps)]
    assign_sizes(apps, a)
    mean_weight = sum(app.weight for app in apps) / len(apps)
    horizon_s = a.hours * 3600
    calls = []
    for app in apps:
        rate = a.rate / 3600 * app.weight / mean_weight
        app_rng = random.Random(f"{a.seed}/{app.name}")
        sigma = 0.5
        for t in app.arrivals(app_rng, rate, horizon_s):
            r = app_rng.random()
            tier = "pro" if r < a.pro_share else \
                "anonymous" if r < a.pro_share + a.anonymous_share else "free"
            # Visitors: a Zipf-like population (some come back often).
            visitor = f"{tier[0]}{int(a.visitors * app_rng.random() ** 2)}"
            actual = app_rng.lognormvariate(math.log(app.mean_s) - sigma * sigma / 2, sigma)
            calls.append((t, app.name, visitor, tier, app.size, app.gpus, app.requested_s, actual,
                          app.model_gib))
    calls.sort()
    if a.calls:
        calls = calls[:a.calls]
    out = open(a.output, "w", newline="") if a.output else sys.stdout
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    for t, app, visitor, tier, size, gpus, req, actual, model in calls:
        w.writerow((f"{t:.3f}", app, visitor, tier, size, gpus, req, f"{actual:.3f}", f"{model:.1f}"))
    if a.output:
        out.close()
    gang = sum(1 for c in calls if c[5] > 1)
    xlarge = sum(1 for c in calls if c[4] == "xlarge" and c[5] == 1)
    print(f"gen: {len(calls)} calls of {a.apps} apps over {a.hours:g} h; "
          f"{xlarge} ({xlarge / max(len(calls), 1):.1%}) xlarge, "
          f"{gang} ({gang / max(len(calls), 1):.1%}) on 2 GPUs", file=sys.stderr)


if __name__ == "__main__":
    main()
