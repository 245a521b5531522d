"""Data: embedded digits, user .npz validation, per-channel scale normalisation (C4), seeded batching."""
import numpy as np
import pytest
import torch

from na_deploy.data import (Normalization, batches, load_dataset, load_npz, make_loaders,
                            round_half_up_to_uint8)
from na_deploy.errors import DataError


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None, seed=0)


def test_digits_default_split_and_dtype(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int64
    assert digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    assert int(digits.x_train.max()) == 255 and int(digits.x_train.min()) == 0
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified


def test_digits_pixels_round_half_up():
    from sklearn.datasets import load_digits

    raw = load_digits().images
    conv = round_half_up_to_uint8(raw * 255.0 / 16.0)
    assert conv[raw == 16].min() == 255 and conv[raw == 8].min() == 128  # 127.5 -> 128 (half up)
    assert conv[raw == 1].min() == 16 and conv[raw == 0].max() == 0       # 15.94 -> 16


def test_digits_split_depends_on_seed_only(digits):
    again = load_dataset(seed=0)
    other = load_dataset(seed=1)
    assert again.fingerprint == digits.fingerprint and len(digits.fingerprint) == 64
    assert other.fingerprint != digits.fingerprint


def test_c4_normalisation_is_a_per_channel_scale(digits):
    std = (digits.x_train.astype(np.float64) / 255).std(axis=(0, 2, 3))
    assert np.allclose(digits.channel_std, std)
    norm = digits.normalization
    assert np.allclose(norm.channel_scale, 1 / (255 * std))
    x = norm.apply(torch.from_numpy(digits.x_train))
    assert abs(float(x.std()) - 1) < 1e-3
    assert float(norm.apply(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)).abs().max()) == 0  # no mean shift
    n3 = Normalization((1.0, 2.0, 4.0))
    y = n3.apply(torch.ones(1, 3, 2, 2, dtype=torch.uint8) * 3)
    assert y[0, :, 0, 0].tolist() == [3.0, 6.0, 12.0]


def save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def good_arrays(rng, n=40, shape=(6, 6), k=4, dtype=np.uint8):
    x = rng.integers(0, 256, size=(n,) + shape).astype(dtype)
    y = np.arange(n) % k
    return dict(x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])


def test_npz_uint8_hw_gets_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    d = load_npz(save(tmp_path, **good_arrays(rng)))
    assert d.x_train.shape == (40, 1, 6, 6) and d.num_classes == 4 and d.name == "d.npz"


def test_npz_float_converted_half_up_and_nchw_kept(tmp_path):
    x = np.full((8, 3, 4, 4), 0.5, dtype=np.float32)
    x[:, 1] = 1.0
    x[:, 2] = 0.0
    y = np.array([0, 1] * 4)
    d = load_npz(save(tmp_path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2]))
    assert d.x_train.shape == (8, 3, 4, 4)
    assert d.x_train[0, :, 0, 0].tolist() == [128, 255, 0]  # 127.5 -> 128
    assert len(d.channel_std) == 3 and np.all(d.channel_std > 0)  # constant channels get std 1


@pytest.mark.parametrize("case, fragment", [
    ("missing", "y_test"),
    ("ndim", "x_train"),
    ("float_range", "x_train"),
    ("dtype", "x_test"),
    ("label_count", "y_train"),
    ("label_negative", "y_train"),
    ("label_out_of_range", "y_test"),
    ("label_float", "y_train"),
    ("hw_mismatch", "x_test"),
    ("one_class", "y_train"),
])
def test_npz_malformed_names_file_and_array(tmp_path, case, fragment):
    rng = np.random.default_rng(1)
    a = good_arrays(rng)
    if case == "missing":
        del a["y_test"]
    elif case == "ndim":
        a["x_train"] = a["x_train"].reshape(40, 36)
    elif case == "float_range":
        a["x_train"] = a["x_train"].astype(np.float32)  # 0..255 floats: not allowed
    elif case == "dtype":
        a["x_test"] = a["x_test"].astype(np.int16)
    elif case == "label_count":
        a["y_train"] = a["y_train"][:-1]
    elif case == "label_negative":
        a["y_train"] = a["y_train"] - 1
    elif case == "label_out_of_range":
        a["y_test"] = a["y_test"] + 10
    elif case == "label_float":
        a["y_train"] = a["y_train"] + 0.5
    elif case == "hw_mismatch":
        a["x_test"] = a["x_test"][:, :5, :5]
    elif case == "one_class":
        a["y_train"] = np.zeros(40, dtype=np.int64)
        a["y_test"] = np.zeros(10, dtype=np.int64)
    path = save(tmp_path, **a)
    with pytest.raises(DataError) as e:
        load_npz(path)
    msg = str(e.value)
    assert path in msg and fragment in msg and "\n" not in msg


def test_npz_not_a_file_or_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(DataError, match="bad.npz"):
        load_dataset(str(bad))


def test_batches_seeded_and_complete(digits):
    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in batches(digits.x_train, np.arange(1437), 100, True, g)]).tolist()

    assert order(3) == order(3) and order(3) != order(4)
    assert sorted(order(3)) == list(range(1437))
    loaders = make_loaders(digits, 64, seed=5)
    first = [y.tolist() for _, y in loaders.train()]
    second = [y.tolist() for _, y in loaders.train()]
    assert first != second and loaders.num_train_batches() == len(first) == 23  # reshuffled every epoch
    assert [y.tolist() for _, y in make_loaders(digits, 64, seed=5).train()] == first
    xb, yb = next(loaders.test())
    assert xb.dtype == torch.uint8 and yb.dtype == torch.int64
