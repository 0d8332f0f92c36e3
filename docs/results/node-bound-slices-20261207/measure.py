#!/usr/bin/env python3
"""Per-service CPU, run-queue wait and timeslices per end-to-end request, baseline vs the
optimized app (target's cpu_us cut live), interleaved. Investigation for issue #15 item 1."""
import json, os, subprocess, sys, time, glob

EMU = "/work/main/target/release/slowpoke-emu"
LOAD = "/work/main/target/release/slowpoke-load"

def tasks(pids):
    out = {"cpu": 0, "wait": 0, "slices": 0, "vol": 0, "invol": 0}
    for t in [t for pid in pids for t in glob.glob(f"/proc/{pid}/task/*")]:
        try:
            a, b, c = open(t + "/schedstat").read().split()
            out["cpu"] += int(a); out["wait"] += int(b); out["slices"] += int(c)
            for line in open(t + "/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    out["vol"] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    out["invol"] += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return out

def node_busy():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    idle = v[3] + v[4]
    return sum(v), idle

def sample(pids):
    return {s: tasks(p) for s, p in pids.items()}, node_busy(), time.monotonic()

def window(pids, url, dur):
    p = subprocess.Popen([LOAD, "-c", "64", "-d", f"{dur}s", "--warmup", "2s", "--json", url],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(2.3)
    a = sample(pids)
    time.sleep(dur - 0.6)
    b = sample(pids)
    rep = json.loads(p.communicate()[0])
    dt = b[2] - a[2]
    tot = b[1][0] - a[1][0]
    busy = 1 - (b[1][1] - a[1][1]) / tot
    rps = rep.get("throughput_rps") or rep.get("rps") or rep["requests"] / dur
    per = {}
    for s in pids:
        d = {k: b[0][s][k] - a[0][s][k] for k in a[0][s]}
        x = rps * dt
        per[s] = {"cpu_us": d["cpu"] / 1e3 / x, "wait_us": d["wait"] / 1e3 / x,
                  "slices": d["slices"] / x, "vol": d["vol"] / x, "invol": d["invol"] / x,
                  "cores": d["cpu"] / 1e9 / dt}
    return {"rps": rps, "node_busy": busy, "services": per}

def main():
    topo, target, ep, work, frac, reps = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    extra = sys.argv[7:]
    info = "/tmp/wk/app.json"
    sets = []
    for e in extra:
        sets += ["--set", e]
    emu = subprocess.Popen([EMU, "run", topo, "--info-file", info] + sets, stdout=subprocess.PIPE, text=True)
    line = json.loads(emu.stdout.readline())
    print(json.dumps(line)[:400], file=sys.stderr)
    pids = {s: v["pids"] for s, v in line["services"].items()}
    url = line["entry"]
    out = []
    try:
        for r in range(reps):
            for arm, cpu in (("base", work), ("opt", work * (1 - frac))):
                subprocess.run([EMU, "set", "--app", info, f"{target}.{ep}.cpu_us={cpu}"], check=True, capture_output=True)
                w = window(pids, url, 8)
                w["arm"] = arm
                out.append(w)
                print(json.dumps({"arm": arm, "rps": round(w["rps"]), "busy": round(w["node_busy"], 3)}), file=sys.stderr)
    finally:
        emu.terminate(); emu.wait()
    print(json.dumps(out))

main()
