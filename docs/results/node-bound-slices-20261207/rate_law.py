#!/usr/bin/env python3
"""Candidate law for the node bound (not in the model yet): the other services' timeslices per
*second* stay about constant, so their CPU per request is a fixed part plus c * (timeslices per
second) / X. Prediction of their CPU per request in the optimized app from the baseline alone, for
a cost c per timeslice of 10/12/14 us, against the measured value and against the bound's
assumption today (the baseline's value)."""
import json, statistics as st

T = {"chain-sync-leaf-75": "s5", "dynamic-once-sync-leaf-75": "s2", "dag-cross-async-inner-75": "s3"}
for name, t in T.items():
    d = json.load(open(name + ".json"))
    arms = {a: [w for w in d if w["arm"] == a] for a in ("base", "opt")}
    m = lambda a, f: st.mean(f(w) for w in arms[a])
    x0, x1 = m("base", lambda w: w["rps"]), m("opt", lambda w: w["rps"])
    others = lambda a, k: m(a, lambda w: sum(v[k] for s, v in w["services"].items() if s != t))
    b0, b1 = others("base", "cpu_us"), others("opt", "cpu_us")
    n0, n1 = others("base", "slices"), others("opt", "slices")
    print(f"{name}: others' CPU per request {b0:.0f} -> {b1:.0f} us ({(b1 / b0 - 1) * 100:+.1f} %; "
          f"today's bound assumes {b0:.0f}: {(b0 / b1 - 1) * 100:+.1f} %); others' timeslices/s "
          f"{n0 * x0:.0f} -> {n1 * x1:.0f}")
    for c in (10, 12, 14):
        pred = (b0 - c * n0) + c * n0 * x0 / x1
        print(f"  c = {c} us: predicted {pred:.0f} us ({(pred / b1 - 1) * 100:+.1f} % against measured)")
