#!/usr/bin/env python3
"""Packs the what-ifs an eval run stored (--results-dir DIR/whatifs, one JSON each, a few MB in
all) into one small whatifs.json: per what-if its figures and every baseline, slowed-down and ground-truth window's throughput, node and
per-service visits, CPUs, run-queue wait and timeslices, floats to 5 significant digits.
Usage: python3 docs/results/tools/pack_whatifs.py WHATIFS_DIR > docs/results/RUN/whatifs.json"""
import json, os, sys

KEEP = ["id", "target", "optimization", "delta_us", "baseline_rps", "slow_rps", "predicted_rps", "pause_predicted_rps",
        "node_bound_rps", "truth_rps", "error_pct", "regime", "services", "delta_ns_per_request",
        "target_use"]
WKEEP = ["phase", "repetition", "rps", "node_busy", "app_cores", "services"]
PHASES = ("base", "slow", "truth")

def r5(x):
    if isinstance(x, float):
        return float(f"{x:.5g}")
    if isinstance(x, list):
        return [r5(v) for v in x]
    if isinstance(x, dict):
        return {k: r5(v) for k, v in x.items()}
    return x

out = []
d = sys.argv[1]
for f in sorted(os.listdir(d)):
    if not f.endswith(".json"):
        continue
    w = json.load(open(os.path.join(d, f)))
    if w.get("kind") not in (None, "whatif", "what-if", "what_if"):
        continue
    e = {k: w.get(k) for k in KEEP}
    e["windows"] = [{k: x.get(k) for k in WKEEP} for x in w.get("windows", []) if x.get("phase") in PHASES]
    out.append(r5(e))
json.dump(out, sys.stdout, separators=(",", ":"))
