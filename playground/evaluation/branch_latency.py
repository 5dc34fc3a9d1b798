"""How long "Branch here" takes to show its first picture: a run is generated once, then the
page's branch handler (ui/branching.py, in this process, as on a page without sampler workers)
is timed from the call to its first update holding a branch picture, and to the first holding
both, at several points of the run.

    python -m playground.evaluation.branch_latency [--assets assets/] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from playground.arguments import load_engine_or_exit
from playground.runtime.run import LiveRun, torch_threads
from playground.settings import GenerationSettings
from playground.ui.branching import Branching
from playground.ui.handlers import Playground

PROMPT = "a large red circle on the left and a small blue star on the right on a yellow background"
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", default=None, help="model folder (default: the shipped assets/)")
    parser.add_argument("--repeats", type=int, default=3, help="branches timed at each point")
    args = parser.parse_args(argv)
    engine = load_engine_or_exit(parser, args.assets)
    torch.set_num_threads(torch_threads())  # as the page sets it
    pg = Playground(lambda: engine)
    run = LiveRun(pg.get_engine(), PROMPT, GenerationSettings(seed=3))
    run.start(min_seconds=0).done.wait()
    pg.runs.add(run)
    handler = Branching(pg)
    first, both = [], []
    for fraction in FRACTIONS:
        for seed in range(args.repeats):
            started = time.perf_counter()
            stream = handler.branch(run.key, fraction, seed=100 + seed)
            first_s = both_s = None
            for update in stream:
                pictures = [isinstance(v, str) and v.endswith(".png") for v in update[:2]]
                if first_s is None and any(pictures):
                    first_s = time.perf_counter() - started
                if all(pictures):
                    both_s = time.perf_counter() - started
                    break
            stream.close()  # stops the branch's compute
            first.append(first_s * 1000)
            both.append(both_s * 1000)
    for name, values in (("first branch picture", first), ("both branch pictures", both)):
        print(f"{name}: median {statistics.median(values):.0f} ms, max {max(values):.0f} ms "
              f"({len(values)} branches at fractions {', '.join(map(str, FRACTIONS))})")


if __name__ == "__main__":
    main()
