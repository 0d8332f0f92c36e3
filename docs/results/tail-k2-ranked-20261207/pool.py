#!/usr/bin/env python3
"""Pools tail-suite runs of one configuration: per load level (the i-th rate of each run), the
per-repetition ratios oldest-first / default of p99 and of the mean (paired by repetition),
over every run given; prints mean and 95 % t-interval."""
import json, statistics, sys
from scipy import stats

def ratios(paths):
    out = {}
    for p in paths:
        c = json.load(open(p))['cases'][0]['comparison']
        rates = sorted({w['rate_rps'] for w in c['windows']})
        for i, r in enumerate(rates):
            ws = [w for w in c['windows'] if w['rate_rps'] == r]
            by = {(w['arm'], w['repetition']): w for w in ws}
            for (arm, rep), w in by.items():
                if arm != 'oldest-first':
                    continue
                d = by.get(('default', rep))
                if d:
                    o = out.setdefault(i, {'p99': [], 'mean': [], 'rate': []})
                    o['p99'].append(w['p99_us'] / d['p99_us'])
                    o['mean'].append(w['mean_us'] / d['mean_us'])
                    o['rate'].append(r)
    return out

def ci(xs):
    m = statistics.mean(xs)
    h = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return m, m - h, m + h

if __name__ == '__main__':
    res = {}
    for i, o in sorted(ratios(sys.argv[1:]).items()):
        p, m = ci(o['p99']), ci(o['mean'])
        res[i] = {'rates': sorted(set(o['rate'])), 'n': len(o['p99']), 'p99_vs_default': p, 'mean_vs_default': m}
        print(f"load {i}: rates {sorted(set(o['rate']))} n={len(o['p99'])} p99 {100*(p[0]-1):+.0f} % [{100*(p[1]-1):+.0f}, {100*(p[2]-1):+.0f}]  mean {100*(m[0]-1):+.0f} % [{100*(m[1]-1):+.0f}, {100*(m[2]-1):+.0f}]")
    print(json.dumps(res))
