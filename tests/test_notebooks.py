"""End to end: every notebook runs headless under papermill in the quick profile and records its metrics."""
import ast
import json
import re

import nbformat
import pytest

from clipwb.reports import NOTEBOOK_DIR, list_notebooks, run_notebook

NOTEBOOKS = list_notebooks()

# what each notebook must record (fractions in [0, 1]; *_seconds positive; n_* and skipped_* counts)
REQUIRED = {
    "03": ["occupation_gap_before", "occupation_gap_after", "probe_gender_before", "probe_gender_after"],
    "04": ["gender_top1_t0", "gender_top1_min", "gender_top1_neutral"],
    "00": ["zero_shot_clean_top1", "zero_shot_typo_top1", "gender_top1", "occupation_top1", "pretrain_seconds"],
    "02": ["reference_typo_top1", "reference_clean_top1", "ce_typo_top1", "dpo_typo_top1", "ipo_typo_top1",
           "kto_typo_top1", "dpo_clean_top1", "dpo_train_seconds"],
    "01": ["n_images", "n_variants", "clean_top1", "typo_top1", "attack_success_rate", "skipped_corrupt",
           "build_seconds"],
    "05": ["simclr_ince_clean_linear_probe_top1", "simclr_gca-uot_noisy_linear_probe_top1",
           "clip_gca-ince_clean_zero_shot_top1", "clip_rince_noisy_linear_probe_top1", "simclr_ince_clean_epoch_seconds",
           "pretrain_gca-uot_zero_shot_clean_top1"],
    "06": ["closed_form_sin_theta_n500", "trained_sin_theta_n500", "digits-shapes_semi_paired_only",
           "digits-shapes_semi_with_unpaired", "digits-shapes_semi_oracle", "gradient_max_abs_error"],
    "07": ["zero_shot_typo_top1", "ce_typo_top1", "paint_ce_typo_top1", "paint_dpo_typo_top1",
           "defense_prefix_typo_top1", "projection_typo_top1", "head_ablation_typo_top1", "dpo_typo_top1",
           "kto_typo_top1", "steering_typo_top1", "steering_clean_top1", "notebook_seconds"],
    "08": ["top_head_score", "top_head_score_after_po", "probe_word_last", "probe_word_last_after_po",
           "probe_object_last", "zero_shot_typo_top1", "head_ablation_typo_top1", "kto_typo_top1", "notebook_seconds"],
}


def _cell_profile(path):
    from conftest import load_benchmark

    return load_benchmark("profile_main_job").cell_profile(path)


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


ACCUMULATE = {"append", "extend", "update", "add", "insert", "setdefault"}


def computing_logic(source: str) -> list[str]:
    """What in a code cell is logic that belongs in clipwb: function and class definitions, loops that compute
    results (their body writes into a container: ``x[k] = ...``, ``x.a = ...``, ``+=``, ``.append(...)`` and the
    like; a loop that only displays or plots is fine) and selection rules (``max``/``min``/``sorted`` with a
    ``key=``)."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))  # magics become plain calls
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append(f"line {node.lineno}: def/class {node.name}")
        elif isinstance(node, (ast.For, ast.While)):
            for sub in (n for b in node.body for n in ast.walk(b)):
                writes = (isinstance(sub, ast.AugAssign)
                          or isinstance(sub, (ast.Assign, ast.AnnAssign)) and any(
                              isinstance(t, (ast.Subscript, ast.Attribute))
                              for t in (sub.targets if isinstance(sub, ast.Assign) else [sub.target]))
                          or isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                          and sub.func.attr in ACCUMULATE)
                if writes:
                    found.append(f"line {node.lineno}: a loop that computes results ({ast.unparse(sub)[:60]})")
                    break
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min", "sorted")
              and any(k.arg == "key" for k in node.keywords)):
            found.append(f"line {node.lineno}: a selection rule ({ast.unparse(node)[:60]})")
    return found


def test_the_thin_notebook_rule_catches_logic():
    assert computing_logic("for m in ms:\n    metrics[m] = f(m)") and computing_logic("for m in ms:\n    rows.append(m)")
    assert computing_logic("while x:\n    total += 1") and computing_logic("def f():\n    pass")
    assert computing_logic("po = max(ms, key=lambda m: r[m])")
    assert not computing_logic("for n in names:\n    d = data[n]\n    viz.plot(d, save=p(n))\n    display(d)")
    assert not computing_logic("rows = {m: f(m) for m in ms}\nbest = max(rows.values())")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_thin_and_committed_without_outputs(nb):
    book = nbformat.read(nb, as_version=4)
    raw = json.loads(nb.read_text())
    assert all(c.get("id") for c in raw["cells"]), f"{nb.name}: a cell without an id (nbformat 4.5 wants one)"
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "profile" in tagged[0].source and "out_dir" in tagged[0].source
    for c in book.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{nb.name}: committed outputs"
            logic = computing_logic(c.source)
            assert not logic, f"{nb.name}: logic belongs in clipwb: {logic}"


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_profile(nb, tmp_path):
    res = run_notebook(nb, tmp_path, "quick", html=True, progress=False)
    metrics = json.loads((tmp_path / "metrics" / f"{nb.stem}.json").read_text())
    assert metrics["profile"] == "quick"
    for key in REQUIRED.get(nb.name[:2], []):
        v = metrics[key]
        assert isinstance(v, (int, float)), (key, v)
        if key.endswith("_seconds"):
            assert v > 0, (key, v)
        elif key.startswith(("n_", "skipped_")):
            assert isinstance(v, int) and v >= (0 if key.startswith("skipped_") else 1), (key, v)
        else:
            assert 0.0 <= v <= 1.0, (key, v)
    if nb.name[:2] in ("02", "07"):  # the evidence: intervals, seeds, paired verdicts
        lo, hi = metrics["kto_typo_top1_ci"]
        assert lo <= metrics["kto_typo_top1"] <= hi and metrics["seeds"] == [0, 1]
        assert metrics["kto_typo_top1_std"] >= 0
        rows = metrics["verdicts"]["rows"]
        assert rows and all(r["ci_pts"][0] <= r["diff_pts"] <= r["ci_pts"][1] and isinstance(r["significant"], bool)
                            for r in rows)
    assert (tmp_path / f"{nb.stem}.html").is_file()
    prof = _cell_profile(tmp_path / nb.name)  # the main job's profile (benchmarks/) reads every executed notebook
    assert prof["cells"] and prof["seconds"] > 0
    executed = nbformat.read(tmp_path / nb.name, as_version=4)
    own_warnings = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
                    if o.get("name") == "stderr" and re.search(r"/clipwb/[\w/]+\.py:\d+: \w*Warning", o.get("text", ""))]
    assert not own_warnings, f"clipwb's own code warns in {nb.name}: {own_warnings[:2]}"
    assert list((tmp_path / "figures").glob(f"{nb.name[:2]}_*.png"))
    assert res.seconds > 0
    assert str(NOTEBOOK_DIR) not in str(tmp_path)


def _has_model_parameter(nb) -> bool:
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return re.search(r"^model = ", cell.source, re.M) is not None


VIT_NOTEBOOKS = [p for p in NOTEBOOKS if _has_model_parameter(p) and not p.name.startswith("08_")]


def test_every_model_notebook_is_run_with_the_vit_tower():
    assert {p.name[:2] for p in VIT_NOTEBOOKS} >= {"00", "01", "02", "03", "04", "07"}


@pytest.mark.slow
@pytest.mark.parametrize("nb", VIT_NOTEBOOKS, ids=[p.stem for p in VIT_NOTEBOOKS])
def test_notebook_runs_with_the_vit_tower(nb, tmp_path):
    """``model: tiny-vit`` in the parameters of every notebook that takes a model (08 uses it by default)."""
    run_notebook(nb, tmp_path, "quick", parameters={"model": "tiny-vit"}, html=False, progress=False)
    metrics = json.loads((tmp_path / "metrics" / f"{nb.stem}.json").read_text())
    assert metrics["model"] == "tiny-vit" and metrics["profile"] == "quick"


@pytest.mark.slow
def test_po_notebook_runs_unchanged_on_the_real_path(tmp_path, tiny):
    """Notebook 02 with an open_clip local-dir checkpoint (not the `tiny` spec) and an image-folder dataset: the
    real path (ViT-B-32:openai + ImageNet-100) differs only in these two parameters."""
    from clipwb.data.builders import export_image_folder
    from clipwb.models.loading import save_model
    from clipwb.world import World

    world = World()
    batch = world.generate(96, "val", "object")
    root = export_image_folder(batch.images, batch.labels("class_name", world.classes), world.classes,
                               tmp_path / "folder")
    save_model(tiny.model, tmp_path / "ckpt", tiny.name)
    nb = next(p for p in NOTEBOOKS if p.name.startswith("02_"))
    run_notebook(nb, tmp_path / "out", "quick", parameters={
        "model": f"local-dir:{tmp_path / 'ckpt'}", "source": str(root), "image_size": 64, "n_train": 64,
        "n_test": 16, "methods": ["dpo"], "sweep_beta": [], "sweep_lam": []}, html=False, progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics" / f"{nb.stem}.json").read_text())
    assert metrics["source"] == str(root) and metrics["model"].startswith("local-dir:")
    assert 0 <= metrics["dpo"]["avg"]["typo_top1"] <= 1 and metrics["n_train_pairs"] == 64 * 2


@pytest.mark.slow
def test_defences_notebook_runs_unchanged_on_the_real_path(tmp_path, tiny):
    """Notebook 07 with an open_clip local-dir checkpoint and an image-folder dataset, as notebook 02 above."""
    from clipwb.data.builders import export_image_folder
    from clipwb.models.loading import save_model
    from clipwb.world import World

    world = World()
    batch = world.generate(64, "val", "object")
    root = export_image_folder(batch.images, batch.labels("class_name", world.classes), world.classes,
                               tmp_path / "folder")
    save_model(tiny.model, tmp_path / "ckpt", tiny.name)
    nb = next(p for p in NOTEBOOKS if p.name.startswith("07_"))
    run_notebook(nb, tmp_path / "out", "quick", parameters={
        "model": f"local-dir:{tmp_path / 'ckpt'}", "source": str(root), "image_size": 64, "n_train": 48,
        "n_test": 16}, html=False, progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics" / f"{nb.stem}.json").read_text())
    assert metrics["source"] == str(root) and metrics["model"].startswith("local-dir:")
    assert {"zero_shot", "paint_ce", "defense_prefix", "head_ablation", "steering"} <= set(metrics)
    assert all(0 <= metrics[d]["typo_top1"] <= 1 for d in ("zero_shot", "projection", "kto"))
