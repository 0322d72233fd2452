import time

import numpy as np
import pytest
from PIL import Image

from clipwb.data.real import load_real_typographic


def _make(root, rows, classes=None):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f, *_ in rows:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / f)
    (root / "labels.csv").write_text("file,true,written\n" + "".join(f"{f},{t},{w}\n" for f, t, w in rows))
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_loads_the_documented_layout(tmp_path):
    rows = [("img/a.jpg", "apple", "ipod"), ("img/b.png", "ipod", "apple"), ("c.png", "dog", "library"),
            ("d.png", "apple", "")]
    ds = load_real_typographic(_make(tmp_path / "paint", rows), "paint")
    assert ds.classes == ("apple", "dog", "ipod") and len(ds) == 4
    assert ds.true.tolist() == [0, 2, 1, 0] and ds.written.tolist() == [2, 0, -1, -1]
    (tmp_path / "paint" / "c.png").write_bytes(b"garbage")
    arr = ds.arrays(size=24)
    assert arr["typo"].shape == (3, 24, 24, 3) and arr["true"].tolist() == [0, 2, 0]
    assert arr["written"].tolist() == [2, 0, -1] and len(arr["skipped_corrupt"]) == 1
    ds2 = load_real_typographic(_make(tmp_path / "rta", rows[:2], classes=["ipod", "apple", "pear"]))
    assert ds2.classes == ("ipod", "apple", "pear") and ds2.true.tolist() == [1, 0] and ds2.name == "rta"


def test_missing_path_names_the_layout_fast(tmp_path):
    t = time.time()
    with pytest.raises(FileNotFoundError, match="labels.csv with header 'file,true,written'") as e:
        load_real_typographic(tmp_path / "nope", "rta-100")
    assert "RTA-100" in str(e.value) and time.time() - t < 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="labels.csv is missing"):
        load_real_typographic(tmp_path / "empty", "disentangling")


def test_bad_label_files(tmp_path):
    root = _make(tmp_path / "a", [("x.png", "cat", "dog"), ("y.png", "dog", "cat")])
    (root / "labels.csv").write_text("image,label\nx.png,cat\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_real_typographic(root)
    (root / "labels.csv").write_text("file,true,written\nx.png,cat,dog\nz.png,dog,cat\n")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_real_typographic(root)
    (root / "labels.csv").write_text("file,true,written\nx.png,cat,dog\ny.png,owl,cat\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="not in the class list"):
        load_real_typographic(root)
    (root / "classes.txt").write_text("cat\ncat\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_real_typographic(root)
    (root / "labels.csv").write_text("file,true,written\n")
    with pytest.raises(ValueError, match="no rows"):
        load_real_typographic(root)


def test_typographic_metrics_on_a_real_layout_with_the_tiny_model(tmp_path, tiny):
    """World images written out in the real-set layout: the metrics equal a direct computation, and rows whose
    written word is not a class are left out of the attack-success rate only."""
    from clipwb.evaluation.typographic import typographic_metrics
    from clipwb.evaluation.zeroshot import zero_shot_logits
    from clipwb.world import World

    world = World()
    b = world.generate(24, "test", "typographic")
    root = tmp_path / "set"
    root.mkdir()
    rows = []
    for i, (img, r) in enumerate(zip(b.images, b.records)):
        Image.fromarray(img).save(root / f"{i}.png")
        rows.append(f"{i}.png,{r['class_name']},{r['text'] if i % 3 else 'not-a-class'}\n")
    (root / "labels.csv").write_text("file,true,written\n" + "".join(rows))
    (root / "classes.txt").write_text("\n".join(world.classes))
    ds = load_real_typographic(root, "disentangling")
    arr = ds.arrays(size=64)
    m = typographic_metrics(tiny.model, tiny.tokenizer, ds.classes, arr["typo"], arr["true"], arr["written"])
    pred = zero_shot_logits(tiny.model, tiny.tokenizer, b.images, world.classes).argmax(-1).numpy()
    y = np.array(b.labels("class_name", world.classes))
    yw = np.array(b.labels("text", world.classes))
    keep = np.arange(24) % 3 != 0
    assert m["n"] == 24 and m["n_attack"] == keep.sum()
    assert m["typo_top1"] == pytest.approx((pred == y).mean())
    assert m["attack_success_rate"] == pytest.approx((pred[keep] == yw[keep]).mean())
