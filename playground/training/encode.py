"""The training set rendered and encoded once through the autoencoder in assets/vqvae (`--stage encode`),
cached under runs/ with the encoder's fingerprint, and the tokenizer both generators save."""

from __future__ import annotations

import hashlib

import torch
from tqdm import tqdm

from playground.autoencoder.model import SharedAutoencoder, object_cells
from playground.training import loop
from playground.world.data import build_dataset
from playground.world.text import PromptEncoder, save_tokenizer


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
    vq = VQModel.from_pretrained(loop.ASSETS / "vqvae")
    fingerprint = encoder_fingerprint(vq)
    for path in sorted(loop.RUNS.glob(f"encoded-*-seed{args.seed}.safetensors"), key=lambda p: p.stat().st_size):
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
    path = loop.RUNS / f"encoded-{len(scenes)}-seed{args.seed}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": lat.contiguous(), "codes": codes.contiguous()}, str(path.with_suffix(".tmp")),
              metadata={"encoder": fingerprint, "scenes": str(len(scenes))})
    path.with_suffix(".tmp").replace(path)  # a half-written cache is never read
    return lat, codes, scenes


def dataset_object_cells(args, grid: int) -> torch.Tensor:
    """object_cells of the whole training set (the same scenes as load_encoded), (N, 1, g, g)."""
    return object_cells(build_dataset(args.dataset_size, seed=args.seed)[0], grid)


def save_tokenizer_asset() -> PromptEncoder:
    save_tokenizer(loop.ASSETS / "tokenizer")
    return PromptEncoder.from_pretrained(loop.ASSETS / "tokenizer")


def encode_dataset(args) -> None:
    """Render the training set and encode it through assets/vqvae once (data/ and runs/ keep
    both), so that stages run side by side later only read them."""
    latents, _, scenes = load_encoded(args)
    print(f"encoded {len(scenes)} scenes: latents {tuple(latents.shape)}")
