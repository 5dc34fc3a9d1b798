"""Reproduce every shipped weight from scratch: the shared autoencoder, then the two
generators, into assets/.

    python -m playground.training.train                      # the shipped recipe: every run the shipped weights took
    python -m playground.training.train --stage all          # the four stages once, with the options given
    python -m playground.training.train --stage diffusion    # one stage (the generators need the autoencoder)

The shipped recipe (recipe.py: its runs, order and times) trains the autoencoder, encodes the
training set, then trains both generators side by side, one thread each (the any-order model after the
raster one), every model from scratch with Muon; about 4 h 30 min on 2 cores (2 h 35 min without
the any-order model), and it resumes where it stopped, so it can be interrupted and restarted.

`--stage all` is a single pass of the four stages (with the decoder fine-tune the shipped
recipe leaves out) with the default options, which are AdamW's and not the shipped
recipe's; its runs one after the other take far longer than the recipe.

Each stage shows a progress bar, saves a checkpoint to runs/<stage>/ (or --checkpoints
DIR/<stage>/) every few hundred steps and resumes from it when restarted, uses fixed seeds,
and writes its loss curve to assets/<stage>-loss.png.

`--ae-optimizer`, `--decoder-optimizer`, `--diffusion-optimizer` and `--ar-optimizer muon` train
the weight matrices and convolution kernels with Muon instead of AdamW (optim.py): with it the
shipped recipe trains the autoencoder and both generators from scratch in under 3 h (assets/EXPERIMENTS.md compares it
with AdamW).

On a GPU the same commands train there (`--device cuda`, the default where one is found):
batches and noise are still drawn on the CPU from the same seeds, so a checkpoint moves
between machines and resumes on either. Bigger batches pay off there, for instance

    python -m playground.training.train --stage all --device cuda --diffusion-batch 256 --ar-batch 128
"""

# The command line (its docstring is the --help text). The stages live beside it: loop.py (what
# they share), autoencoder.py, encode.py, diffusion.py and autoregressive.py.

from __future__ import annotations

import argparse
import time

import torch

from playground.autoencoder.model import AutoencoderConfig
from playground.autoregressive.model import PROMPT_ORDER
from playground.diffusion.model import DiffusionConfig
from playground.training.autoencoder import train_autoencoder, train_decoder
from playground.training.autoregressive import train_autoregressive
from playground.training.diffusion import train_diffusion
from playground.training.encode import encode_dataset
from playground.training.masked import train_masked
from playground.training.loop import check_share
from playground.world.data import CAPTION_DROP
from playground.world.text import PROMPT_ORDERS

STAGES = {"autoencoder": train_autoencoder, "encode": encode_dataset, "decoder": train_decoder, "diffusion": train_diffusion,
          "autoregressive": train_autoregressive, "masked": train_masked}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m playground.training.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["shipped", "all", *STAGES], default="shipped",
                   help="shipped (default): every run the shipped weights took (recipe.py), resumable; all: the four "
                        "training stages once, with the options given; or one stage (encode: render and encode the training set)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (the GPU where there is one)")
    p.add_argument("--checkpoints", default=None, help="folder of the stages' checkpoint folders (default: runs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw-seed", type=int, default=None, help="seed of the batches drawn at each step (default: --seed)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end each stage after this step, on the learning-rate schedule of its full step count")
    p.add_argument("--dataset-size", type=int, default=40000)
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="ship an exponential moving average of the weights, e.g. 0.999 (0: the last step's weights; "
                        "diffusion, autoregressive and masked stages)")
    p.add_argument("--caption-drop", type=float, default=CAPTION_DROP, help="chance that each optional part of a training caption is left out")
    p.add_argument("--word-drop", type=float, default=0.0,
                   help="chance that each object's colour word, and its shape word, is left out of a training caption "
                        "(autoregressive and masked stages; 0: never)")
    p.add_argument("--two-object-share", type=float, default=None,
                   help="share of each generator batch drawn from two-object scenes (default: as the data fall, about half)")
    p.add_argument("--star-share", type=float, default=None,
                   help="share of each generator batch drawn from scenes with a star (default: as the data fall)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out scenes for the autoencoder's PSNR and latent scale")
    p.add_argument("--ae-steps", type=int, default=2500)
    p.add_argument("--ae-batch", type=int, default=24)
    p.add_argument("--ae-lr", type=float, default=2e-3)
    p.add_argument("--ae-channels", type=int, nargs="+", default=list(AutoencoderConfig.block_out_channels),
                   help="block_out_channels of a new autoencoder (three blocks: a 16x16 grid)")
    p.add_argument("--ae-codes", type=int, default=AutoencoderConfig.num_vq_embeddings,
                   help="codebook size of a new autoencoder (the token models' image vocabulary; ignored with --ae-init)")
    p.add_argument("--ae-attention", type=int, default=int(AutoencoderConfig.mid_block_add_attention),
                   help="1: attention in the middle block (every code sees the whole picture)")
    p.add_argument("--ae-background-weight", type=float, default=1.0,
                   help="weight of the loss that codes background cells as the plain background would be (0: off)")
    p.add_argument("--ae-init", default=None, help="start the autoencoder from this saved VQModel folder")
    p.add_argument("--ae-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the convolution kernels, AdamW for the rest (AUTOENCODER_MUON_EXCLUDES; optim.py)")
    p.add_argument("--decoder-steps", type=int, default=1500)
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--decoder-batch", type=int, default=16)
    p.add_argument("--decoder-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: as --ae-optimizer, for the decoder fine-tune")
    p.add_argument("--diffusion-steps", type=int, default=10000)
    p.add_argument("--diffusion-batch", type=int, default=32)
    p.add_argument("--diffusion-lr", type=float, default=1e-3)
    p.add_argument("--diffusion-init", default=None,
                   help="start the UNet and text encoder from this saved model folder (its unet/ and text_encoder/; with --text-encoder siglip a causal CLIP encoder becomes bidirectional)")
    p.add_argument("--text-encoder", choices=["siglip", "clip"], default=DiffusionConfig.text_encoder,
                   help="the diffusion model's text encoder: causal CLIP (shipped) or bidirectional SigLIP")
    p.add_argument("--diffusion-prompt-order", choices=PROMPT_ORDERS, default="as_written",
                   help="word order of the diffusion model's prompts (text.place_first, which the shipped weights use; as_written: the words in the order written)")
    p.add_argument("--diffusion-coordinates", type=int, choices=[0, 1], default=0,
                   help="1: the UNet reads each cell's (x, y) beside the latent (diffusion.unet_input); with --diffusion-init a UNet without them is widened")
    p.add_argument("--diffusion-grounding", type=float, default=0.0,
                   help="weight of the token-grounding loss: each object's colour and shape word attended where the object is (grounding.py; 0: off)")
    p.add_argument("--diffusion-reading", type=float, default=0.0,
                   help="weight of the loss that asks an object's cells to read its colour and shape word (grounding.reading_loss; 0: off)")
    p.add_argument("--diffusion-attributes", type=float, default=0.0,
                   help="weight of the probes that name, from the features the UNet's output layer reads, the shape and colour of each cell's object (training/diffusion.py; 0: off)")
    p.add_argument("--diffusion-object-weight", type=float, default=3.0,
                   help="extra loss weight on latent cells that an object touches (0: plain MSE)")
    p.add_argument("--diffusion-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the networks' matrices and kernels, AdamW for the rest (optim.py)")
    p.add_argument("--ar-steps", type=int, default=8400)
    p.add_argument("--ar-batch", type=int, default=16)
    p.add_argument("--ar-lr", type=float, default=2e-3)
    p.add_argument("--ar-prompt-order", choices=PROMPT_ORDERS, default=PROMPT_ORDER,
                   help="word order of the autoregressive model's prompts (text.place_first, which the shipped weights use; as_written: the words in the order written)")
    p.add_argument("--ar-init", default=None, help="start the transformer from this saved folder")
    p.add_argument("--ar-layers", type=int, default=None,
                   help="transformer depth; with --ar-init, a shallower saved model is grown to it by identity blocks")
    p.add_argument("--ar-object-weight", type=float, default=0.0,
                   help="extra loss weight on the codes of cells that an object touches (0: plain cross-entropy)")
    p.add_argument("--ar-grounding", type=float, default=0.0,
                   help="weight of token grounding on the transformer's attention: each object's colour and shape word read by the positions that write the object (training/autoregressive.py; 0: off)")
    p.add_argument("--ar-attributes", type=float, default=0.0,
                   help="weight of the probes that name, from each position's last hidden state, the shape and colour of the object it writes next (training/autoregressive.py; 0: off)")
    p.add_argument("--ar-optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon for the blocks' weight matrices, AdamW for the rest (optim.py)")
    p.add_argument("--masked-steps", type=int, default=4000)
    p.add_argument("--masked-batch", type=int, default=32)
    p.add_argument("--masked-lr", type=float, default=2e-3)
    p.add_argument("--masked-optimizer", choices=["adamw", "muon"], default="muon",
                   help="the any-order model's optimizer (masked.py): Muon for the blocks' matrices, AdamW for the rest")
    p.add_argument("--ar-bf16", type=int, default=1, help="bfloat16 autocast (faster on these CPUs)")
    return p


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.stage == "shipped":
        from playground.training.recipe import RECIPE_RUNS, SHIPPED, RecipeError, run_recipe

        chosen = {name for name, value in vars(args).items() if value != p.get_default(name)} - {"stage", "threads", "device"}
        if chosen:
            p.error(f"the shipped recipe fixes every other option (got {', '.join('--' + n.replace('_', '-') for n in sorted(chosen))}); "
                    "pass --stage all or a single --stage to choose them")
        try:
            run_recipe(recipe=SHIPPED, threads=args.threads, device=args.device, folder=RECIPE_RUNS)
        except RecipeError as e:
            raise SystemExit(f"error: {e}") from None
        return
    try:  # before any data or model loads
        for name in ("two_object_share", "star_share"):
            if getattr(args, name) is not None:
                check_share(getattr(args, name), "--" + name.replace("_", "-"))
    except ValueError as e:
        p.error(str(e))
    if args.ae_codes < 2:
        p.error(f"--ae-codes must be at least 2, not {args.ae_codes}")
    if not 0 <= args.word_drop <= 1:
        p.error(f"--word-drop must lie between 0 and 1, not {args.word_drop}")
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema-decay must be at least 0 and below 1, not {args.ema_decay}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny values slow these CPUs down many times over
    stages = ["autoencoder", "decoder", "diffusion", "autoregressive"] if args.stage == "all" else [args.stage]
    for stage in stages:
        t0 = time.time()
        STAGES[stage](args)
        print(f"{stage}: {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
