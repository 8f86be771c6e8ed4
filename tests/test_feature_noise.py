"""The feature-noise data model and the two-layer CNN of the theory: structure, determinism, formulas."""

import math

import pytest
import torch

from mixup_core.config import DataConfig, ModelConfig
from mixup_core.data.feature_noise import feature_measures, make_feature_noise_data, make_features, sample_examples
from mixup_core.models import build_model
from mixup_core.models.two_layer_cnn import TwoLayerCNN, smoothed_relu

CPU = torch.device("cpu")


def data_cfg(**kw) -> DataConfig:
    base = dict(n_train=200, n_test=400, dim=40, patches=4, rare_fraction=0.1, noise_std=0.3,
                feature_noise=0.2, val_size=0.1)
    base.update(kw)
    return DataConfig(**base)


def sample(cfg: DataConfig, n: int, seed: int = 0):
    feats = make_features(cfg.num_classes, cfg.dim, torch.Generator().manual_seed(seed))
    x, y, rare = sample_examples(n, feats, cfg, torch.Generator().manual_seed(seed + 1))
    return feats, x, y, rare


def test_shapes_dtypes_groups_and_validation_split():
    cfg = data_cfg()
    data = make_feature_noise_data(cfg, seed=0, device=CPU)
    assert data.input_shape == (4, 40) and data.num_classes == 2
    assert data.train_x.shape == (180, 4, 40) and data.val_x.shape == (20, 4, 40)
    assert data.test_x.shape == (400, 4, 40)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    common, rare = data.test_groups["common"], data.test_groups["rare"]
    assert common.dtype == torch.bool and rare.shape == (400,)
    assert bool((common ^ rare).all())  # every test example is in exactly one group
    assert data.features["common"].shape == (2, 40) and data.features["rare"].shape == (2, 40)
    assert set(data.test_y.tolist()) == {0, 1}


@pytest.mark.parametrize("k", [2, 3, 5])
def test_features_are_orthonormal(k):
    feats = make_features(k, 30, torch.Generator().manual_seed(4))
    basis = torch.cat([feats["common"], feats["rare"]]).double()
    assert torch.allclose(basis @ basis.T, torch.eye(2 * k, dtype=torch.float64), atol=1e-6)


def test_too_small_dimension_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        make_features(3, 5, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("k,n", [(2, 1000), (3, 999), (4, 203)])
def test_classes_balanced_and_rare_fraction_exact_per_class(k, n):
    cfg = data_cfg(num_classes=k, rare_fraction=0.07)
    _, _, y, rare = sample(cfg, n)
    counts = torch.bincount(y, minlength=k)
    assert int(counts.max() - counts.min()) <= 1
    for cls in range(k):
        members = int(counts[cls])
        assert int(rare[y == cls].sum()) == round(members * 0.07)


def test_rare_fraction_extremes():
    _, _, _, rare = sample(data_cfg(rare_fraction=0.0), 100)
    assert not rare.any()
    _, _, _, rare = sample(data_cfg(rare_fraction=1.0), 100)
    assert rare.all()


@pytest.mark.parametrize("k", [2, 3])
def test_patch_structure(k):
    cfg = data_cfg(num_classes=k, rare_strength=0.7, common_strength=1.3, feature_noise=0.25)
    feats, x, y, rare = sample(cfg, 600)
    common_f, rare_f = feats["common"], feats["rare"]
    # patch 0: the class feature, common or rare
    expected = torch.where(rare[:, None], 0.7 * rare_f[y], 1.3 * common_f[y])
    assert torch.allclose(x[:, 0], expected, atol=1e-6)
    # patch 1: 0.25 * the common feature of another class, never the example's own class
    coeffs = x[:, 1] @ common_f.T / 0.25  # [n, K]: one-hot on the noise class
    noise_class = coeffs.argmax(dim=1)
    assert torch.allclose(coeffs, torch.nn.functional.one_hot(noise_class, k).float(), atol=1e-5)
    assert bool((noise_class != y).all())
    assert len(set(noise_class[y == 0].tolist())) == k - 1  # uniform over the other classes
    assert torch.allclose(x[:, 1] @ rare_f.T, torch.zeros(600, k), atol=1e-6)
    # the rest: pure Gaussian noise, orthogonal to every feature, of the configured scale
    noise = x[:, 2:]
    basis = torch.cat([common_f, rare_f])
    assert float((noise @ basis.T).abs().max()) < 1e-5
    expected_norm = cfg.noise_std * math.sqrt(cfg.dim - 2 * k)
    assert abs(float(noise.norm(dim=-1).mean()) / expected_norm - 1) < 0.05
    assert abs(float(noise.mean())) < 0.01


def test_feature_noise_kinds():
    for kind, source in (("rare", "rare"), ("same", None)):
        cfg = data_cfg(feature_noise=0.5, feature_noise_kind=kind, rare_fraction=0.3)
        feats, x, y, rare = sample(cfg, 300)
        other = 1 - y
        if source == "rare":
            expected = 0.5 * feats["rare"][other]
        else:  # the example's own feature type, from the other class
            expected = torch.where(rare[:, None], 0.5 * feats["rare"][other], 0.5 * feats["common"][other])
        assert torch.allclose(x[:, 1], expected, atol=1e-6)


def test_shuffled_patches_keep_the_content():
    cfg_fixed, cfg_shuffled = data_cfg(), data_cfg(shuffle_patches=True)
    _, x_fixed, y1, r1 = sample(cfg_fixed, 300)
    feats, x_shuf, y2, r2 = sample(cfg_shuffled, 300)
    assert torch.equal(y1, y2) and torch.equal(r1, r2)
    # each example still holds exactly one feature patch, now at varying positions
    own = torch.where(r2[:, None], feats["rare"][y2], feats["common"][y2])
    hit = (x_shuf @ own[:, :, None]).squeeze(-1) > 0.99  # [n, P]
    assert bool((hit.sum(dim=1) == 1).all())
    assert len(set(hit.float().argmax(dim=1).tolist())) == cfg_shuffled.patches
    assert not torch.equal(x_fixed, x_shuf)


def test_deterministic_by_seed_and_seeds_differ():
    cfg = data_cfg()
    a = make_feature_noise_data(cfg, seed=5, device=CPU)
    b = make_feature_noise_data(cfg, seed=5, device=CPU)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.test_groups["rare"], b.test_groups["rare"])
    assert torch.equal(a.features["common"], b.features["common"])
    c = make_feature_noise_data(cfg, seed=6, device=CPU)
    assert not torch.allclose(a.features["common"], c.features["common"])
    assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.test_x, c.test_x)


def test_test_set_and_features_independent_of_n_train():
    a = make_feature_noise_data(data_cfg(n_train=200), seed=1, device=CPU)
    b = make_feature_noise_data(data_cfg(n_train=300), seed=1, device=CPU)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.features["rare"], b.features["rare"])


def sigma_reference(z: float, q: float, rho: float) -> float:
    if z <= 0:
        return 0.0
    if z <= rho:
        return z**q / (q * rho ** (q - 1))
    return z - rho * (1 - 1 / q)


@pytest.mark.parametrize("q,rho", [(3.0, 1.0), (2.0, 0.5), (4.5, 2.0), (1.0, 1.0)])
def test_smoothed_relu_pieces(q, rho):
    zs = [-2.0, -0.1, 0.0, 0.3 * rho, rho, 1.7 * rho, 5.0]
    got = smoothed_relu(torch.tensor(zs, dtype=torch.float64), q, rho).tolist()
    for z, g in zip(zs, got):
        assert g == pytest.approx(sigma_reference(z, q, rho), abs=1e-12)
    # continuously differentiable at rho (slope 1 on both sides)
    z = torch.tensor([rho - 1e-6, rho + 1e-6], dtype=torch.float64, requires_grad=True)
    smoothed_relu(z, q, rho).sum().backward()
    assert torch.allclose(z.grad, torch.ones(2, dtype=torch.float64), atol=1e-4)


def test_forward_matches_the_formula_on_a_hand_example():
    torch.manual_seed(0)
    net = TwoLayerCNN(num_classes=2, patches=2, dim=3, width=2, activation_power=3.0,
                      activation_threshold=1.0, init_std=0.1)
    w = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],     # class 0: w_{0,1}, w_{0,2}
                      [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.5]]])   # class 1
    with torch.no_grad():
        net.weight.copy_(w)
    x = torch.tensor([[[0.5, 1.0, 0.0], [2.0, 0.0, -1.0]]])  # one example, two patches
    # class 0: <w01,x1>=0.5, <w01,x2>=2, <w02,x1>=2, <w02,x2>=0
    # class 1: <w11,x1>=0, <w11,x2>=-1, <w12,x1>=-0.5, <w12,x2>=-2.5
    s = lambda z: sigma_reference(z, 3.0, 1.0)  # noqa: E731
    f0 = (s(0.5) + s(2.0) + s(2.0) + s(0.0)) / 2
    f1 = (s(0.0) + s(-1.0) + s(-0.5) + s(-2.5)) / 2
    assert f0 == pytest.approx((0.125 / 3 + 2 * (2 - 2 / 3)) / 2)
    out = net(x)
    assert out.shape == (1, 2)
    assert out[0].tolist() == pytest.approx([f0, f1], abs=1e-6)
    assert net.filters is net.weight


def test_forward_is_a_sum_over_patches_and_rejects_bad_shapes():
    torch.manual_seed(1)
    net = TwoLayerCNN(3, 4, 8, 5, 3.0, 0.5, 0.3)
    x = torch.randn(6, 4, 8)
    whole = net(x)
    parts = sum(net(x[:, [p] * 4]) / 4 for p in range(4))  # each patch repeated 4 times, / 4
    assert torch.allclose(whole, parts, atol=1e-5)
    assert torch.allclose(net(x[:, torch.randperm(4)]), whole, atol=1e-5)  # patch order is irrelevant
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(6, 8))


def test_build_model_and_init_scale():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model(ModelConfig(width=50, init_std=0.02), num_classes=2, input_shape=(3, 100))
    assert isinstance(net, TwoLayerCNN) and net.weight.shape == (2, 50, 100)
    assert float(net.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert abs(float(net.weight.detach().mean())) < 0.002


def test_feature_measures_on_hand_set_weights():
    feats = {"common": torch.eye(6)[:2], "rare": torch.eye(6)[2:4]}  # c_0=e0, c_1=e1, r_0=e2, r_1=e3
    net = TwoLayerCNN(2, 3, 6, 3, 3.0, 1.0, 0.01)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, 0] = 2.0    # class 0 filter 0: common 2
        net.weight[0, 1, 0] = -5.0   # a negative one does not count (largest inner product)
        net.weight[0, 2, 2] = 0.5    # class 0 filter 2: rare 0.5
        net.weight[1, 1, 1] = 3.0    # class 1: common 3
        net.weight[1, 0, 3] = 1.5    # class 1: rare 1.5
        net.weight[1, 2, 0] = 9.0    # class 1 aligned with class 0's feature: not class 1's measure
    m = feature_measures(net, feats)
    assert m == pytest.approx({"feat_common_0": 2.0, "feat_common_1": 3.0, "feat_common": 2.5,
                               "feat_rare_0": 0.5, "feat_rare_1": 1.5, "feat_rare": 1.0})
