#!/usr/bin/env python3
"""What oldest-first could gain on the emulated fan-out, in an idealised model (no scheduling
cost, no wake-up latency): Poisson arrivals; a request is a front task (exp, mean F) then three
leaf tasks at once (exp, mean L each); C cores. Policies:
  ps        every runnable task shares the cores equally (an ideal fair scheduler);
  oldest-k  the tasks of the k oldest requests take cores first (in age order), the rest share
            what is left equally (the agent's oldest-first, k = 1, without the share cap);
  fcfs      every task in request-age order (global first-come-first-served, k = infinity).
  cap       oldest-k with a share cap: promoted tasks may use at most `share` of each period
            (approximated per core-time over 10 ms periods).
Prints p50/p99/mean per policy and load, and p99 vs ps (python3 sim.py 40000 > sim-out.jsonl);
`python3 sim.py 40000 k > k-sweep.jsonl`: oldest-k for k = 1, 2, 3."""
import heapq
import json
import random
import sys


def simulate(policy, lam, n_req, F=0.5, L=1.5, C=2, k=1, share=1.0, period=10.0, seed=1):
    rng = random.Random(seed)
    # Pre-draw arrivals and work.
    t = 0.0
    arrivals = []
    for i in range(n_req):
        t += rng.expovariate(lam)
        arrivals.append((t, rng.expovariate(1 / F), [rng.expovariate(1 / L) for _ in range(3)]))
    now = 0.0
    nxt = 0
    tasks = []  # [age, remaining, req_id, kind]
    left = {}  # req -> leaf tasks remaining
    resp = []
    # share cap state: promoted core-time used in this period
    period_start = 0.0
    used = 0.0
    held = False
    while nxt < n_req or tasks:
        # rates
        tasks.sort(key=lambda x: (x[0], x[2]))
        rates = [0.0] * len(tasks)
        if tasks:
            if policy == "ps":
                r = min(1.0, C / len(tasks))
                rates = [r] * len(tasks)
            else:
                if policy == "fcfs":
                    prio_n = len(tasks)
                else:
                    reqs = []
                    prio_n = 0
                    for x in tasks:
                        if x[2] not in reqs:
                            if len(reqs) >= k:
                                break
                            reqs.append(x[2])
                        prio_n += 1
                    if held:
                        prio_n = 0
                cores = float(C)
                for i in range(min(prio_n, len(tasks))):
                    if cores <= 0:
                        break
                    rates[i] = min(1.0, cores)
                    cores -= rates[i]
                rest = [i for i in range(len(tasks)) if rates[i] == 0.0]
                if rest and cores > 0:
                    r = min(1.0, cores / len(rest))
                    for i in rest:
                        rates[i] = r
        promoted_rate = 0.0
        if policy == "cap" and not held:
            promoted_rate = sum(rates[i] for i in range(len(tasks)) if tasks[i][2] in reqs)
        # next event
        dt = float("inf")
        if nxt < n_req:
            dt = arrivals[nxt][0] - now
        for i, x in enumerate(tasks):
            if rates[i] > 0:
                dt = min(dt, x[1] / rates[i])
        if policy == "cap":
            dt = min(dt, period_start + period - now)
            if promoted_rate > 0 and not held:
                # cap per core: budget share*period per core, total C*share*period
                dt = min(dt, max(0.0, (C * share * period - used) / promoted_rate))
        dt = max(dt, 0.0)
        now += dt
        if policy == "cap":
            used += promoted_rate * dt
            if used >= C * share * period - 1e-12:
                held = True
            if now >= period_start + period - 1e-12:
                period_start = now
                used = 0.0
                held = False
        done = []
        for i, x in enumerate(tasks):
            x[1] -= rates[i] * dt
            if x[1] <= 1e-12:
                done.append(i)
        for i in reversed(done):
            age, _, req, kind = tasks.pop(i)
            if kind == "front":
                left[req] = 3
                for w in arrivals[req][2]:
                    tasks.append([age, w, req, "leaf"])
            else:
                left[req] -= 1
                if left[req] == 0:
                    resp.append(now - age)
        while nxt < n_req and arrivals[nxt][0] <= now + 1e-12:
            a = arrivals[nxt]
            tasks.append([a[0], a[1], nxt, "front"])
            nxt += 1
    resp.sort()
    n = len(resp)
    warm = n // 20
    r = resp[warm:]
    r2 = sorted(r)
    return {
        "p50": r2[len(r2) // 2],
        "p99": r2[int(len(r2) * 0.99)],
        "mean": sum(r2) / len(r2),
    }


def k_sweep(n):
    """oldest-k for k = 1, 2, 3 (ranked tasks in age order, the rest share): p99 and mean vs ps."""
    cap = 2 / (0.5 + 4.5)
    for load in (0.5, 0.7, 0.85, 0.95):
        lam = load * cap
        ps = [simulate("ps", lam, n, seed=s) for s in (1, 2, 3)]
        row = {"load": load, "ps": {m: sum(x[m] for x in ps) / 3 for m in ("p50", "p99", "mean")}}
        for k in (1, 2, 3):
            res = [simulate("oldest-k", lam, n, k=k, seed=s) for s in (1, 2, 3)]
            r = {m: sum(x[m] for x in res) / 3 for m in ("p50", "p99", "mean")}
            r["p99_vs_ps"] = r["p99"] / row["ps"]["p99"] - 1
            r["mean_vs_ps"] = r["mean"] / row["ps"]["mean"] - 1
            row[f"oldest-k{k}"] = r
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "k":
        k_sweep(int(sys.argv[1]))
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cap = 2 / (0.5 + 4.5)  # req per ms
    out = []
    for load in (0.5, 0.7, 0.85, 0.95):
        lam = load * cap
        row = {"load": load}
        for pol, kw in (("ps", {}), ("oldest-k", {"k": 1}), ("cap", {"k": 1, "share": 0.7}), ("fcfs", {})):
            res = [simulate(pol, lam, n, seed=s, **kw) for s in (1, 2, 3)]
            row[pol] = {m: sum(x[m] for x in res) / 3 for m in ("p50", "p99", "mean")}
        for pol in ("oldest-k", "cap", "fcfs"):
            row[pol]["p99_vs_ps"] = row[pol]["p99"] / row["ps"]["p99"] - 1
            row[pol]["mean_vs_ps"] = row[pol]["mean"] / row["ps"]["mean"] - 1
        out.append(row)
        print(json.dumps(row), flush=True)
