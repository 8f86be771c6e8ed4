r"""The Mixup operation, with lambda-decoupling of inputs and labels.

Standard Mixup (Zhang et al. 2018) trains on convex combinations of pairs of examples:

    lambda ~ Beta(alpha, alpha)
    x~ = lambda * x_i + (1 - lambda) * x_j
    y~ = lambda * y_i + (1 - lambda) * y_j          (one-hot labels)

where j = perm(i) for a random permutation of the batch. The loss is the soft-target cross-entropy
-sum_k y~_k log softmax(f(x~))_k, which equals lambda * CE(f(x~), y_i) + (1 - lambda) * CE(f(x~), y_j);
we compute it in that second form (no one-hot tensors).

Lambda-decoupling (Zou et al. 2023, claim 1) mixes the labels with a coefficient mu that is not lambda:

    y~ = mu * y_i + (1 - mu) * y_j,   mu = g(lambda) from `label_policy`:
      same          mu = lambda                         (standard Mixup)
      independent   mu ~ Beta(label_alpha, label_alpha), drawn independently of lambda
      threshold     mu = 1 if lambda >= 0.5 else 0      (the label of the dominant input)
      power         mu = lambda ** label_power
      constant      mu = label_value

`per_sample` draws one lambda per example instead of one per batch. `fold` maps lambda to
max(lambda, 1 - lambda), the paper's convention lambda in [0.5, 1]; it is the same distribution of
mixed pairs, with the larger weight on the first example.

All randomness comes from the `torch.Generator` passed in (part of the trial state). Beta draws use
Beta(a, b) = G_a / (G_a + G_b) with Gamma variates from Marsaglia & Tsang's method, vectorised over a
fixed number of proposals so sampling has fixed shapes and never syncs with the host (graph-safe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import MixupConfig

# Marsaglia-Tsang accepts >= 95% of proposals for shape >= 1 (we boost shape < 1 to shape + 1), so
# 12 proposals all fail with probability < 0.05**12; in that case the mode-like value d is used.
_GAMMA_PROPOSALS = 12


def sample_gamma(shape: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws from Gamma(shape, 1) using only `generator`."""
    boost = shape < 1.0
    k = shape + 1.0 if boost else shape
    d = k - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    z = torch.randn(n, _GAMMA_PROPOSALS, generator=generator, device=device)
    u = torch.rand(n, _GAMMA_PROPOSALS, generator=generator, device=device)
    v = (1.0 + c * z) ** 3
    v_safe = v.clamp_min(1e-30)
    accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v_safe + d * torch.log(v_safe))
    first = accept.to(torch.int8).argmax(dim=1, keepdim=True)  # first accepted proposal
    chosen = torch.gather(v_safe, 1, first).squeeze(1)
    chosen = torch.where(accept.any(dim=1), chosen, torch.ones_like(chosen))
    g = d * chosen
    if boost:
        g = g * torch.rand(n, generator=generator, device=device) ** (1.0 / shape)
    return g


def sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws from Beta(alpha, alpha), float32 on `device`."""
    a = sample_gamma(alpha, n, generator, device)
    b = sample_gamma(alpha, n, generator, device)
    return a / (a + b).clamp_min(1e-30)


class Mixup:
    """One small object; the training loop flips `active` per epoch (early-stopped Mixup)."""

    def __init__(self, cfg: MixupConfig):
        self.cfg = cfg

    def active_at(self, epoch: int) -> bool:
        """Mixup for epochs [0, stop_epoch) (0-based); None = always, 0 = never."""
        stop = self.cfg.stop_epoch
        return stop is None or epoch < stop

    def _fold(self, lam: torch.Tensor) -> torch.Tensor:
        return torch.maximum(lam, 1.0 - lam) if self.cfg.fold else lam

    def coefficients(
        self, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input coefficient lambda, label coefficient mu), each of shape [batch_size] or [1]."""
        cfg = self.cfg
        n = batch_size if cfg.per_sample else 1
        lam = self._fold(sample_beta(cfg.alpha, n, generator, device))
        policy = cfg.label_policy
        if policy == "same":
            mu = lam
        elif policy == "independent":
            mu = self._fold(sample_beta(cfg.label_alpha, n, generator, device))
        elif policy == "threshold":
            mu = (lam >= 0.5).to(lam.dtype)
        elif policy == "power":
            mu = lam ** cfg.label_power
        elif policy == "constant":
            mu = torch.full_like(lam, cfg.label_value)
        else:  # unreachable: validated config
            raise ValueError(f"unknown label_policy {policy!r}")
        return lam, mu

    def mix(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixed inputs plus what the loss needs: (x~, y_i, y_j, mu)."""
        batch = x.shape[0]
        lam, mu = self.coefficients(batch, generator, x.device)
        perm = torch.randperm(batch, generator=generator, device=x.device)
        lam_x = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        mixed = lam_x * x + (1.0 - lam_x) * x[perm]
        return mixed, y, y[perm], mu


def mixup_cross_entropy(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, mu: torch.Tensor
) -> torch.Tensor:
    """Soft-target CE for targets mu * onehot(y_a) + (1 - mu) * onehot(y_b), mean over the batch."""
    logits = logits.float()
    loss_a = F.cross_entropy(logits, y_a, reduction="none")
    loss_b = F.cross_entropy(logits, y_b, reduction="none")
    return (mu * loss_a + (1.0 - mu) * loss_b).mean()


def soft_targets(y_a: torch.Tensor, y_b: torch.Tensor, mu: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The explicit soft-label matrix (for tests and inspection; the loss does not need it)."""
    mu = mu.view(-1, 1)
    return mu * F.one_hot(y_a, num_classes).float() + (1.0 - mu) * F.one_hot(y_b, num_classes).float()


