"""The shared autoencoder: one diffusers `VQModel` that both embedded models paint through.

    picture (B, 3, 64, 64) in [-1, 1]
      -> encoder -> continuous latent (B, 4, 16, 16)     <- the diffusion model denoises this
      -> nearest codebook entry -> codes (B, 16, 16)    <- the autoregressive model writes these
      -> decoder -> picture

Same latent space, two ways to fill it. The diffusion model works on latents multiplied by
`scaling_factor` (unit variance, stored in the VQModel's config, as in Stable Diffusion).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import VQModel

from playground.autoencoder.preview import PreviewDecoder


@dataclass
class AutoencoderConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 64 -> 32 -> 16: a 16x16 grid
    layers_per_block: int = 1
    latent_channels: int = 4
    num_vq_embeddings: int = 512
    norm_num_groups: int = 8
    # No attention in the middle block: with it every code depends on the whole picture, and a
    # plain blue cell took one of dozens of codes (13.5 % agreement with the plain picture's; 70.6 % without)
    mid_block_add_attention: bool = False


def build_autoencoder(cfg: AutoencoderConfig = AutoencoderConfig()) -> VQModel:
    n = len(cfg.block_out_channels)
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        num_vq_embeddings=cfg.num_vq_embeddings,
        norm_num_groups=cfg.norm_num_groups,
        mid_block_add_attention=cfg.mid_block_add_attention,
        sample_size=64,
        scaling_factor=1.0,
    )


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def object_cells(images: np.ndarray, grid: int) -> torch.Tensor:
    """Which latent cells an object touches: pixels that differ from the picture's background
    (its top-left corner, which no object reaches), max-pooled to the latent grid.
    images (N, H, W, 3) uint8 -> (N, 1, g, g) float, 1 where an object is."""
    fg = np.abs(images.astype(np.int16) - images[:, :1, :1].astype(np.int16)).sum(-1) > 25  # (N, H, W)
    cells = torch.from_numpy(fg).float()[:, None]  # (N, 1, H, W)
    return F.adaptive_max_pool2d(cells, grid)  # (N, 1, g, g)


def background_cells(images: np.ndarray, grid: int) -> torch.Tensor:
    """Cells with no object in them or in any of their 8 neighbours: what an encoder should code
    exactly as it codes the plain background. images (N, H, W, 3) uint8 -> (N, 1, g, g) float."""
    return 1.0 - F.max_pool2d(object_cells(images, grid), 3, stride=1, padding=1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 pictures (or batches), in dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@functools.cache
def native_bfloat16(device: str) -> bool:
    """Whether `device` ("cpu", "cuda", ...) computes bfloat16 natively (asked once)."""
    return device == "cuda" or (device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class SharedAutoencoder:
    """The operations both samplers need, on a loaded VQModel."""

    decodes_top_rows = True  # decode_codes takes the top rows of a grid alone (cheap previews)

    def __init__(self, vq: VQModel):
        # Channels-last weights: oneDNN runs the 64x64 convolutions faster on these CPUs (a
        # preview 10.1 against 12.9 ms, a full decode 12.6 against 14.4); pixels within 2 levels.
        self.vq = vq.eval().to(memory_format=torch.channels_last)
        self.scaling_factor = float(vq.config.scaling_factor)
        self.grid = vq.config.sample_size // 2 ** (len(vq.config.block_out_channels) - 1)
        self.latent_channels = vq.config.latent_channels
        self.codebook_size = vq.config.num_vq_embeddings
        self._previews_supported = PreviewDecoder.supports(vq)  # else previews decode through the model
        self._preview: PreviewDecoder | None = None  # see _preview_decoder

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        """(B, 64, 64, 3) uint8 -> scaled continuous latents (B, C, g, g)."""
        return self.vq.encode(images_to_tensor(images)).latents * self.scaling_factor

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, g, g) -> codes (B, g*g), raster order."""
        _, _, (_, _, idx) = self.vq.quantize(latents / self.scaling_factor)
        return idx.view(latents.shape[0], -1)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (B, C, g, g) -> pictures (B, 64, 64, 3) uint8 (quantised first)."""
        return tensor_to_images(self.vq.decode(latents / self.scaling_factor).sample)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> np.ndarray:
        """Codes (B, g*g) -> pictures (B, 64, 64, 3) uint8. Fewer codes, (B, r*g), are the top r
        rows of the grid and decode to the top of the picture, (B, 64*r/g, 64, 3)."""
        return tensor_to_images(self.vq.decode(self._codebook_vectors(codes), force_not_quantize=True).sample)

    def _codebook_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, r*g), the top r rows of the grid -> codebook vectors (B, C, r, g)."""
        b, rows = codes.shape[0], codes.shape[1] // self.grid
        return self.vq.quantize.get_codebook_entry(codes.reshape(-1), (b, rows, self.grid, self.latent_channels))

    @torch.no_grad()
    def preview_latents(self, latents: torch.Tensor) -> np.ndarray:
        """decode_latents for the previews shown at every step, never a final picture: through
        `PreviewDecoder` where it reproduces this decoder (bfloat16 convolutions where the CPU
        computes them natively; see its docstring for the times), else the model itself."""
        decoder = self._preview_decoder()
        if decoder is None:
            return self.decode_latents(latents)
        quantised = self.vq.quantize(latents / self.scaling_factor)[0]  # (B, C, g, g)
        return tensor_to_images(decoder(quantised))

    @torch.no_grad()
    def preview_codes(self, codes: torch.Tensor) -> np.ndarray:
        """decode_codes for the previews of a grid still being written (see preview_latents)."""
        decoder = self._preview_decoder()
        if decoder is None:
            return self.decode_codes(codes)
        return tensor_to_images(decoder(self._codebook_vectors(codes)))

    def _preview_decoder(self) -> PreviewDecoder | None:
        """The decoder previews go through, made at the first preview (a copy of the weights),
        and again when the model moves to another device; None where PreviewDecoder does not
        reproduce this model."""
        if not self._previews_supported:
            return None
        device = next(self.vq.parameters()).device
        if self._preview is None or self._preview.device != device:
            dtype = torch.bfloat16 if native_bfloat16(device.type) else torch.float32
            self._preview = PreviewDecoder(self.vq, dtype)
        return self._preview

    def reconstruct(self, images: np.ndarray, batch: int = 200) -> tuple[np.ndarray, torch.Tensor]:
        """Pictures through the codebook and back, as the autoregressive model's codes would be
        drawn: (reconstructions (B, 64, 64, 3) uint8, codes (B, g*g))."""
        codes = torch.cat([self.latents_to_codes(self.encode(images[i : i + batch])) for i in range(0, len(images), batch)])
        recon = np.concatenate([self.decode_codes(codes[i : i + batch]) for i in range(0, len(codes), batch)])
        return recon, codes
