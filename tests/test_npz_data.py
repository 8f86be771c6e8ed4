"""A user's .npz dataset: the layouts and dtypes that load, and one clear error for each bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixup_core.config import AugmentConfig, ConfigError, DataConfig
from mixup_core.data import build_dataset
from mixup_core.data.npz import load_npz, npz_image_size

CPU = torch.device("cpu")


def _arrays(n_train=40, n_test=12, shape=(16, 16, 3), dtype=np.uint8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        x_train = rng.integers(0, 256, (n_train, *shape), dtype=np.uint8)
        x_test = rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)
    else:
        x_train = rng.normal(size=(n_train, *shape)).astype(dtype)
        x_test = rng.normal(size=(n_test, *shape)).astype(dtype)
    y_train = np.arange(n_train) % k
    y_test = np.arange(n_test) % k
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _save(tmp_path, arrays, name="data.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _load(path, **cfg):
    return load_npz(DataConfig(name="npz", root=str(path), **{"val_size": 0, **cfg}), seed=0, device=CPU)


# ---------------------------------------------------------------------------------------------
# What loads


def test_nhwc_uint8_is_transposed_and_normalised_with_train_statistics(tmp_path):
    arrays = _arrays(shape=(16, 16, 3))
    arrays["x_train"][..., 1] //= 2  # channels with different statistics
    data = _load(_save(tmp_path, arrays))
    assert data.train_x.shape == (40, 3, 16, 16) and data.train_x.dtype == torch.uint8
    assert torch.equal(data.train_x, torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2))
    assert data.input_shape == (3, 16, 16) and data.num_classes == 4
    assert data.train_y.dtype == torch.int64
    z = data.prepare_eval(data.train_x, None)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


def test_nchw_float_is_used_as_given_and_augmented_when_asked(tmp_path):
    arrays = _arrays(shape=(1, 12, 10), dtype=np.float64)
    data = _load(_save(tmp_path, arrays), augment=True)
    assert data.train_x.shape == (40, 1, 12, 10) and data.train_x.dtype == torch.float32
    x = data.train_x[:16]
    assert torch.equal(data.prepare_eval(x, None), x)
    a = data.prepare_train(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(a, data.prepare_train(x, torch.Generator().manual_seed(0)))


def test_grayscale_nhw_gets_one_channel(tmp_path):
    data = _load(_save(tmp_path, _arrays(shape=(28, 28))))
    assert data.train_x.shape == (40, 1, 28, 28) and data.input_shape == (1, 28, 28)


def test_npz_images_are_not_augmented_unless_asked(tmp_path):
    # A user's images may be digits or scans, where a flip or shift changes what they show.
    path = _save(tmp_path, _arrays(shape=(8, 8, 3), dtype=np.float32))
    for choice in ("auto", False, {"crop_pad": 0, "flip": False}):
        data = _load(path, augment=choice)
        x = data.train_x
        assert data.augment is False
        assert torch.equal(data.prepare_train(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("shape,pad", [((8, 8, 3), 1), ((6, 6, 3), 1), ((16, 16, 3), 2), ((12, 20, 1), 2),
                                       ((28, 28), 4), ((32, 32, 3), 4), ((64, 64, 3), 8)])
def test_augment_true_scales_the_crop_to_the_image_size(tmp_path, shape, pad):
    data = _load(_save(tmp_path, _arrays(shape=shape, dtype=np.float32)), augment=True)
    assert data.augment == AugmentConfig(crop_pad=pad, flip=True)
    x = torch.ones_like(data.train_x)
    out = data.prepare_train(x, torch.Generator().manual_seed(0))
    # Zero rows come in only from the padding: never more than `pad` of them.
    h = x.shape[2]
    zero_rows = (out.sum(dim=(1, 3)) == 0).sum(dim=1)
    assert int(zero_rows.max()) <= pad < h and int(zero_rows.max()) > 0


def test_explicit_augmentation_is_applied_as_given(tmp_path):
    path = _save(tmp_path, _arrays(shape=(8, 8, 1), dtype=np.float32))
    data = _load(path, augment={"crop_pad": 2, "flip": False})
    assert data.augment == AugmentConfig(crop_pad=2, flip=False)
    with pytest.raises(ConfigError, match="data.augment.crop_pad=8 must be below the image size 8x8"):
        _load(path, augment={"crop_pad": 8})


def test_the_trial_config_yaml_shows_the_augmentation_applied(tmp_path):
    import yaml

    from mixup_core.config import validate_trial_config
    from mixup_core.trial import run_trial

    path = _save(tmp_path, _arrays(n_train=16, n_test=4, shape=(8, 8, 3)))
    raw = {"data": {"name": "npz", "root": str(path), "val_size": 0, "augment": True},
           "model": {"name": "resnet18"}, "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}
    run_trial(validate_trial_config(raw), tmp_path / "out")
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["data"]["augment"] == {"crop_pad": 1, "flip": True}
    checkpoint = next((tmp_path / "out" / "checkpoints").iterdir())
    assert yaml.safe_load((checkpoint / "config.yaml").read_text())["data"]["augment"] == {"crop_pad": 1, "flip": True}


def test_num_classes_spans_train_and_test_and_split_is_by_seed(tmp_path):
    arrays = _arrays(k=3)
    arrays["y_test"][0] = 6
    path = _save(tmp_path, arrays)
    cfg = DataConfig(name="npz", root=str(path), val_size=0.25)
    a, b = load_npz(cfg, 5, CPU), build_dataset(cfg, 5, CPU)
    assert a.num_classes == 7
    assert a.val_x.shape[0] == 10 and a.train_x.shape[0] == 30
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, load_npz(cfg, 6, CPU).val_x)


def test_column_labels_are_accepted(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:, None].astype(np.int32)
    assert _load(_save(tmp_path, arrays)).train_y.shape == (40,)


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line each, saying what is wrong and what to do


def _expect_error(path, *needles):
    with pytest.raises(ConfigError) as err:
        _load(path)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "absent.npz", "no such file", "data.root")


def test_folder_instead_of_file(tmp_path):
    _expect_error(tmp_path, "is a folder")


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("x_train,y_train\n1,2\n")
    _expect_error(path, "not a readable .npz", "numpy.savez")


def test_single_npy_array(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((3, 8, 8, 3), np.uint8))
    _expect_error(path, "single .npy array")


def test_missing_arrays(tmp_path):
    arrays = _arrays()
    del arrays["y_test"], arrays["x_test"]
    _expect_error(_save(tmp_path, arrays), "missing array(s) x_test, y_test", "found: x_train, y_train")


def test_object_arrays_are_refused(tmp_path):
    arrays = _arrays()
    arrays["y_test"] = np.array([1, "a"], dtype=object)
    _expect_error(_save(tmp_path, arrays), "pickle")


@pytest.mark.parametrize("shape", [(40, 768), (40, 2, 16, 16, 3)])
def test_wrong_image_ndim(tmp_path, shape):
    arrays = _arrays()
    arrays["x_train"] = np.zeros(shape, np.uint8)
    _expect_error(_save(tmp_path, arrays), "x_train has shape", "N,H,W,C or N,C,H,W")


def test_ambiguous_layout(tmp_path):
    arrays = _arrays(shape=(3, 4, 3))
    _expect_error(_save(tmp_path, arrays), "cannot tell", "N,C,H,W")


def test_train_and_test_image_shapes_differ(tmp_path):
    arrays = _arrays()
    arrays["x_test"] = np.zeros((12, 8, 8, 3), np.uint8)
    _expect_error(_save(tmp_path, arrays), "x_train images are (3, 16, 16)", "x_test images are (3, 8, 8)")


def test_train_and_test_dtypes_differ(tmp_path):
    arrays = _arrays()
    arrays["x_test"] = arrays["x_test"].astype(np.float32)
    _expect_error(_save(tmp_path, arrays), "x_train is uint8 but x_test is float32")


@pytest.mark.parametrize("key,n_images", [("y_train", 40), ("y_test", 12)])
def test_label_count_mismatch(tmp_path, key, n_images):
    arrays = _arrays()
    arrays[key] = arrays[key][:-1]
    _expect_error(_save(tmp_path, arrays), f"{key} has {n_images - 1} labels but there are {n_images} images")


@pytest.mark.parametrize("key", ["x_train", "x_test"])
def test_empty_images(tmp_path, key):
    arrays = _arrays()
    arrays[key] = arrays[key][:0]
    _expect_error(_save(tmp_path, arrays), f"{key} is empty")


def test_float_labels(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    _expect_error(_save(tmp_path, arrays), "y_train has dtype float32", "astype(numpy.int64)")


def test_one_hot_labels(tmp_path):
    arrays = _arrays()
    arrays["y_test"] = np.eye(4, dtype=np.int64)[arrays["y_test"]]
    _expect_error(_save(tmp_path, arrays), "y_test has shape (12, 4)", "not one-hot")


def test_negative_labels(tmp_path):
    arrays = _arrays()
    arrays["y_test"][3] = -1
    _expect_error(_save(tmp_path, arrays), "y_test has negative label -1")


def test_labels_out_of_range(tmp_path):
    arrays = _arrays()
    arrays["y_train"][0] = 1000  # an id, not a class index
    _expect_error(_save(tmp_path, arrays), "largest label 1000 is out of range", "0..K-1")


@pytest.mark.parametrize("bad,needle", [(np.nan, "contains NaN"), (np.inf, "contains infinite values")])
def test_non_finite_float_images(tmp_path, bad, needle):
    arrays = _arrays(dtype=np.float32)
    arrays["x_test"][2, 3, 4, 0] = bad
    _expect_error(_save(tmp_path, arrays), f"x_test {needle}")


def test_unsupported_image_dtype(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = arrays["x_train"].astype(np.int16)
    arrays["x_test"] = arrays["x_test"].astype(np.int16)
    _expect_error(_save(tmp_path, arrays), "x_train has dtype int16", "uint8")


def test_val_size_too_large(tmp_path):
    path = _save(tmp_path, _arrays())
    with pytest.raises(ConfigError, match="val_size"):
        load_npz(DataConfig(name="npz", root=str(path), val_size=40), 0, CPU)


# ---------------------------------------------------------------------------------------------
# Damaged members: each named, with what to do


def _member_data_offset(path, member):
    """Byte offset of a zip member's (stored or deflated) data in the file."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def _flip_bytes(path, member, where):
    start, size = _member_data_offset(path, member)
    raw = bytearray(path.read_bytes())
    at = start + int(size * where)
    for i in range(at, at + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("member", ["x_train", "y_test"])
def test_a_corrupt_member_is_named(tmp_path, compressed, member):
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, **_arrays())
    _flip_bytes(path, f"{member}.npy", 0.6)  # inside the data, past the .npy header
    _expect_error(path, f"{member} is damaged", "write the file again")


def test_a_damaged_npy_header_is_named(tmp_path):
    path = _save(tmp_path, _arrays())
    _flip_bytes(path, "y_train.npy", 0.0)  # the magic string and header
    _expect_error(path, "y_train is damaged")


@pytest.mark.parametrize("member", ["x_train", "y_train", "x_test"])
def test_object_arrays_are_named(tmp_path, member):
    arrays = _arrays()
    arrays[member] = np.empty(len(arrays[member]), dtype=object)
    _expect_error(_save(tmp_path, arrays), f"{member} is an object array", "pickle")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, "U3", np.int64])
def test_image_dtypes_that_are_not_pixels_are_named(tmp_path, dtype):
    arrays = _arrays()
    arrays["x_test"] = np.zeros(arrays["x_test"].shape, dtype=dtype)
    _expect_error(_save(tmp_path, arrays), "x_test has dtype", "uint8 (0-255) or float")


def test_float64_images_beyond_float32_are_refused(tmp_path):
    arrays = _arrays(dtype=np.float64)
    arrays["x_train"][0, 0, 0, 0] = 1e300
    _expect_error(_save(tmp_path, arrays), "x_train contains infinite values (as float32)")


def test_image_size_is_read_from_the_header_alone(tmp_path):
    assert npz_image_size(_save(tmp_path, _arrays(shape=(12, 20, 3)))) == (12, 20)
    assert npz_image_size(_save(tmp_path, _arrays(shape=(3, 12, 20)), "b.npz")) == (12, 20)
    assert npz_image_size(_save(tmp_path, _arrays(shape=(28, 28)), "c.npz")) == (28, 28)
    (tmp_path / "bad.npz").write_text("no")
    assert npz_image_size(tmp_path / "bad.npz") is None
