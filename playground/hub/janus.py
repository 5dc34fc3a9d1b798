"""A real autoregressive image model in the autoregressive panel: transformers' Janus
(`JanusForConditionalGeneration`, e.g. deepseek-community/Janus-Pro-1B), by Hugging Face Hub
id or local folder.

Janus writes a 24x24 grid of VQ codes (576 tokens) after the prompt, one at a time, with a
conditional and an unconditional stream for classifier-free guidance. `janus_progressive()` is
our own token loop over the library's modules (KV cache, guidance, temperature, top-k, top-p),
yielding the same `AutoregressiveFrame`s as the embedded sampler; under greedy decoding it
writes exactly the tokens of the library's `generate(..., generation_mode="image")`:

    [BOS prompt... BEGIN-IMAGE]                   conditional stream
    [BOS PAD ...   BEGIN-IMAGE]                   unconditional stream (the library's rule)
    logits = uncond + guidance * (cond - uncond)  from the generation head, over the codebook

    python -m playground generate "a red fox in the snow" --autoregressive-model deepseek-community/Janus-Pro-1B
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from playground.autoregressive.sample import choose_token
from playground.errors import ModelLoadError
from playground.frames import DISPLAY_SIZE, UNWRITTEN, AutoregressiveFrame
from playground.hub.common import device_and_dtype, read_config


@dataclass
class JanusDisplayConfig:
    display_size_min: int = DISPLAY_SIZE  # pictures are shown at least 64 * scale pixels high
    display_fraction: int = 4  # ... and Janus's 384x384 at the playground's scale 4 is shown 1:1


class JanusDecoder:
    """The frames' `Decoder` for Janus: codes through its VQ model, pixels as its processor
    would post-process them."""

    def __init__(self, model, processor, cfg: JanusDisplayConfig = JanusDisplayConfig()):
        self.vq = model.model.vqmodel
        images = processor.image_processor
        self.mean = torch.tensor(images.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(images.image_std).view(1, 3, 1, 1)
        grid = model.config.vq_config.num_patches
        upsampling = 2 ** (len(model.config.vq_config.channel_multiplier) - 1)
        self.display_size = max(cfg.display_size_min, grid * upsampling // cfg.display_fraction)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> np.ndarray:
        """Codes (B, g*g) -> (B, H, W, 3) uint8."""
        pixels = self.vq.decode(codes.to(self.vq.device)).float().cpu()  # (B, 3, H, W), normalised
        unit = (pixels * self.std + self.mean).clamp(0, 1)
        return (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class HubJanusModel:
    """A loaded Janus model, its processor, and what its runs need."""

    name: str
    model: object  # JanusForConditionalGeneration
    processor: object  # JanusProcessor
    decoder: JanusDecoder
    device: torch.device

    def progressive(self, prompt: str, **kwargs):
        return janus_progressive(self, prompt, **kwargs)


def load_janus(model_id: str) -> HubJanusModel:
    """A Janus model by hub id or folder (safetensors only, never remote code), on the GPU in
    half precision when there is one; ModelLoadError when it is not a transformers Janus."""
    from transformers import JanusForConditionalGeneration, JanusProcessor

    config = read_config(model_id, "config.json", "a transformers model")
    kind = config.get("model_type") or "unknown"
    if kind != "janus":
        hint = (" (DeepSeek's original format, which needs remote code: use the converted "
                "deepseek-community/Janus-Pro-1B or -7B)") if kind == "multi_modality" else ""
        raise ModelLoadError(f"{model_id}: a {kind!r} model, not a transformers Janus model{hint}")
    device, dtype = device_and_dtype(prefer_bfloat16=True)
    model = JanusForConditionalGeneration.from_pretrained(model_id, dtype=dtype, use_safetensors=True).to(device).eval()
    processor = JanusProcessor.from_pretrained(model_id)
    return HubJanusModel(model_id, model, processor, JanusDecoder(model, processor), device)


def janus_inputs(model: HubJanusModel, prompt: str) -> torch.Tensor:
    """The prompt as Janus reads it before an image: its chat template (where the processor has
    one), then BEGIN-IMAGE. (1, T) token ids."""
    text = prompt
    if getattr(model.processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        text = model.processor.apply_chat_template(messages, add_generation_prompt=True)
    return model.processor(text=text, generation_mode="image", return_tensors="pt").input_ids


def unconditional_ids(model: HubJanusModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The unconditional stream: every token but BOS and BEGIN-IMAGE replaced by PAD (as the
    library's image generation does). (1, T) -> (1, T)."""
    tok = model.processor.tokenizer
    boi = tok.convert_tokens_to_ids(tok.boi_token)
    keep = (input_ids == tok.bos_token_id) | (input_ids == boi)
    return input_ids.masked_fill(~keep, tok.pad_token_id)


@torch.no_grad()
def janus_progressive(
    model: HubJanusModel,
    prompt: str,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    guidance_scale: float = 5.0,
):
    """Generate one picture, yielding an `AutoregressiveFrame` after every token."""
    start = time.perf_counter()
    janus, device = model.model, model.device
    lm = janus.model.language_model
    n = janus.config.vision_config.num_image_tokens
    grid = janus.config.vq_config.num_patches
    assert n == grid * grid, f"{model.name}: {n} image tokens do not fill a {grid}x{grid} grid"

    # 1. The prefix, and its unconditional twin for guidance (guidance only above 1, as the library).
    ids = janus_inputs(model, prompt)  # (1, T)
    use_cfg = guidance_scale > 1.0
    streams = torch.cat([ids, unconditional_ids(model, ids)]) if use_cfg else ids  # (B, T)
    out = lm(inputs_embeds=janus.get_input_embeddings()(streams.to(device)), use_cache=True)
    evaluations = 1
    generator = torch.Generator().manual_seed(int(seed))  # sampling on the CPU: the same on any device
    codes = torch.full((n,), UNWRITTEN, dtype=torch.long)

    for i in range(n):
        # 2. Logits over the codebook from the generation head; guidance mixes the two streams.
        logits = janus.model.generation_head(out.last_hidden_state[:, -1]).float().cpu()  # (B, K)
        if use_cfg:
            logits = logits[1:2] + guidance_scale * (logits[0:1] - logits[1:2])  # (1, K)
        # 3. Choose the token: greedy at temperature 0, else sample from the filtered distribution.
        token, candidates = choose_token(logits, temperature, top_k, top_p, generator)
        codes[i] = token
        yield AutoregressiveFrame(
            step=i + 1,
            total=n,
            elapsed_ms=(time.perf_counter() - start) * 1000,
            network_evaluations=evaluations,
            autoencoder=model.decoder,
            unconditional=not prompt.strip(),
            codes=codes.clone(),
            position=i,
            token=token,
            candidates=candidates,
            grid=grid,
        )
        if i == n - 1:
            break
        # 4. Feed the token back through the image-token embedding, one position, KV cache.
        new = torch.full((streams.shape[0], 1), token, dtype=torch.long, device=device)  # (B, 1)
        out = lm(inputs_embeds=janus.prepare_embeddings_for_image_generation(new), cache=out.cache, use_cache=True)
        evaluations += 1


def sample(model: HubJanusModel, prompt: str, **kwargs):
    """The final frame of `janus_progressive` (its `.image()` is the picture)."""
    frame = None
    for frame in janus_progressive(model, prompt, **kwargs):
        pass
    return frame
