"""Image-folder data with augmentation, streamed through a DataLoader (issue 13 item 2; contract C4).

Tiny generated folders (a few 8x8 / mixed-size PNGs in tmp_path). What is proven: folder pixels reach the network
as the uint8 files hold them (C4: no mean, scale = 1/(255 std)); batches are seeded and identical with 0 or 2
workers and after a generator restore (resume); world_size 1 on npz is the project's old batching and the ranks'
shares of a global batch union to the single-process batch (npz and augmented folder); the cifar / imagenet views
are what they claim; every bad folder is one line naming the folder / file / classes, exit 2, nothing written.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from na_deploy.cli.main import cli
from na_deploy.data.arrays import Dataset, batches, channel_std, load_dataset, make_loaders, test_batches
from na_deploy.errors import DataError
from na_deploy.data.transforms import CIFAR_PAD, cifar_train, eval_view, sample_rng, train_view


def write_folder(root, classes=("cat", "ant", "bee"), n_train=4, n_val=2, size=(8, 8), seed=0, mode="RGB"):
    """root/{train,val}/<class>/<i>.png of random pixels; returns {split: (uint8 N x C x H x W, labels)} in the
    order the loader must give (classes sorted by name, files sorted; val/ then round robin over the classes: the
    i-th file of every class before the (i+1)-th, so that a prefix holds every class)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("val", n_val)):
        xs, ys = [], []
        for k, name in enumerate(sorted(classes)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(a, mode).save(root / split / name / f"{i:02d}.png")
                xs.append(a.transpose(2, 0, 1) if mode == "RGB" else a[None])
                ys.append(k)
        order = list(range(len(ys)))
        if split == "val":  # (rank within its class, class): the prefix of N images cycles through the classes
            order.sort(key=lambda j: (j - ys.index(ys[j]), ys[j]))
        out[split] = (np.stack(xs)[order], np.array(ys, dtype=np.int64)[order])
    return out


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "shapes"
    return root, write_folder(root)


def _epoch(loaders):
    return [(x.clone(), y.clone()) for x, y in loaders.train()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_folder_pixels_labels_std_and_fingerprint(folder, tmp_path):
    root, arrays = folder
    ds = load_dataset(root)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["val"]
    assert ds.classes == ["ant", "bee", "cat"] and ds.num_classes == 3 and ds.input_shape == (3, 8, 8)
    assert (ds.num_train, ds.num_test) == (12, 6) and ds.augment == "none"
    assert np.array_equal(ds.x_test, xte) and np.array_equal(ds.y_test, yte) and np.array_equal(ds.y_train, ytr)
    assert ds.y_test.tolist() == [0, 1, 2, 0, 1, 2]  # any first N val images hold every class in turn
    assert np.array_equal(ds.x_train, xtr) and np.array_equal(ds.train_images([5, 1]), xtr[[5, 1]])
    np.testing.assert_allclose(ds.channel_std, channel_std(xtr), rtol=1e-12)  # exact integer sums vs numpy float
    assert ds.normalization.channel_scale == tuple(1.0 / (255.0 * ds.channel_std))  # scale only, no mean (C4)
    streamed = list(test_batches(ds, 4))
    assert [len(y) for _, y in streamed] == [4, 2] and np.array_equal(np.concatenate([x for x, _ in streamed]), xte)
    assert load_dataset(root, workers=2).fingerprint == ds.fingerprint  # the same bytes -> the same fingerprint
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "ant" / "00.png")
    assert load_dataset(root).fingerprint != ds.fingerprint


def test_grey_folder_is_one_channel(tmp_path):
    arrays = write_folder(tmp_path / "g", mode="L", n_train=2, n_val=1)
    ds = load_dataset(tmp_path / "g")
    assert ds.input_shape == (1, 8, 8) and np.array_equal(ds.x_test, arrays["val"][0])


def test_augmented_batches_seeded_same_with_workers_and_after_restore(folder):
    root, _ = folder
    ds0, ds2 = load_dataset(root, augment="cifar"), load_dataset(root, augment="cifar", workers=2)
    a, b = make_loaders(ds0, 5, seed=3), make_loaders(ds2, 5, seed=3)
    assert b.num_workers == 2 and a.num_train_batches() == 3
    state = a.generator.get_state()
    e1, e2 = _epoch(a), _epoch(a)
    assert _same(e1, _epoch(b)) and _same(e2, _epoch(b))  # 0 and 2 workers: the same pixels, epoch after epoch
    assert not _same(e1, e2) and [x.dtype for x, _ in e1] == [torch.uint8] * 3
    a.generator.set_state(state)  # a resumed run restores the generator and gets the same epoch
    assert _same(_epoch(a), e1)
    assert not _same(_epoch(make_loaders(ds0, 5, seed=4)), e1)
    plain = _epoch(make_loaders(load_dataset(root), 5, seed=3))  # the same order, un-augmented pixels
    assert [y.tolist() for _, y in plain] == [y.tolist() for _, y in e1] and not _same(plain, e1)


def test_npz_world_size_1_is_the_old_batching_and_ranks_union_to_the_global_batch(folder):
    rng = np.random.default_rng(1)
    d = Dataset(rng.integers(0, 256, (23, 1, 4, 4), dtype=np.uint8), np.arange(23) % 3,
                np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]), num_classes=3, name="t")
    g = torch.Generator().manual_seed(7)
    old = [(x, y) for x, y in batches(d.x_train, d.y_train, 6, True, g)]
    assert _same(_epoch(make_loaders(d, 6, seed=7)), old)
    root, _ = folder
    for data, bs in ((d, 6), (load_dataset(root, augment="cifar"), 5)):
        whole = _epoch(make_loaders(data, bs, seed=7))
        ranks = [_epoch(make_loaders(data, bs, seed=7, rank=r, world_size=3)) for r in range(3)]
        assert all(len(r) == len(whole) for r in ranks)
        for step, (x, y) in enumerate(whole):  # rank r holds elements r::3 of each global batch
            xs = torch.empty_like(x)
            ys = torch.empty_like(y)
            for r in range(3):
                xs[r::3], ys[r::3] = ranks[r][step]
            assert torch.equal(xs, x) and torch.equal(ys, y)


def test_cifar_view_is_a_padded_crop_maybe_flipped():
    a = np.random.default_rng(0).integers(1, 256, (3, 6, 5), dtype=np.uint8)
    padded = np.pad(a, ((0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD)))
    seen = set()
    for pos in range(40):
        v = cifar_train(a, sample_rng(11, pos))
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                if np.array_equal(v, (lambda c: c[:, :, ::-1] if f else c)(padded[:, dy:dy + 6, dx:dx + 5]))]
        assert hits, pos
        seen.add(hits[0][2])
        assert np.array_equal(v, cifar_train(a, sample_rng(11, pos)))  # a sample's pixels depend on its seed only
    assert seen == {0, 1} and np.array_equal(eval_view("cifar", a), a)


def test_imagenet_views_resize_mixed_sizes(tmp_path):
    root = tmp_path / "inet"
    write_folder(root, classes=("a", "b"), n_train=2, n_val=1, size=(20, 12))
    for f in (root / "train" / "a" / "01.png", root / "val" / "b" / "00.png"):
        Image.fromarray(np.full((30, 9, 3), 7, np.uint8)).save(f)  # 9 x 30 among 20 x 12
    ds = load_dataset(root, augment="imagenet")
    assert ds.input_shape == (3, 224, 224) and ds.x_test.shape == (2, 3, 224, 224)
    x, y = next(make_loaders(ds, 4, seed=0).train())
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.uint8 and sorted(y.tolist()) == [0, 0, 1, 1]
    img = Image.open(root / "val" / "a" / "00.png")
    assert train_view("imagenet", img, sample_rng(0, 0)).shape == (3, 224, 224)
    with pytest.raises(DataError, match="needs an image folder"):
        load_dataset(None, augment="imagenet")


def test_training_and_calibration_run_on_a_folder(folder):
    from na_deploy.training.loop import calibration_batch, dataset_accuracy, train_full_precision, train_qat

    root, arrays = folder
    ds = load_dataset(root, augment="cifar")
    fp = train_full_precision(ds, "digits_cnn", epochs=1, batch_size=4, progress=False)
    assert fp.checkpoint.input_shape == (3, 8, 8) and fp.checkpoint.data_fingerprint == ds.fingerprint
    norm = ds.normalization
    assert fp.history[-1]["test_acc"] == dataset_accuracy(fp.model, ds, norm)
    cal = calibration_batch(ds, norm, 0, torch.device("cpu"), n=5)
    assert cal.shape == (5, 3, 8, 8) and torch.all(cal * 0 == 0)
    q = train_qat(ds, fp.checkpoint, epochs=1, batch_size=4, progress=False)
    assert len(q.history) == 2


@pytest.mark.parametrize("case, needle", [
    ("no_val", "no val/ folder; allowed: an image folder with train/<class>"),
    ("classes", "classes differ between train/ and val/ (only in train: cat; only in val: dog)"),
    ("unreadable", "ant/01.png: unreadable image"),
    ("mixed", "bee/00.png: image is 10x8 but "),
    ("empty", "class folder(s) bee hold no image"),
])
def test_bad_folder_is_one_line_exit_2_nothing_written(tmp_path, case, needle):
    root = tmp_path / "d"
    write_folder(root, n_train=2, n_val=1)
    if case == "no_val":
        import shutil
        shutil.rmtree(root / "val")
    elif case == "classes":
        (root / "val" / "cat").rename(root / "val" / "dog")
    elif case == "unreadable":
        (root / "train" / "ant" / "01.png").write_bytes(b"not a png")
    elif case == "mixed":
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "train" / "bee" / "00.png")
    else:
        for f in (root / "train" / "bee").iterdir():
            f.unlink()
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["pipeline", "--data", str(root), "--augment", "cifar", "--out", str(out)])
    assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    if case == "mixed":
        assert "8x8" in r.output and "augment imagenet resizes, so mixed sizes are fine" in r.output
        assert load_dataset(root, augment="imagenet").num_train == 6  # resizing: mixed sizes are fine
    if case == "empty":
        for f in (root / "val" / "bee").iterdir():
            f.unlink()  # a class with no example anywhere: allowed once K is stated
        warned = []
        assert load_dataset(root, num_classes=3, warn=warned.append).num_classes == 3
        assert "have no example in y_train (1)" in warned[0]
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_unreadable_file_found_by_a_worker_is_named_in_one_line(tmp_path):
    root = tmp_path / "d"
    write_folder(root, n_train=2, n_val=1)
    (root / "train" / "cat" / "00.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as e:  # imagenet reads no headers up front: the std pass decodes, in a worker
        load_dataset(root, augment="imagenet", workers=2)
    assert str(e.value).startswith(str(root / "train" / "cat" / "00.png") + ": unreadable image")
    assert len(str(e.value).splitlines()) == 1
    r = CliRunner().invoke(cli, ["train", "--data", str(root), "--augment", "flip", "--workers", "2",
                                 "--out", str(tmp_path / "fp.pt")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "--augment 'flip': unknown augmentation; allowed: none, cifar, imagenet" in r.output
    assert not (tmp_path / "fp.pt").exists()


def test_simulate_streams_a_folder_and_equals_the_arrays(folder, tmp_path):
    """`simulate --data DIR` evaluates the folder's val split streamed in batches (loaders.eval_inputs): the same
    figures as accuracy_vs_timesteps on the split loaded as arrays."""
    import json

    from click.testing import CliRunner

    from na_deploy.evaluate.accuracy import accuracy_vs_timesteps
    from na_deploy.cli.main import cli
    from na_deploy.convert import convert_checkpoint
    from na_deploy.hw_targets import get_target
    from na_deploy.data.loaders import eval_inputs
    from na_deploy.training.loop import train_full_precision, train_qat

    root, _ = folder
    ds = load_dataset(root)
    fp = train_full_precision(ds, "digits_cnn", epochs=1, batch_size=4, progress=False)
    train_qat(ds, fp.checkpoint, epochs=1, batch_size=4, progress=False, out=str(tmp_path / "q.pt"))
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "q.pt"), "--out", str(tmp_path / "n.nad.h5"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["simulate", str(tmp_path / "n.nad.h5"), "--data", str(root), "--timesteps", "1,2",
                                 "--json", str(tmp_path / "s.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "s.json").read_text())
    x, y, n = eval_inputs(ds)
    assert callable(x) and y is None and n == got["samples"] == ds.num_test  # streamed, not an array
    target = get_target("loihi2")
    fnet = convert_checkpoint(str(tmp_path / "q.pt"))
    inet = target.to_fixed_point(fnet, max_timesteps=256)
    want = accuracy_vs_timesteps(fnet, inet, target, ds.x_test, ds.y_test, [1, 2], progress=False).to_dict()
    assert got["snn_accuracy"] == json.loads(json.dumps(want["snn_accuracy"]))
