"""Tiny, seeded, untrained checkpoints of the real model families, built with the libraries'
own classes and saved with `save_pretrained` (safetensors): a Stable Diffusion pipeline and a
Janus model with its processor. They load through exactly the path real models take
(`--diffusion-model FOLDER`, `--autoregressive-model FOLDER`), in well under a second, with no
network: for the tests and for measuring the machinery (`python -m playground.evaluation.benchmark --tiny-hub`).

    python -m playground.hub_tiny out/tiny-hub      # writes out/tiny-hub/sd and out/tiny-hub/janus
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# The tiny Janus's words: prompts made of other words still work (they become [UNK]).
JANUS_WORDS = ("a", "an", "the", "red", "blue", "green", "yellow", "circle", "square", "star", "dog", "cat", "on", "left", "right")
JANUS_SPECIALS = (
    "<|begin▁of▁sentence|>", "<|end▁of▁sentence|>", "<|▁pad▁|>", "<image_placeholder>",
    "<begin_of_image>", "<end_of_image>", "<|User|>", "<|Assistant|>", "[UNK]",
)
JANUS_CHAT_TEMPLATE = (  # the shape of Janus-Pro's own: "<|User|>: prompt <|Assistant|>:"
    "{% for m in messages %}<|User|>: {{ m['content'][0]['text'] }} {% endfor %}<|Assistant|>:"
)


def build_tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline with a 2-block UNet on an 8x8x4 latent, a 2x VAE (16x16
    pictures), a 1-layer CLIP text encoder and a CLIP tokenizer from a vocabulary written here."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=16,
    )
    # A byte-level BPE vocabulary of the letters, a few merges and CLIP's two special tokens.
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = letters + [c + "</w>" for c in letters] + ["an", "an</w>", "<|startoftext|>", "<|endoftext|>"]
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\na n\na n</w>\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=len(tokens) - 2, eos_token_id=len(tokens) - 1, pad_token_id=len(tokens) - 1,
        projection_dim=16,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # as Stable Diffusion 1.x ships it
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_janus(folder: str | Path, seed: int = 0) -> Path:
    """A JanusForConditionalGeneration (2-layer Llama, 4x4 image-token grid, 64-code VQ model
    decoding 8x8 pictures) and its JanusProcessor, with a word-level tokenizer built here."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessorPil,
        JanusProcessor,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    bos, eos, pad, image, boi, eoi = JANUS_SPECIALS[:6]
    vocab = {t: i for i, t in enumerate(JANUS_SPECIALS + JANUS_WORDS + (":",))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in JANUS_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="[UNK]", padding_side="left",
        extra_special_tokens={"image_token": image, "boi_token": boi, "eoi_token": eoi},
    )
    processor = JanusProcessor(
        JanusImageProcessorPil(size={"height": 16, "width": 16}), tokenizer,
        num_image_tokens=16, chat_template=JANUS_CHAT_TEMPLATE,
    )
    config = JanusConfig(
        text_config=dict(
            model_type="llama", vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, initializer_range=0.5,
            pad_token_id=vocab[pad], bos_token_id=vocab[bos], eos_token_id=vocab[eos],
        ),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=16, patch_size=4,
                           num_image_tokens=16, projection_dim=32, mlp_ratio=2),
        vq_config=dict(embed_dim=8, num_embeddings=64, latent_channels=8, base_channels=32, channel_multiplier=[1, 1],
                       num_res_blocks=1, projection_dim=32, image_token_embed_dim=32, initializer_range=0.5),
        image_token_id=vocab[image],
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    # What the library's image generation reads (as in the published Janus-Pro checkpoints).
    model.generation_config = GenerationConfig(
        bos_token_id=vocab[bos], eos_token_id=vocab[eos], pad_token_id=vocab[pad], guidance_scale=5.0,
        generation_kwargs={"boi_token_id": vocab[boi]},
    )
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def build_tiny_hub_models(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Both tiny checkpoints under `folder`: {"diffusion": folder/sd, "autoregressive": folder/janus}."""
    folder = Path(folder)
    return {
        "diffusion": build_tiny_stable_diffusion(folder / "sd", seed),
        "autoregressive": build_tiny_janus(folder / "janus", seed),
    }


if __name__ == "__main__":
    for kind, path in build_tiny_hub_models(sys.argv[1] if len(sys.argv) > 1 else "out/tiny-hub").items():
        print(f"{kind}: {path}")
