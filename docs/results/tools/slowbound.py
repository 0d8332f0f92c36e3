#!/usr/bin/env python3
"""Offline check of the node bound with the other services' CPU per request taken from the
slowed-down windows instead of the baseline's (docs/model.md, "The others' CPU per request, from
the slowed-down windows"): while the others are paused, work queues for them as it would at the
faster target's throughput, so they find more of it per wake-up.

Recomputes, for each what-if with ground truth in whatifs.json (every window's per-service visits
and CPUs), the bound per baseline window as the product computes it since the contended-node rule
(column `base`: the others' cost from the baseline) and with the others' CPU per request the median
over the slowed-down windows (column `slow`); the target's own per request comes from the baseline
(or from the slowed-down windows with `slow`). `*`: the bound is below the pause
prediction (it decides unless the regime is the node's). Bslow/Btruth: the others' CPU per request
in the slowed-down / optimized windows against the baseline's, %.
One node of 2 CPUs (the quick and real suites'). Usage, from a run's directory:
    python3 ../tools/slowbound.py whatifs.json [base|slow] > slowbound.txt"""
import json, sys, statistics as st, math
CPUS, MAX_BUSY = 2.0, 0.97
def med(v): return st.median(v) if v else float('nan')
tsrc = sys.argv[2] if len(sys.argv) > 2 else "base"
rows = []
for r in json.load(open(sys.argv[1])):
    if r.get("truth_rps") is None: continue
    T = r["target"]; svc = {s["name"]: s for s in r["services"]}
    r_t = svc[T]["r"]
    # A scaling what-if (more cores) removes no CPU per visit: the bound keeps all of it.
    cores = (r.get("optimization") or {}).get("kind") == "cores"
    delta_s = 0.0 if cores else r["delta_us"] * 1e-6
    ph = lambda p: [w for w in r["windows"] if w["phase"] == p and w.get("services") and w.get("node_busy")]
    base, slow, truth = ph("base"), ph("slow"), ph("truth")
    if not base or not slow: continue
    others = [s for s in svc if s != T]
    reg = (r.get("regime") or {}).get("limit"); by = (r.get("regime") or {}).get("predicted_by")
    sat = reg == "node"
    x1 = r["truth_rps"]
    # others' CPU per end-to-end request in slow windows; target's per request
    B_slow = med([sum(w["services"][s]["cpu"] for s in others) / w["rps"] for w in slow])
    B_base = med([sum(w["services"][s]["cpu"] for s in others) / w["rps"] for w in base])
    Tw = base if tsrc == "base" else slow
    PT = med([w["services"][T]["cpu"] / w["rps"] for w in Tw])
    B_truth = med([sum(w["services"][s]["cpu"] for s in others) / w["rps"] for w in truth]) if truth else float('nan')
    def bnd(w, B):
        busy, app, x0 = w["node_busy"][0], w["app_cores"][0], w["rps"]
        other = max(busy * CPUS - app, 0.0)
        U = busy if sat else max(MAX_BUSY, busy)
        # nodes classify can find limiting keep their share (approx: sat)
        room = U * CPUS - other
        left = B + max(PT - r_t * delta_s, 0.0) if B is not None else app / x0 - r_t * delta_s
        return room / left if left > 0 else math.inf
    nb0 = med([bnd(w, None) for w in base])
    nbs = med([bnd(w, B_slow) for w in base])
    def pred(nb):
        if sat:
            return min(nb, r["predicted_rps"]) if by == "bottleneck_law" else nb
        return min(r["pause_predicted_rps"], nb)
    err = lambda p: (p - x1) / x1 * 100
    rows.append(dict(id=r["id"][16:], T=T, d=r["delta_us"], reg=reg, gain=(x1 / r["baseline_rps"] - 1) * 100,
        Bs=(B_slow / B_base - 1) * 100, Bt=(B_truth / B_base - 1) * 100, prod=r["error_pct"], e0=err(pred(nb0)), es=err(pred(nbs)),
        nb_won0=nb0 < r["pause_predicted_rps"], nb_wons=nbs < r["pause_predicted_rps"]))
print(f"{'what-if':28} {'T':3} {'Δus':>6} {'reg':7} {'gain':>6} {'Bslow':>6} {'Btruth':>6} | {'prod':>6} {'base':>6} {'slow':>6}")
for x in rows:
    print(f"{x['id']:28} {x['T']:3} {x['d']:6.0f} {x['reg']:7} {x['gain']:6.1f} {x['Bs']:6.1f} {x['Bt']:6.1f} | {x['prod']:6.1f} {x['e0']:6.1f}{'*' if x['nb_won0'] else ' '} {x['es']:6.1f}{'*' if x['nb_wons'] else ' '}")
sc = [x for x in rows if x["gain"] >= 10]
rm = lambda k, xs: math.sqrt(sum(x[k] ** 2 for x in xs) / len(xs)) if xs else float('nan')
w5 = lambda k, xs: sum(abs(x[k]) <= 5 for x in xs) / len(xs) * 100 if xs else float('nan')
for name, xs in (("all scored", sc), ("node", [x for x in sc if x["reg"] == "node"]), ("not node", [x for x in sc if x["reg"] != "node"])):
    print(f"{name:10} n={len(xs):2}  RMSE product {rm('prod', xs):5.1f}  base-recomputed {rm('e0', xs):5.1f}  slow-B {rm('es', xs):5.1f}  within5 {w5('prod',xs):.0f}/{w5('es',xs):.0f}%")
