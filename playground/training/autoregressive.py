"""Training the autoregressive model (`--stage autoregressive`): a GPT-2 over each prompt's tokens
and the encoded training set's codes. Weights go to assets/transformer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from playground.autoregressive.model import AutoregressiveConfig, build_transformer, grow_depth, training_sequences
from playground.training import loop
from playground.training.encode import dataset_object_cells, load_encoded, save_tokenizer_asset
from playground.training.loop import Checkpointer, batch_sampler, draw_seed, optimise, pick_device, run_loop, step_rngs, word_rng
from playground.training.optim import build_optimizer
from playground.world.data import training_captions


def train_autoregressive(args) -> None:
    torch.manual_seed(args.seed)
    _, codes, scenes = load_encoded(args)
    grid = int(codes.shape[1] ** 0.5)
    # As for diffusion: the codes of cells an object touches can count more than the background's.
    objects = dataset_object_cells(args, grid).flatten(1) if args.ar_object_weight else None  # (N, g*g)
    pe = save_tokenizer_asset()
    from diffusers import VQModel

    vq_config = VQModel.load_config(loop.ASSETS / "vqvae")
    if args.ar_init:  # continue from a saved transformer (to refine a trained one)
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
    ckpt = Checkpointer("autoregressive", {"transformer": lm}, opt, args.checkpoints, args.ema_decay)
    draw = batch_sampler(scenes, args.two_object_share, args.star_share)
    lm.train()

    def step_fn(step: int) -> float:
        seed = draw_seed(args) + 3
        rng, _ = step_rngs(seed, step)
        idx = draw(rng, args.ar_batch)
        ids = torch.tensor([pe(c, order=args.ar_prompt_order).input_ids for c in training_captions([scenes[i] for i in idx], rng, drop=args.caption_drop, word_drop=args.word_drop, word_rng=word_rng(seed, step))])  # (B, P)
        input_ids, labels = training_sequences(ids, codes[idx], lm.config)  # (B, T)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(args.ar_bf16)):
            if objects is None:
                loss = lm(input_ids=input_ids.to(dev), labels=labels.to(dev)).loss
            else:
                logits = lm(input_ids=input_ids.to(dev)).logits[:, -codes.shape[1] - 1 : -1].float()  # (B, N, V) predicting each code
                ce = F.cross_entropy(logits.transpose(1, 2), labels[:, -codes.shape[1] :].to(dev), reduction="none")  # (B, N)
                weight = (1 + args.ar_object_weight * objects[idx]).to(dev)  # (B, N)
                loss = (weight * ce).sum() / weight.sum()
        return optimise(loss, lm.parameters(), opt)

    run_loop("autoregressive", ckpt, args.ar_steps, args.ar_lr, step_fn, stop_at=args.stop_at)
    ckpt.final("transformer").to("cpu").save_pretrained(loop.ASSETS / "transformer")
