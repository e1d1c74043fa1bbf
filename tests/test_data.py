from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from obliviate.types import index_hash
from obliviate.vision import data as vdata
from obliviate.vision.data import make_splits, parse_forget_rule, read_idx


@pytest.fixture(scope="module")
def digits():
    return vdata.load_dataset("digits")


def test_read_idx_hand_made():
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert read_idx(raw).tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="magic"):
        read_idx(bytes([0, 0, 9, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="expected"):
        read_idx(raw[:-1])


def test_random_split_is_deterministic_in_the_seed(digits):
    a = make_splits(digits, "random:10%", seed=3)
    b = make_splits(digits, "random:0.1", seed=3)
    c = make_splits(digits, "random:10%", seed=4)
    assert np.array_equal(a.forget_idx, b.forget_idx)
    assert a.hashes() == b.hashes() and a.hashes() != c.hashes()
    assert len(a.forget_idx) == round(0.1 * len(digits.train))
    assert len(np.intersect1d(a.forget_idx, a.retain_idx)) == 0
    assert len(a.forget_idx) + len(a.retain_idx) == len(digits.train)
    assert a.info["forget_hash"] == index_hash(a.forget_idx)


def test_class_and_subclass_requests(digits):
    s = make_splits(digits, "class:3", seed=0)
    assert (s.forget.y == 3).all() and (s.retain.y != 3).all()
    assert (s.extra["forget_test"].y == 3).all() and (s.extra["retain_test"].y != 3).all()
    sub = make_splits(digits, "subclass:3:bright", seed=0)
    assert (sub.forget.y == 3).all()
    assert 0.4 < len(sub.forget) / len(s.forget) <= 0.6
    dark = make_splits(digits, "subclass:3:dark", seed=0)
    assert len(np.intersect1d(sub.forget_idx, dark.forget_idx)) == 0


def test_class_names_resolve(digits):
    fm_classes = vdata.FASHION_CLASSES
    assert parse_forget_rule("class:Shirt", fm_classes).cls == 6
    assert parse_forget_rule("class:t-shirt", fm_classes).cls == 0
    assert parse_forget_rule("class:6", fm_classes).describe(fm_classes) == "class:Shirt"


@pytest.mark.parametrize("fmt", ["txt", "json", "npy"])
def test_indices_file_formats(digits, tmp_path, fmt):
    idx = [5, 1, 9]
    p = tmp_path / f"f.{fmt}"
    if fmt == "txt":
        p.write_text("5\n1\n9\n")
    elif fmt == "json":
        p.write_text(json.dumps(idx))
    else:
        np.save(p, np.array(idx))
    s = make_splits(digits, f"indices:{p}", seed=0)
    assert s.forget_idx.tolist() == [1, 5, 9]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no indices"),
        ("1\n1\n", "more than once"),
        ("-1\n", "out of range"),
        ("99999\n", "out of range"),
        ("a\n", "integer"),
    ],
)
def test_bad_indices_files(digits, tmp_path, content, message):
    p = tmp_path / "f.txt"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        make_splits(digits, f"indices:{p}", seed=0)


def test_forget_everything_is_refused(digits, tmp_path):
    p = tmp_path / "all.txt"
    p.write_text("\n".join(str(i) for i in range(len(digits.train))))
    with pytest.raises(ValueError, match="nothing would be left"):
        make_splits(digits, f"indices:{p}", seed=0)


@pytest.mark.parametrize(
    "rule",
    [
        "random:0",
        "random:1.5",
        "randm:10%",
        "class:12",
        "class:Hat",
        "subclass:3:shiny",
        "indices:",
    ],
)
def test_bad_rules(rule):
    with pytest.raises(ValueError):
        parse_forget_rule(rule, tuple(str(i) for i in range(10)))


def test_missing_fashion_mnist_names_all_three_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(vdata, "DEBIAN_DIR", tmp_path / "nope")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as e:
        vdata._find_fashion(None, download=False)
    msg = str(e.value)
    assert (
        "--data-dir" in msg and "apt-get install dataset-fashion-mnist" in msg and "download" in msg
    )


def test_corrupted_fashion_file_is_refused(tmp_path):
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2])))
    with pytest.raises(ValueError, match="SHA-256"):
        vdata._read_checked(bad, vdata.FASHION_FILES["train-labels-idx1-ubyte.gz"])
