"""The runs the shipped weights took, as data, and the runner behind `python -m playground.train`.

    python -m playground.train                  # every run below, resumable; about 7 h 20 min on 2 cores
    python -m playground.train --device cuda    # the same runs on a GPU

Each run is one `python -m playground.train` command with the options it was made with
(README.md has each one's figures; the models were refined over several sessions, so the
path has many steps). The runner:
1. prepares on every thread: the autoencoder, then the training set of 40,000 scenes
   rendered and encoded once, so that no later run writes what another reads;
2. runs the chains side by side, the threads shared out: the diffusion model and then the
   decoder fine-tunes (the decoder does not change the codes or latents the generators
   learn), and the autoregressive model's one run (Muon, from scratch).

A finished run leaves runs/recipe/<name>.done (its minutes), so a restarted recipe skips it; an
interrupted one resumes from its checkpoints in runs/recipe/<checkpoints>/. Each chain's output
goes to runs/recipe/<chain>.log. Runs continued from a model read it from assets/ (`--ar-init
assets/transformer`, `--diffusion-init assets`), where the run before them saved it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

RECIPE_RUNS = Path("runs") / "recipe"
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # on the runs' PYTHONPATH


class RecipeError(RuntimeError):
    """A run of the recipe failed (the message names it and its log)."""


@dataclass(frozen=True)
class Run:
    name: str  # runs/recipe/<name>.done once finished
    args: tuple[str, ...]  # options of `python -m playground.train`
    checkpoints: str = ""  # its checkpoint folder under runs/recipe/ (default: its name); a run that resumes another shares it


@dataclass(frozen=True)
class Recipe:
    prepare: tuple[Run, ...]  # one after the other, on every thread
    chains: tuple[tuple[str, tuple[Run, ...]], ...]  # (name, runs): side by side


def _ar(name: str, *args: str) -> Run:
    return Run(name, ("--stage", "autoregressive", *args))


_DIFFUSION = ("--stage", "diffusion", "--diffusion-coordinates", "1", "--diffusion-prompt-order", "place_first", "--diffusion-grounding", "0.1")

SHIPPED = Recipe(
    prepare=(
        Run("autoencoder", ("--stage", "autoencoder")),  # 2,500 steps, 46 min on 2 threads
        Run("encode-40000", ("--stage", "encode", "--dataset-size", "40000")),  # 5.5 min with the rendering
    ),
    chains=(
        ("diffusion-then-decoder", (
            Run("diffusion-1", (*_DIFFUSION, "--diffusion-steps", "10000")),  # 3 to 4 h (session 12)
            Run("diffusion-2", (*_DIFFUSION, "--diffusion-init", "assets", "--star-share", "0.3", "--diffusion-steps", "1200",
                                "--diffusion-lr", "3e-4")),  # 31 min (session 13)
            Run("decoder-1", ("--stage", "decoder")),  # 1,500 steps, 14 min
            Run("decoder-2", ("--stage", "decoder", "--decoder-steps", "3000", "--decoder-lr", "3e-4")),  # 34 min (session 11)
            Run("decoder-3", ("--stage", "decoder", "--decoder-steps", "3000", "--decoder-lr", "2e-4")),  # 31 min
            Run("decoder-4", ("--stage", "decoder", "--decoder-steps", "3000", "--decoder-lr", "1.5e-4")),  # 37 min (session 12)
        )),
        ("autoregressive", (
            # From scratch with Muon (session 19; the shipped model before it took ten AdamW runs, 28,200 steps, about 8 h 10 min).
            _ar("autoregressive", "--two-object-share", "0.75", "--star-share", "0.25", "--ar-steps", "6500", "--ar-lr", "2e-3",
                "--ar-optimizer", "muon"),  # 115 min at one thread
        )),
    ),
)


# The recipe meant to replace SHIPPED within the 3-hour limit, every run with Muon: the
# autoencoder (whose decoder needs no fine-tune), then both generators from scratch side by side.
# Session 21 ran session 20's version in full (autoencoder 2,500 steps, diffusion 4,200): seen
# prompts 90.0 % diffusion, 95.0 % autoregressive, but about 362 core-minutes of work, over 3 h
# on 2 cores however it is scheduled. This version trains the autoencoder for 1,500 steps (about
# 43 core-minutes less) and gives diffusion 200 more steps: about 173 min. Not shipped until it
# has run in full and been evaluated (`python -m playground.train --stage candidate`).
CANDIDATE = Recipe(
    prepare=(
        Run("autoencoder", ("--stage", "autoencoder", "--ae-optimizer", "muon", "--ae-steps", "1500")),  # 35.0 min on 2 threads (session 21)
        Run("encode-40000", ("--stage", "encode", "--dataset-size", "40000")),  # 4.8 min on 2 threads (session 21)
    ),
    chains=(
        ("diffusion", (
            # about 133 min at one thread (1.81 s a step in session 21)
            Run("diffusion", (*_DIFFUSION, "--two-object-share", "0.75", "--star-share", "0.3", "--diffusion-lr", "2e-3",
                              "--diffusion-optimizer", "muon", "--diffusion-steps", "4400")),
        )),
        ("autoregressive", SHIPPED.chains[1][1]),  # the shipped autoregressive run, 116 min at one thread
    ),
)

RECIPES = {"shipped": (SHIPPED, RECIPE_RUNS), "candidate": (CANDIDATE, RECIPE_RUNS.with_name("recipe-candidate"))}


def command(run: Run, threads: int, device: str, folder: Path) -> list[str]:
    """The `python -m playground.train` command line of one run."""
    checkpoints = folder / (run.checkpoints or run.name)
    return [sys.executable, "-m", "playground.train", *run.args, "--threads", str(threads), "--device", device,
            "--checkpoints", str(checkpoints)]


def execute(run: Run, threads: int, device: str, folder: Path, log_name: str) -> None:
    """One run, unless it finished before: its output appended to <folder>/<log_name>.log.
    Raises RecipeError when it fails, or when its .done was left by another command."""
    done = folder / f"{run.name}.done"
    if done.is_file():
        record = json.loads(done.read_text())
        if record["command"][2:2 + len(run.args)] != list(run.args):  # a run of another recipe, under the same name
            raise RecipeError(f"{done} was left by another command ({' '.join(record['command'])}); "
                              f"move {folder} away to train this recipe from the start")
        print(f"{run.name}: finished before ({record['minutes']:.1f} min)", flush=True)
        return
    cmd = command(run, threads, device, folder)
    log = folder / f"{log_name}.log"
    print(f"{run.name}: {' '.join(cmd[1:])}  (log: {log})", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    t0 = time.time()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise RecipeError(f"run {run.name} failed (exit code {code}); its output is in {log}")
    minutes = (time.time() - t0) / 60
    done.write_text(json.dumps({"minutes": round(minutes, 2), "command": cmd[1:]}))
    print(f"{run.name}: done in {minutes:.1f} min", flush=True)


def run_recipe(recipe: Recipe = SHIPPED, threads: int = 2, device: str = "auto", folder: Path = RECIPE_RUNS) -> None:
    """Every run of `recipe` not finished before (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # 1. what every chain reads, on every thread
    for run in recipe.prepare:
        execute(run, threads, device, folder, "prepare")
    # 2. the chains side by side, the threads shared out
    per_chain = max(1, threads // len(recipe.chains))

    def chain(name: str, runs: tuple[Run, ...]) -> None:
        for run in runs:
            execute(run, per_chain, device, folder, name)

    with ThreadPoolExecutor(len(recipe.chains)) as pool:
        futures = [pool.submit(chain, name, runs) for name, runs in recipe.chains]
        errors = [f.exception() for f in futures]  # waits for both: one chain's failure leaves the other to finish
    failed = [str(e) for e in errors if e is not None]
    if failed:
        raise RecipeError("; ".join(failed))
    print(f"recipe finished: {(time.time() - t0) / 60:.1f} min this time; weights in assets/", flush=True)
