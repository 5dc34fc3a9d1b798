"""Training the shared autoencoder (`--stage autoencoder`) and fine-tuning its decoder alone
(`--stage decoder`), with the reconstruction losses both use. Weights go to assets/vqvae."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from playground.autoencoder.model import (
    AutoencoderConfig,
    SharedAutoencoder,
    background_cells,
    build_autoencoder,
    images_to_tensor,
    psnr,
)
from playground.training import loop
from playground.training.loop import Checkpointer, draw_seed, pick_device, run_loop, step_rngs
from playground.training.optim import build_optimizer
from playground.world.data import build_dataset


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
    if args.ae_init:  # continue from a saved autoencoder (to refine a trained one)
        from diffusers import VQModel

        vq = VQModel.from_pretrained(args.ae_init)
    else:
        vq = build_autoencoder(AutoencoderConfig(block_out_channels=tuple(args.ae_channels), num_vq_embeddings=args.ae_codes,
                                                 mid_block_add_attention=bool(args.ae_attention)))
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
    vq.save_pretrained(loop.ASSETS / "vqvae")
    (loop.RUNS / "autoencoder").mkdir(parents=True, exist_ok=True)
    (loop.RUNS / "autoencoder" / "report.json").write_text(json.dumps(report, indent=1))


def train_decoder(args) -> None:
    """Sharpen the decoder with the encoder and codebook frozen: the latents and codes the
    generators learned stay exactly the same, only the pictures drawn from them improve."""
    from diffusers import VQModel

    torch.manual_seed(args.seed)
    images, _ = build_dataset(args.dataset_size, seed=args.seed)
    vq = VQModel.from_pretrained(loop.ASSETS / "vqvae")
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
    report = json.loads((loop.RUNS / "autoencoder" / "report.json").read_text()) if (loop.RUNS / "autoencoder" / "report.json").is_file() else {}
    report["psnr_db_after_decoder_finetune"] = psnr(recon, test_images)
    print(json.dumps(report))
    vq.save_pretrained(loop.ASSETS / "vqvae")
    (loop.RUNS / "autoencoder").mkdir(parents=True, exist_ok=True)  # absent when the autoencoder was trained elsewhere
    (loop.RUNS / "autoencoder" / "report.json").write_text(json.dumps(report, indent=1))
