"""Optimizers for training: Muon (orthogonalised momentum) for the networks' weight matrices
and convolution kernels, AdamW for the rest, stepped as one.

torch.optim.Muon takes matrices only; here a convolution kernel (out, in, kh, kw) is flattened
to the matrix (out, in * kh * kw) it multiplies with, as Muon's authors do for convolutions.
The step is scaled to AdamW's size (0.2 * sqrt(max(A, B)), Moonshot's rule, torch's
"match_rms_adamw"), so that AdamW's learning rate serves both.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic Newton-Schulz iteration of Muon


def orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to g (A, B), roughly: its singular values pushed
    towards 1 by a few Newton-Schulz iterations, in bfloat16."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # (min, max): the small Gram matrix
    x = x / x.norm().clamp(min=1e-7)  # singular values <= 1
    for _ in range(steps):
        gram = x @ x.T  # (min, min)
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b G + c G^2) x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for parameters of two or more dimensions (each flattened to (first dim, rest))."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.01, momentum: float = 0.95, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"]).flatten(1)  # Nesterov, (A, B)
                update = orthogonalise(g, group["ns_steps"])  # (A, B)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.view_as(p), alpha=-group["lr"] * 0.2 * math.sqrt(max(update.shape)))


class Optimizers:
    """Several optimizers stepped as one: the param_groups a learning-rate schedule sets, one
    state_dict for a checkpoint."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {str(i): o.state_dict() for i, o in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict) -> None:
        for i, o in enumerate(self.optimizers):
            o.load_state_dict(state[str(i)])


def build_optimizer(named_parameters, name: str, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.95),
                    muon_excludes: tuple[str, ...] = ()):
    """AdamW for every weight ("adamw"), or ("muon") Muon for every weight of two or more
    dimensions whose name contains none of `muon_excludes` (embeddings, the first and last
    layers) and AdamW for the rest (those, norms, biases)."""
    named = list(named_parameters)
    if name == "adamw":
        return torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=weight_decay, betas=betas)
    if name != "muon":
        raise ValueError(f"unknown optimizer {name!r}")
    muon, adamw = [], []
    for n, p in named:
        (muon if p.ndim >= 2 and not any(x in n for x in muon_excludes) else adamw).append(p)
    return Optimizers(Muon(muon, lr=lr, weight_decay=weight_decay),
                      torch.optim.AdamW(adamw, lr=lr, weight_decay=weight_decay, betas=betas))
