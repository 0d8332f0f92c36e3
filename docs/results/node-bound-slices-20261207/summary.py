#!/usr/bin/env python3
"""Per non-target service: CPU and timeslices per end-to-end request, baseline vs optimized app
(means of the interleaved windows), and the CPU saved per timeslice saved."""
import json, sys, statistics as st

TARGETS = {"chain-sync-leaf-75": "s5", "dynamic-once-sync-leaf-75": "s2",
           "dag-cross-async-inner-75": "s3"}
for name, target in TARGETS.items():
    d = json.load(open(f"{name}.json"))
    arms = {a: [w for w in d if w["arm"] == a] for a in ("base", "opt")}
    m = lambda a, f: st.mean(f(w) for w in arms[a])
    print(f"{name}: {m('base', lambda w: w['rps']):.0f} -> {m('opt', lambda w: w['rps']):.0f} req/s, "
          f"node busy {m('base', lambda w: w['node_busy']):.3f} -> {m('opt', lambda w: w['node_busy']):.3f}")
    print("  service  cpu_us base -> opt   slices base -> opt   us per slice saved")
    for s in d[0]["services"]:
        if s == target:
            continue
        cb, co = (m(a, lambda w: w["services"][s]["cpu_us"]) for a in ("base", "opt"))
        nb, no = (m(a, lambda w: w["services"][s]["slices"]) for a in ("base", "opt"))
        per = (cb - co) / (nb - no) if abs(nb - no) > 0.1 else float("nan")
        print(f"  {s:7}  {cb:6.0f} -> {co:6.0f} ({(co - cb) / cb * 100:+5.1f} %)   "
              f"{nb:5.2f} -> {no:5.2f}   {per:6.1f}")
