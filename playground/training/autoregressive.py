"""Training the autoregressive model (`--stage autoregressive`): a GPT-2 over each prompt's tokens
and the encoded training set's codes. Weights go to assets/transformer.

Two optional losses read where each object is (the renderer knows, grounding.object_masks):
- `--ar-grounding W`: token grounding on the GPT-2's attention, as for diffusion
  (grounding.grounding_loss): the attention the image positions pay each object's colour and
  shape word should come from the positions that write that object's cells;
- `--ar-attributes W`: two linear probes on the last hidden state of each position, trained to
  name the shape and the colour of the object in the cell it writes next (or none), so that the
  state carries shape and colour apart. The probes are not part of the saved model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from playground.autoregressive.model import AutoregressiveConfig, build_transformer, grow_depth, training_sequences
from playground.training import loop
from playground.training.encode import dataset_object_cells, load_encoded, save_tokenizer_asset
from playground.training.grounding import AttributeProbes, SceneCells, conditional_rows, grounding_loss, object_token_positions
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
    modules = {"transformer": lm}
    if args.ar_attributes:
        modules["probes"] = AttributeProbes(lm.config.n_embd).to(dev)
    named = [(f"{k}.{n}", p) for k, m in modules.items() for n, p in m.named_parameters()]
    opt = build_optimizer(named, args.ar_optimizer, args.ar_lr, muon_excludes=("wte", "wpe", "probes."))
    ckpt = Checkpointer("autoregressive", modules, opt, args.checkpoints, args.ema_decay)
    draw = batch_sampler(scenes, args.two_object_share, args.star_share)
    words = {i: w for w, i in pe.vocab.items()}
    cells = SceneCells(scenes, grid)  # where each scene's objects are, for grounding and the probes
    lm.train()

    def step_fn(step: int) -> float:
        seed = draw_seed(args) + 3
        rng, _ = step_rngs(seed, step)
        idx = draw(rng, args.ar_batch)
        ids = torch.tensor([pe(c, order=args.ar_prompt_order).input_ids for c in training_captions([scenes[i] for i in idx], rng, drop=args.caption_drop, word_drop=args.word_drop, word_rng=word_rng(seed, step))])  # (B, P)
        input_ids, labels = training_sequences(ids, codes[idx], lm.config)  # (B, T)
        n_prompt, n_codes = ids.shape[1], codes.shape[1]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(args.ar_bf16)):
            out = lm(input_ids=input_ids.to(dev), labels=None if objects is not None else labels.to(dev),
                     output_attentions=bool(args.ar_grounding), output_hidden_states=bool(args.ar_attributes))
            if objects is None:
                loss = out.loss
            else:
                logits = out.logits[:, -n_codes - 1 : -1].float()  # (B, N, V) the positions that write each code
                ce = F.cross_entropy(logits.transpose(1, 2), labels[:, -n_codes:].to(dev), reduction="none")  # (B, N)
                weight = (1 + args.ar_object_weight * objects[idx]).to(dev)  # (B, N)
                loss = (weight * ce).sum() / weight.sum()
            conditional = conditional_rows(ids, pe.bos_id) if args.ar_grounding or args.ar_attributes else []
            if args.ar_grounding:
                # (B, heads, N, P): how much each position that writes a code reads each prompt token
                maps = [a[:, :, n_prompt : n_prompt + n_codes, :n_prompt].float() for a in out.attentions]
                positions = [object_token_positions([words[int(t)] for t in row]) if b in conditional else [] for b, row in enumerate(ids)]
                loss = loss + args.ar_grounding * grounding_loss(maps, positions, cells.masks(idx, dev))
            if args.ar_attributes and conditional:
                hidden = out.hidden_states[-1][conditional, n_prompt : n_prompt + n_codes].float()  # (B', N, C)
                loss = loss + args.ar_attributes * modules["probes"].loss(hidden, *cells.attributes([idx[b] for b in conditional], dev))
        return optimise(loss, [w for _, w in named], opt)

    run_loop("autoregressive", ckpt, args.ar_steps, args.ar_lr, step_fn, stop_at=args.stop_at)
    ckpt.final("transformer").to("cpu").save_pretrained(loop.ASSETS / "transformer")
