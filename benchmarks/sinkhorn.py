"""Our log-domain Sinkhorn (clipwb.losses.ot.sinkhorn_log) against POT on the same inputs, eps and iterations
(issue 6): POT's stable log-domain solver (ot.sinkhorn, method='sinkhorn_log'), its default solver
(method='sinkhorn'), ot.unbalanced.sinkhorn_unbalanced, and forward+backward through POT's torch backend.
Prints time ratios and max plan differences; writes benchmarks/results/sinkhorn.json.

    python benchmarks/sinkhorn.py [--sizes 256 512 1024 2048] [--eps 0.5 0.1 0.05] [--iters 10] [--repeat 15]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import ot
import torch

from clipwb.fileio import atomic_write_text
from clipwb.losses.ot import sinkhorn_plan

OUT = Path(__file__).resolve().parent / "results" / "sinkhorn.json"


def _pair(fn_a, fn_b, repeat):
    """Time two functions side by side: one warm-up each, then ``repeat`` interleaved rounds; medians (45 rounds
    up to n = 512, 15 at 1024, 5 at 2048 by default: this shared 2-core machine jitters by +-30 % per call)."""
    out_a, out_b = fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - t)
    return out_a, statistics.median(ta), out_b, statistics.median(tb)


def _pot(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        P = fn()
    P = np.asarray(P.detach() if isinstance(P, torch.Tensor) else P)
    bad = [x for x in w if "numerical" in str(x.message).lower() or "overflow" in str(x.message).lower()]
    return P, bool(np.isfinite(P).all()) and not bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.5, 0.1, 0.05])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for n in args.sizes:
        x = torch.nn.functional.normalize(torch.randn(n, 64, dtype=torch.float64), dim=-1)
        y = torch.nn.functional.normalize(torch.randn(n, 64, dtype=torch.float64), dim=-1)
        C = 1 - x @ y.T
        a = torch.full((n,), 1.0 / n, dtype=torch.float64)
        Cn, an = C.numpy(), a.numpy()
        for eps in args.eps:
            it = args.iters
            rep = 3 * args.repeat if n <= 512 else (args.repeat if n <= 1024 else max(3, args.repeat // 3))
            # POT's balanced solvers update columns first, from u = 1/n: same order here
            ours = {
                "bal": lambda: sinkhorn_plan(-C / eps, a.log(), a.log(), half_steps=2 * it, row_first=False,
                                             init="uniform"),
                "unb": lambda: sinkhorn_plan(-C / eps, a.log(), a.log(), half_steps=2 * it, rho=args.rho, eps=eps),
            }
            cases = {
                "pot_log": ("bal", lambda: ot.sinkhorn(an, an, Cn, eps, method="sinkhorn_log", numItermax=it,
                                                       stopThr=0.0)),
                "pot_default": ("bal", lambda: ot.sinkhorn(an, an, Cn, eps, method="sinkhorn", numItermax=it,
                                                           stopThr=0.0)),
                "pot_unbalanced": ("unb", lambda: ot.unbalanced.sinkhorn_unbalanced(
                    an, an, Cn, eps, args.rho, numItermax=it, stopThr=0.0, reg_type="entropy")),
            }
            for solver, (kind, fn) in cases.items():
                P_mine, t_mine, (P_ref, stable), t_ref = _pair(ours[kind], lambda: _pot(fn), rep)
                diff = float(np.abs(P_ref - P_mine.numpy()).max()) if stable else None
                rows.append({"n": n, "eps": eps, "solver": solver, "ours_seconds": t_mine, "pot_seconds": t_ref,
                             "speedup": t_ref / t_mine, "max_abs_plan_diff": diff, "pot_stable": stable})
            # forward + backward: ours (autograd through the loop) vs POT's torch backend (log-domain)
            Ct = C.clone().requires_grad_(True)

            def ours_grad():
                P = sinkhorn_plan(-Ct / eps, a.log(), a.log(), half_steps=2 * it, row_first=False, init="uniform")
                (P * Ct).sum().backward()
                return P.detach()

            def pot_grad():
                P = ot.sinkhorn(a, a, Ct, eps, method="sinkhorn_log", numItermax=it, stopThr=0.0)
                (P * Ct).sum().backward()
                return P

            P_g, t_g, (P_pg, stable), t_pg = _pair(ours_grad, lambda: _pot(pot_grad), rep)
            rows.append({"n": n, "eps": eps, "solver": "pot_torch_grad", "ours_seconds": t_g, "pot_seconds": t_pg,
                         "speedup": t_pg / t_g,
                         "max_abs_plan_diff": float(np.abs(P_pg - P_g.numpy()).max()) if stable else None,
                         "pot_stable": stable})
            for r in rows[-4:]:
                d = "n/a" if r["max_abs_plan_diff"] is None else f"{r['max_abs_plan_diff']:.1e}"
                print(f"n={n:5d} eps={eps:<5} {r['solver']:15s} ours {r['ours_seconds'] * 1e3:8.2f} ms  "
                      f"pot {r['pot_seconds'] * 1e3:8.2f} ms  speedup {r['speedup']:6.2f}x  max|dP| {d}"
                      f"{'' if r['pot_stable'] else '  (POT unstable)'}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
