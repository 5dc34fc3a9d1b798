"""The embedded autoregressive model: a transformers GPT-2 (GPT2LMHeadModel) that writes the
shared autoencoder's codes one at a time, in raster order, after the prompt:

    [PAD.. BOS w1 .. wn] [BEGIN-IMAGE] [c_0 c_1 ... c_255]        (24 + 1 + 256 tokens)

One vocabulary holds the prompt words (ids 0..V-1), BEGIN-IMAGE (id V) and the image codes
(ids V+1 .. V+K). GPT-2's learned absolute positions tell each image token which grid cell it
is (with a fixed-length prompt, position 25 + 16 * row + col), which a small model learns far
faster than the same from relative (RoPE) positions. `autoregressive_progressive()` is the sampler: a generator that yields one
`AutoregressiveFrame` per token, with the KV cache (`decoding.py`), temperature, top-k, top-p and
classifier-free guidance (a conditional and an unconditional stream, batched).

    python -m playground generate "a small blue star at the top" --out out/
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from .autoencoder import SharedAutoencoder
from .decoding import start_decoding
from .frames import UNWRITTEN, AutoregressiveFrame
from .regions import conditional_streams
from .text import MAX_PROMPT_TOKENS, PromptEncoder, prompt_order

NUM_CANDIDATES = 5
# The word order this model is trained on (saved in its config as prompt_order; text.place_first).
PROMPT_ORDER = "place_first"


@dataclass
class AutoregressiveConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024


def build_transformer(cfg: AutoregressiveConfig, text_vocab_size: int, codebook_size: int, grid: int, pad_id: int, bos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=text_vocab_size + 1 + codebook_size,
        n_positions=MAX_PROMPT_TOKENS + 1 + grid * grid,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU (gelu_new) as one kernel: the same function, faster to train
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
    )
    # Where the image lives in the vocabulary, saved with the config.
    config.boi_token_id = text_vocab_size
    config.image_token_offset = text_vocab_size + 1
    config.codebook_size = codebook_size
    config.image_grid = grid
    config.prompt_order = PROMPT_ORDER
    return GPT2LMHeadModel(config)


def grow_depth(lm: GPT2LMHeadModel, num_layers: int) -> GPT2LMHeadModel:
    """A deeper copy of a trained GPT-2 that computes exactly the same function: new blocks are
    spread evenly between the old ones (4 -> 6: old, old, new, old, old, new), with their
    output projections zeroed, so each starts as the identity on the residual stream and
    training goes on from what the smaller model knew."""
    old = lm.config.n_layer
    if num_layers <= old:
        return lm
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.n_layer = num_layers
    grown = GPT2LMHeadModel(config)
    slots = [i * num_layers // old for i in range(old)]  # where each old block goes; 4 -> 6: 0, 1, 3, 4
    state = {k: v for k, v in lm.state_dict().items() if not k.startswith("transformer.h.")}
    for i, slot in enumerate(slots):
        for k, v in lm.transformer.h[i].state_dict().items():
            state[f"transformer.h.{slot}.{k}"] = v
    missing = grown.load_state_dict(state, strict=False).missing_keys
    for j in set(range(num_layers)) - set(slots):
        block = grown.transformer.h[j]
        for proj in (block.attn.c_proj, block.mlp.c_proj):  # the residual branches start at zero
            torch.nn.init.zeros_(proj.weight)
            torch.nn.init.zeros_(proj.bias)
    assert all(k.startswith("transformer.h.") or k == "lm_head.weight" for k in missing), missing
    return grown


def training_sequences(prompt_ids: torch.Tensor, codes: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels: prompt_ids (B, P), codes (B, N) -> (B, P + 1 + N) each.
    Only image codes are learned (labels are -100 on the prompt and BEGIN-IMAGE)."""
    b, p = prompt_ids.shape
    boi = torch.full((b, 1), config.boi_token_id, dtype=torch.long)
    input_ids = torch.cat([prompt_ids, boi, codes + config.image_token_offset], dim=1)  # (B, T)
    labels = input_ids.clone()
    labels[:, : p + 1] = -100
    return input_ids, labels


@dataclass
class AutoregressiveModel:
    """Everything the autoregressive sampler needs, loaded."""

    transformer: PreTrainedModel  # any causal LM laid out as above (GPT-2 here)
    prompt_encoder: PromptEncoder
    autoencoder: SharedAutoencoder


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and the smallest set whose probability reaches top-p; -inf elsewhere.
    logits: (B, K)."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top-p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def choose_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator):
    """The next token from logits (1, K): greedy at temperature 0, else sampled from the
    filtered distribution. Returns (token, the NUM_CANDIDATES most likely as (code, probability))."""
    if temperature <= 0:
        probs = logits.softmax(-1)
        token = int(logits.argmax(-1))
    else:
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)  # (1, K)
        token = int(torch.multinomial(probs, 1, generator=generator))
    top = torch.topk(probs[0], min(NUM_CANDIDATES, probs.shape[-1]))
    return token, [(int(c), float(p)) for c, p in zip(top.indices, top.values)]


@torch.no_grad()
def autoregressive_progressive(
    model: AutoregressiveModel,
    prompt: str,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    guidance_scale: float = 3.0,
    use_cache: bool = True,
    image: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    regional: float = 0.0,
):
    """Generate one picture, yielding an `AutoregressiveFrame` after every token it writes.

    `regional` (0 to 1): for a prompt with two objects at opposite places, how much of the
    conditional logits for a cell come from the prompt of the object whose half holds the cell
    (`regions.regional_prompts`: one more stream per object) rather than from the whole prompt.

    Editing: `image` (64, 64, 3) uint8 is turned into codes, and `keep` ((g*g,) or (g, g) bool,
    raster order) says which of them are copied: the grid is walked in raster order, a kept
    cell's code is fed to the model as if it had written it, every other cell is sampled. The
    model sees only the cells above and to the left of the one it writes. Frames come for the
    written cells only (`total` = how many); their `codes` hold the kept ones from the start.
    """
    start = time.perf_counter()
    lm, cfg = model.transformer, model.transformer.config
    enc = model.prompt_encoder(prompt, order=prompt_order(cfg))
    n = cfg.image_grid**2
    offset, k = cfg.image_token_offset, cfg.codebook_size

    # 1. The prefix: prompt + BEGIN-IMAGE, and the empty prompt's for guidance. With regional
    #    prompts, one stream per object's prompt as well, each weighted on the cells of its half.
    use_cfg = guidance_scale != 1.0 and not enc.unconditional
    texts, weights = conditional_streams(prompt, cfg.image_grid, regional)  # S prompts, (S, g, g)
    weights = torch.from_numpy(weights).flatten(1)  # (S, g*g) each stream's share of each cell
    prompts = [""] * use_cfg + texts
    seq = torch.tensor([model.prompt_encoder(p, order=prompt_order(cfg)).input_ids + [cfg.boi_token_id] for p in prompts],
                       dtype=torch.long)  # (B, P + 1)
    decoder = start_decoding(lm, seq, use_cache)  # with the KV cache: one pass over the prefix
    evaluations = 1
    generator = torch.Generator().manual_seed(int(seed))
    codes = torch.full((n,), UNWRITTEN, dtype=torch.long)  # (g*g,)
    copy = torch.zeros(n, dtype=torch.bool)  # (g*g,) True: the picture's code is kept
    region = None
    if image is not None and keep is not None:
        copy = torch.as_tensor(np.asarray(keep, dtype=bool).reshape(-1))
        codes[copy] = model.autoencoder.latents_to_codes(model.autoencoder.encode(image[None]))[0][copy]
        region = ~copy.view(cfg.image_grid, cfg.image_grid).numpy()  # (g, g) the cells written
    to_write = torch.nonzero(~copy).flatten().tolist()  # raster indices of the cells to sample
    if not to_write:
        raise ValueError("nothing to write: every cell is kept")
    feed = codes[: to_write[0]].tolist()  # codes to give the model before it writes the next cell

    for step, i in enumerate(to_write):
        # 1b. Kept cells before this one (editing): fed in one call, read but not sampled.
        if feed:
            decoder.feed(torch.tensor([feed] * len(prompts), dtype=torch.long) + offset)  # (B, L)
            evaluations += 1
        # 2. Logits over image codes only; the conditional streams are mixed by their share of
        #    this cell, and guidance pushes the mix away from the unconditional stream.
        logits = decoder.logits[:, offset : offset + k].float()  # (B, K)
        cond = (weights[:, i : i + 1] * logits[int(use_cfg) :]).sum(0, keepdim=True)  # (1, K)
        logits = logits[0:1] + guidance_scale * (cond - logits[0:1]) if use_cfg else cond  # (1, K)
        # 3. Choose the token: greedy at temperature 0, else sample from the filtered distribution.
        token, candidates = choose_token(logits, temperature, top_k, top_p, generator)
        codes[i] = token
        yield AutoregressiveFrame(
            step=step + 1,
            total=len(to_write),
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=evaluations,
            autoencoder=model.autoencoder,
            unknown_words=enc.unknown_words,
            unconditional=enc.unconditional,
            codes=codes.clone(),
            position=i,
            token=token,
            candidates=candidates,
            grid=cfg.image_grid,
            kept=int(copy.sum()),
            region=region,
            regional_prompts=tuple(texts[-2:]) if len(texts) > 1 else (),
        )
        # 4. The token goes back in with the kept cells that follow it, before the next cell written.
        following = to_write[step + 1] if step + 1 < len(to_write) else n
        feed = [token] + codes[i + 1 : following].tolist()


def sample(model: AutoregressiveModel, prompt: str, **kwargs):
    """The final frame of `autoregressive_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in autoregressive_progressive(model, prompt, **kwargs):
        pass
    return frame
