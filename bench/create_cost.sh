#!/usr/bin/env bash
# create_cost.sh [BIN_DIR] [N] - what one create costs the mount and the master: N
# (default 5000) empty files are created (open O_CREAT|O_EXCL + close) on a fresh
# single-copy cluster, and the voluntary plus involuntary context switches of all their
# threads (/proc/PID/task/*/status) and their CPU time (/proc/PID/stat) are divided by N.
# Context switches and CPU stay steady on a noisy machine where rates swing; run two
# builds in turn to compare them.
#
#   bench/create_cost.sh /var/tmp/elkbin-old
#   bench/create_cost.sh target/release 10000
set -euo pipefail
BIN=$(cd "${1:-$(dirname "$0")/../target/release}" && pwd)
N=${2:-5000}
DATA=${DATA:-/var/tmp/elkfs-create-cost} MNT=${MNT:-/mnt/elkfs-create-cost}
"$BIN/elkfs" down "$DATA" >/dev/null 2>&1 || true
rm -rf "$DATA"
mkdir -p "$MNT"
"$BIN/elkfs" up "$DATA" "$MNT" --goal 1 >/dev/null
trap '"$BIN/elkfs" down "$DATA" >/dev/null 2>&1 || true' EXIT
mount_pid=$(pgrep -f "elkfs-mount.*$MNT" | head -1)
master_pid=$(pgrep -f "elkfs-master.*$DATA" | head -1)

# "switches cpu_ticks" of process $1
cost() {
  local sw=0 t
  for t in /proc/"$1"/task/*; do
    sw=$((sw + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")))
  done
  echo "$sw $(awk '{print $14 + $15}' /proc/"$1"/stat)"
}

creates() {
  python3 - "$1" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
for i in range(n):
    os.close(os.open(f"{d}/f{i:06d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
PY
}

creates "$MNT/warm" 300
read -r m_sw0 m_cpu0 < <(cost "$mount_pid")
read -r s_sw0 s_cpu0 < <(cost "$master_pid")
t0=$(date +%s%N)
creates "$MNT/timed" "$N"
t1=$(date +%s%N)
read -r m_sw1 m_cpu1 < <(cost "$mount_pid")
read -r s_sw1 s_cpu1 < <(cost "$master_pid")
hz=$(getconf CLK_TCK)
# per COUNT SCALE FORMAT: COUNT * SCALE / N
per() { awk -v d="$1" -v s="$2" -v n="$N" -v f="$3" 'BEGIN {printf f, d * s / n}'; }
tick_us=$((1000000 / hz))
echo "$(basename "$BIN"): per create:" \
  "mount $(per $((m_sw1 - m_sw0)) 1 %.2f) context switches, $(per $((m_cpu1 - m_cpu0)) $tick_us %.0f) us CPU;" \
  "master $(per $((s_sw1 - s_sw0)) 1 %.2f) context switches, $(per $((s_cpu1 - s_cpu0)) $tick_us %.0f) us CPU;" \
  "$(per $((t1 - t0)) 0.001 %.0f) us wall"
