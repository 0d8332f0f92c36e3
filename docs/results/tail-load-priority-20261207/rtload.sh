#!/bin/bash
# promote slowpoke-load threads to FIFO 30 as they appear
while true; do
  for p in $(pgrep -x slowpoke); do
    for t in /proc/$p/task/*; do
      c=$(cat $t/comm 2>/dev/null)
      case "$c" in slowpoke-load*) tid=${t##*/}; chrt -p $tid 2>/dev/null | grep -q SCHED_FIFO || chrt -f -p 30 $tid 2>/dev/null;; esac
    done
  done
  sleep 0.02
done
