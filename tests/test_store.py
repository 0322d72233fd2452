"""Streamed data: arrays written once to disk and read a batch at a time (clipwb.data.store), the typographic sets
stored that way, and PO training from them bit-identical to training from arrays in memory (also with DataLoader
workers)."""
import pickle

import numpy as np
import pytest
import torch

from clipwb.cache import fingerprint
from clipwb.data.builders import TypographicDataset
from clipwb.data.sets import AttackSetsConfig, attack_arrays
from clipwb.data.store import DiskArray, DiskArrayWriter, write_disk_array
from clipwb.training.po_trainer import POConfig, data_fingerprint, train_po
from clipwb.world import World


@pytest.fixture
def arr():
    return np.random.default_rng(0).integers(0, 256, size=(37, 5, 4, 3), dtype=np.uint8)


def test_rows_read_back_exactly_whatever_the_index(tmp_path, arr):
    d = write_disk_array(tmp_path / "a", arr, chunk=8)
    assert len(d) == 37 and d.shape == arr.shape and d.dtype == np.uint8 and d.nbytes == arr.nbytes
    idx = np.array([36, 0, 5, 5, 6, 7, 1, 30, -1])
    for key in (3, -2, np.int64(10), slice(None), slice(4, 20), slice(30, 100), slice(None, None, 3),
                slice(20, 2, -4), idx, idx.tolist(), np.arange(37) % 2 == 0, idx.reshape(3, 3), np.array([], int)):
        np.testing.assert_array_equal(d[key], arr[key], err_msg=str(key))
    np.testing.assert_array_equal(d[idx, 1:3], arr[idx, 1:3])
    np.testing.assert_array_equal(d.load(), arr)
    with pytest.raises(IndexError):
        d[37]
    with pytest.raises(IndexError):
        d[np.array([0.5])]


def test_whole_array_conversion_is_refused_so_nothing_loads_everything_by_accident(tmp_path, arr):
    d = write_disk_array(tmp_path / "a", arr)
    with pytest.raises(TypeError, match=r"\.load\(\)"):
        np.asarray(d)


def test_an_interrupted_write_leaves_no_array_and_a_damaged_file_is_named(tmp_path, arr):
    with pytest.raises(RuntimeError):
        with DiskArrayWriter(tmp_path / "a") as w:
            w.append(arr[:10])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="DiskArrayWriter"):
        DiskArray(tmp_path / "a")
    write_disk_array(tmp_path / "a", arr)
    with open(tmp_path / "a.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="damaged"):
        DiskArray(tmp_path / "a")
    with DiskArrayWriter(tmp_path / "b") as w:
        w.append(arr[:3])
        with pytest.raises(ValueError, match="one size"):
            w.append(np.zeros((2, 6, 4, 3), np.uint8))
        with pytest.raises(ValueError, match="dtype"):
            w.append(arr[:2].astype(np.float32))
        w.append(arr[3])  # one row once the row shape is known
    np.testing.assert_array_equal(DiskArray(tmp_path / "b").load(), arr[:4])


def test_the_digest_names_the_content_and_survives_pickling(tmp_path, arr):
    a = write_disk_array(tmp_path / "a", arr)
    b = write_disk_array(tmp_path / "b", arr.copy())
    other = arr.copy()
    other[17, 2, 2, 1] ^= 1
    c = write_disk_array(tmp_path / "c", other)
    assert a.digest == b.digest != c.digest
    assert fingerprint({"x": a}) == fingerprint({"x": b}) != fingerprint({"x": c})
    a[0]  # opens the descriptor
    a2 = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a2[[3, 1]], arr[[3, 1]])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    kw = dict(world=World(), n_train=24, n_test=8, cfg=AttackSetsConfig(k=2), root=root, progress=False)
    classes, mem, builds = attack_arrays("world", **kw)
    _, disk, _ = attack_arrays("world", storage="disk", **kw)
    return classes, mem, disk, builds


def test_stored_sets_equal_the_arrays_in_memory_and_are_written_once(sets):
    classes, mem, disk, builds = sets
    assert set(mem) == set(disk)
    for name in mem:
        assert isinstance(disk[name]["typo"], DiskArray) and isinstance(disk[name]["clean"], DiskArray)
        for key in ("clean", "typo", "control"):
            np.testing.assert_array_equal(disk[name][key].load(), mem[name][key], err_msg=f"{name}/{key}")
        for key in ("true", "written"):
            np.testing.assert_array_equal(disk[name][key], mem[name][key])
        assert disk[name]["source"] == mem[name]["source"]
    path = disk["train"]["typo"].path
    mtime = path.stat().st_mtime_ns
    again = TypographicDataset(builds["train"].out_dir, world=World()).stored()
    assert path.stat().st_mtime_ns == mtime and again["typo"].digest == disk["train"]["typo"].digest
    assert data_fingerprint(disk["train"]) != data_fingerprint(mem["train"])  # names content differently...
    assert data_fingerprint(disk["train"]) == data_fingerprint(again)  # ...but stably


def test_training_from_disk_is_bit_identical_to_training_from_memory(tiny, sets):
    classes, mem, disk, _ = sets
    cfg = POConfig(method="dpo", lr=1e-3, batch_size=8, epochs=1, device="cpu", precision="fp32")
    a = train_po(tiny.model, tiny.tokenizer, classes, mem["train"], cfg, progress=False)
    b = train_po(tiny.model, tiny.tokenizer, classes, disk["train"], cfg, progress=False)
    c = train_po(tiny.model, tiny.tokenizer, classes, disk["train"], POConfig(**{**cfg.__dict__, "num_workers": 2}),
                 progress=False)
    assert a.steps == b.steps == c.steps == 6
    for other in (b, c):
        for (k, v), w in zip(a.model.state_dict().items(), other.model.state_dict().values()):
            assert torch.equal(v, w), k
        for v, w in zip(a.avg_model.state_dict().values(), other.avg_model.state_dict().values()):
            assert torch.equal(v, w)
        assert [r["loss"] for r in a.log] == [r["loss"] for r in other.log]


@pytest.mark.parametrize("damage", ["bytes-changed", "array-truncated", "header-garbage", "labels-truncated"])
def test_a_damaged_stored_set_is_named_and_written_again(sets, tmp_path, caplog, damage):
    """Bytes changed in place (same size) are caught by the digest when the store is opened for training; a
    truncated array or labels.json is rewritten from the build instead of failing every later run."""
    import shutil

    classes, mem, disk, builds = sets
    build = tmp_path / "build"
    shutil.copytree(builds["train"].out_dir, build)
    ds = TypographicDataset(build, world=World())
    first = ds.stored()
    typo = first["typo"].path
    if damage == "bytes-changed":
        raw = bytearray(typo.read_bytes())
        raw[100:110] = bytes(255 - b for b in raw[100:110])
        typo.write_bytes(bytes(raw))
    elif damage == "array-truncated":
        typo.write_bytes(typo.read_bytes()[:1000])
    elif damage == "header-garbage":
        typo.with_suffix(".json").write_text('{"shape": [24, 64')
    else:
        (build / "arrays" / "labels.json").write_text('{"rows": 48, "tr')
    with caplog.at_level("WARNING"):
        again = TypographicDataset(build, world=World()).stored()
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(build / "arrays") in warned[0]
    np.testing.assert_array_equal(again["typo"].load(), mem["train"]["typo"])
    again["typo"].verify()
    # a standalone array with changed bytes is refused by verify, naming the file
    raw = bytearray(typo.read_bytes())
    raw[5] ^= 0xFF
    typo.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"typo.* does not match the digest"):
        DiskArray(typo).verify()
