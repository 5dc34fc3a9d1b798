"""Training the diffusion model (`--stage diffusion`): the UNet and its text encoder on the
encoded training set's latents, with optional token grounding and shape and colour probes on
the UNet's last features (grounding.py). Weights go to
assets/unet, assets/text_encoder and assets/scheduler."""

from __future__ import annotations

from pathlib import Path

import torch

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
from playground.training import loop
from playground.training.encode import dataset_object_cells, load_encoded, save_tokenizer_asset
from playground.training.grounding import (
    AttentionRecorder,
    AttributeProbes,
    SceneCells,
    conditional_rows,
    grounding_loss,
    object_token_positions,
    reading_loss,
)
from playground.training.loop import Checkpointer, batch_sampler, draw_seed, optimise, pick_device, run_loop, step_rngs
from playground.training.optim import build_optimizer
from playground.world.data import training_captions


def train_diffusion(args) -> None:
    torch.manual_seed(args.seed)
    latents, _, scenes = load_encoded(args)
    # Objects cover a few of the 256 cells; weighting their error keeps the model's effort on
    # the outlines the checker looks at, not on the flat background (1 + w on object cells).
    objects = dataset_object_cells(args, latents.shape[2]) if args.diffusion_object_weight else None
    pe = save_tokenizer_asset()
    cfg = DiffusionConfig(text_encoder=args.text_encoder, coordinate_channels=2 if args.diffusion_coordinates else 0)
    if args.diffusion_init:  # continue from a saved UNet and text encoder (to refine trained ones)
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
    modules = {"unet": unet, "text_encoder": text_encoder}
    # Shape and colour probes (grounding.AttributeProbes) on the features the UNet's output layer
    # reads, (B, C, g, g): trained to name each cell's object, so those features keep shape and
    # colour apart. They live in the checkpoint only; the saved UNet is the same network.
    features: list[torch.Tensor] = []
    if args.diffusion_attributes:
        modules["probes"] = AttributeProbes(unet.conv_norm_out.num_channels).to(dev)
        unet.conv_norm_out.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0]))
        named += [(f"probes.{n}", p) for n, p in modules["probes"].named_parameters()]
    params = [p for _, p in named]
    # Muon: every matrix and kernel but the first and last layers, the text embeddings and the probes.
    opt = build_optimizer(named, args.diffusion_optimizer, args.diffusion_lr, betas=(0.9, 0.999),
                          muon_excludes=("unet.conv_in", "unet.conv_out", "embeddings", "probes."))
    ckpt = Checkpointer("diffusion", modules, opt, args.checkpoints, args.ema_decay)
    # Token grounding (grounding.py): each object's colour and shape word read where the object is.
    recorder = AttentionRecorder.attach(unet) if args.diffusion_grounding or args.diffusion_reading else None
    words = {i: w for w, i in pe.vocab.items()}
    cells = SceneCells(scenes, latents.shape[2])  # where each scene's objects are, for grounding and the probes
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
        features.clear()
        pred = unet(unet_input(unet, xt), t, encoder_hidden_states=context, class_labels=pooled).sample  # (B, C, g, g)
        if cfg.prediction_type == "v_prediction":  # every step, pure noise included
            err = (pred - sched.get_velocity(x0, noise, t)) ** 2  # (B, C, g, g)
            loss = err.mean() if weight is None else (weight * err).mean() / weight.mean()
        else:  # epsilon, with min-SNR-5 weighting (not spending the model on nearly clean steps)
            snr = alphas[t] / (1 - alphas[t])
            loss = (snr.clamp(max=5.0) / snr * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        if recorder is not None:
            positions = [object_token_positions([words[int(i)] for i in row]) for row in ids]
            where = cells.masks(idx, dev)
            if args.diffusion_grounding:
                loss = loss + args.diffusion_grounding * grounding_loss(recorder.maps, positions, where)
            if args.diffusion_reading:
                loss = loss + args.diffusion_reading * reading_loss(recorder.maps, positions, where)
        conditional = conditional_rows(ids, pe.bos_id) if args.diffusion_attributes else []
        if conditional:
            hidden = features[-1][conditional].flatten(2).transpose(1, 2).float()  # (B', g*g, C)
            loss = loss + args.diffusion_attributes * modules["probes"].loss(hidden, *cells.attributes([idx[b] for b in conditional], dev))
        return optimise(loss, params, opt)

    run_loop("diffusion", ckpt, args.diffusion_steps, args.diffusion_lr, step_fn, stop_at=args.stop_at)
    ckpt.final("unet").to("cpu").save_pretrained(loop.ASSETS / "unet")
    ckpt.final("text_encoder").to("cpu").save_pretrained(loop.ASSETS / "text_encoder")
    sched.save_pretrained(loop.ASSETS / "scheduler")
