r"""The feature-noise data model of Zou, Cao, Li, Gu (ICML 2023), and the feature-learning measures.

Data model
----------
K classes (`num_classes`). Every class k owns two feature vectors in R^d (`dim`): a *common* one c_k
and a *rare* one r_k. The 2K vectors are orthonormal (QR of a seeded Gaussian matrix), fixed by the
trial seed. An example (x, y) has P patches (`patches`) of dimension d, x = [x_1, ..., x_P]:

  * y is a class, the K classes equally represented (counts differ by at most one);
  * one patch is the class feature:  common_strength * c_y  (probability 1 - rare_fraction)
                                 or  rare_strength   * r_y  (probability rare_fraction);
  * one patch is the *feature noise*: feature_noise * c_s, a weak copy of the common feature of
    another class s != y (uniform over the others), as `feature_noise_kind: common` (the default);
    `rare` uses r_s and `same` uses the feature type of the example itself;
  * the other P - 2 patches are Gaussian noise xi ~ N(0, noise_std^2 (I - V V^T)), V the 2K
    features: pure noise, orthogonal to every feature;
  * the patches are placed in a random order (the network sums over patches, so order is only a
    matter of honesty for models that could cheat on position).

Each class of each split holds exactly round(n_class * rare_fraction) rare examples at random
positions, so the rare count does not fluctuate from seed to seed or class to class (it is what
decides whether the rare examples can be memorised). Train, test and features come from three independent seeded streams, so changing
`n_train` does not change the test set, and the same seed gives the same data on every device.

Why this model (the paper's mechanism): the common feature appears in most examples, so standard
training learns it first and fast. The few rare examples are then the only ones with a large loss;
their own feature is seen rarely, while each one's high-dimensional noise is almost orthogonal to all
others, so the network fits them by memorising their noise (and their feature noise pulls them
towards the wrong class, which makes the rare feature even harder to learn). Once they are fitted,
the gradient stops and the rare feature is never learned: on rare test data the network is lost.
Mixup mixes rare examples with common ones of other classes: the mixed soft label can never be
fitted exactly, so the gradient on the mixtures does not vanish, and the rare feature keeps
receiving it through every mixture that contains a rare example.

Feature-learning measures
-------------------------
`feature_measures(model, features)` reports, for each class k, the largest inner product of a
first-layer filter of class k with its common and its rare feature, max_r <w_{k,r}, c_k> and
max_r <w_{k,r}, r_k> (`feat_common_<k>`, `feat_rare_<k>`), and their means over the classes
(`feat_common`, `feat_rare`).
"""

from __future__ import annotations

import torch

from ..config import DataConfig
from .base import TrialData, split_validation

# Independent random streams of one trial seed (no two (seed, stream) pairs share a generator seed).
_STREAM_FEATURES, _STREAM_TRAIN, _STREAM_TEST = 0, 1, 2
_STREAMS = 4


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * _STREAMS + stream)


def make_features(num_classes: int, dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Orthonormal common and rare features: {"common": [K, d], "rare": [K, d]}."""
    if 2 * num_classes > dim:
        raise ValueError(f"data.dim={dim} is too small for 2 * num_classes={2 * num_classes} orthonormal features")
    gaussian = torch.randn(dim, 2 * num_classes, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # the unique QR with positive diagonal: deterministic
    basis = q.T.to(torch.float32)  # [2K, d], orthonormal rows
    return {"common": basis[:num_classes].contiguous(), "rare": basis[num_classes:].contiguous()}


def sample_examples(
    n: int, features: dict[str, torch.Tensor], cfg: DataConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n examples of the data model: x [n, P, d] float32, y [n] int64, is_rare [n] bool."""
    common, rare = features["common"], features["rare"]
    k, d = common.shape
    p = cfg.patches
    # Balanced classes, and within each class exactly round(n_class * rare_fraction) rare examples:
    # with few rare examples, chance imbalance between classes would otherwise dominate the outcome.
    y = (torch.arange(n) % k)[torch.randperm(n, generator=generator)]
    is_rare = torch.zeros(n, dtype=torch.bool)
    for cls in range(k):
        members = torch.nonzero(y == cls).squeeze(1)
        chosen = members[torch.randperm(len(members), generator=generator)]
        is_rare[chosen[: int(round(len(members) * cfg.rare_fraction))]] = True

    feature_patch = torch.where(
        is_rare[:, None], cfg.rare_strength * rare[y], cfg.common_strength * common[y]
    )
    other = (y + torch.randint(1, k, (n,), generator=generator)) % k  # uniform over classes != y
    if cfg.feature_noise_kind == "common":
        noise_source = common[other]
    elif cfg.feature_noise_kind == "rare":
        noise_source = rare[other]
    else:  # "same": the feature type of the example itself
        noise_source = torch.where(is_rare[:, None], rare[other], common[other])
    noise_feature_patch = cfg.feature_noise * noise_source

    basis = torch.cat([common, rare])  # [2K, d]
    xi = torch.randn(n, p - 2, d, generator=generator) * cfg.noise_std
    xi = xi - (xi @ basis.T) @ basis  # project out every feature: the noise patches are pure noise

    x = torch.cat([feature_patch[:, None], noise_feature_patch[:, None], xi], dim=1)
    if cfg.shuffle_patches:
        order = torch.argsort(torch.rand(n, p, generator=generator), dim=1)  # random patch positions
        x = torch.gather(x, 1, order[:, :, None].expand(n, p, d))
    return x.contiguous(), y, is_rare


def make_feature_noise_data(cfg: DataConfig, seed: int, device: torch.device) -> TrialData:
    features = make_features(cfg.num_classes, cfg.dim, _generator(seed, _STREAM_FEATURES))
    train_x, train_y, _ = sample_examples(cfg.n_train, features, cfg, _generator(seed, _STREAM_TRAIN))
    test_x, test_y, test_rare = sample_examples(cfg.n_test, features, cfg, _generator(seed, _STREAM_TEST))
    train_x, train_y, val_x, val_y = split_validation(train_x, train_y, cfg.val_size, seed)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return TrialData(
        train_x=to(train_x),
        train_y=to(train_y),
        val_x=to(val_x),
        val_y=to(val_y),
        test_x=to(test_x),
        test_y=to(test_y),
        num_classes=cfg.num_classes,
        input_shape=(cfg.patches, cfg.dim),
        test_groups={"common": to(~test_rare), "rare": to(test_rare)},
        features={name: to(f) for name, f in features.items()},
    )


@torch.no_grad()
def feature_measures(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> dict[str, float]:
    """max_r <w_{k,r}, feature_k> per class for the common and rare features, and their class means."""
    filters = model.filters.detach().float()  # [K, width, d]
    out: dict[str, float] = {}
    for name in ("common", "rare"):
        f = features[name].to(filters.device, filters.dtype)  # [K, d]
        best = torch.einsum("krd,kd->kr", filters, f).amax(dim=1)  # [K]
        values = best.tolist()
        for k, v in enumerate(values):
            out[f"feat_{name}_{k}"] = float(v)
        out[f"feat_{name}"] = float(sum(values) / len(values))
    return out
