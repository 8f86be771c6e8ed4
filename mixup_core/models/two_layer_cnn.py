r"""The two-layer CNN of the feature-learning theory (Zou et al. 2023), on patch inputs [N, P, d].

    F_j(W, x) = (1 / m) * sum_{r=1..m} sum_{p=1..P} sigma(<w_{j,r}, x_p>),     j = 1..K

Each class j owns m = `width` first-layer filters w_{j,r} in R^d, shared across the P patches (the
"convolution"); the second layer is fixed to 1/m, so only W (shape [K, m, d]) is trained.

sigma is the smoothed ReLU of polynomial type used in this line of theory (power q, threshold rho):

    sigma(z) = 0                                   z <= 0
             = z^q / (q rho^(q-1))                 0 < z <= rho
             = z - rho (1 - 1/q)                   z > rho

It is continuously differentiable, grows like z^q for small z (so a filter's correlations with its
inputs race one another like a tensor power method: whichever starts ahead and is pushed hardest wins)
and is linear beyond rho (so the network can reach a large margin once a feature is learned).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def smoothed_relu(z: torch.Tensor, power: float, threshold: float) -> torch.Tensor:
    """sigma(z) above, elementwise."""
    # Below rho: the polynomial piece (0 for z <= 0); above: rho^q/(q rho^(q-1)) + (z - rho), which
    # is z - rho (1 - 1/q): value and slope 1 match at z = rho.
    small = z.clamp(0.0, threshold)
    poly = small * small * small if power == 3.0 else small**power
    poly = poly * (1.0 / (power * threshold ** (power - 1.0)))
    return poly + (z - threshold).clamp_min(0.0)


class TwoLayerCNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        patches: int,
        dim: int,
        width: int,
        activation_power: float,
        activation_threshold: float,
        init_std: float,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.patches = patches
        self.dim = dim
        self.width = width
        self.activation_power = float(activation_power)
        self.activation_threshold = float(activation_threshold)
        # Global RNG on purpose: the caller builds the model inside a seeded torch.random.fork_rng.
        self.weight = nn.Parameter(torch.randn(num_classes, width, dim) * init_std)

    @property
    def filters(self) -> torch.Tensor:
        """First-layer weights, [K, width, d]: filters[j, r] = w_{j,r}."""
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.patches, self.dim):
            raise ValueError(f"expected input [N, {self.patches}, {self.dim}], got {list(x.shape)}")
        n, k, m = x.shape[0], self.num_classes, self.width
        w = self.weight.to(x.dtype).reshape(k * m, self.dim)
        z = x.reshape(n * self.patches, self.dim) @ w.T  # <w_{k,r}, x_p>: one GEMM, [N*P, K*m]
        act = smoothed_relu(z, self.activation_power, self.activation_threshold)
        return act.reshape(n, self.patches, k, m).sum(dim=(1, 3)) / m
