"""What every training stage shares: where runs and weights go, the learning-rate schedule, the
random streams of each step, how batches are drawn, checkpoints, and the optimisation loop.

Stages read `ASSETS` and `RUNS` through this module (`loop.ASSETS`), so that tests can point both
at a temporary folder in one place.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from playground.training.plots import plot_loss_curve

ASSETS = Path("assets")
RUNS = Path("runs")


def lr_at(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to `floor * peak`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    """"auto": the GPU where there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def step_rngs(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The random streams of one optimisation step, derived from (seed, step): a resumed run
    draws the same batches and noise as an unbroken one, not the first steps' again."""
    return np.random.default_rng((seed, step)), torch.Generator().manual_seed(seed * 1_000_003 + step)


def word_rng(seed: int, step: int) -> np.random.Generator:
    """The stream of a step's left-out caption words (--word-drop), beside `step_rngs(seed, step)`
    and apart from it: a run with word dropout trains on the same batches and captions as one without."""
    return np.random.default_rng((seed, step, 1))


def draw_seed(args) -> int:
    """The seed of the batches (and noise) drawn at each step: --draw-seed, or --seed. A run
    continued from a saved model (--ar-init, --diffusion-init) with a new draw seed trains on
    other batches of the same scenes than the run it continues."""
    return args.seed if args.draw_seed is None else args.draw_seed


def check_share(share: float, flag: str = "--two-object-share") -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{flag} must lie between 0 and 1, got {share}")


def batch_sampler(scenes: list, two_object_share: float | None = None, star_share: float | None = None):
    """draw(rng, batch) -> training-set indices of one batch: uniform (about half the scenes have
    two objects), or with each index drawn from the two-object scenes with `two_object_share`
    probability (more practice on the prompts the models get wrong most); then, with
    `star_share`, each index replaced with that probability by a scene with a star in it (the
    shape both models draw worst)."""
    draw = two_object_sampler(scenes, two_object_share)
    if star_share is None:
        return draw
    check_share(star_share, "--star-share")
    stars = np.flatnonzero([any(o.shape == "star" for o in s.objects) for s in scenes])
    if not len(stars):
        raise ValueError("star_share: the training set has no scene with a star")

    def draw_with_stars(rng: np.random.Generator, batch: int) -> np.ndarray:
        idx = draw(rng, batch)  # (B,)
        pick = rng.random(batch) < star_share  # (B,)
        idx[pick] = stars[rng.integers(len(stars), size=int(pick.sum()))]
        return idx

    return draw_with_stars


def two_object_sampler(scenes: list, two_object_share: float | None):
    """batch_sampler without stars."""
    if two_object_share is None:
        return lambda rng, batch: rng.integers(len(scenes), size=batch)
    check_share(two_object_share)
    two = np.array([len(s.objects) == 2 for s in scenes])
    pools = np.flatnonzero(~two), np.flatnonzero(two)
    if (two_object_share > 0 and not len(pools[1])) or (two_object_share < 1 and not len(pools[0])):
        raise ValueError(f"two_object_share {two_object_share}: the training set lacks one-object or two-object scenes")

    def draw(rng: np.random.Generator, batch: int) -> np.ndarray:
        pick_two = rng.random(batch) < two_object_share  # (B,)
        idx = np.empty(batch, dtype=np.int64)
        for pool, chosen in ((pools[0], ~pick_two), (pools[1], pick_two)):
            if chosen.any():
                idx[chosen] = pool[rng.integers(len(pool), size=int(chosen.sum()))]
        return idx

    return draw


def optimise(loss: torch.Tensor, params, opt, clip: float | None = 1.0) -> float:
    """One optimiser step on `loss`: gradients from zero, clipped to norm `clip` (None: not
    clipped). Returns the loss as a float, for the loss curve."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss.item()


class Checkpointer:
    """Saves and restores {model(s), optimizer, step, losses} under runs/<stage>/ (or
    <folder>/<stage>/: --checkpoints). With `ema_decay` it also keeps an exponential moving
    average of each model's weights (w_avg <- decay * w_avg + (1 - decay) * w after every step,
    torch's AveragedModel), checkpointed with the rest; `final(name)` is what a stage saves."""

    def __init__(self, stage: str, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                 folder: str | Path | None = None, ema_decay: float = 0.0):
        self.path = Path(folder or RUNS) / stage / "checkpoint.pt"
        self.modules, self.optimizer = modules, optimizer
        self.ema_decay = ema_decay
        self.averages: dict[str, torch.optim.swa_utils.AveragedModel] = {}  # made by resume(), from the weights it loads
        self.step, self.losses = 0, []

    def resume(self) -> None:
        state = {}
        if self.path.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)  # our own file; the safe loader anyway
            for name, m in self.modules.items():
                if name not in state["modules"]:  # e.g. --ar-attributes added to a run made without it
                    raise SystemExit(f"error: {self.path} has no {name} (it was made with other options); "
                                     "move it away to start this run afresh")
                m.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.losses = state["step"], list(state["losses"])
            print(f"resumed {self.path} at step {self.step}")
        if self.ema_decay:  # averages of the weights just loaded; a run that saved none starts them here
            swa = torch.optim.swa_utils
            average = swa.get_ema_multi_avg_fn(self.ema_decay)
            self.averages = {n: swa.AveragedModel(m, multi_avg_fn=average, use_buffers=True) for n, m in self.modules.items()}
            for name, saved in state.get("averages", {}).items():
                self.averages[name].load_state_dict(saved)

    def update_averages(self) -> None:
        for name, average in self.averages.items():
            average.update_parameters(self.modules[name])

    def final(self, name: str) -> torch.nn.Module:
        """The weights to ship for module `name`: its average where there is one."""
        return self.averages[name].module if name in self.averages else self.modules[name]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "losses": self.losses,
        }
        if self.averages:
            state["averages"] = {n: a.state_dict() for n, a in self.averages.items()}
        torch.save(state, self.path.with_suffix(".tmp"))
        self.path.with_suffix(".tmp").replace(self.path)


def run_loop(stage: str, ckpt: Checkpointer, total: int, peak_lr: float, step_fn, every: int = 200,
             stop_at: int | None = None) -> None:
    """The shared optimisation loop: lr schedule, progress bar, checkpoints, loss curve. With
    stop_at, the run ends after that step, on the learning-rate schedule of `total` steps (the
    weights a run of `total` steps had at that step)."""
    ckpt.resume()
    end = total if stop_at is None else min(stop_at, total)
    bar = tqdm(range(ckpt.step, end), initial=ckpt.step, total=total, desc=stage, mininterval=5)
    for step in bar:
        for g in ckpt.optimizer.param_groups:
            g["lr"] = lr_at(step, total, peak_lr)
        loss = step_fn(step)
        ckpt.update_averages()
        ckpt.losses.append(float(loss))
        ckpt.step = step + 1
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(ckpt.losses[-50:]):.4f}")
        if ckpt.step % every == 0 or ckpt.step == end:
            ckpt.save()
    plot_loss_curve(ckpt.losses, ASSETS / f"{stage}-loss.png", title=f"{stage} training loss")
