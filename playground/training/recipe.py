"""The runs the shipped weights took, as data, and the runner behind `python -m playground.training.train`.

    python -m playground.training.train                  # every run below, resumable; about 4 h 30 min on 2 cores
    python -m playground.training.train --device cuda    # the same runs on a GPU

Each run is one `python -m playground.training.train` command with the options it was made with
(assets/README.md has each one's figures). Every model is trained from scratch, once, with Muon
(optim.py). The runner:
1. prepares on every thread: the autoencoder, then the training set of 40,000 scenes
   rendered and encoded once, so that no later run writes what another reads;
2. runs the chains side by side, the threads shared out: the diffusion model on one thread,
   the autoregressive model and then the any-order model on the other.

A finished run leaves runs/recipe/<name>.done (its minutes), so a restarted recipe skips it; an
interrupted one resumes from its checkpoints in runs/recipe/<checkpoints>/. Each chain's output
goes to runs/recipe/<chain>.log.
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
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding playground/, on the runs' PYTHONPATH


class RecipeError(RuntimeError):
    """A run of the recipe failed (the message names it and its log)."""


@dataclass(frozen=True)
class Run:
    name: str  # runs/recipe/<name>.done once finished
    args: tuple[str, ...]  # options of `python -m playground.training.train`
    checkpoints: str = ""  # its checkpoint folder under runs/recipe/ (default: its name); a run that resumes another shares it


@dataclass(frozen=True)
class Recipe:
    prepare: tuple[Run, ...]  # one after the other, on every thread
    chains: tuple[tuple[str, tuple[Run, ...]], ...]  # (name, runs): side by side


# Every model from scratch with Muon: the autoencoder and both generators in about 2 h 35 min on 2 cores
# (the any-order model adds about 1 h 50 min), where the earlier recipe (an AdamW
# autoencoder, four decoder fine-tunes, two diffusion runs) took about 7 h 20 min; its history is
# in assets/EXPERIMENTS.md.
SHIPPED = Recipe(
    prepare=(
        # trained with Muon, its decoder needs no fine-tune; 256 codes, not 512: fewer codes an object's
        # cells can take, so the token models draw held-out colour-shape pairs more often (61 -> 72 %)
        Run("autoencoder", ("--stage", "autoencoder", "--ae-optimizer", "muon", "--ae-steps", "1500",
                            "--ae-codes", "256")),  # 49.4 min on one thread beside another run (512 codes: 35.0 min on 2 threads)
        Run("encode-40000", ("--stage", "encode", "--dataset-size", "40000")),  # 4.8 min on 2 threads, 7.2 on one
    ),
    chains=(
        ("diffusion", (
            Run("diffusion", ("--stage", "diffusion", "--diffusion-coordinates", "1", "--diffusion-prompt-order", "place_first",
                              "--diffusion-grounding", "0.1", "--two-object-share", "0.5", "--star-share", "0.3",
                              "--diffusion-lr", "2e-3", "--diffusion-optimizer", "muon", "--diffusion-steps", "4400",
                              "--ema-decay", "0.999", "--diffusion-attributes", "0.5")),  # 113.4 min at one thread; the weights' average ships
            # (half the batches one-object scenes, with the attribute probes: seen 94.0 -> 97.0 %, edits 87 -> 98 %)
        )),
        ("autoregressive", (
            Run("autoregressive", ("--stage", "autoregressive", "--two-object-share", "0.75", "--star-share", "0.25",
                                   "--ar-steps", "6500", "--ar-lr", "2e-3", "--ar-optimizer", "muon",
                                   "--ema-decay", "0.999", "--ar-attributes", "0.5")),  # 102.4 min at one thread; the weights' average ships
            # (the attribute probes: held-out colour-shape pairs 72 -> 83 %, training/autoregressive.py)
            # the any-order model (random and confidence-first orders), on the same codes
            Run("masked", ("--stage", "masked", "--two-object-share", "0.75", "--star-share", "0.25",
                           "--masked-steps", "4200", "--masked-lr", "2e-3", "--masked-optimizer", "muon")),
        )),
    ),
)


def command(run: Run, threads: int, device: str, folder: Path) -> list[str]:
    """The `python -m playground.training.train` command line of one run."""
    checkpoints = folder / (run.checkpoints or run.name)
    return [sys.executable, "-m", "playground.training.train", *run.args, "--threads", str(threads), "--device", device,
            "--checkpoints", str(checkpoints)]


def execute(run: Run, threads: int, device: str, folder: Path, log_name: str) -> None:
    """One run, unless it finished before: its output appended to <folder>/<log_name>.log.
    Raises RecipeError when it fails, or when its .done was left by another command."""
    done = folder / f"{run.name}.done"
    if done.is_file():
        record = json.loads(done.read_text())
        made_by = ["-m", "playground.training.train", *run.args]  # what command() gives, less the interpreter and the per-call options
        if record["command"][:len(made_by)] != made_by:  # a run of another recipe, under the same name
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
