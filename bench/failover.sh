#!/usr/bin/env bash
# failover.sh - failover time and standby replication lag on one machine (loopback).
#
#   bench/failover.sh                    one run
#   RUNS=3 bench/failover.sh             several runs (a fresh cluster each)
#   STORM_SECS=12 bench/failover.sh      length of the create storm for the lag numbers
#
# Starts a master, a standby metalogger, 3 chunkservers and a mount (both knowing both
# master addresses), runs a create storm through the mount (the standby logs its lag:
# commit on the master to durable on the standby, median and p99), then kill -9 of the
# master, `elkfs promote` right after, and measures the time from the kill to the first
# successful client operation (a file created through the mount) on the new master.
# Binaries from BIN (default target/debug, which this workspace builds optimized).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/target/debug}
IP=${IP:-127.0.0.78}
RUNS=${RUNS:-1}
STORM_SECS=${STORM_SECS:-12}
MASTER=$IP:9520 CONTROL=$IP:9521 NEW_MASTER=$IP:9522
MASTERS=$MASTER,$NEW_MASTER
PIDS=()
WORK=
cleanup() {
  [[ -n $WORK ]] && { fusermount3 -u -z "$WORK/mnt" 2>/dev/null || true; }
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $WORK ]] && rm -rf "$WORK"
  PIDS=() WORK=
}
trap cleanup EXIT
now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc -l | xargs printf '%.0f'; }
start() { local name=$1; shift; "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!); echo $!; }
wait_until() { # wait_until WHAT COMMAND...
  local what=$1; shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1
}
servers_connected() { [[ $("$BIN/elkfs" status --master "$1" 2>/dev/null | grep -c ' yes ') -ge 3 ]]; }

[[ -z ${NO_BUILD:-} ]] && (cd "$REPO" && cargo build -q --bins)

one_run() {
  WORK=$(mktemp -d /var/tmp/elkfs-failover.XXXXXX)
  mkdir -p "$WORK"/{master,standby,cs0,cs1,cs2,mnt}
  MASTER_PID=$(start master "$BIN/elkfs-master" --listen "$MASTER" --data-dir "$WORK/master")
  wait_until "the master" "$BIN/elkfs" status --master "$MASTER"
  start standby "$BIN/elkfs-metalogger" --master "$MASTER" --data "$WORK/standby" --standby \
    --control "$CONTROL" --master-listen "$NEW_MASTER" >/dev/null
  for i in 0 1 2; do
    start "cs$i" "$BIN/elkfs-chunkserver" --listen "$IP:$((9530 + i))" --master "$MASTERS" \
      --data "$WORK/cs$i" --reserve-bytes 67108864 >/dev/null
  done
  wait_until "3 chunkservers" servers_connected "$MASTER"
  wait_until "the standby" bash -c "'$BIN/elkfs' promote --status '$CONTROL' | grep -q 'following $MASTER'"
  start mount "$BIN/elkfs-mount" "$MASTERS" "$WORK/mnt" >/dev/null
  wait_until "the mount" mountpoint -q "$WORK/mnt"

  mkdir "$WORK/mnt/storm"
  local end n=0
  end=$(( $(date +%s) + STORM_SECS ))
  while (( $(date +%s) < end )); do
    for j in $(seq 100); do : >"$WORK/mnt/storm/f$n-$j"; done
    n=$((n + 1))
  done
  # The standby logs its lag every 10 s; one more record after the storm flushes it.
  sleep 1; : >"$WORK/mnt/storm/last"
  echo "create storm: $((n * 100)) files in ${STORM_SECS} s"
  grep 'lag: commit' "$WORK/standby.log" | sed 's/.*INFO //' || echo "no lag line yet"
  dd if=/dev/urandom of="$WORK/data" bs=1M count=8 status=none
  cp "$WORK/data" "$WORK/mnt/data"

  local t_kill t_promoted t_ok
  t_kill=$(now)
  kill -9 "$MASTER_PID"
  "$BIN/elkfs" promote "$CONTROL"
  t_promoted=$(now)
  : >"$WORK/mnt/after-failover"
  t_ok=$(now)
  echo "failover: kill -9 -> promoted $(ms "$t_kill" "$t_promoted") ms; kill -9 -> first client operation done $(ms "$t_kill" "$t_ok") ms"
  cmp "$WORK/data" "$WORK/mnt/data" && echo "data written before the failover reads back identical"
  cleanup
}

for r in $(seq "$RUNS"); do
  echo "=== run $r"
  one_run
done
