import json

import nbformat
import pytest

from clipwb.reports import NotebookFailed, list_notebooks, run_reports, write_metrics, write_summary


def _nb(path, body):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "full"\nout_dir = "."', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


GOOD = ("from clipwb import reports\n"
        "reports.write_metrics(out_dir, '{name}', {{'value': 0.5, 'profile': profile}})\n"
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "fig = plt.figure(); plt.plot([0, 1]); fig.savefig(reports.figure_path(out_dir, '{nn}_line'))")


def test_runner_executes_in_order_and_a_failure_keeps_earlier_reports(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    _nb(nbs / "00_first.ipynb", GOOD.format(name="00_first", nn="00"))
    _nb(nbs / "01_second.ipynb", GOOD.format(name="01_second", nn="01"))
    (nbs / "notes.ipynb").write_text("{}")  # not NN_*: ignored
    assert [p.name for p in list_notebooks(nbs)] == ["00_first.ipynb", "01_second.ipynb"]
    res = run_reports(out, "quick", nb_dir=nbs, progress=False)
    assert [r.name for r in res] == ["00_first", "01_second"]
    for f in ["00_first.ipynb", "00_first.html", "metrics/00_first.json", "figures/00_line.png",
              "01_second.html", "README.md"]:
        assert (out / f).is_file(), f
    second = json.loads((out / "metrics/01_second.json").read_text())
    assert second.pop("machine")["precision"] in ("fp32", "bf16") and second == {"profile": "quick", "value": 0.5}
    assert "| value | 0.500 |" in (out / "README.md").read_text()
    before = (out / "metrics/01_second.json").read_text()

    # now the second notebook breaks: the run stops with its name and error, earlier reports stay intact
    _nb(nbs / "01_second.ipynb", "reports_written_partly = open(out_dir + '/metrics_partial.json', 'w')\n"
                                 "raise RuntimeError('deliberate failure in cell 2')")
    with pytest.raises(NotebookFailed) as err:
        run_reports(out, "quick", nb_dir=nbs, progress=False)
    assert err.value.notebook == "01_second.ipynb" and "deliberate failure" in err.value.error
    assert (out / "metrics/01_second.json").read_text() == before
    assert not (out / "metrics_partial.json").exists()
    assert (out / "failed" / "01_second.ipynb").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".stage-")]


def test_a_stopped_main_job_records_the_notebooks_it_finished(tmp_path, monkeypatch):
    """A main job that a failure or a signal (Ctrl-C, ``kill``: SIGTERM) stops records the notebooks it finished
    (not as a whole run), so that the next estimate on this machine has their times; a job stopped in its first
    notebook records nothing."""
    from clipwb import reports

    import signal

    monkeypatch.setattr(reports, "calibration_seconds", lambda: 0.1)
    handler_before = signal.getsignal(signal.SIGTERM)
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    _nb(nbs / "00_first.ipynb", GOOD.format(name="00_first", nn="00"))
    _nb(nbs / "01_second.ipynb", "raise RuntimeError('deliberate failure')")
    _nb(nbs / "02_third.ipynb", GOOD.format(name="02_third", nn="02"))
    with pytest.raises(NotebookFailed):
        run_reports(out, "quick", nb_dir=nbs, progress=False)
    last = json.loads((out / "runs.json").read_text())["runs"][-1]
    assert list(last["notebooks"]) == ["00_first"] and last["notebooks"]["00_first"] > 0
    assert last["whole"] is False and last["stopped"] == "01_second.ipynb failed after 1 of 3 notebooks"
    # the next estimate on this machine (cold cache, as this one was) takes the finished notebook's time
    est = reports.estimate_seconds(reports.read_runs(out), ["00_first", "02_third"], "quick", last["cache"]["state"],
                                   last["machine"])
    assert est["basis"] == {"00_first": "this machine"} and est["unknown"] == ["02_third"]
    # SIGTERM (what kill and timeout send) in the second notebook stops the job as Ctrl-C does, and is recorded
    _nb(nbs / "01_second.ipynb", "import os, signal, time\nos.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(60)")
    with pytest.raises(KeyboardInterrupt):
        run_reports(out, "quick", nb_dir=nbs, progress=False)
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert len(runs) == 2 and runs[-1]["stopped"] == "interrupted after 1 of 3 notebooks"
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the handler before comes back
    # stopped in the first notebook: nothing finished, nothing recorded
    _nb(nbs / "01_second.ipynb", "raise RuntimeError('deliberate failure')")
    with pytest.raises(NotebookFailed):
        run_reports(out, "quick", nb_dir=nbs, only=["01"], progress=False)
    assert len(json.loads((out / "runs.json").read_text())["runs"]) == 2


def test_unknown_profile_and_missing_notebook():
    with pytest.raises(ValueError, match="unknown profile"):
        run_reports("/tmp/never", "medium")
    with pytest.raises(ValueError, match="no notebook matches"):
        list_notebooks(only=["99"])


def test_metrics_are_written_atomically_as_json(tmp_path):
    import numpy as np

    write_metrics(tmp_path, "00_x", {"a": np.float32(0.25), "b": float("nan"), "c": np.arange(2)})
    data = json.loads((tmp_path / "metrics/00_x.json").read_text())
    machine = data.pop("machine")  # what precision and machine made the numbers
    assert data == {"a": 0.25, "b": None, "c": [0, 1]} and {"precision", "cpu", "torch"} <= set(machine)
    assert not [p for p in (tmp_path / "metrics").iterdir() if p.suffix == ".tmp"]
    write_summary(tmp_path)
    assert "## 00_x" in (tmp_path / "README.md").read_text()


def test_summary_names_each_machine_once(tmp_path):
    write_metrics(tmp_path, "00_x", {"a": 1.0})
    write_metrics(tmp_path, "01_y", {"b": 2.0})
    # the same machine measured again (another run): only the timings in its reason differ
    f = tmp_path / "metrics/01_y.json"
    data = json.loads(f.read_text())
    data["machine"]["precision_reason"] += " (measured again: 1 ms)"
    f.write_text(json.dumps(data))
    write_summary(tmp_path)
    assert (tmp_path / "README.md").read_text().count("Computed in **") == 1
    data["machine"]["torch"] = "another"
    f.write_text(json.dumps(data))
    write_summary(tmp_path)
    assert (tmp_path / "README.md").read_text().count("Computed in **") == 2


def test_main_job_history_gives_cold_and_warm_timings(tmp_path, monkeypatch):
    from clipwb import reports

    out = tmp_path / "reports"
    (out / "metrics").mkdir(parents=True)
    for name in ("00_a", "01_b"):
        write_metrics(out, name, {"value": 1.0})
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPWB_CACHE", str(cache))
    assert reports.cache_state()["state"] == "cold"
    reports.record_run(out, "full", {"00_a": 100.0, "01_b": 300.0}, reports.cache_state())
    (cache / "runs").mkdir(parents=True)
    (cache / "runs" / "po-run-abc.json").write_text("{}")
    state = reports.cache_state()
    assert state == {"runs": 1, "datasets": 0, "state": "warm"}
    reports.record_run(out, "full", {"00_a": 10.0, "01_b": 20.0}, state)
    reports.record_run(out, "full", {"01_b": 25.0}, state, whole=False)  # --only 01: not the main job
    text = write_summary(out, "full").read_text()
    assert "| 00_a | 100 | 10 |" in text and "| 01_b | 300 | 20 |" in text
    assert "**400** (6.7 min)" in text and "**30** (0.5 min)" in text
    assert "ran in 25 s" in text  # each notebook's newest run
    assert len(json.loads((out / "runs.json").read_text())["runs"]) == 3


def test_only_runs_do_not_push_a_machines_whole_runs_out_of_the_history(tmp_path, monkeypatch):
    from clipwb import reports

    monkeypatch.setattr(reports, "_machine_line", lambda: "Intel")
    cold, warm = {"state": "cold"}, {"state": "warm"}
    reports.record_run(tmp_path, "full", {"00_a": 100.0, "01_b": 300.0}, cold, keep=3)          # the whole cold run
    reports.record_run(tmp_path, "full", {"00_a": 90.0}, cold, keep=3, stopped="interrupted")   # stopped: not whole
    for s in (20.0, 21.0, 22.0, 23.0):
        reports.record_run(tmp_path, "full", {"01_b": s}, warm, whole=False, keep=3)            # --only 01
    runs = reports.read_runs(tmp_path)
    assert [r["notebooks"] for r in runs] == [{"00_a": 100.0, "01_b": 300.0}, {"01_b": 21.0}, {"01_b": 22.0},
                                              {"01_b": 23.0}]
    assert reports.estimate_seconds(runs, ["00_a", "01_b"], "full", "cold", "Intel")["seconds"] == 400.0
    reports.record_run(tmp_path, "full", {"00_a": 80.0, "01_b": 250.0}, cold, keep=3)  # a newer whole cold run
    assert [r["seconds"] for r in reports.read_runs(tmp_path)] == [22.0, 23.0, 330.0]


def test_the_summary_shows_a_metric_with_its_interval(tmp_path):
    from clipwb.reports import write_summary

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "02_po.json").write_text(json.dumps(
        {"kto_typo_top1": 0.78125, "kto_typo_top1_ci": [0.7521, 0.8083], "kto_typo_top1_std": 0.012}))
    text = write_summary(tmp_path).read_text()
    assert "| kto_typo_top1 | 0.781 [0.752, 0.808] |" in text and "| kto_typo_top1_std | 0.012 |" in text


def test_the_time_estimate_reads_this_machines_runs_else_anothers_scaled_by_what_both_timed():
    from clipwb.reports import estimate_seconds

    runs = [
        {"profile": "full", "cache": {"state": "cold"}, "machine": "AMD", "calibration_s": 0.2,
         "notebooks": {"00_a": 100.0, "01_b": 1000.0, "02_c": 50.0}},
        {"profile": "full", "cache": {"state": "warm"}, "machine": "Intel", "calibration_s": 0.1,
         "notebooks": {"00_a": 5.0, "01_b": 7.0}},
        {"profile": "full", "cache": {"state": "cold"}, "machine": "Intel", "calibration_s": 0.1,
         "notebooks": {"00_a": 40.0}},
        {"profile": "quick", "cache": {"state": "cold"}, "machine": "Intel", "notebooks": {"01_b": 3.0}},
        {"profile": "full", "cache": {"state": "cold"}, "machine": "GPU", "notebooks": {"03_d": 9.0}},
    ]
    est = estimate_seconds(runs, ["00_a", "01_b", "03_d", "04_e"], "full", "cold", "Intel")
    assert est["per_notebook"]["00_a"] == 40.0 and est["basis"]["00_a"] == "this machine"
    # another machine's seconds times how this machine compared with it where both timed a notebook (00_a: 40 s
    # against 100 s), whatever their calibration_s; unscaled where they share none (the job rescales as it goes)
    assert est["per_notebook"]["01_b"] == pytest.approx(400.0) and est["basis"]["01_b"] == "as on AMD x0.40"
    assert est["per_notebook"]["03_d"] == 9.0 and est["basis"]["03_d"] == "as on GPU"
    assert est["unknown"] == ["04_e"] and est["seconds"] == pytest.approx(449.0)
    # only the notebooks asked for are estimated, the factor still comes from what both machines timed
    assert estimate_seconds(runs, ["02_c"], "full", "cold", "Intel")["per_notebook"] == {"02_c": pytest.approx(20.0)}
    warm = estimate_seconds(runs, ["00_a", "01_b"], "full", "warm", "Intel")
    assert warm["seconds"] == 12.0
    # a newer `--only` run from a warm cache that recomputed 01_b (after a change) does not set the warm estimate
    # while a whole warm run times it; from a cold cache every run counts, the newest first
    later = [{"profile": "full", "whole": False, "cache": {"state": "warm"}, "machine": "Intel",
              "calibration_s": 0.1, "notebooks": {"01_b": 640.0}},
             {"profile": "full", "whole": False, "cache": {"state": "cold"}, "machine": "Intel",
              "calibration_s": 0.1, "notebooks": {"00_a": 45.0}}]
    warm = estimate_seconds(runs + later, ["00_a", "01_b", "02_c"], "full", "warm", "Intel")
    assert warm["per_notebook"] == {"00_a": 5.0, "01_b": 7.0} and warm["unknown"] == ["02_c"]
    assert estimate_seconds(runs[2:3] + later, ["01_b"], "full", "warm", "Intel")["seconds"] == 640.0
    assert estimate_seconds(runs + later, ["00_a"], "full", "cold", "Intel")["seconds"] == 45.0
    assert estimate_seconds([], ["00_a"], "full", "cold", "Intel") == {
        "seconds": 0.0, "per_notebook": {}, "basis": {}, "unknown": ["00_a"]}


def test_a_new_machine_takes_the_history_of_one_that_computes_as_it_does():
    from clipwb.reports import estimate_seconds

    def line(name, bf16):
        return f"{name} (2 cores, native bf16: {bf16}), Linux"

    runs = [  # oldest first, as in runs.json: the newest is a bf16 machine's, the fp32 one ran only 00 and 01
        {"profile": "full", "cache": {"state": "cold"}, "machine": line("AMD EPYC", False), "whole": False,
         "stopped": "interrupted after 2 of 3 notebooks", "notebooks": {"00_a": 160.0, "01_b": 2900.0}},
        {"profile": "full", "cache": {"state": "cold"}, "machine": line("Intel Xeon", True),
         "notebooks": {"00_a": 100.0, "01_b": 1200.0, "02_c": 400.0}},
    ]
    fp32 = estimate_seconds(runs, ["00_a", "01_b", "02_c"], "full", "cold", line("Intel Core", False))
    assert fp32["per_notebook"] == {"00_a": 160.0, "01_b": 2900.0, "02_c": pytest.approx(400.0 * 3060 / 1300)}
    assert fp32["basis"]["01_b"] == f"as on {line('AMD EPYC', False)}"
    # no fp32 machine timed 02_c: the bf16 machine's time, scaled by how the fp32 one compared on 00 and 01
    assert fp32["basis"]["02_c"] == f"as on {line('Intel Xeon', True)} x2.35"
    bf16 = estimate_seconds(runs, ["00_a", "01_b"], "full", "cold", line("AMD EPYC", True))
    assert bf16["per_notebook"] == {"00_a": 100.0, "01_b": 1200.0}
    # a machine line that does not say takes the newest run, as before
    assert estimate_seconds(runs, ["01_b"], "full", "cold", "GPU")["per_notebook"] == {"01_b": 1200.0}


def test_the_main_job_announces_its_estimate_and_where_the_reports_are(tmp_path, monkeypatch, capsys):
    from clipwb import reports

    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    _nb(nbs / "00_first.ipynb", GOOD.format(name="00_first", nn="00"))
    monkeypatch.setattr(reports, "calibration_seconds", lambda: 0.1)
    out.mkdir()
    (out / "runs.json").write_text(json.dumps({"runs": [
        {"profile": "quick", "cache": {"state": "cold"}, "machine": "elsewhere", "calibration_s": 0.05,
         "notebooks": {"00_first": 120.0}, "seconds": 120.0, "finished": "x"}]}))
    run_reports(out, "quick", nb_dir=nbs, progress=False)
    err = capsys.readouterr().err
    assert "1 notebook(s), profile quick" in err and "about 2 min expected (as on elsewhere)" in err
    assert "rescaled after each notebook" in err
    assert f"reports in {out}" in err
    last = json.loads((out / "runs.json").read_text())["runs"][-1]
    assert last["calibration_s"] == 0.1 and last["profile"] == "quick"


def test_the_remaining_time_is_rescaled_by_the_notebooks_done():
    """remaining_seconds: the estimates of the notebooks left, times (seconds taken / seconds estimated) over the
    finished notebooks that had an estimate; 1 before any finished; a finished notebook without one is ignored."""
    from clipwb.reports import remaining_seconds

    per = {"00_a": 100.0, "01_b": 1000.0, "02_c": 50.0}
    assert remaining_seconds(per, ["00_a", "01_b", "02_c"], {}) == (1150.0, 1.0)
    left, factor = remaining_seconds(per, ["01_b", "02_c", "03_d"], {"00_a": 130.0})
    assert factor == pytest.approx(1.3) and left == pytest.approx(1.3 * 1050.0)
    left, factor = remaining_seconds(per, ["02_c"], {"00_a": 130.0, "01_b": 900.0, "09_new": 5.0})
    assert factor == pytest.approx(1030.0 / 1100.0) and left == pytest.approx(50.0 * 1030.0 / 1100.0)


def test_the_estimate_replay_benchmark_scores_each_estimate(tmp_path, capsys):
    """benchmarks/estimate_replay.py on a made-up runs.json: two machines, each estimated from the other."""
    from conftest import load_benchmark

    runs = [{"profile": "full", "cache": {"state": "cold"}, "machine": "A", "calibration_s": 0.1,
             "notebooks": {"00_a": 100.0, "01_b": 1000.0}},
            {"profile": "full", "cache": {"state": "cold"}, "machine": "B", "calibration_s": 0.4,
             "notebooks": {"00_a": 150.0, "01_b": 1200.0}},
            {"profile": "full", "whole": False, "cache": {"state": "cold"}, "machine": "C",
             "notebooks": {"00_a": 1.0, "01_b": 1.0}}]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": runs}))
    mod = load_benchmark("estimate_replay")
    assert mod.main(["--runs", str(tmp_path / "runs.json"), "--out", str(tmp_path / "r.json")]) == 0
    rows = {r["new"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    b = rows["B (1350 s)"]  # estimated from A: 1100 s unscaled, 4400 s calibrated; after 00_a: 150 + 1.5 * 1000
    assert b["unscaled"] == pytest.approx(1100 / 1350 - 1) and b["calibrated"] == pytest.approx(4400 / 1350 - 1)
    assert b["after_each_notebook"] == [pytest.approx(round(1650 / 1350 - 1, 4))]
    assert len(rows) == 2 and "B (1350 s)" in capsys.readouterr().out


def _profile_module():
    from conftest import load_benchmark

    return load_benchmark("profile_main_job")


def test_the_profile_script_reads_each_cells_seconds(tmp_path, capsys):
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    _nb(nbs / "00_first.ipynb", "import time\ntime.sleep(1.2)\n" + GOOD.format(name="00_first", nn="00"))
    run_reports(out, "quick", nb_dir=nbs, progress=False)
    mod = _profile_module()
    assert mod.main(["--reports", str(out), "--json", str(tmp_path / "p.json")]) == 0
    prof = json.loads((tmp_path / "p.json").read_text())
    cells = prof["notebooks"]["00_first"]["cells"]
    assert prof["profile"] == "quick" and prof["cache"]["state"] in ("cold", "warm")
    assert cells[-1]["step"] == "import time" and cells[-1]["seconds"] >= 1.2
    assert prof["notebooks"]["00_first"]["seconds"] >= 1.2
    assert "00_first cell" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        mod.profile_reports(tmp_path / "reports" / "figures")


def test_a_warm_estimate_also_says_the_cold_upper_end(tmp_path, monkeypatch, capsys):
    """A cache that holds some runs reads as warm; the notebooks whose runs are missing take their cold time, so the
    opening line gives the cold estimate as the upper end (a run once said 49 s for what took 36 min)."""
    from clipwb import reports

    monkeypatch.setattr(reports, "calibration_seconds", lambda: 0.1)
    monkeypatch.setattr(reports, "_machine_line", lambda: "Intel")
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [
        {"profile": "full", "cache": {"state": "cold"}, "machine": "Intel", "calibration_s": 0.1,
         "notebooks": {"00_a": 600.0, "01_b": 1500.0}, "seconds": 2100.0, "finished": "x"},
        {"profile": "full", "cache": {"state": "warm"}, "machine": "Intel", "calibration_s": 0.1,
         "notebooks": {"00_a": 20.0, "01_b": 29.0}, "seconds": 49.0, "finished": "y"}]}))
    est = reports.announce(tmp_path, "full", ["00_a", "01_b"], {"state": "warm"}, "cpu")
    err = capsys.readouterr().err
    assert est["seconds"] == 49.0 and est["cold_seconds"] == 2100.0
    assert "about 49 s expected (this machine); up to 35 min where the cache lacks their runs" in err
    est = reports.announce(tmp_path, "full", ["00_a"], {"state": "cold"}, "cpu")
    assert "about 10 min expected" in capsys.readouterr().err and "cold_seconds" not in est
    reports.announce(tmp_path, "full", ["02_c"], {"state": "cold"}, "cpu")
    assert "no full run of these notebooks from a cold cache is recorded" in capsys.readouterr().err


@pytest.mark.slow
def test_the_train_po_phase_benchmark_accounts_for_the_command(tmp_path, capsys):
    """benchmarks/train_po_phases.py on a tiny run: every phase timed, the steps inside train_po, the ratio to the
    bare step computed from the same run."""
    from conftest import load_benchmark

    mod = load_benchmark("train_po_phases")
    out = tmp_path / "phases.json"
    assert mod.main(["--n-train", "32", "--n-test", "16", "--k", "1", "--epochs", "1", "--batch", "8",
                     "--floor-steps", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["seconds"]
    assert r["steps"] == 4 and r["batch_pairs"] == 8 and r["images_per_step"] == 16  # DPO: typographic + clean
    assert set(s) == {"load_model", "build_sets", "train_po", "train_setup", "train_steps", "train_after_steps", "eval"}
    assert all(v >= 0 for v in s.values())
    assert abs(s["train_setup"] + s["train_steps"] + s["train_after_steps"] - s["train_po"]) < 0.05
    assert r["step_vs_floor"] > 0 and r["cpu"]["model"] in capsys.readouterr().out


def test_the_cut_comparison_pairs_metrics_with_their_intervals(tmp_path, capsys):
    from conftest import load_benchmark

    mod = load_benchmark("compare_cut")
    before = {"a_top1": 0.80, "a_top1_ci": [0.77, 0.83], "g": {"m": {"mean": 0.5, "std": 0.01}},
              "b_top1": 0.5, "b_top1_ci": [0.47, 0.53], "notebook_seconds": 100.0, "only_before": 1.0,
              "chosen": 0.5}
    # "chosen": a number before, a pair after (notebook 07's per-seed choice of PAINT's alpha): no comparison
    after = {"a_top1": 0.79, "a_top1_ci": [0.76, 0.82], "g": {"m": {"mean": 0.6, "std": 0.01}},
             "b_top1": 0.5, "notebook_seconds": 40.0, "chosen": [0.5, 0.75]}
    (tmp_path / "b.json").write_text(json.dumps(before))
    (tmp_path / "a.json").write_text(json.dumps(after))
    rows = {r["metric"]: r for r in mod.compare(before, after)}
    assert set(rows) == {"a_top1", "g.m.mean", "b_top1"}  # seconds, std and one-sided keys left out
    assert rows["a_top1"]["overlap"] is True and abs(rows["a_top1"]["diff"] + 0.01) < 1e-12
    assert rows["g.m.mean"]["overlap"] is False and rows["g.m.mean"]["before_ci"] == [0.48, 0.52]
    assert rows["b_top1"]["overlap"] is None  # no interval after the cut: not claimed either way
    assert mod.main([str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--match", "top1",
                     "--out", str(tmp_path / "c.json")]) == 0
    assert "2 metrics, 1 with intervals on both sides, 0 without overlap" in capsys.readouterr().out


def test_the_cut_comparison_names_a_changed_verdict(tmp_path, capsys):
    from conftest import load_benchmark

    mod = load_benchmark("compare_cut")
    row = lambda d, sig, b="ce": {"a": "kto", "b": b, "metric": "typo_top1", "diff_pts": d,  # noqa: E731
                                  "ci_pts": [d - 1, d + 1], "significant": sig}
    before = {"x_top1": 0.5, "verdicts": {"rows": [row(-3.0, True), row(0.5, False, "dpo")]},
              "other": [dict(row(2.0, True), metric="clean_top1")]}
    after = {"x_top1": 0.5, "verdicts": {"rows": [row(2.0, True), row(0.4, False, "dpo")]},
             "other": [dict(row(1.5, False), metric="clean_top1")]}
    v = mod.compare_verdicts(before, after)
    # a significant difference that changed sign, one that lost significance, one n.s. both times
    assert [(r["where"], r["b"], r["metric"], r["kept"]) for r in v] == [
        ("other", "ce", "clean_top1", False), ("verdicts.rows", "ce", "typo_top1", False),
        ("verdicts.rows", "dpo", "typo_top1", True)]
    same = mod.compare_verdicts(before, before)
    assert same and all(r["kept"] for r in same)
    (tmp_path / "b.json").write_text(json.dumps(before))
    (tmp_path / "a.json").write_text(json.dumps(after))
    assert mod.main([str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "VERDICT CHANGED other kto vs ce clean_top1" in out and "3 paired verdicts in both, 2 changed" in out
    assert len(json.loads((tmp_path / "c.json").read_text())["verdicts"]) == 3


def test_the_cut_comparison_keeps_verdicts_apart_that_differ_only_in_their_setting():
    """Notebook 05's rows name a method, a task and a noise share instead of a and b: one row per setting."""
    from conftest import load_benchmark

    mod = load_benchmark("compare_cut")
    row = lambda m, p, d, sig: {"task": "simclr", "method": m, "metric": "linear_probe_top1", "noise_share": p,  # noqa: E731
                                "diff": d, "diff_std": 0.01, "ci": [d - 0.02, d + 0.02], "seeds": [0, 1, 2],
                                "significant": sig}
    before = {"simclr_vs_ince": [row("rince", 0.0, -0.05, False), row("rince", 0.3, -0.06, True),
                                 row("gca-uot", 0.0, 0.007, True)]}
    after = {"simclr_vs_ince": [row("rince", 0.0, -0.05, True), dict(row("rince", 0.3, -0.06, True), near_edge=None),
                                dict(row("gca-uot", 0.0, -0.001, False), near_edge=True)]}  # a flag names nothing
    v = {(r["a"], r["setting"]): r for r in mod.compare_verdicts(before, after)}
    assert set(v) == {("rince", "noise_share 0.0, task simclr"), ("rince", "noise_share 0.3, task simclr"),
                      ("gca-uot", "noise_share 0.0, task simclr")}
    # gca-uot clean lost significance, rince clean gained it, rince noisy kept it
    assert [v[k]["kept"] for k in sorted(v)] == [False, False, True]
    assert all(r["b"] == "baseline" and r["metric"] == "linear_probe_top1" for r in v.values())
