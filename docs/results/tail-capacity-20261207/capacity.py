#!/usr/bin/env python3
"""Each arm's capacity against default's, paired by repetition: the served req/s of windows whose
open-loop rate (420/s) exceeds what the app sustains, with at most 32 requests in flight (the
comparison's default), so each window serves what the app can under that arm.
Usage: capacity.py capacity-r10.json [capacity-r5.json ...]"""
import json, math, statistics as st, sys

from scipy import stats as sst  # pip install scipy

for f in sys.argv[1:]:
    d = json.load(open(f))
    by = {}
    for w in d["windows"]:
        by.setdefault(w["repetition"], {})[w["arm"]] = w["rps"]
    reps = sorted(by)
    print(f"{f}: rate {d['rate_rps']:.0f}/s, schedule {d['schedule']}, {len(reps)} repetitions, "
          f"default {st.mean(by[k]['default'] for k in reps):.1f} req/s")
    for arm in ("oldest-first", "per-service-fifo"):
        r = [by[k][arm] / by[k]["default"] for k in reps if arm in by[k]]
        m = st.mean(r)
        h = sst.t.ppf(0.975, len(r) - 1) * st.stdev(r) / math.sqrt(len(r))
        print(f"  {arm:17} {st.mean(by[k][arm] for k in reps):6.1f} req/s, "
              f"{(m - 1) * 100:+.1f} % [{(m - h - 1) * 100:+.1f}, {(m + h - 1) * 100:+.1f}] vs default")
