#!/usr/bin/env bash
# Write throughput of the mount against the emulator, on one run:
#
#  1. the limit: a 1 GiB file uploaded with curl (the service's three upload
#     steps: get_upload_server, upload.cgi, end.pl);
#  2. the same file copied into the mount with `cp`: time until `cp`
#     returns, time until it is durable on the service (`sync FILE`, i.e.
#     fsync, which waits for the upload to be confirmed), peak RSS of the
#     mount process;
#  3. 1,000 small files copied into the mount: files per second until every
#     upload is confirmed, and API calls per file from the emulator's
#     counters, next to what the pacer allows;
#  4. incremental backup: `rsync -a` of 1,000 mixed-size files (1 KiB to
#     1 MiB, in 10 folders) into the mount, unmount, mount again, and the
#     same `rsync -a` unchanged: its wall time, uploads and API calls
#     (target: 0 uploads; the kept mtimes make rsync skip every file).
#
#   scripts/bench-write.sh
#   SIZE_MIB=256 SMALL_FILES=300 RATE=50 scripts/bench-write.sh
#
# Needs FUSE (fusermount3) and curl. Builds the release binary; everything
# it starts (emulator, mount) is stopped by PID, the mount unmounted.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
SMALL_FILES=${SMALL_FILES:-1000}
# Requests per second the mount's pacer allows (the emulator's flood
# control is off here, so this is the only limit on API calls).
RATE=${RATE:-100}

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_need bench curl fusermount3:fuse3 rsync
bench_build bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/filehostfs-bench-write.XXXXXX")
work=$WORK
mount_pid=""
cleanup() {
  stop_mount_process "$work/mnt" "$mount_pid"
  bench_cleanup
}
trap cleanup EXIT

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

mkdir -p "$work/mnt" "$work/small"
big="$work/big.bin"
echo "bench: creating a ${SIZE_MIB} MiB file and ${SMALL_FILES} small files"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$big"
for i in $(seq 1 "$SMALL_FILES"); do
  head -c "$((1024 + (i * 37) % 7168))" /dev/urandom >"$work/small/f$i.bin"
done

# --- emulator ---------------------------------------------------------------
bench_keys
start_emulator write 127.0.0.1:0 --no-flood-control
addr=$write_ADDR
api=$write_API
key=$KEY
admin_key=$ADMIN
stats() { curl -sS -H "Authorization: Bearer $admin_key" "http://$addr/_emulator/stats"; }
# Sum of every 1fichier endpoint counter.
api_calls() { stats | grep -o '"1fichier:[^"]*":[0-9]*' | awk -F: '{ n += $NF } END { print n + 0 }'; }
uploads() { stats | grep -o '"1fichier:upload":[0-9]*' | awk -F: '{ print $NF }'; }

# --- 1. curl: the limit -----------------------------------------------------
echo "bench: curl upload of ${SIZE_MIB} MiB"
t0=$(now)
server=$(curl -sS -H "Authorization: Bearer $key" -H "Content-Type: application/json" "$api/upload/get_upload_server.cgi")
node=$(json_member url <<<"$server")
xid=$(json_member id <<<"$server")
curl -sS -o /dev/null -H "Authorization: Bearer $key" -F did=0 -F "file[]=@$big;filename=curl.bin" "http://$node/upload.cgi?id=$xid"
curl -sS -H "JSON: 1" "http://$node/end.pl?xid=$xid" | grep -q '"download"' || { echo "bench: curl upload failed" >&2; exit 1; }
t1=$(now)
curl_s=$(elapsed "$t0" "$t1")

# --- 2. cp into the mount -----------------------------------------------------
cat >"$work/config.toml" <<EOF
[bench]
type = "1fichier"
api_url = "$api"
key = "$key"
rate = $RATE
burst = 10
EOF
chmod 600 "$work/config.toml"
"$BIN" --config "$work/config.toml" mount bench: "$work/mnt" --cache-dir "$work/cache" \
  --write-back 0 --write-back-wait 10m >"$work/mount.out" 2>"$work/mount.err" &
mount_pid=$!
wait_mounted "$work/mnt" "$mount_pid" "$work/mount.err"

echo "bench: cp of ${SIZE_MIB} MiB into the mount"
t0=$(now)
cp "$big" "$work/mnt/big.bin"
t1=$(now)
sync "$work/mnt/big.bin" # fsync: returns once the service confirmed the upload
t2=$(now)
cp_s=$(elapsed "$t0" "$t1")
durable_s=$(elapsed "$t0" "$t2")
big_rss_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$mount_pid/status")

# --- 3. small files -----------------------------------------------------------
echo "bench: cp of ${SMALL_FILES} small files into the mount"
calls_before=$(api_calls)
uploads_before=$(uploads)
t0=$(now)
cp -r "$work/small" "$work/mnt/small"
t1=$(now)
rss_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$mount_pid/status")
# Unmounting waits for the queue: the process ends once every upload is
# confirmed (or reports what it left journaled).
fusermount3 -u "$work/mnt"
wait "$mount_pid"
mount_pid=""
t2=$(now)
calls_after=$(api_calls)
uploads_after=$(uploads)
small_cp_s=$(elapsed "$t0" "$t1")
small_s=$(elapsed "$t0" "$t2")
if grep -q "left journaled" "$work/mount.err"; then
  echo "bench: uploads were left journaled" >&2
  grep -A5 "left journaled" "$work/mount.err" >&2
  exit 1
fi
[ "$(uploads)" -ge "$((SMALL_FILES + 2))" ] || { echo "bench: not every file was uploaded" >&2; exit 1; }

# --- 4. incremental backup: rsync -a twice ------------------------------------
echo "bench: rsync -a of ${SMALL_FILES} mixed-size files, then again unchanged"
for i in $(seq 1 "$SMALL_FILES"); do
  mkdir -p "$work/mixed/d$((i % 10))"
  head -c "$((1024 + (i * 7919) % (1024 * 1024)))" /dev/urandom >"$work/mixed/d$((i % 10))/m$i.bin"
done
mount_backup() {
  "$BIN" --config "$work/config.toml" mount bench: "$work/mnt" --cache-dir "$work/cache" \
    --state-dir "$work/state" --write-back 0 --write-back-wait 10m >>"$work/mount.out" 2>>"$work/mount.err" &
  mount_pid=$!
  wait_mounted "$work/mnt" "$mount_pid" "$work/mount.err"
}
unmount_backup() {
  fusermount3 -u "$work/mnt"
  wait "$mount_pid"
  mount_pid=""
}
mount_backup
rsync -a "$work/mixed/" "$work/mnt/mixed/"
unmount_backup
mount_backup
backup_calls_before=$(api_calls)
backup_uploads_before=$(uploads)
t0=$(now)
rsync -a --stats "$work/mixed/" "$work/mnt/mixed/" >"$work/rsync2.out"
t1=$(now)
unmount_backup
rsync2_s=$(elapsed "$t0" "$t1")
rsync2_calls=$(($(api_calls) - backup_calls_before))
rsync2_uploads=$(($(uploads) - backup_uploads_before))
rsync2_sent=$(sed -n 's/^Number of regular files transferred: *//p' "$work/rsync2.out" | tr -d ,)

# --- report -----------------------------------------------------------------
awk -v size="$SIZE_MIB" -v curl="$curl_s" -v cp="$cp_s" -v durable="$durable_s" \
  -v rss="$big_rss_kib" -v rss2="$rss_kib" -v n="$SMALL_FILES" -v small_cp="$small_cp_s" \
  -v small="$small_s" -v calls="$((calls_after - calls_before))" -v rate="$RATE" \
  -v node_calls="$((uploads_after - uploads_before))" \
  'BEGIN {
  mb = size * 1048576 / 1e6
  printf "\n%-46s %10s %10s %8s\n", "measure", "seconds", "MB/s", "vs curl"
  printf "%-46s %10.2f %10.1f %8s\n", "curl upload (the limit)", curl, mb / curl, "1.00x"
  printf "%-46s %10.2f %10.1f %8s\n", "cp into the mount: until cp returns", cp, mb / cp, sprintf("%.2fx", cp / curl)
  printf "%-46s %10.2f %10.1f %8s\n", "cp into the mount: until durable (fsync)", durable, mb / durable, sprintf("%.2fx", durable / curl)
  printf "%-46s %10d MiB\n", "mount peak RSS after the large file", rss / 1024
  per_file = calls / n
  # The byte transfer to the upload node (upload.cgi) is not an API call
  # and is not paced; every other call is.
  paced = (calls - node_calls) / n
  printf "\n%d small files: cp returned after %.2f s; all uploaded after %.2f s = %.1f files/s\n", n, small_cp, small, n / small
  printf "requests per file: %.2f, of which paced API calls: %.2f\n", per_file, paced
  printf "the pacer (%d req/s) allows %.1f files/s: achieved %.0f%% of it\n", rate, rate / paced, 100 * (n / small) / (rate / paced)
  printf "mount peak RSS: %d MiB\n", rss2 / 1024
}'
printf "\nrsync -a of %d mixed-size files, second run unchanged (after a remount): %.2f s, %s files sent, %d uploads, %d API calls\n" \
  "$SMALL_FILES" "$rsync2_s" "${rsync2_sent:-?}" "$rsync2_uploads" "$rsync2_calls"
