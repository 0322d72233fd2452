import hashlib

import numpy as np
import pytest
from PIL import Image

import clipwb.data.builders as B
from clipwb.data.typographic import draw_from_record
from clipwb.world import World


def _digest(out_dir):
    h = hashlib.sha256()
    for p in sorted((out_dir / "images").iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest() + hashlib.sha256((out_dir / "manifest.csv").read_bytes()).hexdigest()


def _folder(root, n_per=3, classes=("apple", "bread", "cake")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per):
            Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_world_build_is_deterministic_and_faithful(tmp_path):
    items, classes = B.world_source(World(), 20, "train")
    cfg = B.TypoBuildConfig(k=2, chunk=6)
    r1 = B.build_typographic(items, classes, tmp_path / "a", cfg, progress=False)
    r2 = B.build_typographic(items, classes, tmp_path / "b", cfg, progress=False)
    assert (r1.n_images, r1.n_variants, r1.skipped_corrupt) == (20, 40, [])
    assert (r2.n_images, r2.n_variants) == (r1.n_images, r1.n_variants)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    rows = B.read_manifest(tmp_path / "a")
    by_id = {it.image_id: it for it in items}
    for row in rows:
        assert row["written_label"] != row["true_label"] and classes[int(row["written_label"])] == row["text"]
        saved = np.asarray(Image.open(tmp_path / "a" / row["file"]))
        redrawn = draw_from_record(by_id[row["image_id"]].load(), row)
        assert np.array_equal(saved, np.asarray(redrawn)), row["file"]


def test_interrupted_build_resumes_to_the_same_result_and_finished_build_is_not_redone(tmp_path, monkeypatch):
    items, classes = B.world_source(World(), 12, "train")
    cfg = B.TypoBuildConfig(k=1, chunk=4)
    ref = B.build_typographic(items, classes, tmp_path / "ref", cfg, progress=False)
    real, calls = B.make_attack, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # in the middle of the second chunk
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(B, "make_attack", dying)
    with pytest.raises(KeyboardInterrupt):
        B.build_typographic(items, classes, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "manifest.csv").exists()
    monkeypatch.setattr(B, "make_attack", real)
    res = B.build_typographic(items, classes, tmp_path / "run", cfg, progress=False)
    assert res.resumed_chunks == 1 and res.n_variants == ref.n_variants
    assert _digest(tmp_path / "run") == _digest(tmp_path / "ref")
    monkeypatch.setattr(B, "make_attack", lambda *a, **k: pytest.fail("a finished build was redone"))
    again = B.build_typographic(items, classes, tmp_path / "run", cfg, progress=False)
    assert again.already_done and again.n_variants == ref.n_variants
    with pytest.raises(FileExistsError, match="different finished build"):
        B.build_typographic(items, classes, tmp_path / "run", B.TypoBuildConfig(k=2, chunk=4), progress=False)


def test_folder_source_with_corrupt_image_and_class_names_file(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "bread" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "names.txt").write_text("green apple\nrye bread\ncheese cake\n")
    items, classes = B.folder_source(root, tmp_path / "names.txt")
    assert classes == ("green apple", "rye bread", "cheese cake") and len(items) == 10
    res = B.build_typographic(items, classes, tmp_path / "out", B.TypoBuildConfig(k=3, image_size=64),
                              progress=False)
    assert res.n_images == 9 and res.n_variants == 27 and len(res.skipped_corrupt) == 1
    assert "broken.jpg" in res.skipped_corrupt[0]
    sizes = {Image.open(tmp_path / "out" / r["file"]).size for r in B.read_manifest(tmp_path / "out")}
    assert sizes == {(64, 64)}


def test_folder_source_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/<class>/<image>"):
        B.folder_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        B.folder_source(tmp_path / "empty")
    root = _folder(tmp_path / "imgs")
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="3 class folders"):
        B.folder_source(root, tmp_path / "two.txt")
    (tmp_path / "dup.txt").write_text("a\na\nb\n")
    with pytest.raises(ValueError, match="duplicate class names"):
        B.folder_source(root, tmp_path / "dup.txt")
    with pytest.raises(ValueError, match="k must be >= 1"):
        B.TypoBuildConfig(k=0)
    with pytest.raises(FileNotFoundError, match="not a finished typographic build"):
        B.read_manifest(tmp_path / "empty")


def test_held_out_split_shares_no_source_and_dataset_yields_pairs(tmp_path):
    world = World()
    items, classes = B.world_source(world, 30, "train")
    train, test = B.split_items(items, 0.3, seed=1)
    assert not {i.source for i in train} & {i.source for i in test} and len(train) + len(test) == 30
    B.build_typographic(test, classes, tmp_path / "test", B.TypoBuildConfig(k=2), progress=False)
    ds = B.TypographicDataset(tmp_path / "test", world=world)
    assert len(ds) == 2 * len(test)
    clean, typo, y, yw = ds[3]
    row = ds.rows[3]
    src = next(i for i in test if i.source == row["source"])
    assert np.array_equal(np.asarray(clean), np.asarray(src.load())) and y == src.label and yw != y
    assert np.array_equal(np.asarray(typo), np.asarray(draw_from_record(clean, row)))
    with pytest.raises(ValueError, match="pass world=World"):
        B.TypographicDataset(tmp_path / "test")
    with pytest.raises(ValueError, match="test_frac"):
        B.split_items(items, 1.0)


def test_folder_dataset_resizes_clean_like_the_build(tmp_path):
    root = _folder(tmp_path / "imgs")
    items, classes = B.folder_source(root)
    B.build_typographic(items, classes, tmp_path / "out", B.TypoBuildConfig(image_size=32), progress=False)
    clean, typo, y, yw = B.TypographicDataset(tmp_path / "out")[0]
    assert clean.size == typo.size == (32, 32) and classes[y] == "apple"


def test_held_out_attacks_use_only_held_out_fonts_and_words_and_arrays_match(tmp_path):
    from clipwb.data.typographic import TypoRenderConfig, split_attacks

    world = World()
    classes = world.classes
    sp = split_attacks(classes, word_frac=0.25, seed=0)
    train_items, _ = B.world_source(world, 24, "train")
    test_items, _ = B.world_source(world, 24, "test")
    assert not {i.source for i in train_items} & {i.source for i in test_items}
    words = lambda idx: tuple(classes[i] for i in idx)  # noqa: E731
    B.build_typographic(train_items, classes, tmp_path / "tr", B.TypoBuildConfig(
        k=2, written_classes=words(sp.train_words), render=TypoRenderConfig(fonts=sp.train_fonts)), progress=False)
    B.build_typographic(test_items, classes, tmp_path / "te", B.TypoBuildConfig(
        k=2, written_classes=words(sp.test_words), render=TypoRenderConfig(fonts=sp.test_fonts)), progress=False)
    tr, te = B.read_manifest(tmp_path / "tr"), B.read_manifest(tmp_path / "te")
    assert {r["text"] for r in tr} <= set(words(sp.train_words)) and {r["text"] for r in te} <= set(words(sp.test_words))
    assert not {r["text_font"] for r in tr} & {r["text_font"] for r in te}
    assert {r["text_font"] for r in te} <= set(sp.test_fonts)
    ds = B.TypographicDataset(tmp_path / "te", world=world)
    arr = ds.arrays()
    assert arr["clean"].shape == arr["typo"].shape == (48, 64, 64, 3) and ds.classes == list(classes)
    # a typed container with read-only mapping access to the arrays it holds
    assert isinstance(arr, B.PreferencePairs) and arr.n == 48 and arr.typo is arr["typo"]
    assert set(arr) == {"clean", "typo", "true", "written", "control", "source"} and dict(arr)["true"] is arr.true
    with pytest.raises(KeyError, match="this set holds"):
        arr["label"]
    for i in (0, 17, 47):
        clean, typo, y, yw = ds[i]
        assert np.array_equal(arr["clean"][i], np.asarray(clean)) and np.array_equal(arr["typo"][i], np.asarray(typo))
        assert (arr["true"][i], arr["written"][i]) == (y, yw)
    with pytest.raises(ValueError, match="not in the class list"):
        B.build_typographic(test_items, classes, tmp_path / "bad", B.TypoBuildConfig(written_classes=("nope", "moon")),
                            progress=False)


def test_exported_world_folder_roundtrips_through_the_folder_path(tmp_path):
    world = World()
    batch = world.generate(10, "test", "object")
    y = batch.labels("class_name", world.classes)
    root = B.export_image_folder(batch.images, y, world.classes, tmp_path / "folder")
    (root / world.classes[y[0]] / "broken.png").write_bytes(b"\x89PNG not really")
    items, classes = B.folder_source(root)
    r = B.build_typographic(items, classes, tmp_path / "out", B.TypoBuildConfig(k=1, image_size=64), progress=False)
    assert r.n_images == 10 and len(r.skipped_corrupt) == 1 and "broken.png" in r.skipped_corrupt[0]
    arr = B.TypographicDataset(tmp_path / "out").arrays()
    assert sorted(classes[t] for t in arr["true"]) == sorted(world.classes[t] for t in y)
    assert {tuple(a.tobytes() for a in [img]) for img in arr["clean"]} == {(img.tobytes(),) for img in batch.images}


def test_standard_attack_sets_are_disjoint_cached_and_hold_out_fonts_and_words(tmp_path):
    from clipwb.data.sets import AttackSetsConfig, build_attack_sets, source_items
    from clipwb.data.typographic import split_attacks

    world = World()
    train, test, classes = source_items("world", world=world, n_train=16, n_test=8)
    cfg = AttackSetsConfig(k=2, k_test=1)
    sets = build_attack_sets(train, test, classes, tmp_path, cfg, world=world, progress=False)
    assert [sets[n].n_variants for n in ("train", "test", "test_heldout", "test_note")] == [32, 8, 8, 8]
    rows = {n: B.read_manifest(r.out_dir) for n, r in sets.items()}
    assert not {r["source"] for r in rows["train"]} & {r["source"] for r in rows["test"]}
    sp = split_attacks(classes, word_frac=cfg.word_frac, seed=cfg.seed)
    assert {int(r["written_label"]) for r in rows["train"] + rows["test"]} <= set(sp.train_words)
    assert {int(r["written_label"]) for r in rows["test_heldout"]} <= set(sp.test_words)
    assert {r["text_font"] for r in rows["test_heldout"]} <= set(sp.test_fonts)
    # the world's text scale and placement, and the note style only in the note set
    lo, hi = world.config.text_size
    assert all(int(r["text_size"]) <= round(hi * 64) for n in rows for r in rows[n])
    assert {r["text_style"] for n in ("train", "test", "test_heldout") for r in rows[n]} == {"plain"}
    assert {r["text_style"] for r in rows["test_note"]} == {"note"}
    assert {int(r["written_label"]) for r in rows["test_note"]} <= set(sp.train_words)
    # the world's placement ("beside"): every word's block is centred above or below its object, not on it
    assert world.config.text_placement == "beside"
    boxes = {it.source: it.box for it in train + test}
    for r in (r for n in rows for r in rows[n]):
        x0, y0, x1, y1 = boxes[r["source"]]
        cy = int(r["block_y"]) + int(r["block_h"]) / 2
        assert cy <= y0 + 1 or cy >= y1 - 1, (r["source"], cy, y0, y1)
    # every variant has its control image: a non-class word, and the same pixels outside the text block
    for n, r in sets.items():
        arr = B.TypographicDataset(r.out_dir, world=world).arrays()
        assert arr["control"].shape == arr["typo"].shape
        for row, t, c in zip(rows[n], arr["typo"], arr["control"]):
            assert row["control_text"] not in classes and row["text"] in classes
            block = np.zeros(t.shape[:2], bool)
            y, x, h, w = (int(row[k]) for k in ("block_y", "block_x", "block_h", "block_w"))
            block[y:y + h + 1, x:x + w + 1] = True
            assert not ((t != c).any(-1) & ~block).any()
    again = build_attack_sets(train, test, classes, tmp_path, cfg, world=world, progress=False)
    assert all(r.already_done for r in again.values())
    with pytest.raises(ValueError, match="both the training and held-out"):
        build_attack_sets(train, train[:2], classes, tmp_path, cfg, world=world, progress=False)


def test_the_unseen_family_uses_fonts_and_words_nothing_else_uses(tmp_path):
    """test_unseen: held-out images, held-out words, typefaces of fonts-open-sans / fonts-cantarell, controls
    with words outside every word list; a clear error naming the packages where the fonts are missing."""
    import clipwb.data.typographic as T
    from clipwb.data.builders import read_manifest
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.world import World
    from clipwb.world import generator as G

    world = World()
    used = {w.lower() for w in (*world.classes, *world.genders, *world.occupations, *G.OTHER_WORDS)}
    assert not used & set(T.UNSEEN_CONTROL_WORDS)
    if not T.unseen_fonts(required=False):
        with pytest.raises(FileNotFoundError, match="fonts-open-sans and fonts-cantarell"):
            T.unseen_fonts()
        pytest.skip("Debian's fonts-open-sans / fonts-cantarell are not installed (.ci/run installs them)")
    from clipwb.world.text import DEFAULT_FONTS

    assert not {f.rsplit("/", 1)[-1] for f in T.UNSEEN_FONTS} & set(DEFAULT_FONTS + T.TYPO_FONTS + T.HELDOUT_FONTS)
    classes, sets, builds = attack_arrays("world", world=world, n_train=16, n_test=12,
                                          cfg=AttackSetsConfig(k=1, seed=0, unseen=True), root=tmp_path,
                                          progress=False)
    rows = read_manifest(builds["test_unseen"].out_dir)
    unseen_names = {f.rsplit("/", 1)[-1] for f in T.UNSEEN_FONTS}
    assert {r["text_font"] for r in rows} <= unseen_names and len({r["text_font"] for r in rows}) > 1
    assert {r["control_text"] for r in rows} <= set(T.UNSEEN_CONTROL_WORDS)
    train_words = {r["text"] for r in read_manifest(builds["train"].out_dir)}
    assert {r["text"] for r in rows} <= set(classes) and not {r["text"] for r in rows} & train_words
    assert {r["source"] for r in rows} == {r["source"] for r in read_manifest(builds["test"].out_dir)}
    assert len(sets["test_unseen"]["typo"]) == 12 and "control" in sets["test_unseen"]
