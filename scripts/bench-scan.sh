#!/usr/bin/env bash
# Media library scan: what a media server does after adding a library and
# after every restart (`find | ffprobe` of every file), through the mount,
# against the emulator with its default flood control and the mount's
# default pacing and caches.
#
#   scripts/bench-scan.sh                 # 60 videos in 6 folders
#   FILES=120 FOLDERS=12 scripts/bench-scan.sh
#   PROFILE=dev scripts/bench-scan.sh     # the debug build
#
# The library mixes MP4s indexed at the start (faststart), MP4s indexed at
# the end and MKVs (cues at the end), 2-second clips of ~1.1 MiB. Three scans:
# cold (fresh mount, empty caches), warm (same mount again), and after a
# restart of the mount (same cache and state dirs, here under the bench's
# own XDG dirs). For each: wall time, the emulator's requests by kind and
# the bytes it served. Not a test: figures go to the README.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-60}
FOLDERS=${FOLDERS:-6}

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_need bench-scan ffprobe:ffmpeg curl fusermount3:fuse3 python3
# PROFILE=dev uses the debug build (the scan waits on the service's pace,
# not on the CPU, so its figures barely differ).
bench_build bench-scan "${PROFILE:-release}"

WORK=$(mktemp -d /tmp/filehostfs-bench-scan.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/xdg-cache" "$WORK/xdg-state" "$WORK/xdg-run"
chmod 700 "$WORK/xdg-run"
MOUNT_PID=

unmount() {
  stop_mount_process "$MNT" "$MOUNT_PID"
  MOUNT_PID=
}
cleanup() {
  unmount
  bench_cleanup
}
trap cleanup EXIT

# --- emulator ------------------------------------------------------------
bench_keys
admin() { curl -s -H "Authorization: Bearer $ADMIN" "$@"; }
api() { curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" "$@"; }

# Seeding runs without flood control (it is not what is measured).
start_emulator scan 127.0.0.1:0 --no-flood-control
ADDR=$scan_ADDR
API=$scan_API

# --- the library ---------------------------------------------------------
echo "bench-scan: seeding $FILES videos in $FOLDERS folders"
mkdir -p "$WORK/clips"
clip() { # clip NAME [FFMPEG OUTPUT FLAGS...]
  local name=$1
  shift
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc=duration=2:size=320x240:rate=25,noise=alls=30:allf=t" \
    -f lavfi -i sine=frequency=440:duration=2 \
    -c:v mpeg4 -b:v 4M -c:a aac -b:a 64k "$@" "$WORK/clips/$name"
}
clip head.mp4 -movflags +faststart
clip tail.mp4
clip cues.mkv
kinds=(head.mp4 tail.mp4 cues.mkv)
api -d '{"name":"library","folder_id":0}' "$API/folder/mkdir.cgi" >/dev/null
LIB_ID=$(api -d '{"folder_id":0}' "$API/folder/ls.cgi" |
  python3 -c 'import json,sys; print(next(f["id"] for f in json.load(sys.stdin)["sub_folders"] if f["name"] == "library"))')
per_folder=$(((FILES + FOLDERS - 1) / FOLDERS))
made=0
for folder in $(seq 1 "$FOLDERS"); do
  name=$(printf 'season-%02d' "$folder")
  FOLDER_ID=$(api -d "{\"name\":\"$name\",\"folder_id\":$LIB_ID}" "$API/folder/mkdir.cgi" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["folder_id"])')
  dir="$WORK/upload/$name"
  mkdir -p "$dir"
  for episode in $(seq 1 "$per_folder"); do
    [ "$made" -lt "$FILES" ] || break
    kind=${kinds[$((made % 3))]}
    cp "$WORK/clips/$kind" "$dir/$(printf 'episode-%03d' "$episode").${kind#*.}"
    made=$((made + 1))
  done
  read -r HOST UPID < <(api "$API/upload/get_upload_server.cgi" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["url"], d["id"])')
  args=()
  for file in "$dir"/*; do args+=(-F "file[]=@$file"); done
  curl -s -o /dev/null -H "Authorization: Bearer $KEY" -F "did=$FOLDER_ID" "${args[@]}" \
    "http://$HOST/upload.cgi?id=$UPID"
  curl -s -o /dev/null -H "JSON: 1" "http://$HOST/end.pl?xid=$UPID"
done
rm -rf "$WORK/upload"
BYTES_TOTAL=$(du -cb "$WORK"/clips/* | awk 'END {print $1}')

# The measured service: default flood control, same address and data.
stop_emulator scan
start_emulator scan "$ADDR"

CFG=$WORK/config.toml
umask 077
cat >"$CFG" <<EOF
[bench]
type = "1fichier"
api_url = "$API"
key = "$KEY"
EOF
umask 022

# --- the mount -------------------------------------------------------------
# The control API (--rc) tells how long requests waited for the pacer.
start_mount() {
  XDG_CACHE_HOME=$WORK/xdg-cache XDG_STATE_HOME=$WORK/xdg-state XDG_RUNTIME_DIR=$WORK/xdg-run \
    "$BIN" --config "$CFG" mount bench:library "$MNT" --rc "$@" 2>>"$WORK/mount.log" &
  MOUNT_PID=$!
  PACER_BEFORE='{"pacer_waits": 0, "pacer_wait_seconds": 0}'
  wait_mounted "$MNT" "$MOUNT_PID" "$WORK/mount.log"
}

# The mount's pacer counters so far (JSON). Asked only after a scan's
# requests are counted: the answer includes the account's space, which may
# cost a request.
pacer_counters() {
  XDG_RUNTIME_DIR=$WORK/xdg-run "$BIN" rc --rc-mount "$MNT" vfs/stats |
    python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]
print(json.dumps({k: c[k] for k in ("pacer_waits", "pacer_wait_seconds")}))'
}

# scan LABEL: find | ffprobe over the mount; prints one result line (JSON)
# with what the emulator counted since the last reset_stats.
# Counts what the emulator served since the last reset_stats.
reset_stats() { admin -X POST "http://$ADDR/_emulator/stats/reset" >/dev/null; }
scan() {
  local started failed=0
  started=$(now)
  while IFS= read -r -d '' file; do
    ffprobe -v error -show_entries format=duration -of csv=p=0 "$file" >/dev/null || failed=$((failed + 1))
  done < <(find "$MNT" -type f -print0)
  local seconds
  seconds=$(python3 -c "print(round($(now) - $started, 2))")
  local stats pacer
  stats=$(admin "http://$ADDR/_emulator/stats")
  pacer=$(pacer_counters)
  python3 -c 'import json,sys
label, seconds, failed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
stats, before, after = (json.loads(a) for a in sys.argv[4:7])
print(json.dumps({"scan": label, "seconds": seconds, "failed": failed,
                  "requests": stats["requests"], "bytes_served": stats["bytes_served"],
                  "pacer_waits": after["pacer_waits"] - before["pacer_waits"],
                  "pacer_wait_seconds": after["pacer_wait_seconds"] - before["pacer_wait_seconds"]}))' \
    "$1" "$seconds" "$failed" "$stats" "$PACER_BEFORE" "$pacer"
  PACER_BEFORE=$pacer
}

echo "bench-scan: scanning $FILES files (cold, warm, after a restart)"
# Cold and restart count the mount's start-up requests too.
reset_stats
start_mount
scan cold >"$WORK/results"
reset_stats
scan warm >>"$WORK/results"
unmount
reset_stats
start_mount
scan restart >>"$WORK/results"
unmount

python3 - "$WORK/results" "$FILES" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
files = int(sys.argv[2])
kinds = sorted({k for row in rows for k in row["requests"]})
print(f"\n{files} files; default flood control and pacing")
header = (f"{'scan':8} {'seconds':>8} {'s/file':>7} {'MiB served':>10} {'failed':>6} "
          f"{'paced':>5} {'waited s':>8}  requests by kind")
print(header)
for row in rows:
    by_kind = ", ".join(f"{k.split(':', 1)[-1]} {row['requests'][k]}" for k in kinds if row["requests"].get(k))
    print(f"{row['scan']:8} {row['seconds']:8.2f} {row['seconds'] / files:7.3f} "
          f"{row['bytes_served'] / 1048576:10.1f} {row['failed']:6} "
          f"{row['pacer_waits']:5} {row['pacer_wait_seconds']:8.2f}  {by_kind or 'none'}")
print("paced: requests the pacer held back; waited s: their total wait (they overlap)")
EOF
grep -c " WARN \| ERROR " "$WORK/mount.log" | sed 's/^/mount log warnings and errors: /'
grep " WARN \| ERROR " "$WORK/mount.log" | head -5 || true
