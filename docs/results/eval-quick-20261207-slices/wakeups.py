#!/usr/bin/env python3
"""Offline check of the wake-up law for the node bound on this run's what-ifs (whatifs.json: each
what-if's windows with every service's visits, CPUs, run-queue wait and timeslices per second).

For each what-if with ground truth: how the other services' CPU per request (B) and timeslices
per second (S) changed from baseline to truth; the cost per timeslice c that would explain B's
change if S stayed constant (c_or, from the truth: an oracle) and the one the baseline and
slowed-down windows give (c_sl); and the prediction's error with the node bound as the product
computes it with the node-regime cap of commit 'node regime keeps a contended node's share'
(c = 0), with the law at a fixed c, and with c_sl.
Usage: wakeups.py [C_US]   (the fixed c, default 12 µs)"""
import json, sys, statistics as st, math

CPUS, MAX_BUSY = 2.0, 0.97
def med(v): return st.median(v) if v else float('nan')

def bound(w, T, r_t, delta_s, c_s, saturated):
    """Node bound of one baseline window, others' timeslices/s held constant at cost c_s each."""
    busy, app, x0 = w["node_busy"][0], w["app_cores"][0], w["rps"]
    S = sum(v["timeslices"] for s, v in w["services"].items() if s != T)
    other = max(busy * CPUS - app, 0.0)
    U = busy if saturated else max(MAX_BUSY, busy)
    room = U * CPUS - other - c_s * S
    left = app / x0 - r_t * delta_s - c_s * S / x0
    return room / left if left > 0 else math.inf

def per_visit(ws, s, f):
    return med([w["services"][s][f] / w["services"][s]["visits"] for w in ws if w["services"].get(s, {}).get("visits", 0) > 0])

def c_from_slow(base, slow, others):
    num = den = 0.0
    for s in others:
        dc = per_visit(base, s, "cpu") - per_visit(slow, s, "cpu")
        dn = per_visit(base, s, "timeslices") - per_visit(slow, s, "timeslices")
        if math.isfinite(dc) and math.isfinite(dn):
            num += dc * dn; den += dn * dn
    return num / den if den > 0 else float('nan')

def main():
    fixed = float(sys.argv[1]) * 1e-6 if len(sys.argv) > 1 else 12e-6
    rows = []
    for r in json.load(open("whatifs.json")):
        f = r["id"]
        if r.get("truth_rps") is None: continue
        T = r["target"]; svc = {s["name"]: s for s in r["services"]}
        r_t = svc[T]["r"]; delta_s = r["delta_us"] * 1e-6
        ph = lambda p: [w for w in r["windows"] if w["phase"] == p and w.get("services") and w.get("node_busy")]
        base, slow, truth = ph("base"), ph("slow"), ph("truth")
        if not base or not truth: continue
        others = [s for s in svc if s != T]
        x0, x1 = med([w["rps"] for w in base]), r["truth_rps"]
        B = lambda ws: med([sum(w["services"][s]["cpu"] for s in others) / w["rps"] for w in ws])
        Nps = lambda ws: med([sum(w["services"][s]["timeslices"] for s in others) for w in ws])
        B0, B1, S0, S1 = B(base), B(truth), Nps(base), Nps(truth)
        N0 = S0 / x0
        c_oracle = (B0 - B1) / (N0 * (1 - x0 / x1)) if x1 != x0 else float('nan')
        c_slow = c_from_slow(base, slow, others)
        reg = (r.get("regime") or {}).get("limit")
        sat = reg == "node"
        by = (r.get("regime") or {}).get("predicted_by")
        def pred(c):
            nb = med([bound(w, T, r_t, delta_s, c, sat) for w in base])
            if sat:
                return min(nb, r["predicted_rps"]) if by == "bottleneck_law" else nb
            return min(r["pause_predicted_rps"], nb)
        err = lambda p: (p - x1) / x1 * 100
        p0, pf, ps = pred(0.0), pred(fixed), pred(c_slow if math.isfinite(c_slow) and c_slow > 0 else 0.0)
        rows.append(dict(id=f[:40], T=T, delta=r["delta_us"], reg=reg, gain=(x1 / r["baseline_rps"] - 1) * 100,
                         B=(B1 / B0 - 1) * 100, S=(S1 / S0 - 1) * 100, c_or=c_oracle * 1e6, c_sl=c_slow * 1e6,
                         e_prod=r["error_pct"], e0=err(p0), ef=err(pf), es=err(ps)))
    print(f"{'what-if':40} {'T':3} {'Δus':>6} {'reg':7} {'gain':>6} {'Bopt/B':>7} {'S/S0':>6} {'c_or':>6} {'c_sl':>6} | {'prod':>6} {'c=0':>6} {'c=fix':>6} {'c=slow':>6}")
    for x in rows:
        print(f"{x['id']:40} {x['T']:3} {x['delta']:6.0f} {x['reg']:7} {x['gain']:6.1f} {x['B']:7.1f} {x['S']:6.1f} {x['c_or']:6.1f} {x['c_sl']:6.1f} | {x['e_prod']:6.1f} {x['e0']:6.1f} {x['ef']:6.1f} {x['es']:6.1f}")
    sc = [x for x in rows if x["gain"] >= 10]
    rm = lambda k, xs: math.sqrt(sum(x[k] ** 2 for x in xs) / len(xs)) if xs else float('nan')
    for name, xs in (("all scored", sc), ("node", [x for x in sc if x["reg"] == "node"]), ("not node", [x for x in sc if x["reg"] != "node"])):
        print(f"{name:10} n={len(xs):2}  RMSE product {rm('e_prod', xs):5.1f}  c=0 {rm('e0', xs):5.1f}  c={fixed*1e6:.0f}us {rm('ef', xs):5.1f}  c=slow {rm('es', xs):5.1f}")
main()
