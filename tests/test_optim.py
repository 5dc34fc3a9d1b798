"""Muon (playground/optim.py) against torch's own, for matrices and convolution kernels, and the
pair of optimizers that training checkpoints as one."""

import pytest
import torch

from playground.training import autoencoder as autoencoder_training
from playground.training import loop
from playground.training.optim import Muon, Optimizers, build_optimizer, orthogonalise


@pytest.mark.parametrize("shape", [(24, 80), (80, 24)])
def test_orthogonalise_pushes_every_singular_value_near_one(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))  # (A, k) orthonormal columns
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))  # (B, k)
    g = u @ torch.diag(torch.logspace(-1.5, 1, k)) @ v.T  # (A, B), singular values over 2.5 decades
    o = orthogonalise(g)
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o.float())
    assert 0.5 < s.min() and s.max() < 1.3  # Muon's quintic iteration: roughly 0.7 to 1.2


def test_muon_steps_a_matrix_as_torch_muon_does():
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(16, 48))
    theirs = torch.nn.Parameter(ours.detach().clone())
    start = ours.detach().clone()
    a = Muon([ours], lr=2e-3, weight_decay=0.01)
    b = torch.optim.Muon([theirs], lr=2e-3, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        g = torch.randn(16, 48)
        ours.grad, theirs.grad = g.clone(), g.clone()
        a.step(), b.step()
    assert (ours - start).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=0, atol=1e-6)


def test_muon_steps_a_convolution_kernel_as_the_matrix_it_flattens_to():
    torch.manual_seed(1)
    kernel = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    matrix = torch.nn.Parameter(kernel.detach().flatten(1).clone())  # (8, 36)
    a = Muon([kernel], lr=1e-3)
    b = torch.optim.Muon([matrix], lr=1e-3, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    for _ in range(2):
        g = torch.randn(8, 4, 3, 3)
        kernel.grad, matrix.grad = g.clone(), g.flatten(1).clone()
        a.step(), b.step()
    torch.testing.assert_close(kernel.detach().flatten(1), matrix.detach(), rtol=0, atol=1e-6)


def named_toy():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 10))
    return net, list(net.named_parameters())


def test_build_optimizer_gives_muon_the_matrices_but_the_excluded_ones_and_adamw_the_rest():
    net, named = named_toy()
    opt = build_optimizer(named, "muon", 1e-3, muon_excludes=("0.", "3."))  # the embedding and the last layer
    muon, adamw = opt.optimizers
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [p for p in muon.param_groups[0]["params"]] == [net[1].weight]
    assert {id(p) for p in adamw.param_groups[0]["params"]} == {id(p) for n, p in named if p is not net[1].weight}
    assert isinstance(build_optimizer(named, "adamw", 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(named, "sgd", 1e-3)


def test_a_checkpoint_of_muon_and_adamw_resumes_to_the_same_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "RUNS", tmp_path)

    def step(net, opt, seed):
        torch.manual_seed(seed)
        loss = net(torch.randint(0, 10, (4, 5))).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    net, named = named_toy()
    opt = build_optimizer(named, "muon", 1e-2)
    for s in range(3):
        step(net, opt, s)
    ckpt = loop.Checkpointer("toy", {"net": net}, opt)
    ckpt.save()
    other, other_named = named_toy()  # the same start, none of the steps
    other_opt = build_optimizer(other_named, "muon", 1e-2)
    loop.Checkpointer("toy", {"net": other}, other_opt).resume()
    assert other_opt.optimizers[0].state[other[1].weight]["momentum_buffer"].abs().sum() > 0
    for o in (opt, other_opt):
        for g in o.param_groups:  # the schedule sets every group's rate
            g["lr"] = 5e-3
        step(net if o is opt else other, o, 9)
    for a, b in zip(net.parameters(), other.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert isinstance(opt, Optimizers)


def test_the_autoencoder_gives_muon_its_inner_kernels_and_keeps_the_codebook_and_outer_layers_with_adamw():
    from playground.autoencoder.model import AutoencoderConfig, build_autoencoder

    vq = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16)))
    muon, adamw = build_optimizer(vq.named_parameters(), "muon", 1e-3, muon_excludes=autoencoder_training.AUTOENCODER_MUON_EXCLUDES).optimizers
    to_muon = {n for n, p in vq.named_parameters() if any(p is q for q in muon.param_groups[0]["params"])}
    assert "encoder.down_blocks.0.resnets.0.conv1.weight" in to_muon and "decoder.up_blocks.0.upsamplers.0.conv.weight" in to_muon
    kept = {"encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight", "quantize.embedding.weight",
            "post_quant_conv.weight", "decoder.conv_in.weight", "decoder.conv_out.weight"}
    assert not kept & to_muon
    assert {n for n, p in vq.named_parameters() if p.ndim >= 2} == to_muon | kept  # every other kernel goes to Muon
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(vq.parameters())) - len(to_muon)
