"""The reports pipeline: execute notebooks/NN_*.ipynb in order with papermill into a reports folder.

Each notebook runs in a staging folder (its ``out_dir`` parameter) and only when it succeeds are its
executed notebook, HTML, figures and metrics moved into the reports folder, file by file with atomic renames;
a failing notebook stops the run with its name and error and leaves the reports of earlier runs intact.
At the end ``README.md`` of the reports folder summarises the key numbers of every metrics JSON.

Notebooks call ``write_metrics`` and save figures under ``figure_path``; they receive ``profile`` and
``out_dir`` as papermill parameters.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import check_profile
from .fileio import atomic_write_text, check_writable_dir, clean_stale_temp_files
from .progress import progress_disabled

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_NB_RE = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


class NotebookFailed(RuntimeError):
    def __init__(self, notebook: str, error: str, executed: str | None = None):
        self.notebook, self.error, self.executed = notebook, error, executed
        where = f" (executed copy: {executed})" if executed else ""
        super().__init__(f"notebook {notebook} failed: {error}{where}")


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics(out_dir: str | Path, name: str, metrics: dict) -> Path:
    """Write ``out_dir/metrics/<name>.json`` atomically (name like ``00_world_and_tiny_clip``), with a ``machine``
    entry (``clipwb.precision.describe``: the precision ``auto`` chose here, the CPU / GPU, torch) unless the
    notebook set one: results computed in fp32 and in bf16 differ slightly."""
    from .precision import describe

    metrics = {"machine": describe(), **metrics}
    return atomic_write_text(Path(out_dir) / "metrics" / f"{name}.json",
                             json.dumps(_jsonable(metrics), indent=2, sort_keys=True))


def figure_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir/figures/<name>.png`` (folder created)."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def list_notebooks(nb_dir: str | Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    nbs = sorted(p for p in Path(nb_dir).glob("*.ipynb") if _NB_RE.match(p.name))
    if only is not None and not only:
        raise ValueError("only is empty: name the notebooks to run (e.g. 00 02), or leave it out to run all")
    if only:
        want = set(only)
        nbs = [p for p in nbs if p.name[:2] in want or p.stem in want]
        missing = want - {p.name[:2] for p in nbs} - {p.stem for p in nbs}
        if missing:
            raise ValueError(f"no notebook matches {sorted(missing)} in {nb_dir}")
    return nbs


def clean_stale_stages(out_dir: Path) -> list[Path]:
    """Remove staging folders (``.stage-*``) that runs killed mid-notebook left in ``out_dir``, and the temp files
    of killed atomic writes in its metrics/ and figures/ (one report run per folder at a time)."""
    removed = [p for p in out_dir.glob(".stage-*") if p.is_dir()]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    for sub in (out_dir, out_dir / "metrics", out_dir / "figures"):
        if sub.is_dir():
            removed += clean_stale_temp_files(sub)
    return removed


@dataclass
class NotebookResult:
    name: str
    seconds: float
    files: list[str]


def _merge(stage: Path, out_dir: Path) -> list[str]:
    moved = []
    for src in sorted(stage.rglob("*")):
        if src.is_file():
            dst = out_dir / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            moved.append(str(dst.relative_to(out_dir)))
    return moved


def run_notebook(nb: Path, out_dir: Path, profile: str, parameters: dict | None = None, html: bool = True,
                 kernel_name: str = "python3", progress: bool = True) -> NotebookResult:
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".stage-{nb.stem}-", dir=out_dir))
    executed = stage / nb.name
    t0 = time.time()
    params = {"profile": profile, "out_dir": str(stage), **(parameters or {})}
    headless_before = os.environ.get("CLIPWB_HEADLESS")
    os.environ["CLIPWB_HEADLESS"] = "1"  # the kernel inherits it: widgets render static views
    try:
        pm.execute_notebook(str(nb), str(executed), parameters=params, cwd=str(nb.parent), kernel_name=kernel_name,
                            progress_bar=progress and not progress_disabled(), log_output=False)
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
        keep = out_dir / "failed" / nb.name
        keep.parent.mkdir(parents=True, exist_ok=True)
        if executed.is_file():
            os.replace(executed, keep)
        shutil.rmtree(stage, ignore_errors=True)
        msg = f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', str(e))}".strip()
        raise NotebookFailed(nb.name, msg, str(keep) if keep.is_file() else None) from e
    finally:
        if headless_before is None:
            os.environ.pop("CLIPWB_HEADLESS", None)
        else:
            os.environ["CLIPWB_HEADLESS"] = headless_before
    if html:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(executed))
        (stage / f"{nb.stem}.html").write_text(body)
    files = _merge(stage, out_dir)
    shutil.rmtree(stage, ignore_errors=True)
    (out_dir / "failed" / nb.name).unlink(missing_ok=True)
    return NotebookResult(nb.stem, time.time() - t0, files)


# The numbers reports/README.md shows first for each notebook (others follow in the per-notebook JSON).
KEY_METRICS = {
    "00": ["zero_shot_clean_top1", "zero_shot_control_top1", "zero_shot_typo_top1", "attack_success",
           "text_read_top1", "gender_top1", "occupation_top1", "probe_ceiling_typo", "pretrain_seconds"],
    "01": ["clean_top1", "control_top1", "typo_top1", "attack_success_rate", "heldout_typo_top1",
           "heldout_attack_success_rate", "note_typo_top1", "n_images", "n_variants", "skipped_corrupt",
           "build_seconds"],
    "05": ["simclr_ince_clean_linear_probe_top1", "simclr_gca-ince_clean_linear_probe_top1",
           "simclr_gca-uot_clean_linear_probe_top1", "simclr_ince_noisy_linear_probe_top1",
           "simclr_gca-uot_noisy_linear_probe_top1", "clip_ince_clean_zero_shot_top1",
           "clip_gca-ince_clean_zero_shot_top1", "clip_gca-uot_clean_zero_shot_top1", "objective_monotone"],
    "06": ["closed_form_sin_theta_n500", "closed_form_sin_theta_n5000", "trained_sin_theta_n500",
           "unpaired_all_monotone", "digits-shapes_semi_paired_only", "digits-shapes_semi_with_unpaired",
           "digits-shapes_semi_oracle", "gradient_max_abs_error"],
}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _fmt_ci(ci) -> str:
    """A metric's 95 % interval (``<key>_ci`` = [low, high]) after its value, or nothing."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return ""


def write_summary(out_dir: str | Path, profile: str | None = None, timings: dict | None = None) -> Path:
    """reports/README.md: the main job's cold and warm timings (``runs.json``), then one table per metrics JSON,
    key numbers first; each notebook's "ran in" is its newest run (``timings`` overrides)."""
    out_dir = Path(out_dir)
    lines = ["# clipwb reports", "",
             "Written by `python -m clipwb report` (the README's main command); do not edit by hand.", ""]
    if profile:
        lines += [f"Profile: `{profile}`. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    names = [mf.stem for mf in sorted((out_dir / "metrics").glob("*.json"))]
    timing_lines, latest = _timing_lines(out_dir, profile, names)
    timings = {**latest, **(timings or {})}
    # one line per machine kind: the precision reason's measured milliseconds differ from run to run
    machines: dict[tuple, dict] = {}
    for mf in sorted((out_dir / "metrics").glob("*.json")):
        m = json.loads(mf.read_text()).get("machine")
        if m:
            key = tuple(str(m.get(k)) for k in ("precision", "gpu", "cpu", "cpu_bf16_native", "torch"))
            machines.setdefault(key, m)
    for m in machines.values():
        lines += [f"Computed in **{m['precision']}** on {m.get('gpu') or m['cpu']} (native bf16: "
                  f"{m['cpu_bf16_native']}; torch {m['torch']}): {m['precision_reason']}. Another machine that "
                  f"resolves to the same precision reproduces these numbers; the other precision gives slightly "
                  f"different ones.", ""]
    lines += timing_lines
    for mf in sorted((out_dir / "metrics").glob("*.json")):
        data = json.loads(mf.read_text())
        nn = mf.stem[:2]
        keys = [k for k in KEY_METRICS.get(nn, []) if k in data]
        keys += [k for k in sorted(data) if k not in keys and isinstance(data[k], (int, float, str, bool))]
        lines += [f"## {mf.stem}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(data[k])}{_fmt_ci(data.get(f'{k}_ci'))} |" for k in keys]
        extra = []
        if (out_dir / f"{mf.stem}.html").is_file():
            extra.append(f"[notebook (HTML)]({mf.stem}.html)")
        figs = sorted((out_dir / "figures").glob(f"{nn}_*.png"))
        extra += [f"[{f.stem}](figures/{f.name})" for f in figs]
        if timings and mf.stem in timings:
            extra.append(f"ran in {timings[mf.stem]:.0f} s")
        lines += ["", " · ".join(extra), ""]
    return atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")


RUNS_FILE = "runs.json"  # the main job's history beside README.md: per run, per-notebook seconds and cache state


def cache_state(cache: str | Path | None = None) -> dict:
    """How much the clipwb cache held when a main job started: stored runs (``<cache>/runs``) and built datasets
    (``<cache>/datasets``). A run that starts with neither is *cold*: it computes everything (the shipped tiny
    weights aside); else it is *warm* and reads back what it can."""
    from .fileio import cache_dir

    root = cache_dir(cache)
    runs = sum(1 for f in (root / "runs").glob("*") if f.is_file() and not f.name.startswith("."))
    sets = sum(1 for d in (root / "datasets").glob("*") if d.is_dir())
    return {"runs": runs, "datasets": sets, "state": "cold" if runs == sets == 0 else "warm"}


def _machine_line() -> str:
    import platform

    from .precision import cpu_info

    info = cpu_info()
    return f"{info['model']} ({os.cpu_count()} cores, native bf16: {info['bf16_native']}), {platform.system()}"


def calibration_seconds() -> float | None:
    """This machine's speed on a fixed small workload: the seconds of one forward + backward of a conv net shaped
    like the tiny CLIP's image tower in the precision ``auto`` chooses here (``precision.measure_cpu_variants``,
    cached per machine in precision.json), recorded with every run in runs.json. Not used to scale estimates across
    machines any more (``estimate_seconds``: across CPU vendors it misled). None on a GPU."""
    import torch

    from .precision import measured_cpu_variants, resolve_precision

    if torch.cuda.is_available():
        return None
    prec = resolve_precision("auto", "cpu")
    t = measured_cpu_variants()
    variant = "bf16_cl" if prec.name == "bf16" else ("fp32_cl" if prec.channels_last else "fp32")
    return float(t.get(variant, t["fp32"]))


def read_runs(out_dir: str | Path) -> list[dict]:
    """The runs recorded in ``<out_dir>/runs.json`` (none where it is missing or unreadable)."""
    path = Path(out_dir) / RUNS_FILE
    try:
        runs = json.loads(path.read_text()).get("runs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in runs if isinstance(r, dict) and isinstance(r.get("notebooks"), dict)]


def _precision_class(machine: str) -> str | None:
    """"native bf16: True" / "...: False" of a ``_machine_line`` (None where it does not say): a CPU without native
    bf16 trains in fp32, about 2x the time of one with it on the PO and GCA notebooks (measured: AMD EPYC AVX2 vs
    Zen 4), so another machine's history is taken from one of the same class first."""
    import re

    m = re.search(r"native bf16: (True|False)", machine or "")
    return m.group(1) if m else None


def estimate_seconds(history: list[dict], names: list[str], profile: str, state: str, machine: str) -> dict:
    """The expected seconds of running notebooks ``names`` from a cache in ``state`` (cold / warm), per notebook
    from the newest recorded run (``runs.json`` rows) of the same profile and cache state: on this ``machine``
    as recorded; else as recorded on another machine, one of this machine's precision class (native bf16 or not,
    ``_precision_class``) first, scaled by how the two compare on the notebooks both have timed (this machine's
    own runs, stopped or ``--only`` ones included, or estimates already taken from a better basis: sum of these /
    sum of the other run's), unscaled where they share none (the job then rescales the rest by its own first
    notebooks, ``remaining_seconds``). So a job stopped after its first notebooks calibrates the next one's opening
    estimate as a finished notebook calibrates the rest of its own job (on the AVX2 EPYC: 76 min said, unscaled
    from a Zen 4's run, where 00 and 01 of its stopped runs give 129 min). Scaling by the machines'
    ``calibration_s`` (one conv net's forward and backward) was dropped: replayed over the recorded whole cold runs
    of an Intel Xeon and an AMD EPYC (``benchmarks/estimate_replay.py``) it erred by 30-162 % where the unscaled
    estimate erred by 18-51 % and the estimate after the first notebook by 2-7 %. Returns {"seconds": total of the
    known, "per_notebook", "basis": per notebook "this machine" | "as on M" | "as on M x1.75" (the factor applied),
    "unknown": notebooks no run has timed}. For a warm cache, whole runs (main jobs) come before subsets: a
    ``--only`` run from a warm cache usually follows a change and recomputes its notebook, so it times a cold
    one."""
    runs = [r for r in reversed(history) if r.get("profile") == profile and r.get("cache", {}).get("state") == state]
    if state == "warm":  # stable: newest first within each group; runs recorded before "whole" existed were main jobs
        runs.sort(key=lambda r: not r.get("whole", True))
    kin = _precision_class(machine)
    # this machine's runs, then another machine that computes as this one does (native bf16 or fp32) before any
    # other (stable sorts: newest first within each group)
    ordered = sorted(runs, key=lambda r: (r.get("machine") != machine, _precision_class(r.get("machine", "")) != kin))
    known: dict[str, float] = {}  # every notebook's seconds in this machine's terms, from the best basis so far
    source: dict[str, str] = {}  # and the basis it came from
    for run in ordered:
        times = run["notebooks"]
        if run.get("machine") == machine:
            factor, label = 1.0, "this machine"
        else:
            shared = [n for n in times if n in known and times[n] > 0]
            factor = sum(known[n] for n in shared) / sum(times[n] for n in shared) if shared else 1.0
            label = f"as on {run['machine']}" + (f" x{factor:.2f}" if shared else "")
        for name, seconds in times.items():
            if name not in known:
                known[name], source[name] = seconds * factor, label
    per = {n: known[n] for n in names if n in known}
    basis = {n: source[n] for n in per}
    unknown = [n for n in names if n not in known]
    return {"seconds": float(sum(per.values())), "per_notebook": per, "basis": basis, "unknown": unknown}


def remaining_seconds(per_notebook: dict, left: list[str], done: dict) -> tuple[float, float]:
    """(seconds still expected for the notebooks ``left``, the factor applied): their estimates
    (``per_notebook``, as ``estimate_seconds`` gives them) scaled by how the finished notebooks compared with theirs,
    sum of the seconds taken / sum of the seconds estimated over the notebooks of ``done`` (name -> seconds taken)
    that had an estimate; 1 before any has finished. The job's own first notebooks thus calibrate the rest: another
    machine's history, or this machine on a slower day (``benchmarks/estimate_replay.py`` measures how well)."""
    timed = [n for n in done if per_notebook.get(n)]
    factor = (sum(done[n] for n in timed) / sum(per_notebook[n] for n in timed)) if timed else 1.0
    return factor * sum(per_notebook.get(n, 0) for n in left), factor


def _fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def announce(out_dir: Path, profile: str, names: list[str], cache: dict, device: str) -> dict:
    """The main job's opening lines: profile, device, cache state and the time estimate (this report folder's
    runs.json, else the repository's reports/runs.json), on stderr; returns the estimate."""
    history = read_runs(out_dir) or read_runs(REPO_ROOT / "reports")
    est = estimate_seconds(history, names, profile, cache["state"], _machine_line())
    bases = sorted(set(est["basis"].values()))
    line = (f"[clipwb report] {len(names)} notebook(s), profile {profile}, on {_machine_line()} ({device}), cache "
            f"{cache['state']}: ")
    if est["per_notebook"]:
        line += f"about {_fmt_minutes(est['seconds'])} expected ({'; '.join(bases)})"
        if any(b != "this machine" for b in bases):
            line += ", rescaled after each notebook by how this machine compares"
        if est["unknown"]:
            line += f", plus {', '.join(est['unknown'])} (never timed {'warm' if cache['state'] == 'warm' else 'cold'})"
    else:
        line += f"no {profile} run of these notebooks from a {cache['state']} cache is recorded to estimate from"
    if cache["state"] == "warm":
        # "warm" only says that the cache holds runs, not whose: a notebook whose runs are missing (new settings,
        # another model) takes its cold time, so the cold estimate is the upper end
        cold = estimate_seconds(history, names, profile, "cold", _machine_line())
        if cold["seconds"] > max(2 * est["seconds"], est["seconds"] + 60):
            line += (f"; up to {_fmt_minutes(cold['seconds'])} where the cache lacks their runs (cold: "
                     f"{'; '.join(sorted(set(cold['basis'].values())))})")
        est["cold_seconds"] = cold["seconds"]
    print(line, file=sys.stderr, flush=True)
    return est


def record_run(out_dir: str | Path, profile: str, timings: dict, cache: dict, whole: bool = True,
               keep: int = 20, calibration: float | None = None, stopped: str | None = None) -> Path:
    """Append one run to ``<out_dir>/runs.json`` (the last ``keep`` runs, and older ones that are the newest whole
    run of their machine, profile and cache state: what estimates and reports/README.md read); ``whole``: every
    notebook was asked
    for (the main job), not a subset (``--only``); ``calibration``: this machine's ``calibration_seconds``;
    ``stopped``: why a run ended before its last notebook (interrupted, a notebook failed): ``timings`` then holds
    the notebooks it finished, recorded with ``whole`` False, so that the next estimate on this machine has them."""
    path = Path(out_dir) / RUNS_FILE
    runs = read_runs(out_dir)
    runs.append({"finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "profile": profile,
                 "whole": whole and stopped is None, **({"stopped": stopped} if stopped else {}),
                 "cache": cache, "machine": _machine_line(), "notebooks": {k: round(v, 1) for k, v in timings.items()},
                 "seconds": round(sum(timings.values()), 1),
                 **({"calibration_s": round(calibration, 5)} if calibration else {})})
    return atomic_write_text(path, json.dumps({"runs": _retained(runs, keep)}, indent=1) + "\n")


def _retained(runs: list[dict], keep: int) -> list[dict]:
    """The last ``keep`` runs, and before them the newest whole run of each (machine, profile, cache state) that
    ``--only`` runs would otherwise push out (a machine's one whole cold run is its estimate's basis), in order."""
    newest_whole = {}
    for i, r in enumerate(runs):
        if r.get("whole", True):
            newest_whole[(r.get("machine"), r.get("profile"), r.get("cache", {}).get("state"))] = i
    cut, whole = max(len(runs) - keep, 0), set(newest_whole.values())
    return [r for i, r in enumerate(runs) if i >= cut or i in whole]


def _timing_lines(out_dir: Path, profile: str | None, all_names: list[str]) -> tuple[list[str], dict]:
    """The newest cold and warm runs of every notebook (``runs.json``) as a table, and per notebook the seconds of
    its newest run."""
    runs = [r for r in read_runs(out_dir) if profile is None or r["profile"] == profile]
    latest = {}
    for r in runs:
        latest.update(r["notebooks"])
    whole = [r for r in runs if r.get("whole", True)]  # runs recorded before "whole" existed were main jobs
    picked = [(state, next((r for r in reversed(whole) if r["cache"]["state"] == state), None))
              for state in ("cold", "warm")]
    picked = [(s, r) for s, r in picked if r]
    if not picked:
        return [], latest
    lines = ["## Main job timings", "",
             "Seconds per notebook of the newest run of the main job (all notebooks) that started with an empty cache "
             "(cold) and with a filled one (warm: runs, embeddings and built sets read back); - : the notebook did "
             "not exist yet or was not in that run.", "",
             "| notebook | " + " | ".join(f"{s} ({r['finished']})" for s, r in picked) + " |",
             "|---|" + "---|" * len(picked)]
    for name in all_names:
        lines.append(f"| {name} | " + " | ".join(f"{r['notebooks'][name]:.0f}" if name in r["notebooks"] else "-"
                                                for _, r in picked) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['seconds']:.0f}** ({r['seconds'] / 60:.1f} min)"
                                               for _, r in picked) + " |")
    lines += ["", "Machine: " + "; ".join(f"{s}: {r['machine']}" for s, r in picked), ""]
    return lines, latest


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the main job runs, SIGTERM (``kill``, ``timeout``) stops it as Ctrl-C does (KeyboardInterrupt), so
    that it records what it finished; the previous handler comes back after. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_reports(out_dir: str | Path = REPO_ROOT / "reports", profile: str = "full", only: list[str] | None = None,
                nb_dir: str | Path = NOTEBOOK_DIR, parameters: dict | None = None, html: bool = True,
                progress: bool = True) -> list[NotebookResult]:
    """Execute the notebooks in order; stop at the first failure (NotebookFailed)."""
    check_profile(profile)
    out_dir = Path(out_dir).resolve()
    nbs = list_notebooks(nb_dir, only)
    if not nbs:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {nb_dir}")
    check_writable_dir(out_dir, "reports folder")
    clean_stale_stages(out_dir)
    cache = cache_state()
    import torch

    from .progress import tqdm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    est = announce(out_dir, profile, [nb.stem for nb in nbs], cache, device)
    results, t0 = [], time.time()
    left, _ = remaining_seconds(est["per_notebook"], [nb.stem for nb in nbs], {})
    bar = tqdm(nbs, desc="main job", unit="notebook", disable=not progress, position=0)
    def calibration():  # measured after the notebooks (they measure and cache the precision choice first)
        return calibration_seconds() if device == "cpu" else None

    def timings():  # name -> seconds of the notebooks finished so far
        return {r.name: r.seconds for r in results}

    try:
        with _sigterm_as_interrupt():
            for nb in bar:  # ``left``: the rest of the job as estimated after the notebook before
                bar.set_postfix_str(f"{nb.stem}" + (f", ~{_fmt_minutes(left)} left" if left else ""))
                print(f"\n[clipwb report] {nb.name} ({profile})", file=sys.stderr, flush=True)
                res = run_notebook(nb, out_dir, profile, parameters, html=html, progress=progress)
                results.append(res)
                left, factor = remaining_seconds(est["per_notebook"], [n.stem for n in nbs[len(results):]],
                                                 timings())
                print(f"[clipwb report] {nb.name} done in {res.seconds:.0f} s"
                      + (f"; ~{_fmt_minutes(left)} left (the estimates x {factor:.2f}, from the notebooks done so "
                         f"far)" if left else ""), file=sys.stderr, flush=True)
    except (KeyboardInterrupt, NotebookFailed) as e:
        # the notebooks finished before the stop keep their timings (the next estimate here uses them)
        if results:
            why = (f"{e.notebook} failed" if isinstance(e, NotebookFailed) else "interrupted") + \
                  f" after {len(results)} of {len(nbs)} notebooks"
            record_run(out_dir, profile, timings(), cache, whole=only is None, calibration=calibration(),
                       stopped=why)
            print(f"[clipwb report] stopped ({why}); their timings are in {out_dir / RUNS_FILE}", file=sys.stderr,
                  flush=True)
        raise
    finally:
        bar.close()
    record_run(out_dir, profile, timings(), cache, whole=only is None, calibration=calibration())
    write_summary(out_dir, profile, timings())
    print(f"[clipwb report] done in {_fmt_minutes(time.time() - t0)}: reports in {out_dir} (README.md: the key "
          f"numbers and timings; NN_*.html: the executed notebooks; figures/, metrics/)", file=sys.stderr, flush=True)
    return results
