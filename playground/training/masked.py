"""Training the any-order model (`--stage masked`): a BERT that fills masked cells of the
encoded training set's code grids, given the prompt (MaskGIT). Weights go to assets/masked."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from playground.autoregressive.masked_model import MASKED_FOLDER, build_masked_transformer, masked_inputs, training_mask
from playground.autoregressive.model import AutoregressiveConfig
from playground.training import loop
from playground.training.encode import load_encoded, save_tokenizer_asset
from playground.training.loop import Checkpointer, batch_sampler, draw_seed, optimise, pick_device, run_loop, step_rngs, word_rng
from playground.training.optim import build_optimizer
from playground.world.data import training_captions


def train_masked(args) -> None:
    torch.manual_seed(args.seed)
    _, codes, scenes = load_encoded(args)
    grid = int(codes.shape[1] ** 0.5)
    pe = save_tokenizer_asset()
    from diffusers import VQModel

    vq_config = VQModel.load_config(loop.ASSETS / "vqvae")
    model = build_masked_transformer(AutoregressiveConfig(), pe.vocab_size, vq_config["num_vq_embeddings"], grid, pe.pad_id)
    cfg = model.config
    dev = pick_device(args.device)
    model.to(dev)
    # Muon: the blocks' matrices (not the embeddings, which the output layer shares).
    opt = build_optimizer(model.named_parameters(), args.masked_optimizer, args.masked_lr, muon_excludes=("embeddings", "cls.predictions.decoder"))
    ckpt = Checkpointer("masked", {"transformer": model}, opt, args.checkpoints, args.ema_decay)
    draw = batch_sampler(scenes, args.two_object_share, args.star_share)
    model.train()
    k, offset = cfg.codebook_size, cfg.image_token_offset

    def step_fn(step: int) -> float:
        seed = draw_seed(args) + 5
        rng, gen = step_rngs(seed, step)
        idx = draw(rng, args.masked_batch)
        ids = torch.tensor([pe(c, order=cfg.prompt_order).input_ids for c in training_captions([scenes[i] for i in idx], rng, drop=args.caption_drop, word_drop=args.word_drop, word_rng=word_rng(seed, step))])  # (B, P)
        target = codes[idx].long()  # (B, N)
        mask = training_mask(len(idx), target.shape[1], gen)  # (B, N)
        inputs = masked_inputs(ids, target, mask, cfg)  # (B, P + N)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(args.ar_bf16)):
            logits = model(input_ids=inputs.to(dev)).logits[:, ids.shape[1] :, offset : offset + k].float()  # (B, N, K)
        # The loss on the masked cells only: the others are given.
        loss = F.cross_entropy(logits[mask.to(dev)], target.to(dev)[mask.to(dev)])
        return optimise(loss, model.parameters(), opt)

    run_loop("masked", ckpt, args.masked_steps, args.masked_lr, step_fn, stop_at=args.stop_at)
    ckpt.final("transformer").to("cpu").save_pretrained(loop.ASSETS / MASKED_FOLDER)
