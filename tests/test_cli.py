import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "clipwb", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def test_eval_prints_one_json_object_clean_and_attacked():
    r = run("eval", "--model", "tiny", "--data", "world", "--split", "test", "--attack", "none", "--seed", "3",
            "--n", "64")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 64 and 0.0 <= out["top1"] <= 1.0 and out["seconds"] > 0 and "attack_success" not in out
    r = run("eval", "--model", "tiny", "--attack", "typographic", "--seed", "3", "--n", "64")
    att = json.loads(r.stdout)
    assert att["top1"] < out["top1"] and 0.0 <= att["attack_success"] <= 1.0


def test_eval_rejects_unknown_options_and_specs():
    r = run("eval", "--modle", "tiny")
    assert r.returncode == 2 and "unrecognized arguments: --modle" in r.stderr
    r = run("eval", "--attack", "pixel")
    assert r.returncode == 2 and "invalid choice: 'pixel'" in r.stderr
    r = run("eval", "--model", "NoSuchNet:openai", "--n", "4")
    assert r.returncode == 2 and "unknown open_clip model 'NoSuchNet'" in r.stderr
    r = run("eval", "--n", "0")
    assert r.returncode == 2 and "--n must be >= 1" in r.stderr


def test_eval_uncached_real_model_fails_fast_with_instructions(tmp_path):
    r = run("eval", "--model", "ViT-B-32:openai", "--cache-dir", str(tmp_path), "--n", "4")
    assert r.returncode == 2 and "not in the local cache" in r.stderr


def test_build_typo_writes_the_sets_with_manifests_and_reuses_them(tmp_path, capsys):
    import csv

    from clipwb.cli import main

    args = ["build-typo", "--out", str(tmp_path / "sets"), "--n-train", "12", "--n-test", "6", "--k", "2",
            "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert set(first) == {"train", "test", "test_heldout", "test_note"}
    assert first["train"]["n_variants"] == 24 and first["test"]["n_variants"] == 6
    rows = list(csv.DictReader(open(first["train"]["manifest"])))
    root = Path(first["train"]["dir"])
    assert len(rows) == 24 and all((root / r["file"]).is_file() and (root / r["control_file"]).is_file() for r in rows)
    assert all(r["written_label"] != r["true_label"] for r in rows)
    # held-out attacks use fonts and words that the training attacks never use
    col = lambda s, k: {r[k] for r in csv.DictReader(open(first[s]["manifest"]))}  # noqa: E731
    assert not col("train", "text_font") & col("test_heldout", "text_font")
    assert not col("train", "text") & col("test_heldout", "text")
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert all(again[n]["reused"] and again[n]["dir"] == first[n]["dir"] for n in first)


def test_build_typo_rejects_a_missing_folder(tmp_path, capsys):
    from clipwb.cli import main

    assert main(["build-typo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_eval_on_an_image_folder_clean_typographic_and_note(tmp_path, capsys):
    """`clipwb eval --data PATH`: the same one JSON line on a user's image folder, clean and attacked."""
    from clipwb.cli import main
    from clipwb.data.builders import export_image_folder
    from clipwb.world import World

    w = World()
    b = w.generate(48, "test", "object")
    root = export_image_folder(b.images, b.labels("class_name", w.classes), w.classes, tmp_path / "folder")
    res = {}
    for attack in ("none", "typographic", "note"):
        assert main(["eval", "--data", str(root), "--attack", attack, "--n", "40", "--seed", "1"]) == 0
        res[attack] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    clean, typo, note = res["none"], res["typographic"], res["note"]
    assert clean["n"] == typo["n"] == note["n"] == 40 and clean["layout"] == "image folder"
    assert "attack_success" not in clean and 0 <= typo["attack_success"] <= 1 and 0 <= note["attack_success"] <= 1
    assert typo["top1"] < clean["top1"] and note["top1"] < clean["top1"]  # the written word costs accuracy


def test_eval_on_a_real_typographic_set_and_wrong_layouts_fail_fast(tmp_path, capsys):
    import time

    from PIL import Image

    from clipwb.cli import main
    from clipwb.world import World

    w = World()
    b = w.generate(12, "test", "typographic")
    real = tmp_path / "rta"
    real.mkdir()
    rows = ["file,true,written"]
    for i, (img, rec) in enumerate(zip(b.images, b.records)):
        Image.fromarray(img).save(real / f"{i}.png")
        rows.append(f"{i}.png,{rec['class_name']},{rec['text']}")
    (real / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "--data", str(real), "--attack", "typographic", "--image-size", "64"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["layout"] == "labels.csv" and out["n"] == 12 and 0 <= out["attack_success"] <= 1
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    for data, attack, msg in ((tmp_path / "flat", "none", "neither labels.csv nor class folders"),
                              (tmp_path / "nope", "none", "no such folder"),
                              (real, "none", "only --attack typographic applies")):
        t0 = time.time()
        r = run("eval", "--data", str(data), "--attack", attack, timeout=60)
        assert r.returncode == 2 and msg in r.stderr and "labels.csv" in r.stderr, r.stderr[-500:]
        assert time.time() - t0 < 10  # a subprocess start included; the check itself runs before any model loads
