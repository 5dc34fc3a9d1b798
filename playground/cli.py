"""The command line: the same generators the playground streams, written to files.

    python -m playground generate "a large red circle on the left and a small blue star on the right on a yellow background" --seed 0 --out out/
    python -m playground generate --prompts-file prompts.txt --out out/       # out/0000/, out/0001/, ...

Each run folder gets diffusion.png, autoregressive.png, diffusion.gif, autoregressive.gif,
comparison.png and report.json. Bad input: a one-line message and exit code 2.

    python -m playground edit picture.png "a large blue circle on the left" --strength 0.95 --keep-rows 8 --out out/
    python -m playground edit picture.png "a small red star in the center" --mask region.png --out out/

An edit's folder has the same files, plus input.png (the picture as the models saw it, 64 x 64),
mask.png (with --mask) and the report's "edit" part.
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


def generate_one(engine, prompt: str, settings: GenerationSettings, out: Path, edit=None) -> dict:
    """Run both samplers on one prompt (an edit of `edit`, an editing.EditInput, if given) and
    write the run folder; returns the report."""
    from playground.editing import sampler_kwargs
    from playground.outputs import comparison_strip, save_gif

    out.mkdir(parents=True, exist_ok=True)
    enc = engine.encode_prompt(prompt, settings.diffusion_model, settings.autoregressive_model)
    report = {"prompt": prompt, "settings": settings.as_dict(), "unknown_words": enc.unknown_words,
              "unconditional": enc.unconditional, "message": enc.message()}
    diffusion_kwargs, ar_kwargs = sampler_kwargs(settings, edit, engine.grid)
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
    (out / "report.json").write_text(json.dumps(report, indent=2))
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
    settings_from_args(args)  # bad flags fail here, before the models load (the settings follow the loaded model)
    if args.prompts_file:
        if args.prompt:
            raise SettingsError("give a prompt or --prompts-file, not both")
        prompts = read_prompts(args.prompts_file)
    else:
        prompts = [validate_prompt(args.prompt or "")]
    engine = load_engine_from_args(args)
    settings = settings_from_args(args, engine.model_name("diffusion"))  # the model that loaded
    out = Path(args.out)
    for i, prompt in enumerate(prompts):
        folder = out / f"{i:04d}" if args.prompts_file else out
        report = generate_one(engine, prompt, settings, folder)
        if report["message"]:
            print(f"note: {report['message']}", file=sys.stderr)
        d, a = report["diffusion"], report["autoregressive"]
        print(f"{folder}: diffusion {d['seconds']:.2f} s ({d['steps']} steps), "
              f"autoregressive {a['seconds']:.2f} s ({a['steps']} tokens)")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m playground", description="Diffusion and autoregressive image generation, side by side.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate a picture with both models and write the run to a folder")
    g.add_argument("prompt", nargs="?", default=None, help="the prompt (empty: unconditional)")
    g.add_argument("--prompts-file", help="one prompt per line; writes OUT/0000/, OUT/0001/, ...")
    g.add_argument("--out", default="out", help="output folder (default: out)")
    g.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"), help="model folder (default: the shipped assets/)")
    add_settings_arguments(g)
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
    return p


def main(argv=None) -> int:
    from playground.errors import ModelNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
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
