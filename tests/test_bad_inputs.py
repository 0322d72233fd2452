"""Bad inputs, table-driven: through the command line (``clipwb.cli.main``, exit code 2 and one line naming the
problem) and through the API (a clear exception), and what is on disk afterwards (nothing already written lost or
half-written). Plus the inputs that used to give silently wrong results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipwb.cli import build_parser, main
from clipwb.config import ConfigError, load_yaml, with_overrides

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder`` (the state to compare before and after)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- fixtures that build the bad inputs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny):
    """A good open_clip local dir and broken copies of it."""
    from clipwb.models import save_model

    root = tmp_path_factory.mktemp("models")
    save_model(tiny.model, root / "good", tiny.name)
    w = (root / "good" / "open_clip_model.safetensors").read_bytes()
    cfg = (root / "good" / "open_clip_config.json").read_text()
    for name, weights in (("noweights", None), ("truncated", w[: len(w) // 3]), ("garbage", b"not weights " * 50),
                          ("empty", b"")):
        (root / name).mkdir()
        (root / name / "open_clip_config.json").write_text(cfg)
        if weights is not None:
            (root / name / "open_clip_model.safetensors").write_bytes(weights)
    torch.save(tiny.model.state_dict(), root / "tiny.pt")
    full = (root / "tiny.pt").read_bytes()
    (root / "truncated.pt").write_bytes(full[: len(full) // 2])
    (root / "text.pt").write_text("these are not weights\n")
    return root


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# Each case: id, a function (tmp_path, model_dirs) -> (argv, folder whose state must not change or None),
# and a regex the one-line error must match.
CLI_CASES = [
    ("eval-n-zero", lambda t, m: (["eval", "--n", "0"], None), r"--n must be >= 1"),
    ("eval-n-huge", lambda t, m: (["eval", "--n", str(10 ** 12)], None), r"--n .* GiB of memory.*lower --n"),
    ("eval-device-cuda-without-gpu", lambda t, m: (["eval", "--n", "4", "--device", "cuda"], None),
     r"no usable CUDA GPU.*--device cpu"),
    ("eval-device-garbage", lambda t, m: (["eval", "--n", "4", "--device", "gpu7"], None), r"unknown device 'gpu7'"),
    ("local-dir-without-weights", lambda t, m: (["eval", "--n", "4", "--model", f"local-dir:{m / 'noweights'}"],
                                                m / "noweights"), r"no weights .*randomly initialised"),
    ("local-dir-truncated-safetensors",
     lambda t, m: (["eval", "--n", "4", "--model", f"local-dir:{m / 'truncated'}"], m / "truncated"),
     r"truncated\W+open_clip_model.safetensors is not a readable safetensors file"),
    ("local-dir-garbage-safetensors",
     lambda t, m: (["eval", "--n", "4", "--model", f"local-dir:{m / 'garbage'}"], m / "garbage"),
     r"garbage\W+open_clip_model.safetensors is not a readable safetensors"),
    ("local-dir-empty-weights", lambda t, m: (["eval", "--n", "4", "--model", f"local-dir:{m / 'empty'}"], None),
     r"is empty"),
    ("truncated-checkpoint-pt", lambda t, m: (["eval", "--n", "4", "--model", f"clipwb-tiny:{m / 'truncated.pt'}"],
                                              None), r"truncated\.pt is a truncated torch zip archive"),
    ("text-file-as-checkpoint", lambda t, m: (["eval", "--n", "4", "--model", f"clipwb-tiny:{m / 'text.pt'}"],
                                              None), r"text\.pt is neither a torch checkpoint"),
    ("checkpoint-of-another-architecture",
     lambda t, m: (["eval", "--n", "4", "--model", f"ViT-B-32:{m / 'tiny.pt'}"], None),
     r"do not fit the architecture ViT-B-32"),
    ("yaml-syntax-error", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "lr: [1e-3\nepochs: 1\n")],
                                        None), r"c\.yaml is not valid YAML at line \d+"),
    ("yaml-float-for-int", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "epochs: 1.5\n")], None),
     r"c\.yaml: option epochs expects int, got 1\.5"),
    ("yaml-text-for-float", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "lr: fast\n")], None),
     r"option lr expects float, got 'fast'"),
    ("yaml-list-not-mapping", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "- lr\n")], None),
     r"must hold a mapping"),
    ("yaml-unknown-option", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "learning_rate: 1\n")],
                                          None), r"unknown option\(s\) \['learning_rate'\]"),
    ("negative-beta", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "beta: -1\n")], None),
     r"beta must be > 0"),
    ("negative-lam", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "lam: -0.5\n")], None),
     r"lam must be >= 0"),
    ("negative-warmup", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "warmup: -3\n")], None),
     r"warmup must be >= 0"),
    ("empty-templates", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "templates: []\n")], None),
     r"templates must be a non-empty list"),
    ("unknown-precision", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "precision: fp8\n")], None),
     r"precision must be one of"),
    ("config-device-cuda", lambda t, m: (["train-po", "--config", _write(t / "c.yaml", "device: cuda\n")], None),
     r"no usable CUDA GPU"),
    ("n-train-zero", lambda t, m: (["train-po", "--n-train", "0"], None), r"--n-train must be >= 1"),
    ("k-zero", lambda t, m: (["train-po", "--k", "0"], None), r"--k must be >= 1"),
    ("data-folder-missing", lambda t, m: (["train-po", "--data", str(t / "nope")], None), r"no such folder"),
    ("image-size-zero", lambda t, m: (["train-po", "--data", str(t), "--image-size", "0"], None),
     r"--image-size must be .*at least 16 px, got 0: the size is wrong, not the images"),
    ("eval-image-size-8", lambda t, m: (["eval", "--data", str(_folder(t)), "--image-size", "8"], None),
     r"--image-size must be .*at least 16 px, got 8"),
    ("eval-negative-seed", lambda t, m: (["eval", "--n", "4", "--seed", "-1"], None),
     r"--seed must be a non-negative integer .*got -1"),
    ("train-po-negative-seed", lambda t, m: (["train-po", "--seed", "-1"], None),
     r"--seed must be a non-negative integer .*got -1"),
    ("build-typo-negative-seed", lambda t, m: (["build-typo", "--out", str(t / "b"), "--seed", "-3"], None),
     r"--seed must be a non-negative integer"),
    ("local-dir-null-config", lambda t, m: (["eval", "--n", "4", "--model", f"local-dir:{_null_cfg(m)}"],
                                            m / "nullcfg"), r"nullcfg\W+open_clip_config\.json holds NoneType that "
                                                            r"is not a JSON object"),
    ("weights-path-broken-config", lambda t, m: (["eval", "--n", "4", "--model",
                                                  str(_broken_cfg(m) / "open_clip_model.safetensors")], None),
     r"brokencfg\W+open_clip_config\.json is not valid JSON"),
    ("report-to-unwritable", lambda t, m: (["train-po", "--n-train", "8", "--report-to", "tensorboard", "--out",
                                            str(_tb_file(t))], t / "tb"),
     r"TensorBoard folder .*tensorboard is an existing file"),
    ("out-is-a-file", lambda t, m: (["train-po", "--n-train", "8", "--out", _write(t / "out.txt", "keep me")],
                                    t / "out.txt"), r"out\.txt is an existing file, not a folder"),
    ("out-holds-a-previous-run", lambda t, m: (["train-po", "--n-train", "8", "--out", str(_prev_run(t))],
                                               t / "prev"), r"already holds a run .*--resume .*--overwrite"),
    ("resume-without-checkpoint", lambda t, m: (["train-po", "--n-train", "8", "--out", str(t / "fresh"),
                                                 "--resume"], None), r"no checkpoint at .*nothing to resume"),
    ("resume-without-out", lambda t, m: (["train-po", "--resume"], None), r"--resume needs --out"),
    ("pretrain-steps-zero", lambda t, m: (["pretrain", "--config", _write(t / "p.yaml", "steps: 0\n")], None),
     r"steps must be >= 1"),
    ("report-unknown-notebook", lambda t, m: (["report", "--only", "99", "--out", str(t / "r")], None),
     r"no notebook matches \['99'\]"),
    ("report-out-is-a-file", lambda t, m: (["report", "--only", "00", "--out", _write(t / "r.txt", "x")],
                                           t / "r.txt"), r"r\.txt is an existing file"),
]


def _folder(t: Path) -> Path:
    for c in ("cat", "dog"):
        (t / "imgs" / c).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200, 10, 10)).save(t / "imgs" / c / "a.png")
    return t / "imgs"


def _null_cfg(m: Path) -> Path:
    import shutil

    if not (m / "nullcfg").exists():
        shutil.copytree(m / "good", m / "nullcfg")
        (m / "nullcfg" / "open_clip_config.json").write_text("null")
    return m / "nullcfg"


def _broken_cfg(m: Path) -> Path:
    import shutil

    if not (m / "brokencfg").exists():
        shutil.copytree(m / "good", m / "brokencfg")
        (m / "brokencfg" / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim"')
    return m / "brokencfg"


def _tb_file(t: Path) -> Path:
    (t / "tb").mkdir()
    (t / "tb" / "tensorboard").write_text("a file where the events folder goes")
    return t / "tb"


def _prev_run(t: Path) -> Path:
    (t / "prev" / "raw").mkdir(parents=True)
    (t / "prev" / "log.json").write_text("[]")
    (t / "prev" / "raw" / "open_clip_model.safetensors").write_bytes(b"earlier weights")
    return t / "prev"


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_clear_line(case, tmp_path, model_dirs, capsys, monkeypatch):
    monkeypatch.delenv("CLIPWB_NO_PROGRESS", raising=False)
    _, setup, pattern = case
    argv, keep = setup(tmp_path, model_dirs)
    before = snapshot(keep) if keep is not None else None
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clipwb {argv[0]}: error: "), err
    assert __import__("re").search(pattern, err), err
    if keep is not None:
        assert snapshot(keep) == before, "an input folder or file was changed by a failing command"


def test_cli_errors_come_before_any_work(tmp_path, capsys):
    """The output checks of train-po run before the data are built: no dataset appears in the cache."""
    cache = tmp_path / "cache"
    rc = main(["train-po", "--n-train", "8", "--cache-dir", str(cache), "--out", _write(tmp_path / "f", "x")])
    assert rc == 2 and not (cache / "datasets").exists()
    capsys.readouterr()


def test_report_to_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """Without tensorboard installed, --report-to tensorboard fails at once (no dataset built); with no value it is
    an argparse error, not a silent no-op."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    cache = tmp_path / "cache"
    rc = main(["train-po", "--n-train", "8", "--cache-dir", str(cache), "--report-to", "tensorboard", "--out",
               str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install tensorboard" in err, err
    assert not (cache / "datasets").exists()
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train-po", "--report-to"])
    assert e.value.code == 2 and "expected at least one argument" in capsys.readouterr().err


def test_seeds_and_image_sizes_through_the_api_name_the_parameter():
    from clipwb.data.real import RealTypographicSet
    from clipwb.data.typographic import make_attack
    from clipwb.world import World

    img = Image.new("RGB", (64, 64), "white")
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer .*got -1"):
        make_attack(img, 0, ["cat", "dog"], seed=-1, image_id=0, variant=0)
    with pytest.raises(ValueError, match=r"^variant must be a non-negative integer .*got -1"):
        make_attack(img, 0, ["cat", "dog"], seed=0, image_id=0, variant=-1)
    with pytest.raises(ValueError, match=r"WorldConfig.seed must be a non-negative integer .*got -1"):
        World(seed=-1)
    assert RealTypographicSet is not None


def test_hidden_folders_and_files_are_never_data(tmp_path):
    from clipwb.data.builders import folder_source
    from clipwb.data.sets import eval_arrays

    root = _folder(tmp_path)
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (32, 32)).save(root / ".ipynb_checkpoints" / "x.png")
    Image.new("RGB", (32, 32)).save(root / "cat" / "._a.png")  # a macOS resource fork beside the image
    items, classes = folder_source(root)
    assert classes == ("cat", "dog") and len(items) == 2
    arr = eval_arrays(root, "none", size=32)
    assert arr["classes"] == ("cat", "dog") and len(arr["images"]) == 2 and not arr["skipped_corrupt"]


def test_train_po_reports_unreadable_images(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPWB_NO_PROGRESS", "1")  # main() sets it for --no-progress; restored after the test
    root = _folder(tmp_path)
    for c in ("cat", "dog", "car", "cup"):
        (root / c).mkdir(exist_ok=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i * 40, 90, 30)).save(root / c / f"b{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    rc = main(["train-po", "--data", str(root), "--image-size", "32", "--n-train", "20", "--n-test", "2", "--k", "1",
               "--heldout-word-frac", "0.5", "--no-eval", "--no-progress",
               "--config", _write(tmp_path / "c.yaml", "batch_size: 4\nepochs: 1\n"),
               "--cache-dir", str(tmp_path / "cache")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["skipped_corrupt"] == 1
    assert "skipped 1 unreadable image(s)" in cap.err and "broken.png" in cap.err


def test_report_only_needs_a_value(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["report", "--only"])
    assert e.value.code == 2 and "--only: expected at least one argument" in capsys.readouterr().err
    from clipwb.reports import list_notebooks

    with pytest.raises(ValueError, match="only is empty"):
        list_notebooks(only=[])


def test_a_real_process_exits_2_and_prints_no_traceback(tmp_path, model_dirs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "clipwb", "eval", "--n", "4", "--model",
                        f"local-dir:{model_dirs / 'noweights'}"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no weights" in r.stderr, r.stderr


def test_every_cli_option_has_help_and_shows_its_default():
    import argparse

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in subs.items():
        text = sub.format_help()
        assert "--no-progress" in text, name
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and a.help != argparse.SUPPRESS, (name, a.option_strings)
            if a.default is not None and a.option_strings:
                assert "(default:" in text, (name, a.option_strings)


# -- the API ---------------------------------------------------------------------------------------------------
def test_yaml_numbers_written_as_strings_are_read_as_numbers(tmp_path):
    from clipwb.training.po_trainer import POConfig

    p = tmp_path / "c.yaml"
    p.write_text("lr: 1e-3\nepochs: 2.0\nbeta: '0.5'\ndrop_last: 'false'\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_yaml(POConfig(), p)
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float) and cfg.epochs == 2 and isinstance(cfg.epochs, int)
    assert cfg.beta == 0.5 and cfg.drop_last is False
    with pytest.raises(ConfigError, match="expects int"):
        with_overrides(POConfig(), epochs="three")
    with pytest.raises(ConfigError, match="cannot be null"):
        with_overrides(POConfig(), lr=None)


@pytest.mark.parametrize("kw,pattern", [
    ({"beta": -1.0}, "beta must be > 0"), ({"beta": 0.0}, "beta must be > 0"), ({"lam": -1.0}, "lam must be >= 0"),
    ({"warmup": -1}, "warmup must be >= 0"), ({"templates": ()}, "templates must be a non-empty"),
    ({"templates": ("a photo",)}, "templates must be"), ({"bma_alpha": 0.0}, "bma_alpha must be > 0"),
    ({"precision": "half"}, "precision must be one of"), ({"checkpoint_every": -2}, "checkpoint_every must be >= 0"),
])
def test_po_config_rejects_values_that_train_something_else(kw, pattern):
    from clipwb.training.po_trainer import POConfig

    with pytest.raises(ValueError, match=pattern):
        POConfig(**kw)


@pytest.mark.parametrize("size", [0, -64, 8])
def test_image_size_too_small_is_refused_before_a_build(size, tmp_path):
    from clipwb.data.builders import TypoBuildConfig
    from clipwb.data.sets import AttackSetsConfig

    with pytest.raises(ValueError, match="image_size must be"):
        TypoBuildConfig(image_size=size)
    with pytest.raises(ValueError, match="image_size must be"):
        AttackSetsConfig(image_size=size)


def test_a_build_of_unreadable_images_fails_and_is_not_marked_done(tmp_path):
    from clipwb.data.builders import build_typographic, folder_source

    for c in ("cat", "dog"):
        (tmp_path / "src" / c).mkdir(parents=True)
        (tmp_path / "src" / c / "a.png").write_bytes(b"not a png")
    items, classes = folder_source(tmp_path / "src")
    with pytest.raises(ValueError, match="none of the 2 source images could be read"):
        build_typographic(items, classes, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "done.json").exists()
    with pytest.raises(ValueError, match="no source images"):
        build_typographic([], classes, tmp_path / "out2", progress=False)


def test_glyphs_missing_from_the_font_are_an_error_not_boxes(tmp_path):
    from clipwb.data.builders import build_typographic, folder_source

    for c in ("猫", "dog"):
        (tmp_path / "src" / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (0, 128, 0)).save(tmp_path / "src" / c / "a.png")
    items, classes = folder_source(tmp_path / "src")
    with pytest.raises(ValueError, match=r"cannot draw some words.*'猫' lacks '猫'"):
        build_typographic(items, classes, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_font_is_named(tmp_path):
    from clipwb.data.typographic import TypoRenderConfig

    bad = tmp_path / "font.ttf"
    bad.write_text("not a font")
    with pytest.raises(ValueError, match=r"font\.ttf is not a font file FreeType can read"):
        TypoRenderConfig(fonts=(str(bad),))


def test_16_bit_and_transparent_images_are_read_faithfully(tmp_path):
    from clipwb.data.builders import open_rgb

    grey16 = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    a = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert a.shape == (8, 8, 3) and np.all(np.abs(a.astype(int) - 128) <= 1)  # not clipped to white
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:2, :, 3] = 0  # ... transparent in the top half, half transparent below
    rgba[2:, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    b = np.asarray(open_rgb(tmp_path / "a.png")).astype(int)
    assert np.all(b[:2] == 255)  # transparent: the white background, not the hidden red
    assert np.all(b[2:, :, 0] == 255) and np.all(np.abs(b[2:, :, 1:] - 127) <= 1)  # red over white at 50 %
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.all(np.asarray(open_rgb(tmp_path / "la.png")) == 255)


def test_a_changed_image_under_the_same_name_makes_a_new_build(tmp_path):
    from clipwb.data.builders import TypoBuildConfig, build_typographic, folder_source

    for c in ("cat", "dog"):
        (tmp_path / "src" / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (0, 128, 0)).save(tmp_path / "src" / c / "a.png")
    items, classes = folder_source(tmp_path / "src")
    cfg = TypoBuildConfig(image_size=32)
    build_typographic(items, classes, tmp_path / "out", cfg, progress=False)
    first = items[0].identity()
    img = tmp_path / "src" / "cat" / "a.png"
    Image.new("RGB", (40, 40), (200, 0, 0)).save(img)
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10 ** 9))
    items2, _ = folder_source(tmp_path / "src")
    assert items2[0].identity() != first
    before = snapshot(tmp_path / "out")
    with pytest.raises(FileExistsError, match="a source image changed"):
        build_typographic(items2, classes, tmp_path / "out", cfg, progress=False)
    assert snapshot(tmp_path / "out") == before


def test_attack_sets_rebuild_after_a_source_image_changed(tmp_path):
    from clipwb.data.sets import AttackSetsConfig, attack_arrays

    names = ("circle", "square", "star", "heart")
    for c in names:
        for i in range(3):
            (tmp_path / "src" / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (40 * i, 80, 0)).save(tmp_path / "src" / c / f"{i}.png")
    cfg = AttackSetsConfig(image_size=32, word_frac=0.5)
    kw = dict(cfg=cfg, root=tmp_path / "cache", progress=False)
    _, sets1, b1 = attack_arrays(str(tmp_path / "src"), **kw)
    img = next((tmp_path / "src").rglob("*.png"))
    Image.new("RGB", (32, 32), (255, 255, 255)).save(img)
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10 ** 9))
    _, sets2, b2 = attack_arrays(str(tmp_path / "src"), **kw)
    changed = [n for n in b1 if b1[n].out_dir != b2[n].out_dir]
    assert changed and not all(b2[n].already_done for n in changed)


def test_person_folder_with_missing_files_and_a_bom(tmp_path):
    from clipwb.data.people import load_person_folder

    (tmp_path / "p").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "p" / "a.png")
    (tmp_path / "p" / "labels.csv").write_text("file,gender,occupation\na.png,male,doctor\nb.png,female,nurse\n")
    with pytest.raises(FileNotFoundError, match=r"names 1 of 2 files that do not exist.*b\.png"):
        load_person_folder(tmp_path / "p", size=16)
    (tmp_path / "p" / "labels.csv").write_text("\ufefffile,gender,occupation\na.png,male,doctor\n",
                                               encoding="utf-8")
    out = load_person_folder(tmp_path / "p", size=16)
    assert len(out["images"]) == 1 and out["classes"]["gender"] == ("male",)


def test_real_set_labels_csv_with_a_bom_is_read(tmp_path):
    from clipwb.data.real import load_real_typographic

    (tmp_path / "rta").mkdir()
    for f in ("a.png", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / "rta" / f)
    (tmp_path / "rta" / "labels.csv").write_text("\ufefffile,true,written\na.png,cat,dog\nb.png,dog,cat\n",
                                                 encoding="utf-8")
    s = load_real_typographic(tmp_path / "rta", "rta-100")
    assert s.classes == ("cat", "dog") and list(s.written) == [1, 0]


def test_rince_family_refuses_overflow_instead_of_nan():
    import torch.nn.functional as F

    from clipwb.losses.ot import gca_loss

    z = F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    cos = z @ z.T
    for method in ("rince", "gca-rince", "gca-uot"):
        assert torch.isfinite(gca_loss(cos / 0.5, method=method))
        for s in (cos / 0.001, 300 * torch.randn(16, 16, generator=torch.Generator().manual_seed(1))):
            with pytest.raises(ValueError, match=r"overflows.*larger eps"):
                gca_loss(s, method=method)
    # GCA-UOT without its RINCE term has nothing to overflow
    assert torch.isfinite(gca_loss(cos / 0.001, method="gca-uot", r2=0.0))


# -- resume, checkpoints, leftovers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from clipwb.data.sets import AttackSetsConfig, attack_arrays
    from clipwb.world import World

    classes, data, _ = attack_arrays("world", world=World(), n_train=16, n_test=16, cfg=AttackSetsConfig(k=2),
                                     root=tmp_path_factory.mktemp("sets"), progress=False)
    return classes, data


@pytest.fixture(scope="module")
def interrupted(tiny, small, tmp_path_factory):
    """A run stopped after its first checkpoint (step 2 of 4)."""
    from clipwb.training.po_trainer import POConfig, train_po

    classes, data = small
    cfg = POConfig(lr=1e-3, batch_size=8, epochs=1, checkpoint_every=2, device="cpu", precision="fp32")
    out = tmp_path_factory.mktemp("run")

    class Stop(Exception):
        pass

    def stop(step, row):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_po(tiny.model, tiny.tokenizer, classes, data["train"], cfg, out_dir=out, on_step=stop, progress=False)
    return cfg, out


@pytest.mark.parametrize("change,pattern", [
    ({"method": "kto"}, r"method='dpo' -> 'kto'"), ({"lr": 2e-3}, r"lr=0\.001 -> 0\.002"),
    ({"seed": 1}, r"seed=0 -> 1"), ("data", r"the training data differ"),
])
def test_resume_with_a_changed_config_or_data_is_refused(tiny, small, interrupted, change, pattern):
    import dataclasses

    from clipwb.training.po_trainer import train_po

    classes, data = small
    cfg, out = interrupted
    train = data["train"]
    if change == "data":
        train = {**train, "typo": train["typo"].copy()}
        train["typo"][0, 0, 0] ^= 1  # one pixel
    else:
        cfg = dataclasses.replace(cfg, **change)
    before = snapshot(out)
    with pytest.raises(ValueError, match=rf"cannot resume from .*checkpoint\.pt: it was written by a different run "
                                         rf"\(.*{pattern}"):
        train_po(tiny.model, tiny.tokenizer, classes, train, cfg, out_dir=out, resume=True, progress=False)
    assert snapshot(out) == before


def test_resume_may_change_what_does_not_change_the_weights(tiny, small, interrupted, tmp_path):
    import dataclasses
    import shutil

    from clipwb.training.po_trainer import train_po

    classes, data = small
    cfg, out = interrupted
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    res = train_po(tiny.model, tiny.tokenizer, classes, data["train"], dataclasses.replace(cfg, checkpoint_every=1),
                   out_dir=work, resume=True, progress=False)
    assert res.steps == 4 and len(res.log) == 4 and res.precision["name"] == "fp32"
    run = json.loads((work / "run.json").read_text())
    assert run["precision"]["name"] == "fp32" and run["run"]["config"]["method"] == "dpo"


def test_a_truncated_checkpoint_is_named_and_kept(tiny, small, interrupted, tmp_path):
    import shutil

    from clipwb.training.po_trainer import train_po

    classes, data = small
    cfg, out = interrupted
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    ck = work / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    before = snapshot(work)
    with pytest.raises(ValueError, match=r"cannot read the checkpoint .*checkpoint\.pt .*truncated"):
        train_po(tiny.model, tiny.tokenizer, classes, data["train"], cfg, out_dir=work, resume=True, progress=False)
    assert snapshot(work) == before


def test_leftover_temp_files_of_killed_writes_are_cleaned(tiny, small, tmp_path):
    from clipwb.reports import clean_stale_stages
    from clipwb.training.po_trainer import POConfig, train_po

    classes, data = small
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    train_po(tiny.model, tiny.tokenizer, classes, data["train"],
             POConfig(batch_size=8, epochs=1, device="cpu", precision="fp32"), out_dir=out, progress=False, save=False)
    assert not list(out.glob(".*.tmp")) and (out / "log.json").is_file()
    reports = tmp_path / "reports"
    (reports / ".stage-02_po_training-abc" / "figures").mkdir(parents=True)
    (reports / "metrics").mkdir()
    (reports / "metrics" / ".02_po_training.json.q1.tmp").write_text("{")
    (reports / "metrics" / "02_po_training.json").write_text("{}")
    removed = clean_stale_stages(reports)
    assert len(removed) == 2 and not list(reports.glob(".stage-*"))
    assert (reports / "metrics" / "02_po_training.json").read_text() == "{}"


def test_no_progress_silences_every_bar(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               CLIPWB_CACHE=str(tmp_path / "cache"))
    cfg = tmp_path / "po.yaml"
    cfg.write_text("batch_size: 8\nepochs: 1\ndevice: cpu\n")
    args = [sys.executable, "-m", "clipwb", "train-po", "--config", str(cfg), "--n-train", "8", "--n-test", "8",
            "--k", "1", "--no-eval", "--out", str(tmp_path / "run")]
    quiet = subprocess.run([*args, "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "it/s" not in quiet.stderr and "%|" not in quiet.stderr, quiet.stderr[-1000:]
    loud = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "%|" in loud.stderr  # the same run shows bars without the flag
