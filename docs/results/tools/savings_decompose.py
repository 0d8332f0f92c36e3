#!/usr/bin/env python3
"""Splits the error of the real-server savings what-ifs (eval_real's nginx-gzip, nginx-subfilter,
haproxy-lua) into what the independently measured Δ contributes and what the pauses do.

While the target limits both the baseline and the optimized app (one worker on one core), the
optimized app's time per request is 1/X_truth, so the saving it really achieved per request is
    implied = 1/X_base - 1/X_truth
(both measured in the what-if's own interleaved windows). The prediction with that saving in
place of the measured Δ, 1/(1/X_slow - implied), is what the pauses would predict given the exact
saving: its error is the pauses' part; the rest of the product's error is Δ's.
Usage: python3 docs/results/tools/savings_decompose.py RUN/whatifs.json > RUN/decompose.txt"""
import json, math, sys

rows = json.load(open(sys.argv[1]))
alle, allp = [], []
rmse = lambda v: math.sqrt(sum(x * x for x in v) / len(v))
print(f"{'what-if':30} {'Δ µs':>6} {'implied':>8} {'Δ off':>6} {'X_base':>7} {'X_slow':>7} {'X_truth':>7}"
      f" {'error':>6} {'pauses':>7}")
for w in rows:
    if (w.get("optimization") or {}).get("kind") != "delta_us":
        continue
    xb, xs, xt = w["baseline_rps"], w["slow_rps"], w["truth_rps"]
    per_req = (w.get("delta_ns_per_request") or w["delta_us"] * 1e3) / 1e3  # µs per request
    implied = (1 / xb - 1 / xt) * 1e6
    pred = 1 / (1 / xs - implied * 1e-6)
    pause_err = 100 * (pred / xt - 1)
    print(f"{w['id'][:22] + ' ' + w['target']:30} {per_req:6.0f} {implied:8.0f} {100 * (per_req / implied - 1):+5.1f}%"
          f" {xb:7.0f} {xs:7.0f} {xt:7.0f} {w['error_pct']:+5.1f}% {pause_err:+6.1f}%")
    alle.append(w["error_pct"])
    allp.append(pause_err)
print(f"\nRMSE over {len(alle)} what-ifs: product {rmse(alle):.1f} %, pauses given the implied saving {rmse(allp):.1f} %")
