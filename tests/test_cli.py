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
