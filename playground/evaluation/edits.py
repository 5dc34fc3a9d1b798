"""Evaluate editing on the embedded models: change one named attribute of a picture.

    python -m playground.evaluation.edits                      # 100 cases, default strength and rows (a few min)
    python -m playground.evaluation.edits --cases 20 --strengths 0.4 0.6 0.8 --keep-rows 4 8
    python -m playground.evaluation.edits --attributes colour            # "make the circle blue" only
    python -m playground.evaluation.edits --guidance-scale 5 --temperature 0.6   # other sampling settings
    python -m playground.evaluation.edits --case-seed 8 --keep-rows              # diffusion only, on validation cases

Each case is a rendered shapes-world picture and a new full prompt that changes exactly one
attribute of it (an object's colour, shape, size or place, or the background: "make the circle
blue" said as a new prompt; `shapes.one_word_changes`). An edit succeeds when the shapes-world
checker finds the new prompt in the edited picture.

    diffusion        image-to-image at each `--strengths` (the default: EditSettings().strength)
    autoregressive   continuation keeping the first `--keep-rows` token rows; also checks that
                     every kept token comes back exactly (it must: kept tokens are copied)

Baselines printed alongside: how often the unedited picture already passes the new prompt
(should be about 0), and how often the rendered target passes it (the checker's ceiling).
Prints a table and writes runs/edit-evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from playground.arguments import add_settings_arguments, edit_settings_from_args, load_engine_or_exit
from playground.editing import autoregressive_keep
from playground.errors import SettingsError
from playground.settings import EditSettings
from playground.world.shapes import (
    Scene,
    caption,
    check,
    one_word_changes,
    parse_prompt,
    render,
    sample_scene,
    scene_from_prompt,
)


def changed_attribute(before: str, after: str) -> str:
    """Which attribute a one-word change changed: colour, shape, size, place or background."""
    old, new = parse_prompt(before), parse_prompt(after)
    if old.background != new.background:
        return "background"
    for a, b in zip(old.objects, new.objects):
        for name in ("color", "shape", "size", "place"):
            if getattr(a, name) != getattr(b, name):
                return "colour" if name == "color" else name
    return "none"


ATTRIBUTES = ("colour", "shape", "size", "place", "background")


CASE_SEED = 7  # the cases the model card reports
VALIDATION_CASE_SEED = 8  # other cases, to choose edit settings on


def edit_cases(n: int, seed: int = CASE_SEED, attributes: tuple[str, ...] = ATTRIBUTES) -> list[tuple[Scene, str, str]]:
    """n (scene, its caption, a one-word change of it), seeded, changing one of `attributes`."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        scene = sample_scene(rng, held_out="exclude")
        source = caption(scene)
        changes = [c for c in one_word_changes(scene, rng) if changed_attribute(source, c) in attributes]
        if changes:
            cases.append((scene, source, changes[int(rng.integers(len(changes)))]))
    return cases


def run_edit(progressive, prompt: str, **kwargs):
    frame = None
    for frame in progressive(prompt, **kwargs):
        pass
    return frame


def evaluate(engine, cases, settings: EditSettings, strengths: list[float], keep_rows: list[int],
             examples: Path | None = None) -> dict:
    report: dict = {"n": len(cases), "settings": settings.as_dict()}
    kinds = [changed_attribute(src, new) for _, src, new in cases]
    report["attributes"] = dict(Counter(kinds))
    pictures = [render(scene) for scene, _, _ in cases]
    report["baseline_unedited_passes"] = float(np.mean([check(p, new).ok for p, (_, _, new) in zip(pictures, cases)]))
    report["ceiling_rendered_target_passes"] = float(np.mean(
        [check(render_prompt(new, scene), new).ok for scene, _, new in cases]))
    ae = engine.autoregressive.autoencoder
    # One at a time, as the sampler encodes them (a batch can round a code the other way).
    source_codes = [ae.latents_to_codes(ae.encode(p[None]))[0] for p in pictures]  # N x (g*g,)
    grid = ae.grid

    runs = [("diffusion", s, dict(settings.diffusion_kwargs(), strength=s)) for s in strengths]
    runs += [("autoregressive", r, settings.autoregressive_kwargs()) for r in keep_rows]
    for paradigm, value, kwargs in runs:
        progressive = engine.diffusion_progressive if paradigm == "diffusion" else engine.autoregressive_progressive
        ok, seconds, exact = [], [], []
        by_kind = defaultdict(list)
        for i, ((_, _, new), picture) in enumerate(zip(cases, pictures)):
            t0 = time.perf_counter()
            extra = {"image": picture}
            if paradigm == "autoregressive":
                keep = autoregressive_keep(grid, value, None)
                extra["keep"] = keep
            frame = run_edit(progressive, new, **{**kwargs, **extra, "seed": i})
            image = frame.image()
            seconds.append(time.perf_counter() - t0)
            if paradigm == "autoregressive":
                kept = torch.from_numpy(keep)
                exact.append(bool(torch.equal(frame.codes[kept], source_codes[i][kept])))
            passed = check(image, new).ok
            ok.append(passed)
            by_kind[kinds[i]].append(passed)
            if examples is not None and i < 12:
                from PIL import Image

                examples.mkdir(parents=True, exist_ok=True)
                strip = np.concatenate([picture, image], axis=1)
                Image.fromarray(strip).save(examples / f"{paradigm}-{value}-{i:02d}-{'ok' if passed else 'no'}.png")
        name = f"diffusion strength {value}" if paradigm == "diffusion" else f"autoregressive keep {value} rows"
        result = {"success": float(np.mean(ok)), "seconds_per_edit": float(np.mean(seconds)),
                  "by_attribute": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}}
        if exact:
            result["kept_tokens_exact"] = float(np.mean(exact))
        report[name] = result
        extra = f"   kept tokens exact {result['kept_tokens_exact']:.0%}" if exact else ""
        attrs = "  ".join(f"{k} {v:.0%}" for k, v in result["by_attribute"].items())
        print(f"{name:34s} success {result['success']:6.1%} of {len(cases)}   "
              f"{result['seconds_per_edit']:.2f} s/edit{extra}\n{'':34s} by attribute: {attrs}", flush=True)
    return report


def render_prompt(prompt: str, like: Scene) -> np.ndarray:
    """The scene a full prompt describes, with the jitter of the scene it was made from."""
    return render(scene_from_prompt(prompt, like))


def main(argv=None) -> None:
    d = EditSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=100)
    p.add_argument("--strengths", type=float, nargs="+", default=[d.strength], help="diffusion strengths to evaluate")
    p.add_argument("--keep-rows", type=int, nargs="*", default=[d.keep_rows],
                   help="autoregressive rows kept (none given: diffusion only)")
    p.add_argument("--case-seed", type=int, default=CASE_SEED,
                   help=f"seed of the pictures and their changes ({CASE_SEED}: the reported cases; "
                        f"another, e.g. {VALIDATION_CASE_SEED}, to choose settings on)")
    p.add_argument("--attributes", nargs="+", choices=ATTRIBUTES, default=list(ATTRIBUTES),
                   help="which attributes the edits change (default: any; e.g. --attributes colour)")
    p.add_argument("--assets", default=None)
    p.add_argument("--examples", default="runs/edit-examples", help="folder for a few before|after pictures")
    p.add_argument("--out", default="runs/edit-evaluation.json")
    p.add_argument("--threads", type=int, default=2)
    add_settings_arguments(p)  # the sampling settings, as `python -m playground edit` takes them (default: the app's)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        settings = edit_settings_from_args(args)
    except SettingsError as e:
        p.error(str(e))
    engine = load_engine_or_exit(p, args.assets)
    cases = edit_cases(args.cases, seed=args.case_seed, attributes=tuple(args.attributes))
    report = evaluate(engine, cases, settings, args.strengths, args.keep_rows, Path(args.examples))
    print(f"baselines: unedited picture passes the new prompt {report['baseline_unedited_passes']:.0%}, "
          f"rendered target passes {report['ceiling_rendered_target_passes']:.0%}; attributes changed: {report['attributes']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
