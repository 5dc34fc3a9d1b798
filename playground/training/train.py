"""Reproduce every shipped weight from scratch: the shared autoencoder, then the two
generators, into assets/.

    python -m playground.training.train                      # the shipped recipe: every run the shipped weights took
    python -m playground.training.train --stage all          # the four stages once, with the options given
    python -m playground.training.train --stage diffusion    # one stage (the generators need the autoencoder)

The shipped recipe (recipe.py: its runs, order and times) trains the autoencoder, encodes the
training set, then trains both generators side by side, one thread each, every model from
scratch with Muon; about 2 h 47 min on 2 cores (session 22), and it resumes where it
stopped, so it can span sessions.

`--stage all` is a single pass of the four stages (with the decoder fine-tune the shipped
recipe leaves out) with today's default options, which are AdamW's and not the shipped
recipe's; its runs one after the other take far longer than the recipe.

Each stage shows a progress bar, saves a checkpoint to runs/<stage>/ (or --checkpoints
DIR/<stage>/) every few hundred steps and resumes from it when restarted, uses fixed seeds,
and writes its loss curve to assets/<stage>-loss.png.

`--ae-optimizer`, `--decoder-optimizer`, `--diffusion-optimizer` and `--ar-optimizer muon` train
the weight matrices and convolution kernels with Muon instead of AdamW (optim.py; the README's
*Session 19* and *Session 20* have what it measured against AdamW).

On a GPU the same commands train there (`--device cuda`, the default where one is found):
batches and noise are still drawn on the CPU from the same seeds, so a checkpoint moves
between machines and resumes on either. Bigger batches pay off there, for instance

    python -m playground.training.train --stage all --device cuda --diffusion-batch 256 --ar-batch 128
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from playground.autoencoder.model import (
    AutoencoderConfig,
    SharedAutoencoder,
    background_cells,
    build_autoencoder,
    images_to_tensor,
    object_cells,
    psnr,
)
from playground.autoregressive.model import (
    PROMPT_ORDER,
    AutoregressiveConfig,
    build_transformer,
    grow_depth,
    training_sequences,
)
from playground.diffusion.model import (
    DiffusionConfig,
    bidirectional_from,
    build_text_encoder,
    build_train_scheduler,
    build_unet,
    encode_text,
    load_text_encoder,
    unet_input,
    with_coordinate_channels,
)
from playground.training.grounding import (
    AttentionRecorder,
    grounding_loss,
    object_masks,
    object_token_positions,
    reading_loss,
)
from playground.training.optim import build_optimizer
from playground.training.plots import plot_loss_curve
from playground.world.data import CAPTION_DROP, build_dataset, training_captions
from playground.world.text import PROMPT_ORDERS, PromptEncoder, save_tokenizer

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


class Checkpointer:
    """Saves and restores {model(s), optimizer, step, losses} under runs/<stage>/ (or
    <folder>/<stage>/: --checkpoints)."""

    def __init__(self, stage: str, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                 folder: str | Path | None = None):
        self.path = Path(folder or RUNS) / stage / "checkpoint.pt"
        self.modules, self.optimizer = modules, optimizer
        self.step, self.losses = 0, []

    def resume(self) -> None:
        if not self.path.is_file():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=True)  # our own file; the safe loader anyway
        for name, m in self.modules.items():
            m.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.losses = state["step"], list(state["losses"])
        print(f"resumed {self.path} at step {self.step}")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "losses": self.losses,
        }
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
        ckpt.losses.append(float(loss))
        ckpt.step = step + 1
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(ckpt.losses[-50:]):.4f}")
        if ckpt.step % every == 0 or ckpt.step == end:
            ckpt.save()
    plot_loss_curve(ckpt.losses, ASSETS / f"{stage}-loss.png", title=f"{stage} training loss")


# ----------------------------------------------------------------------------- autoencoder


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + MSE, weighted towards what the checker looks at: the objects (pixels that differ
    from the picture's background, the colour of its top-left corner) and their edges.
    Without the weights a small star (1 % of the pixels) decodes as a blob. (B, 3, H, W) each."""
    edge = (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).abs().sum(1, keepdim=True)  # (B, 1, H, W)
    foreground = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()  # (B, 1, H, W)
    weight = 1.0 + 4.0 * edge + 8.0 * foreground
    return (weight * ((recon - x).abs() + (recon - x) ** 2)).mean()


def background_consistency(h: torch.Tensor, h_plain: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """How far the latents of background cells stray from those of the same picture with its
    objects removed (its background colour alone), as a share of the latents' variance.

    A background cell (`autoencoder.background_cells`) should be coded by what it shows, not
    by what lies elsewhere in the picture: then a plain blue cell gets the same code in every
    picture, and the autoregressive model is not left to guess among dozens of codes that all
    draw the same blue. h, h_plain (B, C, g, g); background (B, 1, g, g) 1 where a cell is background."""
    err = ((h - h_plain) ** 2 * background).sum() / (background.sum() * h.shape[1]).clamp(min=1.0)
    return err / h.detach().var().clamp(min=1e-6)


# With Muon, AdamW keeps the first and last layers, the 1x1 convolutions around the codebook and the codebook.
AUTOENCODER_MUON_EXCLUDES = ("conv_in", "conv_out", "quant_conv", "quantize")


def train_autoencoder(args) -> None:
    torch.manual_seed(args.seed)
    images, _ = build_dataset(args.dataset_size, seed=args.seed)
    if args.ae_init:  # continue from a saved autoencoder (how the shipped one was refined)
        from diffusers import VQModel

        vq = VQModel.from_pretrained(args.ae_init)
    else:
        vq = build_autoencoder(AutoencoderConfig(block_out_channels=tuple(args.ae_channels), mid_block_add_attention=bool(args.ae_attention)))
    dev = pick_device(args.device)
    vq.to(dev)
    # Muon (--ae-optimizer muon): the kernels but AUTOENCODER_MUON_EXCLUDES; the codebook, which
    # dead-code restarts rewrite, stays with AdamW.
    opt = build_optimizer(vq.named_parameters(), args.ae_optimizer, args.ae_lr, weight_decay=0.0, betas=(0.9, 0.99),
                          muon_excludes=AUTOENCODER_MUON_EXCLUDES)
    ckpt = Checkpointer("autoencoder", {"vq": vq}, opt, args.checkpoints)
    usage = torch.zeros(vq.config.num_vq_embeddings, device=dev)
    vq.train()

    def step_fn(step: int) -> float:
        rng, _ = step_rngs(draw_seed(args) + 1, step)
        batch = images[rng.integers(len(images), size=args.ae_batch)]  # (B, 64, 64, 3) uint8
        x = images_to_tensor(batch).to(dev)  # (B, 3, 64, 64)
        b = len(x)
        if args.ae_background_weight:  # each picture's background alone rides along in the batch
            x = torch.cat([x, x[:, :, :1, :1].expand_as(x)])  # (2B, 3, 64, 64)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            h = vq.encode(x).latents  # (B or 2B, C, 16, 16)
            quant, commit, (_, _, idx) = vq.quantize(h)
            recon = vq.decode(quant, force_not_quantize=True).sample  # (B or 2B, 3, 64, 64)
        loss = reconstruction_loss(recon.float(), x) + commit.float().mean()
        if args.ae_background_weight:
            loss = loss + args.ae_background_weight * background_consistency(h[:b].float(), h[b:].float(), background_cells(batch, h.shape[-1]).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage.index_add_(0, idx.view(-1), torch.ones(idx.numel(), device=dev))
        if (step + 1) % 100 == 0 and step + 1 < args.ae_steps * 0.8 and not args.ae_init:
            # Restart dead codes at encoder outputs of this batch, so the whole codebook is used.
            dead = (usage == 0).nonzero().view(-1)
            if len(dead):
                flat = h.detach().float().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
                pick = flat[torch.randint(len(flat), (len(dead),))]
                vq.quantize.embedding.weight.data[dead] = pick + 0.01 * torch.randn_like(pick)
            usage.zero_()
        return loss.item()

    run_loop("autoencoder", ckpt, args.ae_steps, args.ae_lr, step_fn, stop_at=args.stop_at)
    vq.to("cpu").eval()

    # The scale that gives the diffusion model unit-variance latents, and the report.
    test_images, _ = build_dataset(args.test_size, seed=args.seed + 1000)
    with torch.no_grad():
        lat = torch.cat([vq.encode(images_to_tensor(test_images[i : i + 200])).latents for i in range(0, len(test_images), 200)])
    vq.register_to_config(scaling_factor=float(1.0 / lat.std()))
    shared = SharedAutoencoder(vq)
    from playground.autoencoder.report import autoencoder_report

    recon, codes = shared.reconstruct(test_images)
    report = {
        "psnr_db": psnr(recon, test_images),
        "codes_used": int(len(torch.unique(codes))),
        "codebook_size": vq.config.num_vq_embeddings,
        "scaling_factor": shared.scaling_factor,
        "scenes": autoencoder_report(shared, n=min(500, args.test_size)),
    }
    print(json.dumps(report))
    vq.save_pretrained(ASSETS / "vqvae")
    (RUNS / "autoencoder").mkdir(parents=True, exist_ok=True)
    (RUNS / "autoencoder" / "report.json").write_text(json.dumps(report, indent=1))


def train_decoder(args) -> None:
    """Sharpen the decoder with the encoder and codebook frozen: the latents and codes the
    generators learned stay exactly the same, only the pictures drawn from them improve."""
    from diffusers import VQModel

    torch.manual_seed(args.seed)
    images, _ = build_dataset(args.dataset_size, seed=args.seed)
    vq = VQModel.from_pretrained(ASSETS / "vqvae")
    named = [*vq.post_quant_conv.named_parameters(prefix="post_quant_conv"), *vq.decoder.named_parameters(prefix="decoder")]
    for p in vq.parameters():
        p.requires_grad_(False)
    for _, p in named:
        p.requires_grad_(True)
    dev = pick_device(args.device)
    vq.to(dev)
    opt = build_optimizer(named, args.decoder_optimizer, args.decoder_lr, weight_decay=0.0, betas=(0.9, 0.99),
                          muon_excludes=AUTOENCODER_MUON_EXCLUDES)
    ckpt = Checkpointer("decoder", {"vq": vq}, opt, args.checkpoints)
    vq.eval()
    vq.decoder.train()

    def step_fn(step: int) -> float:
        rng, _ = step_rngs(draw_seed(args) + 4, step)
        x = images_to_tensor(images[rng.integers(len(images), size=args.decoder_batch)]).to(dev)  # (B, 3, 64, 64)
        with torch.no_grad():
            quant, _, _ = vq.quantize(vq.encode(x).latents)  # (B, C, 16, 16)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            recon = vq.decode(quant, force_not_quantize=True).sample.float()  # (B, 3, 64, 64)
        loss = reconstruction_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    run_loop("decoder", ckpt, args.decoder_steps, args.decoder_lr, step_fn, stop_at=args.stop_at)
    vq.to("cpu").eval()
    test_images, _ = build_dataset(args.test_size, seed=args.seed + 1000)
    recon, _ = SharedAutoencoder(vq).reconstruct(test_images)
    report = json.loads((RUNS / "autoencoder" / "report.json").read_text()) if (RUNS / "autoencoder" / "report.json").is_file() else {}
    report["psnr_db_after_decoder_finetune"] = psnr(recon, test_images)
    print(json.dumps(report))
    vq.save_pretrained(ASSETS / "vqvae")
    (RUNS / "autoencoder").mkdir(parents=True, exist_ok=True)  # absent when the autoencoder was trained elsewhere
    (RUNS / "autoencoder" / "report.json").write_text(json.dumps(report, indent=1))


# ----------------------------------------------------------------------------- encoded data


def encoder_fingerprint(vq) -> str:
    """What an encoded training set depends on: the encoder, its codebook and the latents' scale.
    A decoder fine-tune leaves it as it is; a retrained autoencoder changes it."""
    h = hashlib.sha256(repr(vq.config.scaling_factor).encode())
    for name, tensor in sorted(vq.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.", "quantize.")):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_encoded(args) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The training set through the autoencoder in assets/vqvae: scaled latents (N, C, g, g) and
    codes (N, g*g), computed once and cached in runs/encoded-<N>-seed<S>.safetensors with the
    encoder's fingerprint. A cache of another encoder is not used; a larger one of the same
    seed and encoder is (build_dataset's first N scenes are the same for every size)."""
    from diffusers import VQModel
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    images, scenes = build_dataset(args.dataset_size, seed=args.seed)
    vq = VQModel.from_pretrained(ASSETS / "vqvae")
    fingerprint = encoder_fingerprint(vq)
    for path in sorted(RUNS.glob(f"encoded-*-seed{args.seed}.safetensors"), key=lambda p: p.stat().st_size):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("encoder") == fingerprint and int(meta.get("scenes", 0)) >= len(scenes):
            t = load_file(str(path))
            latents, codes = t["latents"], t["codes"]
            if len(latents) > len(scenes):  # a larger set's first scenes, copied so that the rest is freed
                latents, codes = latents[: len(scenes)].clone(), codes[: len(scenes)].clone()
            return latents, codes, scenes
    ae = SharedAutoencoder(vq)
    lat, codes = [], []
    for i in tqdm(range(0, len(images), 500), desc="encode dataset"):
        z = ae.encode(images[i : i + 500])  # (b, C, g, g)
        lat.append(z)
        codes.append(ae.latents_to_codes(z))
    lat, codes = torch.cat(lat), torch.cat(codes)
    path = RUNS / f"encoded-{len(scenes)}-seed{args.seed}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": lat.contiguous(), "codes": codes.contiguous()}, str(path.with_suffix(".tmp")),
              metadata={"encoder": fingerprint, "scenes": str(len(scenes))})
    path.with_suffix(".tmp").replace(path)  # a half-written cache is never read
    return lat, codes, scenes


def dataset_object_cells(args, grid: int) -> torch.Tensor:
    """object_cells of the whole training set (the same scenes as load_encoded), (N, 1, g, g)."""
    return object_cells(build_dataset(args.dataset_size, seed=args.seed)[0], grid)


def save_tokenizer_asset() -> PromptEncoder:
    save_tokenizer(ASSETS / "tokenizer")
    return PromptEncoder.from_pretrained(ASSETS / "tokenizer")


# ----------------------------------------------------------------------------- diffusion


def train_diffusion(args) -> None:
    torch.manual_seed(args.seed)
    latents, _, scenes = load_encoded(args)
    # Objects cover a few of the 256 cells; weighting their error keeps the model's effort on
    # the outlines the checker looks at, not on the flat background (1 + w on object cells).
    objects = dataset_object_cells(args, latents.shape[2]) if args.diffusion_object_weight else None
    pe = save_tokenizer_asset()
    cfg = DiffusionConfig(text_encoder=args.text_encoder, coordinate_channels=2 if args.diffusion_coordinates else 0)
    if args.diffusion_init:  # continue from a saved UNet and text encoder (how the shipped ones were refined)
        from diffusers import UNet2DConditionModel

        init = Path(args.diffusion_init)
        unet = UNet2DConditionModel.from_pretrained(init / "unet", use_safetensors=True)
        text_encoder = load_text_encoder(init / "text_encoder")
        if cfg.text_encoder == "siglip":
            text_encoder = bidirectional_from(text_encoder)
        if cfg.coordinate_channels:
            unet = with_coordinate_channels(unet)
    else:
        unet = build_unet(cfg, latents.shape[1], latents.shape[2])
        text_encoder = build_text_encoder(cfg, pe.vocab_size, pe.pad_id, pe.bos_id)
    sched = build_train_scheduler(cfg)
    draw = batch_sampler(scenes, args.two_object_share, args.star_share)
    text_encoder.config.prompt_order = args.diffusion_prompt_order  # read back by the sampler (text.prompt_order)
    dev = pick_device(args.device)
    unet.to(dev), text_encoder.to(dev)
    named = [*unet.named_parameters(prefix="unet"), *text_encoder.named_parameters(prefix="text")]
    params = [p for _, p in named]
    # Muon: every matrix and kernel but the first and last layers and the text embeddings.
    opt = build_optimizer(named, args.diffusion_optimizer, args.diffusion_lr, betas=(0.9, 0.999),
                          muon_excludes=("unet.conv_in", "unet.conv_out", "embeddings"))
    ckpt = Checkpointer("diffusion", {"unet": unet, "text_encoder": text_encoder}, opt, args.checkpoints)
    # Token grounding (grounding.py): each object's colour and shape word read where the object is.
    recorder = AttentionRecorder.attach(unet) if args.diffusion_grounding or args.diffusion_reading else None
    words = {i: w for w, i in pe.vocab.items()}
    masks: dict[int, torch.Tensor] = {}  # scene index -> its objects' cells
    alphas = sched.alphas_cumprod.to(dev)
    unet.train(), text_encoder.train()

    def step_fn(step: int) -> float:
        rng, gen = step_rngs(draw_seed(args) + 2, step)
        idx = draw(rng, args.diffusion_batch)
        x0 = latents[idx]  # (B, C, g, g)
        ids = torch.tensor([pe(c, order=args.diffusion_prompt_order).input_ids for c in training_captions([scenes[i] for i in idx], rng, drop=args.caption_drop)])  # (B, T)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)  # (B,)
        noise = torch.randn(x0.shape, generator=gen)  # drawn on the CPU: the same on every device
        weight = (1 + args.diffusion_object_weight * objects[idx]).to(dev) if objects is not None else None  # (B, 1, g, g)
        x0, ids, t, noise = x0.to(dev), ids.to(dev), t.to(dev), noise.to(dev)
        xt = sched.add_noise(x0, noise, t)
        context, pooled = encode_text(text_encoder, unet, ids)  # (B, T, D), (B, D)
        if recorder is not None:
            recorder.clear()
        pred = unet(unet_input(unet, xt), t, encoder_hidden_states=context, class_labels=pooled).sample  # (B, C, g, g)
        if cfg.prediction_type == "v_prediction":  # every step, pure noise included
            err = (pred - sched.get_velocity(x0, noise, t)) ** 2  # (B, C, g, g)
            loss = err.mean() if weight is None else (weight * err).mean() / weight.mean()
        else:  # epsilon, with min-SNR-5 weighting (not spending the model on nearly clean steps)
            snr = alphas[t] / (1 - alphas[t])
            loss = (snr.clamp(max=5.0) / snr * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        if recorder is not None:
            positions = [object_token_positions([words[int(i)] for i in row]) for row in ids]
            for i in idx:  # each scene's objects rendered alone, once (about 7 ms an object)
                if i not in masks:
                    masks[i] = object_masks(scenes[i], x0.shape[2]).to(dev)  # (n_objects, g, g)
            where = [masks[i] for i in idx]
            if args.diffusion_grounding:
                loss = loss + args.diffusion_grounding * grounding_loss(recorder.maps, positions, where)
            if args.diffusion_reading:
                loss = loss + args.diffusion_reading * reading_loss(recorder.maps, positions, where)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    run_loop("diffusion", ckpt, args.diffusion_steps, args.diffusion_lr, step_fn, stop_at=args.stop_at)
    unet.to("cpu"), text_encoder.to("cpu")
    unet.save_pretrained(ASSETS / "unet")
    text_encoder.save_pretrained(ASSETS / "text_encoder")
    sched.save_pretrained(ASSETS / "scheduler")


# ----------------------------------------------------------------------------- autoregressive


def train_autoregressive(args) -> None:
    torch.manual_seed(args.seed)
    _, codes, scenes = load_encoded(args)
    grid = int(codes.shape[1] ** 0.5)
    # As for diffusion: the codes of cells an object touches can count more than the background's.
    objects = dataset_object_cells(args, grid).flatten(1) if args.ar_object_weight else None  # (N, g*g)
    pe = save_tokenizer_asset()
    from diffusers import VQModel

    vq_config = VQModel.load_config(ASSETS / "vqvae")
    if args.ar_init:  # continue from a saved transformer (how the shipped one was refined)
        from transformers import AutoModelForCausalLM

        lm = grow_depth(AutoModelForCausalLM.from_pretrained(args.ar_init, use_safetensors=True), args.ar_layers or 0)
    else:
        lm = build_transformer(AutoregressiveConfig(**({"num_layers": args.ar_layers} if args.ar_layers else {})), pe.vocab_size, vq_config["num_vq_embeddings"], grid, pe.pad_id, pe.bos_id)
    lm.config.prompt_order = args.ar_prompt_order  # a model continued from an older one learns the new order
    dev = pick_device(args.device)
    if dev.type == "cpu":  # plain matmul-softmax attention: a training step 1.00 against 1.14 s with the fused kernel (one thread)
        lm.set_attn_implementation("eager")
    lm.to(dev)
    # Muon: the blocks' matrices (not the embeddings, which the output layer shares).
    opt = build_optimizer(lm.named_parameters(), args.ar_optimizer, args.ar_lr, muon_excludes=("wte", "wpe"))
    ckpt = Checkpointer("autoregressive", {"transformer": lm}, opt, args.checkpoints)
    draw = batch_sampler(scenes, args.two_object_share, args.star_share)
    lm.train()

    def step_fn(step: int) -> float:
        rng, _ = step_rngs(draw_seed(args) + 3, step)
        idx = draw(rng, args.ar_batch)
        ids = torch.tensor([pe(c, order=args.ar_prompt_order).input_ids for c in training_captions([scenes[i] for i in idx], rng, drop=args.caption_drop)])  # (B, P)
        input_ids, labels = training_sequences(ids, codes[idx], lm.config)  # (B, T)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(args.ar_bf16)):
            if objects is None:
                loss = lm(input_ids=input_ids.to(dev), labels=labels.to(dev)).loss
            else:
                logits = lm(input_ids=input_ids.to(dev)).logits[:, -codes.shape[1] - 1 : -1].float()  # (B, N, V) predicting each code
                ce = F.cross_entropy(logits.transpose(1, 2), labels[:, -codes.shape[1] :].to(dev), reduction="none")  # (B, N)
                weight = (1 + args.ar_object_weight * objects[idx]).to(dev)  # (B, N)
                loss = (weight * ce).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        return loss.item()

    run_loop("autoregressive", ckpt, args.ar_steps, args.ar_lr, step_fn, stop_at=args.stop_at)
    lm.to("cpu")
    lm.save_pretrained(ASSETS / "transformer")


def encode_dataset(args) -> None:
    """Render the training set and encode it through assets/vqvae once (data/ and runs/ keep
    both), so that stages run side by side later only read them."""
    latents, _, scenes = load_encoded(args)
    print(f"encoded {len(scenes)} scenes: latents {tuple(latents.shape)}")


STAGES = {"autoencoder": train_autoencoder, "encode": encode_dataset, "decoder": train_decoder, "diffusion": train_diffusion,
          "autoregressive": train_autoregressive}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m playground.training.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["shipped", "all", *STAGES], default="shipped",
                   help="shipped (default): every run the shipped weights took (recipe.py), resumable; all: the four "
                        "training stages once, with the options given; or one stage (encode: render and encode the training set)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (the GPU where there is one)")
    p.add_argument("--checkpoints", default=None, help="folder of the stages' checkpoint folders (default: runs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw-seed", type=int, default=None, help="seed of the batches drawn at each step (default: --seed)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end each stage after this step, on the learning-rate schedule of its full step count")
    p.add_argument("--dataset-size", type=int, default=40000)
    p.add_argument("--caption-drop", type=float, default=CAPTION_DROP, help="chance that each optional part of a training caption is left out")
    p.add_argument("--two-object-share", type=float, default=None,
                   help="share of each generator batch drawn from two-object scenes (default: as the data fall, about half)")
    p.add_argument("--star-share", type=float, default=None,
                   help="share of each generator batch drawn from scenes with a star (default: as the data fall)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out scenes for the autoencoder's PSNR and latent scale")
    p.add_argument("--ae-steps", type=int, default=2500)
    p.add_argument("--ae-batch", type=int, default=24)
    p.add_argument("--ae-lr", type=float, default=2e-3)
    p.add_argument("--ae-channels", type=int, nargs="+", default=list(AutoencoderConfig.block_out_channels),
                   help="block_out_channels of a new autoencoder (three blocks: a 16x16 grid)")
    p.add_argument("--ae-attention", type=int, default=int(AutoencoderConfig.mid_block_add_attention),
                   help="1: attention in the middle block (every code sees the whole picture)")
    p.add_argument("--ae-background-weight", type=float, default=1.0,
                   help="weight of the loss that codes background cells as the plain background would be (0: off)")
    p.add_argument("--ae-init", default=None, help="start the autoencoder from this saved VQModel folder")
    p.add_argument("--ae-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the convolution kernels, AdamW for the rest (AUTOENCODER_MUON_EXCLUDES; optim.py)")
    p.add_argument("--decoder-steps", type=int, default=1500)
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--decoder-batch", type=int, default=16)
    p.add_argument("--decoder-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: as --ae-optimizer, for the decoder fine-tune")
    p.add_argument("--diffusion-steps", type=int, default=10000)
    p.add_argument("--diffusion-batch", type=int, default=32)
    p.add_argument("--diffusion-lr", type=float, default=1e-3)
    p.add_argument("--diffusion-init", default=None,
                   help="start the UNet and text encoder from this saved model folder (its unet/ and text_encoder/; with --text-encoder siglip a causal CLIP encoder becomes bidirectional)")
    p.add_argument("--text-encoder", choices=["siglip", "clip"], default=DiffusionConfig.text_encoder,
                   help="the diffusion model's text encoder: causal CLIP (shipped) or bidirectional SigLIP")
    p.add_argument("--diffusion-prompt-order", choices=PROMPT_ORDERS, default="as_written",
                   help="word order of the diffusion model's prompts (text.place_first; as_written: shipped)")
    p.add_argument("--diffusion-coordinates", type=int, choices=[0, 1], default=0,
                   help="1: the UNet reads each cell's (x, y) beside the latent (diffusion.unet_input); with --diffusion-init a UNet without them is widened")
    p.add_argument("--diffusion-grounding", type=float, default=0.0,
                   help="weight of the token-grounding loss: each object's colour and shape word attended where the object is (grounding.py; 0: off)")
    p.add_argument("--diffusion-reading", type=float, default=0.0,
                   help="weight of the loss that asks an object's cells to read its colour and shape word (grounding.reading_loss; 0: off)")
    p.add_argument("--diffusion-object-weight", type=float, default=3.0,
                   help="extra loss weight on latent cells that an object touches (0: plain MSE)")
    p.add_argument("--diffusion-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the networks' matrices and kernels, AdamW for the rest (optim.py)")
    p.add_argument("--ar-steps", type=int, default=8400)
    p.add_argument("--ar-batch", type=int, default=16)
    p.add_argument("--ar-lr", type=float, default=2e-3)
    p.add_argument("--ar-prompt-order", choices=PROMPT_ORDERS, default=PROMPT_ORDER,
                   help="word order of the autoregressive model's prompts (text.place_first; as_written: the first shipped models)")
    p.add_argument("--ar-init", default=None, help="start the transformer from this saved folder")
    p.add_argument("--ar-layers", type=int, default=None,
                   help="transformer depth; with --ar-init, a shallower saved model is grown to it by identity blocks")
    p.add_argument("--ar-object-weight", type=float, default=0.0,
                   help="extra loss weight on the codes of cells that an object touches (0: plain cross-entropy)")
    p.add_argument("--ar-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the blocks' weight matrices, AdamW for the rest (optim.py)")
    p.add_argument("--ar-bf16", type=int, default=1, help="bfloat16 autocast (faster on these CPUs)")
    return p


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.stage == "shipped":
        from playground.training.recipe import RECIPE_RUNS, SHIPPED, RecipeError, run_recipe

        chosen = {name for name, value in vars(args).items() if value != p.get_default(name)} - {"stage", "threads", "device"}
        if chosen:
            p.error(f"the shipped recipe fixes every other option (got {', '.join('--' + n.replace('_', '-') for n in sorted(chosen))}); "
                    "pass --stage all or a single --stage to choose them")
        try:
            run_recipe(recipe=SHIPPED, threads=args.threads, device=args.device, folder=RECIPE_RUNS)
        except RecipeError as e:
            raise SystemExit(f"error: {e}") from None
        return
    try:  # before any data or model loads
        for name in ("two_object_share", "star_share"):
            if getattr(args, name) is not None:
                check_share(getattr(args, name), "--" + name.replace("_", "-"))
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny values slow these CPUs down many times over
    stages = ["autoencoder", "decoder", "diffusion", "autoregressive"] if args.stage == "all" else [args.stage]
    for stage in stages:
        t0 = time.time()
        STAGES[stage](args)
        print(f"{stage}: {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
