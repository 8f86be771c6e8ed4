"""CIFAR loading from generated python-format files, and the batched on-device augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_files import write_cifar
from mixup_core.data.augment import ImagePipeline, Normalize, crop_flip, draw_crop_flip, random_crop_flip
from mixup_core.data.cifar import LAYOUTS, load_cifar
from mixup_core.config import AugmentConfig, ConfigError, DataConfig
from mixup_core.data import build_dataset

CIFAR_AUGMENT = AugmentConfig(crop_pad=4, flip=True)
CPU = torch.device("cpu")


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    written = {name: write_cifar(root, name, seed=i) for i, name in enumerate(("cifar10", "cifar100"))}
    return root, written


# ---------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("name,k", [("cifar10", 10), ("cifar100", 100)])
def test_load_cifar_reads_generated_files(cifar_root, name, k):
    root, written = cifar_root
    data = load_cifar(DataConfig(name=name, root=str(root), val_size=20), seed=0, device=CPU)
    w = written[name]
    assert data.train_x.shape == (180, 3, 32, 32) and data.val_x.shape == (20, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == torch.int64 and data.val_y.dtype == torch.int64
    assert data.train_x.device == CPU and data.test_y.device == CPU
    assert data.num_classes == k and data.input_shape == (3, 32, 32)
    # The test set comes back exactly as written, labels included (cifar100: the fine labels).
    assert np.array_equal(data.test_x.numpy(), w["test_x"]) and np.array_equal(data.test_y.numpy(), w["test_y"])
    # Train + validation is a partition of the written training set, each image with its own label.
    label_of = {bytes(r): int(y) for r, y in zip(w["train_x"].reshape(200, -1), w["train_y"])}
    got = list(zip(np.concatenate([data.train_x.numpy(), data.val_x.numpy()]).reshape(200, -1),
                   np.concatenate([data.train_y.numpy(), data.val_y.numpy()])))
    assert len({bytes(r) for r, _ in got}) == 200
    assert all(label_of[bytes(r)] == int(y) for r, y in got)


def test_validation_split_is_deterministic_by_seed_and_disjoint(cifar_root):
    root, _ = cifar_root
    cfg = DataConfig(name="cifar10", root=str(root), val_size=0.1)
    a, b, c = (load_cifar(cfg, seed=s, device=CPU) for s in (3, 3, 4))
    assert a.val_x.shape[0] == 20
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert not (_rows(a.train_x) & _rows(a.val_x))


def test_no_validation_split_when_val_size_is_zero(cifar_root):
    root, _ = cifar_root
    data = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0), seed=0, device=CPU)
    assert data.val_x is None and data.val_y is None and data.train_x.shape[0] == 200


def test_build_dataset_dispatches_to_cifar(cifar_root):
    root, _ = cifar_root
    data = build_dataset(DataConfig(name="cifar100", root=str(root), val_size=10), seed=0, device=CPU)
    assert data.num_classes == 100 and data.train_x.shape[0] == 190


def test_download_true_uses_files_already_present(cifar_root):
    # No network: with the files in place, download: true must not go to torchvision at all.
    root, written = cifar_root
    data = load_cifar(DataConfig(name="cifar10", root=str(root), download=True, val_size=0), seed=0, device=CPU)
    assert np.array_equal(data.test_x.numpy(), written["cifar10"]["test_x"])


def test_missing_folder_gives_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_cifar(DataConfig(name="cifar10", root=str(tmp_path / "nowhere")), seed=0, device=CPU)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data.download: true" in msg and "data.root" in msg


def test_missing_batch_file_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        load_cifar(DataConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)


def _overwrite(path, entry):
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)


@pytest.mark.parametrize(
    "entry,needle",
    [
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, "expected uint8"),
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0, 1, 2, 3]}, "expected uint8"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, "integer labels"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}, "expected 0..9"),
        ({"data": np.zeros((4, 3072), np.uint8)}, "'labels'"),
    ],
)
def test_damaged_batches_are_rejected(tmp_path, entry, needle):
    write_cifar(tmp_path, "cifar10")
    _overwrite(tmp_path / "cifar-10-batches-py" / "test_batch", entry)
    with pytest.raises(ConfigError, match=needle):
        load_cifar(DataConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)


def test_pickles_that_run_code_are_refused(tmp_path):
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _overwrite(tmp_path / "cifar-10-batches-py" / "data_batch_1", {"data": Exploit(), "labels": []})
    with pytest.raises(ConfigError, match="not a CIFAR-10 python-format batch"):
        load_cifar(DataConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)
    assert not marker.exists()


def test_not_a_pickle_is_rejected(tmp_path):
    write_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "train").write_text("hello")
    with pytest.raises(ConfigError, match="not a CIFAR-100"):
        load_cifar(DataConfig(name="cifar100", root=str(tmp_path)), seed=0, device=CPU)


def test_val_size_too_large_is_a_config_error(cifar_root):
    root, _ = cifar_root
    with pytest.raises(ConfigError, match="val_size"):
        load_cifar(DataConfig(name="cifar10", root=str(root), val_size=200), seed=0, device=CPU)


def test_prepare_normalises_with_cifar_statistics(cifar_root):
    root, _ = cifar_root
    data = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0, augment=False), seed=0, device=CPU)
    x = data.train_x[:8]
    mean = torch.tensor(LAYOUTS["cifar10"].mean).view(1, 3, 1, 1)
    std = torch.tensor(LAYOUTS["cifar10"].std).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    out = data.prepare_eval(x, None)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # augment: false -> training input is the evaluation input
    assert torch.equal(data.prepare_train(x, torch.Generator().manual_seed(0)), out)


def test_prepare_train_augments_when_enabled(cifar_root):
    root, _ = cifar_root
    data = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0), seed=0, device=CPU)
    x = data.train_x[:64]
    a = data.prepare_train(x, torch.Generator().manual_seed(1))
    b = data.prepare_train(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, data.prepare_eval(x, None))


# ---------------------------------------------------------------------------------------------
# Augmentation


def _reference_crop_flip(x, dy, dx, flip, pad):
    """One example at a time, the way torchvision's RandomCrop(padding) + RandomHorizontalFlip do it."""
    padded = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[2:]
    out = []
    for i in range(len(x)):
        top, left = pad + int(dy[i]), pad + int(dx[i])
        img = padded[i, :, top : top + h, left : left + w]
        out.append(img.flip(-1) if bool(flip[i]) else img)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_matches_per_example_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 12, 10), generator=gen).to(dtype)
    dy, dx, flip = draw_crop_flip(32, 4, torch.Generator().manual_seed(5), CPU)
    out = crop_flip(x, dy, dx, flip, 4)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, _reference_crop_flip(x, dy, dx, flip, 4))


def test_zero_offset_without_flip_is_identity_and_flip_mirrors():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    zero = torch.zeros(6, dtype=torch.long)
    assert torch.equal(crop_flip(x, zero, zero, torch.zeros(6, dtype=torch.bool), 4), x)
    assert torch.equal(crop_flip(x, zero, zero, torch.ones(6, dtype=torch.bool), 4), x.flip(-1))
    # A full shift of pad pixels down brings pad rows of zeros in at the top.
    shifted = crop_flip(x, torch.full((6,), -4), zero, torch.zeros(6, dtype=torch.bool), 4)
    assert torch.equal(shifted[:, :, :4], torch.zeros_like(shifted[:, :, :4]))
    assert torch.equal(shifted[:, :, 4:], x[:, :, :4])


def test_random_crop_flip_is_deterministic_given_the_generator():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    # It is exactly the crop/flip of the draws that the same generator state yields.
    dy, dx, flip = draw_crop_flip(64, 4, torch.Generator().manual_seed(7), CPU)
    assert torch.equal(a, _reference_crop_flip(x, dy, dx, flip, 4))


def test_random_crop_flip_draws_cover_all_offsets_and_both_flips():
    dy, dx, flip = draw_crop_flip(4000, 4, torch.Generator().manual_seed(0), CPU)
    assert set(dy.tolist()) == set(range(-4, 5)) and set(dx.tolist()) == set(range(-4, 5))
    assert 0.45 < flip.float().mean().item() < 0.55
    # and they are independent per example: a real batch gets a mix of flipped and shifted images
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).expand(64, 3, 16, 16).contiguous()
    out = random_crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 64


def test_pad_is_configurable():
    x = torch.randint(1, 256, (200, 1, 16, 16), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=1)
    # at most one zero row/column can come in with pad=1
    zero_rows = (out == 0).all(dim=3).sum(dim=2).flatten()
    assert int(zero_rows.max()) == 1


def test_prepare_train_needs_a_generator_when_augmenting():
    pipeline = ImagePipeline(Normalize([0.5], [0.25], CPU, uint8_input=False), CIFAR_AUGMENT)
    with pytest.raises(ValueError, match="Generator"):
        pipeline.prepare_train(torch.zeros(2, 1, 8, 8), None)


@pytest.mark.gpu
def test_augmentation_on_cuda_matches_cpu_rules_and_never_syncs():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    x = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, device=dev)
    pipeline = ImagePipeline(Normalize(LAYOUTS["cifar10"].mean, LAYOUTS["cifar10"].std, dev, True), CIFAR_AUGMENT)
    gen = torch.Generator(device=dev).manual_seed(0)
    pipeline.prepare_train(x, gen)  # warm-up (lazy init may sync once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = pipeline.prepare_train(x, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape and out.dtype == torch.float32
    # `out` is the second batch drawn from the seed: replay the draws and compare with the reference.
    replay = torch.Generator(device=dev).manual_seed(0)
    draw_crop_flip(512, 4, replay, dev)
    dy, dx, flip = draw_crop_flip(512, 4, replay, dev)
    expected = _reference_crop_flip(x.cpu(), dy.cpu(), dx.cpu(), flip.cpu(), 4).to(dev)
    assert torch.equal(out, pipeline.normalize(expected))


def test_cifar_augmentation_default_is_pad_4_and_flip_exactly_as_before(cifar_root):
    # auto (the default) and true both resolve to the standard recipe; the draws are the ones the
    # pad-4 + flip pipeline always made, so existing results stay bit-identical.
    root, _ = cifar_root
    x = None
    outs = []
    for choice in ("auto", True, {"crop_pad": 4, "flip": True}):
        data = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0, augment=choice), seed=0, device=CPU)
        assert data.augment == CIFAR_AUGMENT
        x = data.train_x[:32]
        outs.append(data.prepare_train(x, torch.Generator().manual_seed(5)))
    gen = torch.Generator().manual_seed(5)
    dy, dx, flip = draw_crop_flip(32, 4, gen, CPU)
    reference = data.prepare_eval(crop_flip(x, dy, dx, flip, 4), None)
    for out in outs:
        assert torch.equal(out, reference)


def test_cifar_augmentation_parts_can_be_turned_off(cifar_root):
    root, _ = cifar_root
    flip_only = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0, augment={"flip": True}), 0, CPU)
    x = flip_only.train_x[:64]
    out = flip_only.prepare_train(x, torch.Generator().manual_seed(2))
    eval_x = flip_only.prepare_eval(x, None)
    for i in range(64):  # each image is itself or its mirror: no shift
        assert torch.equal(out[i], eval_x[i]) or torch.equal(out[i], eval_x[i].flip(-1))
    off = load_cifar(DataConfig(name="cifar10", root=str(root), val_size=0, augment={"crop_pad": 0}), 0, CPU)
    assert off.augment is False
    assert torch.equal(off.prepare_train(x, torch.Generator().manual_seed(2)), eval_x)
