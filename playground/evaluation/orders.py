"""The generation orders gallery, measured: for each order the autoregressive panel can write
in (raster, random, confidence-first), the share of pictures that match their prompt (seen and
held-out prompts, evaluate's sets), the time per picture and the network evaluations.

    python -m playground.evaluation.orders                   # 200 seen + 100 held-out prompts per order
    python -m playground.evaluation.orders --seen 50 --held-out 0 --orders confidence
    python -m playground.evaluation.orders --validation      # the prompts to choose settings on

Each order runs with the app's settings (temperature, guidance) and its own default steps,
unless --ar-steps and the other sampling flags say otherwise. Writes runs/orders.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from playground.arguments import add_settings_arguments, load_engine_or_exit, settings_from_args
from playground.errors import ModelNotFoundError, SettingsError
from playground.evaluation.evaluate import EVALUATION_SEEDS, VALIDATION_SEEDS, adherence, evaluation_prompts
from playground.settings import AR_ORDERS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m playground.evaluation.orders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", nargs="+", choices=AR_ORDERS, default=list(AR_ORDERS))
    p.add_argument("--seen", type=int, default=200)
    p.add_argument("--held-out", type=int, default=100)
    p.add_argument("--assets", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--validation", action="store_true", help=f"the validation prompts (seeds {VALIDATION_SEEDS})")
    p.add_argument("--out", default="runs/orders.json")
    add_settings_arguments(p)  # --order is replaced by --orders here
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        base = settings_from_args(args)
    except SettingsError as e:
        p.error(str(e))
    engine = load_engine_or_exit(p, args.assets)
    seen_seed, held_seed = VALIDATION_SEEDS if args.validation else EVALUATION_SEEDS
    sets = {"seen": evaluation_prompts(args.seen, "exclude", seen_seed),
            "held_out": evaluation_prompts(args.held_out, "require", held_seed)}
    report = {"settings": base.as_dict(), "prompt_seeds": {"seen": seen_seed, "held_out": held_seed}}
    print(f"{'order':11s} {'prompts':9s} {'match':>6s} {'95 % interval':>15s} {'s/picture':>10s} {'evaluations':>12s}")
    for order in args.orders:
        settings = dataclasses.replace(base, ar_order=order)
        for name, prompts in sets.items():
            if not prompts:
                continue
            try:
                r = adherence(engine, prompts, settings, "autoregressive")
            except (SettingsError, ModelNotFoundError) as e:  # an order the loaded models cannot write
                p.error(str(e))
            report[f"{order}/{name}"] = r
            low, high = r["interval_95"]
            print(f"{order:11s} {name:9s} {r['adherence']:6.1%} {low:7.1%}-{high:6.1%} {r['seconds_per_image']:10.2f} "
                  f"{r['evaluations_per_image']:12.0f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
