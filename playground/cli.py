"""The command line: the same generators the playground streams, written to files.

    python -m playground generate "a large red circle on the left and a small blue star on the right on a yellow background" --seed 0 --out out/
    python -m playground generate --prompts-file prompts.txt --out out/       # out/0000/, out/0001/, ...

Each run folder gets diffusion.png, autoregressive.png, diffusion.gif, autoregressive.gif,
comparison.png and report.json. Bad input: a one-line message and exit code 2.

    python -m playground edit picture.png "a large blue circle on the left" --strength 0.95 --keep-rows 8 --out out/
    python -m playground edit picture.png "a small red star in the center" --mask region.png --out out/

    python -m playground generate "a small blue star at the top" --attention-word star --out out/

--attention-word also writes diffusion_attention.png and autoregressive_attention.png: each final
picture with where its model attends to the word (attention_overlay.py), and the report's
"attention" part.

An edit's folder has the same files, plus input.png (the picture as the models saw it, 64 x 64),
mask.png (with --mask) and the report's "edit" part.

    python -m playground generate "a large red circle on the left" --seed 3 --branch-step 5 --branch-seed 7 --out out/

"What if": --branch-step N continues diffusion after its step N with a new seed (--branch-seed,
default --seed + 1) and the autoregressive run after its token K (--branch-token, default the
same fraction of the tokens), optionally with --branch-prompt / --branch-temperature; the branch
gets a run folder of its own, OUT/branch/, and the report a "branch" part (branching.py).

    python -m playground experiment "a small blue star at the top on a yellow background" --seeds 16 --out out/

An experiment paints one prompt with seeds --seed, --seed + 1, ... and writes each model's grid
(diffusion.png, autoregressive.png: a green frame where the checker says the picture matches)
and report.json (the share that match, its 95 % interval, time and evaluations per picture).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from PIL import Image

from playground.arguments import (
    add_branch_arguments,
    add_model_arguments,
    add_settings_arguments,
    edit_settings_from_args,
    load_engine_from_args,
    settings_from_args,
)
from playground.errors import SettingsError
from playground.settings import EditSettings, GenerationSettings, validate_prompt

EXIT_BAD_INPUT = 2
MAX_PROMPTS = 10000


def generate_one(engine, prompt: str, settings: GenerationSettings, out: Path, edit=None, branch=None,
                 starts=None, attention_word: str | None = None) -> dict:
    """Run both samplers on one prompt (an edit of `edit`, an editing.EditInput, if given) and
    write the run folder; returns the report. `branch` (branch_one's arguments) also branches
    the run into out/branch/; `starts`: the samplers' start arguments of a branch."""
    from playground.editing import sampler_kwargs
    from playground.outputs import comparison_strip, save_gif

    out.mkdir(parents=True, exist_ok=True)
    enc = engine.encode_prompt(prompt, settings.diffusion_model, settings.autoregressive_model)
    report = {"prompt": prompt, "settings": settings.as_dict(), "unknown_words": enc.unknown_words,
              "unconditional": enc.unconditional, "message": enc.message()}
    diffusion_kwargs, ar_kwargs = sampler_kwargs(settings, edit, engine.grid)
    if starts is not None:
        diffusion_kwargs, ar_kwargs = {**diffusion_kwargs, **starts[0]}, {**ar_kwargs, **starts[1]}
    runs = {}
    for name, progressive, kwargs in (
        ("diffusion", engine.diffusion_progressive, diffusion_kwargs),
        ("autoregressive", engine.autoregressive_progressive, ar_kwargs),
    ):
        t0 = time.perf_counter()
        frames = list(progressive(prompt, **kwargs))
        image = frames[-1].image()
        seconds = time.perf_counter() - t0
        Image.fromarray(image).save(out / f"{name}.png")
        save_gif(frames, out / f"{name}.gif")
        runs[name] = frames
        report[name] = {"model": engine.model_name(name, kwargs.get("model", "")),
                        "seconds": round(seconds, 4), "steps": frames[-1].total,
                        "network_evaluations": frames[-1].network_evaluations}
    Image.fromarray(comparison_strip(runs["diffusion"], runs["autoregressive"])).save(out / "comparison.png")
    if edit is not None:
        report["edit"] = edit_report(engine, edit, runs, ar_kwargs["keep"])
        Image.fromarray(edit.picture).save(out / "input.png")
        if edit.mask is not None:
            Image.fromarray(edit.mask.astype("uint8") * 255).save(out / "mask.png")
    if attention_word:
        report["attention"] = write_attention(engine, prompt, settings, runs, attention_word, out)
    if branch is not None:
        report["branch"] = branch_one(engine, prompt, settings, out / "branch", runs, edit, **branch)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def branch_one(engine, prompt: str, settings: GenerationSettings, out: Path, runs: dict, edit=None, step=None,
               token=None, seed=None, new_prompt=None, temperature=None) -> dict:
    """Continue a run (`runs`: its frames by paradigm) from diffusion step `step` and token
    `token` with a new seed, prompt or temperature, into its own run folder: the report's part."""
    from playground.branching import branch_prompt, branch_settings, point_at_steps

    point = point_at_steps(runs["diffusion"], runs["autoregressive"], step, token)
    seed = settings.seed + 1 if seed is None else seed
    new = branch_prompt(prompt, new_prompt)
    report = generate_one(engine, new, branch_settings(settings, seed, temperature), out, edit,
                          starts=point.sampler_kwargs())
    return {"folder": str(out), "note": point.note(), "step": point.step, "token": point.token,
            "seed": report["settings"]["seed"], "prompt": new}


def write_attention(engine, prompt: str, settings: GenerationSettings, runs: dict, word: str, out: Path) -> dict:
    """Each final picture with where it attends to `word` over it (diffusion_attention.png,
    autoregressive_attention.png): the report's "attention" part, a one-line reason where a
    model gives no map or the word is not in the prompt."""
    from playground.attention_overlay import overlay
    from playground.hub.attention import attention_reader
    from playground.outputs import preview_image

    report = {"word": word}
    for name in ("diffusion", "autoregressive"):
        frame = runs[name][-1]
        try:
            model = getattr(settings, f"{name}_model")
            reader = attention_reader(engine, name, model, prompt, settings.scheduler, settings.ar_order)
            attention = reader.word_map(frame, word)  # (g, g)
        except ValueError as exc:
            report[name] = str(exc)
            print(f"note: {name}: {exc}", file=sys.stderr)
            continue
        Image.fromarray(overlay(preview_image(frame, 4, view="noisy"), attention)).save(out / f"{name}_attention.png")
        report[name] = f"{name}_attention.png"
    return report


def edit_report(engine, edit, runs: dict, keep) -> dict:
    """What an edit kept and converted: the report's "edit" part."""
    import torch

    ae = engine.autoregressive.autoencoder
    source = ae.latents_to_codes(ae.encode(edit.picture[None]))[0]
    kept = torch.from_numpy(keep)
    return {"notes": edit.notes, "region": edit.mask is not None,
            "diffusion_steps_skipped": runs["diffusion"][-1].skipped,
            "autoregressive_tokens_kept": int(kept.sum()),
            "kept_tokens_reproduced": bool(torch.equal(runs["autoregressive"][-1].codes[kept], source[kept]))}


def read_prompts(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"cannot read prompts file {path}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise SettingsError(f"prompts file {path} has no prompts (one per line)")
    if len(prompts) > MAX_PROMPTS:
        raise SettingsError(f"prompts file {path} has {len(prompts)} prompts; at most {MAX_PROMPTS}")
    return [validate_prompt(p) for p in prompts]


def cmd_generate(args) -> int:
    branch_from_args(args, settings_from_args(args))  # bad flags fail here, before the models load (the settings follow the loaded model)
    if args.prompts_file:
        if args.prompt:
            raise SettingsError("give a prompt or --prompts-file, not both")
        prompts = read_prompts(args.prompts_file)
    else:
        prompts = [validate_prompt(args.prompt or "")]
    engine = load_engine_from_args(args)
    settings = settings_from_args(args, engine.model_name("diffusion"))  # the model that loaded
    out, branch = Path(args.out), branch_from_args(args, settings, engine)
    for i, prompt in enumerate(prompts):
        folder = out / f"{i:04d}" if args.prompts_file else out
        report = generate_one(engine, prompt, settings, folder, branch=branch, attention_word=args.attention_word)
        if report["message"]:
            print(f"note: {report['message']}", file=sys.stderr)
        d, a = report["diffusion"], report["autoregressive"]
        print(f"{folder}: diffusion {d['seconds']:.2f} s ({d['steps']} steps), "
              f"autoregressive {a['seconds']:.2f} s ({a['steps']} tokens)")
        if "branch" in report:
            print(f"{report['branch']['folder']}: {report['branch']['note']}, seed {report['branch']['seed']}")
    return 0


def branch_from_args(args, settings: GenerationSettings, engine=None) -> dict | None:
    """branch_one's arguments from the --branch-* flags (None without --branch-step), checked
    before anything is generated; SettingsError on bad ones."""
    from playground.branching import branch_prompt, branch_settings, check_step
    from playground.settings import EMBEDDED

    if args.branch_step is None:
        if any(v is not None for v in (args.branch_token, args.branch_seed, args.branch_prompt, args.branch_temperature)):
            raise SettingsError("the --branch-* flags need --branch-step (the diffusion step to branch at)")
        return None
    step = check_step(args.branch_step, settings.num_inference_steps, "diffusion step")
    seed = settings.seed + 1 if args.branch_seed is None else args.branch_seed
    branch_settings(settings, seed, args.branch_temperature)
    branch_prompt("", args.branch_prompt)
    if engine is not None:
        if {engine.model_name(k) for k in ("diffusion", "autoregressive")} != {EMBEDDED}:
            raise SettingsError("--branch-step works on the embedded models only")
        if args.branch_token is not None:
            check_step(args.branch_token, engine.grid**2, "token")
    return {"step": step, "token": args.branch_token, "seed": seed, "new_prompt": args.branch_prompt,
            "temperature": args.branch_temperature}


def cmd_edit(args) -> int:
    from playground.editing import load_edit

    settings = edit_settings_from_args(args, strength=args.strength, keep_rows=args.keep_rows)
    prompt = validate_prompt(args.prompt or "")
    edit = load_edit(args.image, args.mask)
    from playground.engine import load_engine

    engine = load_engine(args.assets)
    for note in edit.notes:
        print(f"note: {note}", file=sys.stderr)
    report = generate_one(engine, prompt, settings, Path(args.out), edit)
    if report["message"]:
        print(f"note: {report['message']}", file=sys.stderr)
    d, a, e = report["diffusion"], report["autoregressive"], report["edit"]
    print(f"{args.out}: diffusion {d['seconds']:.2f} s ({d['steps']} steps, {e['diffusion_steps_skipped']} skipped), "
          f"autoregressive {a['seconds']:.2f} s ({a['steps']} tokens written, {e['autoregressive_tokens_kept']} kept)")
    return 0


def cmd_experiment(args) -> int:
    from playground.experiment import experiment_progressive, experiment_report, experiment_seeds, grid_image, \
        summarize, validate_experiment

    settings = settings_from_args(args)
    prompt, n = validate_experiment(args.prompt or "", args.seeds)
    from playground.engine import load_engine

    engine, out = load_engine(args.assets), Path(args.out)
    pictures = []
    for picture in experiment_progressive(engine, prompt, experiment_seeds(settings.seed, n), settings):
        pictures.append(picture)
        print(f"{picture.paradigm:>14s} {picture.caption()} ({picture.seconds:.2f} s)", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for paradigm in ("diffusion", "autoregressive"):
        Image.fromarray(grid_image([p for p in pictures if p.paradigm == paradigm])).save(out / f"{paradigm}.png")
    (out / "report.json").write_text(json.dumps(experiment_report(prompt, settings, pictures), indent=2))
    for summary in summarize(pictures).values():
        print(summary.line())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m playground", description="Diffusion and autoregressive image generation, side by side.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate a picture with both models and write the run to a folder")
    g.add_argument("prompt", nargs="?", default=None, help="the prompt (empty: unconditional)")
    g.add_argument("--prompts-file", help="one prompt per line; writes OUT/0000/, OUT/0001/, ...")
    g.add_argument("--attention-word", help="a word of the prompt: also write diffusion_attention.png and "
                                            "autoregressive_attention.png, where each model attends to it")
    g.add_argument("--out", default="out", help="output folder (default: out)")
    g.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: the shipped assets/)")
    add_settings_arguments(g)
    add_branch_arguments(g)
    add_model_arguments(g)
    g.set_defaults(func=cmd_generate)
    d = EditSettings()
    e = sub.add_parser("edit", help="edit a picture with both models (the same files, plus input.png)")
    e.add_argument("image", help="the picture to edit (any size and mode: made 64 x 64 RGB)")
    e.add_argument("prompt", nargs="?", default=None, help="the new prompt, in full (empty: unconditional)")
    e.add_argument("--mask", help="a picture of the region to repaint: white (or opaque) where to repaint")
    e.add_argument("--strength", default=d.strength,
                   help=f"diffusion: how far to noise the picture, 0.05 to 1 (1: from pure noise; default {d.strength})")
    e.add_argument("--keep-rows", default=d.keep_rows,
                   help=f"autoregressive: token rows kept, 0 to 15, when no --mask (default {d.keep_rows})")
    e.add_argument("--out", default="out", help="output folder (default: out)")
    e.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: the shipped assets/)")
    add_settings_arguments(e)
    e.set_defaults(func=cmd_edit)
    from playground.experiment import DEFAULT_SEEDS, MAX_SEEDS

    x = sub.add_parser("experiment", help="one prompt, many seeds, both models: how often does the picture match?")
    x.add_argument("prompt", nargs="?", default=None, help="a prompt of the shapes world")
    x.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"pictures per model, 1 to {MAX_SEEDS}, seeds --seed, --seed + 1, ... "
                                                          f"(default {DEFAULT_SEEDS})")
    x.add_argument("--out", default="out", help="output folder: diffusion.png, autoregressive.png, report.json")
    x.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: the shipped assets/)")
    add_settings_arguments(x)
    x.set_defaults(func=cmd_experiment)
    return p


def main(argv=None) -> int:
    from playground.engine import keep_freed_memory
    from playground.errors import ModelNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return args.func(args)
    except (SettingsError, ModelNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
