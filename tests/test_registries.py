"""The plug-in points: the PO-method registry drives the trainer's config, the command line and the drivers; a
defence registered from outside runs through compare_defences; the README's snippets are the way to add one."""
import re
from pathlib import Path

import pytest
import torch

from clipwb.experiments import defences as D
from clipwb.losses import po as PO
from clipwb.world import World

ROOT = Path(__file__).resolve().parent.parent


def _readme_snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Adding a PO method, a defence, a notebook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def readme_plugins():
    """Run the README's two snippets (a PO method and a defence), then take them out of the registries."""
    snippets = _readme_snippets()
    assert len(snippets) == 2
    ns: dict = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), ns)
    yield ns
    PO.unregister_po_method("slic")
    D.unregister_defence("ignore_text_prompt")


def test_the_built_in_registries():
    assert PO.po_methods() == ("dpo", "ipo", "kto", "ce")
    assert PO.po_methods(baseline=False) == ("dpo", "ipo", "kto")
    assert {m: PO.po_method(m).default_beta for m in PO.po_methods()} == {"dpo": 1.0, "ipo": 0.01, "kto": 1.5,
                                                                          "ce": 0.0}
    assert not PO.po_method("ce").needs_clean and PO.po_method("dpo").needs_reference
    assert D.defence_names() == ("zero_shot", "dpo", "ipo", "kto", "ce", "paint_ce", "paint_dpo", "defense_prefix",
                                 "projection", "head_ablation", "steering")
    with pytest.raises(ValueError, match="unknown PO method 'nope'"):
        PO.po_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        PO.register_po_method("dpo", default_beta=1.0)(lambda b, beta: b.policy_logp.sum())
    with pytest.raises(ValueError, match="new name"):
        D.register_defence(D.Projection())
    with pytest.raises(ValueError, match="lower-case"):
        PO.register_po_method("My Method", default_beta=1.0)


def test_the_registry_drives_the_command_line_and_the_config(readme_plugins):
    from clipwb.cli import build_parser
    from clipwb.training.po_trainer import POConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train-po"]
    method = next(a for a in sub._actions if a.dest == "method")
    assert list(method.choices) == list(PO.po_methods()) and "slic" in method.choices
    help_text = sub.format_help()
    for m in PO.po_methods():
        assert m in help_text
    assert POConfig(method="slic").beta_value == 1.0
    assert "slic" in D.defence_names() and "ignore_text_prompt" in D.defence_names()
    # the new method's loss goes through po_loss (+ lam * KL on the clean images) and has gradients
    g = torch.Generator().manual_seed(0)
    pol = torch.log_softmax(torch.randn(5, 4, generator=g), -1).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(5, 4, generator=g), -1)
    yw, yl = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 2, 3, 0, 2])
    loss, stats = PO.po_loss("slic", pol, ref, yw, yl, pol, ref, lam=0.5)
    h = PO.preference_logratio(pol, ref, yw, yl)
    assert loss.item() == pytest.approx(torch.relu(1 - h).mean().item() + 0.5 * PO.kl_ref_policy(ref, pol).item())
    loss.backward()
    assert pol.grad.abs().sum() > 0 and 0 <= stats["pref_acc"] <= 1
    with pytest.raises(SystemExit):  # an unknown method is refused by argparse itself
        build_parser().parse_args(["train-po", "--method", "orpo"])
    assert PO.po_method("slic") is not None


def test_a_defence_registered_from_outside_runs_through_compare_defences(tiny, tmp_path, readme_plugins):
    from clipwb.data.sets import AttackSetsConfig, attack_arrays

    classes, sets, _ = attack_arrays("world", world=World(), n_train=16, n_test=12,
                                     cfg=AttackSetsConfig(k=1, seed=0), root=tmp_path / "sets", progress=False)
    runs = D.compare_defences(tiny, classes, sets, "embedded", {"batch_size": 8, "epochs": 1},
                              only=("zero_shot", "ignore_text_prompt"), select_n=16, progress=False)
    assert list(runs.results) == ["zero_shot", "ignore_text_prompt"]
    row = runs.table()["ignore_text_prompt"]
    assert set(row) == set(D.KEYS) and row["trainable_params"] == 0 and 0 <= row["typo_top1"] <= 1
    # it is scored by the same evaluation as every row: its own classifier, evaluated again, gives its metrics
    from clipwb.evaluation.classifier import model_classifier

    ctx = D.DefenceContext(tiny, classes, sets, "embedded", {"batch_size": 8, "epochs": 1},
                           setting=D.DefenceSetting(select_n=16), progress=False)
    clf = model_classifier(tiny.model, tiny.tokenizer, classes, readme_plugins["IgnoreTextPrompt"].prompts)
    assert ctx.evaluate(clf)["typo_top1"] == row["typo_top1"]
    # and a second comparison reads it from the run cache: fit is not called again
    readme_plugins["IgnoreTextPrompt"].fit = lambda self, ctx, seed=None: pytest.fail("refitted a cached defence")
    again = D.compare_defences(tiny, classes, sets, "embedded", {"batch_size": 8, "epochs": 1},
                               only=("zero_shot", "ignore_text_prompt"), select_n=16, progress=False)
    assert again.table() == runs.table()


def test_best_po_method_reads_the_registry():
    from clipwb.experiments.po import best_po_method

    res = {"ce": {"typo_top1": 0.9}, "dpo": {"typo_top1": 0.7}, "kto": {"typo_top1": 0.8}, "ipo": {"typo_top1": 0.8}}
    assert best_po_method(res) == "ipo"  # CE is a baseline; ties go to the earlier registered method
    assert best_po_method({"dpo": {"avg": {"clean_top1": 0.5}}}, "clean_top1", weights="avg") == "dpo"
    with pytest.raises(ValueError, match="no preference method"):
        best_po_method({"ce": {"typo_top1": 0.9}})
