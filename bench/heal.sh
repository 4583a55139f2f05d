#!/usr/bin/env bash
# heal.sh - healing rate after losing a chunkserver: elkfs vs MooseFS 3.0, measured the same
# way on the same machine in the same run.
#
#   bench/heal.sh                    4 GiB, goal 2, 3 chunkservers, both systems
#   SIZE_GIB=2 bench/heal.sh
#   SKIP_MOOSEFS=1 bench/heal.sh     elkfs only
#
# Method (identical for both): write SIZE_GIB as 256 MiB files (dd, fsync) at goal 2 on 3
# chunkservers; wait until every chunk has 2 copies; note the bytes held by chunkserver 2;
# kill -9 it. T_detect = kill -> the file checker (`elkfs checkfile` / `mfscheckfile`) first
# reports chunks under goal; T_heal = from then until no chunk is under goal. Healing rate =
# bytes the dead server held / T_heal (GiB/s). T_detect is printed too: it is each system's
# failure detection (elkfs: heartbeat timeout; MooseFS: the TCP connection closing). So is
# what reached the disk during T_heal (MB/s written to the device holding WORK, from
# /proc/diskstats): near the disk's sequential write rate, healing is limited by the disk.
#
# Settings, chosen so neither system waits by configuration rather than by work:
#   elkfs:   chunkserver_timeout_secs = 2, replication_grace_secs = 0 (start at once),
#            replications_per_server = 4 (default) and chunkserver max_replications = 4
#            (default 2: with 2 the chunkservers refuse half of the master's orders), rebalance
#            off.
#   MooseFS: CHUNKS_LOOP_MIN_TIME = 1 (default 300: the chunk loop would spread the work over
#            5 minutes), CHUNKS_WRITE_REP_LIMIT = CHUNKS_READ_REP_LIMIT = 4,4,4,4 (4 at a
#            time per server as destination and as source, like elkfs; defaults 2,1,1,4 and
#            10,5,2,5), and the kill happens more than REPLICATIONS_DELAY_INIT (60 s) after
#            the master started. Both keep their default background chunk testing/scrub.
#
# Needs ../shared/bench (moosefs-up.sh / moosefs-down.sh) beside the repository. Builds elkfs
# in release mode. Everything listens on 127.0.0.0/8 only. Results: bench/results/heal.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
REF=${REF:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || true)}
SIZE_GIB=${SIZE_GIB:-4}
FILE_MIB=256
GOAL=2
WORK=${WORK:-/var/tmp/elkfs-heal}
ELK_MNT=${ELK_MNT:-/mnt/elkfs-heal}
ELK_IP=${ELK_IP:-127.0.7.1}
# A MooseFS of its own (moosefs-up.sh honours these), so compare.sh's stays untouched.
export REF_MFS_BASE=${REF_MFS_BASE:-/var/tmp/ref-mfs-heal}
export REF_MFS_MNT=${REF_MFS_MNT:-/mnt/ref-mfs-heal}
MFS_BASE=$REF_MFS_BASE
MFS_MNT=$REF_MFS_MNT
OUT=$HERE/results
BIN=$REPO/target/release
NFILES=$((SIZE_GIB * 1024 / FILE_MIB))

log() { printf '[heal %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
# Bytes written so far to the disk holding WORK (sectors, field 10 of /proc/diskstats).
written() { awk -v d="$DISK" '$3 == d { printf "%.0f\n", $10 * 512 }' /proc/diskstats; }
now() { date +%s.%N; }

# under_goal CHECKFILE_COMMAND...: chunks with fewer than GOAL copies over all files.
# elkfs prints "chunks with V valid copies: N", mfscheckfile "chunks with V copies: N".
under_goal() {
  "$@" 2>/dev/null | perl -ne 'if (/chunks with (\d+) (?:valid )?cop\w*:\s*(\d+)/) { $n += $2 if $1 < '"$GOAL"' } END { print $n + 0, "\n" }'
}

at_goal() { test "$(under_goal "$@")" -eq 0; }
below_goal() { test "$(under_goal "$@")" -gt 0; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local limit=$1 what=$2 start
  shift 2
  start=$(now)
  until "$@"; do
    if (($(echo "$(now) - $start > $limit" | bc))); then
      log "ERROR: timed out after ${limit}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

write_files() { # MOUNTPOINT
  local i
  for ((i = 0; i < NFILES; i++)); do
    dd if="$WORK/src" of="$1/heal$i" bs=1M conv=fsync status=none
  done
}

# measure LABEL DEAD_SERVER_DATA_DIR KILL_PID CHECKFILE_COMMAND...
measure() {
  local label=$1 dir=$2 pid=$3
  shift 3
  wait_until 600 "$label: every chunk at goal" at_goal "$@"
  local bytes t0 t1 t2 w1 w2 first
  bytes=$(du -sb "$dir" | cut -f1)
  log "$label: killing the chunkserver holding $bytes bytes (pid $pid)"
  t0=$(now)
  kill -9 "$pid"
  wait_until 300 "$label: chunks reported under goal" below_goal "$@"
  t1=$(now)
  w1=$(written)
  first=$(under_goal "$@")
  wait_until 3600 "$label: every chunk back at goal" at_goal "$@"
  t2=$(now)
  w2=$(written)
  perl -e 'my ($l, $b, $c, $d, $h, $w) = @ARGV;
    printf "| %s | %.2f | %d | %.1f | %.1f | %.3f | %.0f |\n", $l, $b / 2**30, $c, $d, $h, $b / 2**30 / $h, $w / 1e6 / $h' \
    "$label" "$bytes" "$first" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$((w2 - w1))" | tee -a "$OUT/heal.md"
}

# ---------------------------------------------------------------- elkfs
ELK_PIDS=()
elk_down() {
  if mountpoint -q "$ELK_MNT"; then umount "$ELK_MNT" 2>/dev/null || umount -l "$ELK_MNT"; fi
  local p
  for p in "${ELK_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${ELK_PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  ELK_PIDS=()
}

elk_start() { # NAME BINARY ARGS...
  local name=$1
  shift
  setsid "$@" </dev/null >>"$WORK/log/$name.log" 2>&1 &
  ELK_PIDS+=("$!")
  echo "$!" >"$WORK/run/$name.pid"
}

elk_up() {
  rm -rf "$WORK/master" "$WORK/cs0" "$WORK/cs1" "$WORK/cs2" "$WORK/log" "$WORK/run"
  mkdir -p "$WORK/master" "$WORK/log" "$WORK/run" "$ELK_MNT"
  cat >"$WORK/master.toml" <<EOF
listen = "$ELK_IP:9520"
data_dir = "$WORK/master"
root_goal = $GOAL
chunkserver_timeout_secs = 2
replication_grace_secs = 0
replications_per_server = 4
rebalance_threshold_pct = 100
EOF
  echo "max_replications = 4" >"$WORK/chunkserver.toml"
  elk_start master "$BIN/elkfs-master" --config "$WORK/master.toml"
  local i
  for i in 0 1 2; do
    mkdir -p "$WORK/cs$i"
    elk_start "cs$i" "$BIN/elkfs-chunkserver" --config "$WORK/chunkserver.toml" --listen "$ELK_IP:$((9530 + i))" \
      --master "$ELK_IP:9520" --data "$WORK/cs$i"
  done
  sleep 2
  elk_start mount "$BIN/elkfs-mount" "$ELK_IP:9520" "$ELK_MNT"
  wait_until 60 "the elkfs mount" mountpoint -q "$ELK_MNT"
}

cleanup() {
  elk_down
  if [[ -n ${MFS_STARTED:-} ]]; then "$REF/moosefs-down.sh" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

mkdir -p "$WORK" "$OUT"
DISK=$(basename "$(df --output=source "$WORK" | tail -1)")
[[ -n $(written) ]] || { echo "no /proc/diskstats line for $DISK" >&2; exit 2; }
(cd "$REPO" && cargo build --release --bins -q)
head -c $((FILE_MIB << 20)) /dev/urandom >"$WORK/src"
{
  echo
  echo "### Healing after kill -9 of 1 of 3 chunkservers, goal 2, $SIZE_GIB GiB written ($(date -u '+%F %H:%M UTC'))"
  echo
  echo "| system | GiB on the dead server | chunks under goal | T_detect s | T_heal s | healing GiB/s | disk writes MB/s |"
  echo "|---|---|---|---|---|---|---|"
} | tee -a "$OUT/heal.md"

if [[ -z ${SKIP_MOOSEFS:-} ]]; then
  [[ -x $REF/moosefs-up.sh ]] || { echo "reference scripts not found (set REF=.../shared/bench)" >&2; exit 2; }
  log "MooseFS"
  "$REF/moosefs-down.sh" >/dev/null 2>&1 || true
  rm -rf "$MFS_BASE"
  MFS_STARTED=1
  "$REF/moosefs-up.sh"
  mfs_started=$(date +%s)
  cat >>"$MFS_BASE/etc/mfsmaster.cfg" <<EOF
CHUNKS_LOOP_MIN_TIME = 1
CHUNKS_WRITE_REP_LIMIT = 4,4,4,4
CHUNKS_READ_REP_LIMIT = 4,4,4,4
EOF
  kill -HUP "$(cat "$MFS_BASE/run/mfsmaster.pid")"
  write_files "$MFS_MNT"
  files=("$MFS_MNT"/heal*)
  # Past REPLICATIONS_DELAY_INIT, so the master replicates as soon as it sees the loss.
  while (($(date +%s) - mfs_started < 65)); do sleep 1; done
  measure MooseFS "$MFS_BASE/cs2/hdd" "$(cat "$MFS_BASE/run/mfscs2.pid")" mfscheckfile "${files[@]}"
  "$REF/moosefs-down.sh"
  MFS_STARTED=
fi

log "elkfs"
elk_up
write_files "$ELK_MNT"
files=("$ELK_MNT"/heal*)
measure elkfs "$WORK/cs2" "$(cat "$WORK/run/cs2.pid")" "$BIN/elkfs" checkfile "${files[@]}"
elk_down
rm -f "$WORK/src"
