"""Command-line flags shared by every command (generate, edit, evaluate, benchmark, the app):
the generation settings, the models to load, and turning them into settings and an engine
with a one-line message on bad input."""

from __future__ import annotations

import argparse
import sys

from playground.settings import AR_ORDERS, EditSettings, GenerationSettings, suggested_diffusion_settings

EXIT_BAD_INPUT = 2
MAX_PROMPTS = 10000


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    d = GenerationSettings()
    p.add_argument("--seed", default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--steps", dest="num_inference_steps", default=None,
                   help=f"diffusion denoising steps (default: what suits the model; embedded {d.num_inference_steps}, turbo models 2)")
    p.add_argument("--scheduler", default=d.scheduler, help="diffusion scheduler: ddim, euler, ddpm or dpm")
    p.add_argument("--guidance-scale", default=None,
                   help=f"diffusion classifier-free guidance (default: what suits the model; embedded {d.guidance_scale}, turbo models 0)")
    p.add_argument("--temperature", default=d.temperature, help="autoregressive sampling temperature (0: greedy)")
    p.add_argument("--top-k", default=d.top_k, help="autoregressive top-k (0: off)")
    p.add_argument("--top-p", default=d.top_p, help="autoregressive top-p (1: off)")
    p.add_argument("--ar-guidance-scale", default=d.ar_guidance_scale, help="autoregressive classifier-free guidance")
    p.add_argument("--regional", default=d.regional,
                   help=f"embedded diffusion model, two objects at opposite places: how much each object's own prompt "
                        f"steers its half of the picture (0: off, 1: it alone; default {d.regional})")
    p.add_argument("--ar-regional", default=d.ar_regional,
                   help=f"the same for the embedded autoregressive model (default {d.ar_regional})")
    p.add_argument("--order", dest="ar_order", default=d.ar_order, metavar="ORDER",
                   help=f"the order the autoregressive panel writes its codes in: {', '.join(AR_ORDERS)} (default "
                        f"{d.ar_order}; random and confidence-first are the embedded any-order model's)")
    p.add_argument("--ar-steps", default=d.ar_steps,
                   help="the any-order model's steps (network evaluations; default 0: 12 confidence-first, 32 random)")


def add_branch_arguments(p: argparse.ArgumentParser) -> None:
    """--branch-step and the rest: continue the run from a step with a new seed ("what if")."""
    p.add_argument("--branch-step", default=None, metavar="N",
                   help="also branch the run: diffusion continues after its step N (1 to steps - 1) with a new seed; "
                        "written to OUT/branch/")
    p.add_argument("--branch-token", default=None, metavar="K",
                   help="the autoregressive branch keeps the first K tokens (1 to 255; default: the same fraction "
                        "of the tokens as --branch-step is of the steps)")
    p.add_argument("--branch-seed", default=None, help="the branch's seed (default: --seed + 1)")
    p.add_argument("--branch-prompt", default=None, help="the branch's prompt (default: the run's)")
    p.add_argument("--branch-temperature", default=None, help="the autoregressive branch's temperature (default: the run's)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--diffusion-model, --autoregressive-model, --preview-vae (shared by app.py and the CLI)."""
    p.add_argument("--diffusion-model", action="append", default=None, metavar="ID",
                   help="a diffusers text-to-image pipeline (Hugging Face Hub id or folder), e.g. stabilityai/sd-turbo; "
                        "repeat for several (default: $PLAYGROUND_DIFFUSION_MODEL, else the embedded model)")
    p.add_argument("--autoregressive-model", action="append", default=None, metavar="ID",
                   help="a transformers Janus model, e.g. deepseek-community/Janus-Pro-1B "
                        "(default: $PLAYGROUND_AUTOREGRESSIVE_MODEL, else the embedded model)")
    p.add_argument("--preview-vae", default=None, metavar="ID",
                   help="an AutoencoderTiny for cheap diffusion previews, e.g. madebyollin/taesd (default: $PLAYGROUND_PREVIEW_VAE)")


def load_engine_from_args(args):
    """The engine the flags ask for; each model that cannot be loaded is reported on stderr
    and the embedded model stands in for it."""
    from playground.engine import load_engine

    engine = load_engine(args.assets, diffusion_model=args.diffusion_model,
                         autoregressive_model=args.autoregressive_model, preview_vae=args.preview_vae)
    for problem in engine.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return engine


def load_engine_or_exit(parser: argparse.ArgumentParser, folder, **models):
    """load_engine for the measuring commands (evaluate, evaluate_edits, benchmark): a missing
    or incomplete model folder ends the command with its one-line message, not a traceback."""
    from playground.engine import keep_freed_memory, load_engine
    from playground.errors import ModelNotFoundError

    keep_freed_memory()
    try:
        return load_engine(folder, **models)
    except ModelNotFoundError as e:
        parser.error(str(e))


def settings_from_args(args, diffusion_model: str = "") -> GenerationSettings:
    """The settings the flags give; --steps and --guidance-scale, when not given, are those that
    suit `diffusion_model` (settings.suggested_diffusion_settings; "": the embedded model)."""
    suggested = suggested_diffusion_settings(diffusion_model)
    given = lambda name: suggested[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    return GenerationSettings(
        seed=args.seed, num_inference_steps=given("num_inference_steps"), scheduler=args.scheduler,
        guidance_scale=given("guidance_scale"), temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, ar_guidance_scale=args.ar_guidance_scale, regional=args.regional,
        ar_regional=args.ar_regional, ar_order=args.ar_order, ar_steps=args.ar_steps,
    ).validated()


def edit_settings_from_args(args, **edit) -> EditSettings:
    """settings_from_args plus an edit's own settings (strength, keep_rows; defaults where not given)."""
    return EditSettings(**vars(settings_from_args(args)), **edit).validated()
