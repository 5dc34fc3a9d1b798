"""Evaluate the embedded models: prompt adherence by the shapes-world checker, per paradigm.

    python -m playground.evaluation.evaluate                 # 200 seen + 100 held-out prompts (about 10 min)
    python -m playground.evaluation.evaluate --seen 20 --held-out 10
    python -m playground.evaluation.evaluate --paradigm autoregressive --temperature 0.6 --ar-guidance-scale 3   # other settings
    python -m playground.evaluation.evaluate --validation       # the prompts to choose settings on

Seen prompts name every part (size, colour, shape, place, background) with colour-shape pairs
that training saw; held-out prompts contain at least one pair training never saw. The
evaluation sets are drawn with seeds 123 (seen) and 456 (held-out); `--validation` draws other
prompts (seeds 789 and 1011), so that settings chosen on them are not chosen on the figures
reported. Each share comes with its 95 % Wilson interval, and the failures are counted by part
(colour, shape, size, place, background; world/verdict.py). Prints a table and writes the
figures to runs/evaluation.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from playground.arguments import add_settings_arguments, load_engine_or_exit, settings_from_args
from playground.autoencoder.report import autoencoder_report
from playground.errors import SettingsError
from playground.experiment import wilson_interval
from playground.settings import GenerationSettings
from playground.world.shapes import caption, check, parse_prompt, sample_scene
from playground.world.verdict import PARTS, verdict

EVALUATION_SEEDS = (123, 456)  # the prompts of the reported figures: seen, held-out
VALIDATION_SEEDS = (789, 1011)  # other prompts of the same kinds, to choose settings on


def evaluation_prompts(n: int, held_out: str, seed: int) -> list[str]:
    """n full captions (every part named), seeded; held_out is "exclude" or "require"."""
    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng, held_out=held_out)) for _ in range(n)]


def adherence(engine, prompts: list[str], settings: GenerationSettings, paradigm: str, examples: Path | None = None) -> dict:
    """Share of prompts whose picture matches by the checker, and seconds per picture."""
    run = engine.diffusion_progressive if paradigm == "diffusion" else engine.autoregressive_progressive
    kwargs = settings.diffusion_kwargs() if paradigm == "diffusion" else settings.autoregressive_kwargs()
    ok, seconds, failures, evaluations = 0, [], [], []
    part_failures = dict.fromkeys(PARTS, 0)  # how often each kind of part was drawn wrong
    by_objects: dict[int, list[bool]] = {}  # one object or two: where the models fail
    alone: list[bool] = []  # each object of a two-object prompt, checked by itself
    swapped: list[bool] = []  # a two-object picture that fails, but matches with the two places swapped
    for i, prompt in enumerate(prompts):
        t0 = time.perf_counter()
        frame = None
        for frame in run(prompt, **{**kwargs, "seed": i}):
            pass
        image = frame.image()
        seconds.append(time.perf_counter() - t0)
        evaluations.append(frame.network_evaluations)
        result = check(image, prompt)
        ok += result.ok
        for part in verdict(image, prompt).parts:
            part_failures[part.part] += not part.ok
        spec = parse_prompt(prompt)
        by_objects.setdefault(len(spec.objects), []).append(result.ok)
        if len(spec.objects) > 1:
            alone += [check(image, dataclasses.replace(spec, objects=[o], background=None)).ok for o in spec.objects]
            a, b = spec.objects
            places_swapped = [dataclasses.replace(a, place=b.place), dataclasses.replace(b, place=a.place)]
            swapped.append(not result.ok and check(image, dataclasses.replace(spec, objects=places_swapped)).ok)
        if not result.ok and len(failures) < 5:
            failures.append({"prompt": prompt, "reasons": result.reasons})
        if examples is not None and i < 16:
            from PIL import Image

            examples.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(examples / f"{paradigm}-{i:02d}-{'ok' if result.ok else 'no'}.png")
    low, high = wilson_interval(ok, len(prompts))
    return {"adherence": ok / max(len(prompts), 1), "n": len(prompts), "interval_95": [low, high],
            "part_failures": part_failures,
            "by_objects": {str(k): {"adherence": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_objects.items())},
            "objects_of_two_alone": float(np.mean(alone)) if alone else None,
            "two_objects_places_swapped": float(np.mean(swapped)) if swapped else None,
            "seconds_per_image": float(np.mean(seconds)), "evaluations_per_image": float(np.mean(evaluations)),
            "failures": failures}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seen", type=int, default=200)
    p.add_argument("--held-out", type=int, default=100)
    p.add_argument("--assets", default=None)
    p.add_argument("--paradigm", choices=["both", "diffusion", "autoregressive"], default="both")
    p.add_argument("--examples", default="runs/eval-examples", help="folder for a few example pictures")
    p.add_argument("--out", default="runs/evaluation.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--autoencoder-scenes", type=int, default=500, help="scenes for the autoencoder's report (0: skip it)")
    p.add_argument("--validation", action="store_true", help=f"the validation prompts (seeds {VALIDATION_SEEDS}), not the evaluation ones")
    p.add_argument("--prompt-seeds", type=int, nargs=2, metavar=("SEEN", "HELD_OUT"),
                   help="draw the two prompt sets with these seeds instead (a fresh set)")
    add_settings_arguments(p)  # the sampling settings, as `python -m playground generate` takes them (default: the app's)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        settings = settings_from_args(args)
    except SettingsError as e:
        p.error(str(e))
    engine = load_engine_or_exit(p, args.assets)
    report = {"settings": settings.as_dict()}
    if args.autoencoder_scenes > 0:
        ae = autoencoder_report(engine.autoregressive.autoencoder, n=args.autoencoder_scenes)
        report.update(autoencoder_psnr_db=ae["psnr_db"], autoencoder=ae)
        print(f"autoencoder: PSNR {ae['psnr_db']:.2f} dB, checker accepts {ae['reconstructions_matching']:.1%} of reconstructions, "
              f"background cells coded as plain background {ae['background_code_agreement']:.1%}, {ae['codes_used']} codes used")
        worst = sorted(ae["one_object_by_shape"].items(), key=lambda kv: kv[1]["matching"])[:4]
        print("  one-object reconstructions accepted, worst shapes: "
              + ", ".join(f"{k} {v['matching']:.0%} of {v['n']}" for k, v in worst))
    seen_seed, held_seed = args.prompt_seeds or (VALIDATION_SEEDS if args.validation else EVALUATION_SEEDS)
    report["prompt_seeds"] = {"seen": seen_seed, "held_out": held_seed}
    sets = {"seen": evaluation_prompts(args.seen, "exclude", seen_seed),
            "held_out": evaluation_prompts(args.held_out, "require", held_seed)}
    paradigms = ["diffusion", "autoregressive"] if args.paradigm == "both" else [args.paradigm]
    for paradigm in paradigms:
        for name, prompts in sets.items():
            if not prompts:
                continue
            r = adherence(engine, prompts, settings, paradigm, Path(args.examples) / name)
            report[f"{paradigm}/{name}"] = r
            split = ", ".join(f"{k} object{'s' * (k != '1')} {v['adherence']:.0%} of {v['n']}" for k, v in r["by_objects"].items())
            if r["objects_of_two_alone"] is not None:
                split += f"; each of two, alone: {r['objects_of_two_alone']:.0%}; places swapped: {r['two_objects_places_swapped']:.0%}"
            low, high = r["interval_95"]
            wrong = ", ".join(f"{k} {v}" for k, v in r["part_failures"].items())
            print(f"{paradigm:15s} {name:9s} adherence {r['adherence']:6.1%} of {r['n']:3d} (95 %: {low:.1%}-{high:.1%}; "
                  f"{split})   {r['seconds_per_image']:.2f} s/image\n{'':25s} parts drawn wrong: {wrong}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
