#!/bin/bash
# usage: run.sh CAPSET  (comma list like +bpf,+perfmon) ; prints a JSON line of what worked
caps="$1"; port=17$((RANDOM%900+100)); sd=$(mktemp -d)
AG=${AGENT:-target/release/slowpoke-agent}  # run from the repository root
if [ "$caps" = full ]; then PRE=""; else PRE="setpriv --bounding-set=-all${caps:+,$caps} --inh-caps=-all --"; fi; $PRE $AG --listen 127.0.0.1:$port --state-dir $sd --log-level warn >$sd/log 2>&1 &
apid=$!
for i in $(seq 50); do curl -s 127.0.0.1:$port/v1/health >/dev/null && break; sleep 0.1; [ -d /proc/$apid ] || break; done
if ! [ -d /proc/$apid ]; then echo "{\"caps\":\"$caps\",\"start\":false,\"log\":$(tail -c 300 $sd/log | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')}"; exit; fi
capeff=$(grep CapEff /proc/$apid/status | awk '{print $2}')
svc=$(curl -s -X PUT -d '{"ports":[18555]}' 127.0.0.1:$port/v1/services/web)
wrk -t1 -c4 -d1s http://127.0.0.1:18555/ >/dev/null
plan=$(curl -s -X PUT -d '{"mode":"pause","services":{"web":{"delay_per_visit_ns":2000000}}}' 127.0.0.1:$port/v1/slowdown)
wrk -t1 -c4 -d2s http://127.0.0.1:18555/ > $sd/wrk
curl -s -X DELETE 127.0.0.1:$port/v1/slowdown >/dev/null
stats=$(curl -s 127.0.0.1:$port/v1/stats)
kill -TERM $apid; wait $apid; rc=$?
python3 - "$caps" "$capeff" "$svc" "$plan" "$stats" "$rc" "$sd/log" <<'PY'
import json,sys
caps,capeff,svc,plan,stats,rc,log=sys.argv[1:]
s=json.loads(stats)["services"].get("web",{}) if stats.startswith("{") else {}
print(json.dumps({"caps":caps,"capeff":capeff,"start":True,"pids":s.get("pids"),"visits":s.get("visits"),"pause_ms":round(s.get("pause_ns",0)/1e6,1),"pauses":s.get("pauses"),"cpu_ms":round(s.get("cpu_ns",0)/1e6,1),"wait_ms":round(s.get("wait_ns",0)/1e6,1),"svc_err":svc[:120] if "error" in svc else None,"plan_err":plan[:120] if "error" in plan else None,"exit":int(rc),"log":open(log).read()[-400:]}))
PY
