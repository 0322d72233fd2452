"""Bayesian model averaging of a run's iterates: the Beta(a, a) weights over the steps and the running sums."""
from __future__ import annotations

import math

import numpy as np
import torch


def bma_weights(total: int, alpha: float = 0.7) -> np.ndarray:
    """w_k = BetaPDF_{alpha,alpha}((k + 0.5) / (T + 1)) for the iterates k = 0 (initial weights) .. T."""
    u = (np.arange(total + 1) + 0.5) / (total + 1)
    log_b = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
    return np.exp((alpha - 1) * (np.log(u) + np.log1p(-u)) - log_b)



class BMA:
    """Bayesian model averaging over all iterates, the initial weights included: running sums of w_k theta_k and
    w_k with w = ``bma_weights(total, alpha)``, kept in float64."""

    def __init__(self, names: list[str], params: list[torch.Tensor], total: int, alpha: float):
        self.names, self.params = names, params
        self.w = bma_weights(total, alpha)
        self.sum = {nm: p.detach().double() * self.w[0] for nm, p in zip(names, params)}
        self.wsum = float(self.w[0])

    @torch.no_grad()
    def add(self, step: int) -> None:
        """Add the iterate after optimiser step ``step`` (0-based)."""
        for nm, p in zip(self.names, self.params):
            self.sum[nm] += p.detach().double() * self.w[step + 1]
        self.wsum += float(self.w[step + 1])

    def average(self, name: str) -> torch.Tensor:
        return self.sum[name] / self.wsum

    def state(self) -> dict:
        return {"bma_sum": {k: v.cpu() for k, v in self.sum.items()}, "bma_wsum": self.wsum}

    def load(self, state: dict, device) -> None:
        self.sum = {nm: t.to(device) for nm, t in state["bma_sum"].items()}
        self.wsum = float(state["bma_wsum"])

