"""Data: embedded digits, user .npz validation, per-channel scale normalisation (C4), seeded batching."""
import numpy as np
import pytest
import torch

from na_deploy.data.arrays import Normalization, batches, load_dataset, load_npz, make_loaders, round_half_up_to_uint8
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


# ------------------------------------------------------------------- labels: empty classes, --num-classes K
def gappy(tmp_path, y_train=(0, 1, 2, 99), y_test=(0, 1, 2, 99), name="gap.npz"):
    """A new user's file: train labels {0, 1, 2, 99} (96 of 100 classes would be empty)."""
    rng = np.random.default_rng(2)
    ytr, yte = np.resize(np.array(y_train), 24), np.resize(np.array(y_test), 8)
    x = rng.integers(0, 256, size=(24, 6, 6)).astype(np.uint8)
    return save(tmp_path, name, x_train=x, y_train=ytr, x_test=x[:8], y_test=yte)


def test_labels_with_empty_classes_refused_in_one_line(tmp_path):
    path = gappy(tmp_path)
    with pytest.raises(DataError) as e:
        load_npz(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: array y_train")
    assert "96 of its 100 classes empty" in msg and "--num-classes K" in msg and "3, 4, 5, 6, 7, ..." in msg


def test_num_classes_allows_empty_classes_with_one_warning(tmp_path):
    path = gappy(tmp_path)
    said = []
    d = load_npz(path, num_classes=100, warn=said.append)
    assert d.num_classes == 100 and len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith(f"warning: {path}: 96 of the 100 classes (K = 100 from --num-classes)")
    with pytest.warns(UserWarning, match="96 of the 100 classes"):  # library default: warnings.warn
        load_dataset(path, num_classes=100)
    said.clear()
    assert load_npz(gappy(tmp_path, (0, 1, 2, 3), (0, 1), "full.npz"), num_classes=4, warn=said.append).num_classes == 4
    assert not said  # no empty class, no warning


@pytest.mark.parametrize("y_train, y_test, k, fragment", [
    ((0, 1, 2, 99), (0, 1), 50, "array y_train has label 99 out of range; allowed: integers in [0, 50) "
                                "(K = 50 from --num-classes)"),
    ((0, 1, 2), (0, 1, 7), 5, "array y_test has label 7 out of range; allowed: integers in [0, 5)"),
    ((0, 1, 2), (0, 1, 3), 5, "array y_test has label(s) 3 that y_train never uses; allowed: the 3 classes"),
    ((0, 1, 2), (0, 1, 3), None, "array y_test has label 3 out of range; allowed: integers in [0, 3) "
                                 "(K = 1 + the largest y_train label)"),
    ((4, 4), (4,), 10, "array y_train has a single class (label 4)"),
    ((4, 4), (4,), None, "array y_train has a single class (label 4)"),
])
def test_label_checks_name_file_and_array(tmp_path, y_train, y_test, k, fragment):
    path = gappy(tmp_path, y_train, y_test)
    with pytest.raises(DataError) as e:
        load_npz(path, num_classes=k, warn=lambda m: None)
    assert str(e.value).startswith(f"{path}: ") and fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("k", [1, 0, -3, True, 2.5])
def test_num_classes_must_be_an_integer_of_at_least_2(tmp_path, k):
    with pytest.raises(DataError, match=r"^--num-classes .*: must be an integer >= 2"):
        load_dataset(gappy(tmp_path), num_classes=k)


def test_digits_label_checks():
    said = []
    assert load_dataset(None, seed=0, num_classes=12, warn=said.append).num_classes == 12
    assert len(said) == 1 and "2 of the 12 classes" in said[0] and "(10, 11)" in said[0]
    with pytest.raises(DataError, match=r"^digits: array y_train has label 9 out of range; allowed: integers in "
                                        r"\[0, 5\) \(K = 5 from the checkpoint c.pt\)$"):
        load_dataset(None, seed=0, num_classes=5, num_classes_from="the checkpoint c.pt")
