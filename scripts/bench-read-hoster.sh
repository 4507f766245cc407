#!/usr/bin/env bash
# Read benchmark over a hoster-like link (run as `scripts/bench-read.sh
# --profile hoster`): the emulator over TLS (a certificate made for the
# run) with `--profile hoster` (40 ms round trip, 20 MiB/s per download
# connection, 8 downloads per account), one file read by curl and through
# the mount; then the same file on loopback (no TLS, no shaping) against a
# FUSE passthrough (bindfs) of a local copy.
#
#   scripts/bench-read.sh --profile hoster
#   SIZE_MIB=128 RANDOM_READS=100 scripts/bench-read.sh --profile hoster
#   BIN=/path/to/other/filehostfs SIZE_MIB=64 scripts/bench-read-hoster.sh
#
# Measures:
#   hoster: one curl of the direct link (MiB/s; first byte of a Range
#     request, and of the token call + Range request a client without the
#     link makes; first bytes are medians of three); N parallel
#     Range curls covering the file, N = the most download connections the
#     mount had open at once (the emulator's per-account peak); through the
#     mount: sequential cold dd bs=1M, first byte of a cold dd bs=4k count=1,
#     in an open file whose head was read, a seek to the middle and 1 MiB
#     read there (ms, requests), the first byte of a cold block, and a jump
#     back while read-ahead holds every connection (ms), ffprobe of an
#     MP4 with its index at the end (ms, requests), random 4 KiB reads cold
#     (fio: IOPS, mean latency);
#   loopback: sequential cold dd bs=1M through the mount and through bindfs
#     (best of two fresh mounts each; bindfs reads a local file whose page
#     cache is warm).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
RANDOM_READS=${RANDOM_READS:-200}
CACHE_MEMORY=${CACHE_MEMORY:-256M}
MOUNT_OPTS=${MOUNT_OPTS:-}

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_need bench-read fio ffprobe:ffmpeg curl openssl bindfs fusermount3:fuse3 python3
# BIN=path/to/filehostfs compares another build (say, main's) in the same
# minute on a loaded machine.
bench_build bench-read

WORK=$(mktemp -d /tmp/filehostfs-bench-hoster.XXXXXX)
MNT=$WORK/mnt
PASS=$WORK/passthrough
mkdir -p "$MNT" "$PASS" "$WORK/local"
MOUNT_PID=

unmount() {
  stop_mount_process "$MNT" "$MOUNT_PID"
  MOUNT_PID=
}
cleanup() {
  unmount
  unmount_dir "$PASS"
  bench_cleanup
}
trap cleanup EXIT

ms_since() { python3 -c "print(($(now) - $1) * 1000)"; }

# --- one emulator per link: TLS + hoster profile, and plain loopback ------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
bench_keys
start_emulator hoster 127.0.0.1:0 --no-flood-control --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --profile hoster
start_emulator loop 127.0.0.1:0 --no-flood-control
admin() { curl -s --cacert "$WORK/cert.pem" -H "Authorization: Bearer $ADMIN" "$@"; }
# The hoster's per-account download counters: "current peak refused".
downloads() {
  admin "https://$hoster_ADDR/_emulator/stats" | python3 -c "
import json, sys
d = json.load(sys.stdin)['downloads'].get('1fichier:$KEY', {})
print(d.get('current', 0), d.get('peak', 0), d.get('refused', 0))"
}
requests() {
  admin "https://$hoster_ADDR/_emulator/stats" |
    python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["requests"].values()))'
}
reset_stats() { admin -X POST "https://$hoster_ADDR/_emulator/stats/reset" >/dev/null; }

umask 077
cat >"$WORK/config.toml" <<EOF
[hoster]
type = "1fichier"
api_url = "$hoster_API"
key = "$KEY"
rate = 1000.0
burst = 100
ca_cert = "$WORK/cert.pem"

[loop]
type = "1fichier"
api_url = "$loop_API"
key = "$KEY"
rate = 1000.0
burst = 100
EOF
umask 022
fh() { "$BIN" --config "$WORK/config.toml" "$@"; }

# --- data ------------------------------------------------------------------
echo "bench-read: seeding a ${SIZE_MIB} MiB file and an MP4 (index at the end) on both"
head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/local/big.bin"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc=duration=10:size=640x360:rate=25,noise=alls=30:allf=t" \
  -f lavfi -i sine=frequency=440:duration=10 \
  -c:v mpeg4 -b:v 6M -c:a aac -b:a 96k "$WORK/clip.mp4"
for remote in hoster loop; do
  fh mkdir "$remote:bench" >/dev/null
  fh put "$WORK/local/big.bin" "$remote:bench" >/dev/null
done
fh put "$WORK/clip.mp4" hoster:bench >/dev/null
BYTES=$((SIZE_MIB * 1024 * 1024))

# --- hoster: curl ----------------------------------------------------------
echo "bench-read: hoster link, curl"
LINK=$(fh link hoster:bench/big.bin)
hcurl() { curl -s --cacert "$WORK/cert.pem" -H "Authorization: Bearer $KEY" "$@"; }
read -r CURL_S < <(hcurl -o /dev/null -w '%{time_total}\n' "$LINK")
CURL_MIBS=$(python3 -c "print($SIZE_MIB / $CURL_S)")
# First bytes swing by tens of milliseconds on a loaded machine: each one
# here is the median of three tries.
median() { python3 -c 'import statistics, sys; print(statistics.median(float(a) for a in sys.argv[1:]))' "$@"; }
tries=()
for _ in 1 2 3; do
  tries+=("$(hcurl -o /dev/null -r 0-4095 -w '%{time_starttransfer}\n' "$LINK")")
done
CURL_FIRST_MS=$(python3 -c "print($(median "${tries[@]}") * 1000)")
# What a client without the link pays (the mount's cold case): the API's
# download-token call, then the Range request on the link it returns.
api_json() { hcurl -X POST -H 'Content-Type: application/json' -d "$2" "$hoster_API/$1"; }
BENCH_ID=$(api_json folder/ls.cgi '{"folder_id": 0}' | python3 -c '
import json, sys
print([f["id"] for f in json.load(sys.stdin)["sub_folders"] if f["name"] == "bench"][0])')
FILE_URL=$(api_json file/ls.cgi "{\"folder_id\": $BENCH_ID}" | python3 -c '
import json, sys
print([f["url"] for f in json.load(sys.stdin)["items"] if f["filename"] == "big.bin"][0])')
tries=()
for _ in 1 2 3; do
  read -r TOKEN_CALL_S < <(hcurl -o "$WORK/token.json" -w '%{time_total}\n' -X POST \
    -H 'Content-Type: application/json' -d "{\"url\": \"$FILE_URL\"}" "$hoster_API/download/get_token.cgi")
  TOKEN_LINK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$WORK/token.json")
  read -r TOKEN_GET_FIRST_S < <(hcurl -o /dev/null -r 0-4095 -w '%{time_starttransfer}\n' "$TOKEN_LINK")
  tries+=("$(python3 -c "print($TOKEN_CALL_S + $TOKEN_GET_FIRST_S)")")
done
CURL_COLD_FIRST_MS=$(python3 -c "print($(median "${tries[@]}") * 1000)")

# --- hoster: the mount -----------------------------------------------------
start_mount() {
  # shellcheck disable=SC2086
  "$BIN" --config "$WORK/config.toml" mount "$1:" "$MNT" --cache-max-memory "$CACHE_MEMORY" --no-disk-cache \
    $MOUNT_OPTS 2>>"$WORK/mount.log" &
  MOUNT_PID=$!
  wait_mounted "$MNT" "$MOUNT_PID" "$WORK/mount.log"
  ls "$MNT/bench" >/dev/null
}
PEAK_RSS_KIB=0
stop_mount() {
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status" 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$PEAK_RSS_KIB" ] && PEAK_RSS_KIB=$rss
  unmount
}
dd_mibs() {
  local t
  t=$(now)
  dd if="$1" of=/dev/null bs=1M status=none
  python3 -c "print($SIZE_MIB / ($(now) - $t))"
}

echo "bench-read: hoster link, through the mount"
start_mount hoster
reset_stats
SEQ_COLD=$(dd_mibs "$MNT/bench/big.bin")
read -r _ STREAMS REFUSED < <(downloads)
stop_mount

tries=()
for _ in 1 2 3; do
  start_mount hoster
  t=$(now)
  dd if="$MNT/bench/big.bin" of=/dev/null bs=4k count=1 status=none
  tries+=("$(ms_since "$t")")
  stop_mount
done
FIRST_MS=$(median "${tries[@]}")

start_mount hoster
# A seek in an open file, as a player jumping to the middle of a video: the
# head is read first (which also fetches the link), then 1 MiB at the
# middle is timed and its requests counted (after a pause, so read-ahead
# sent after the read counts too).
read -r SEEK_MS SEEK_REQUESTS LINKED_FIRST_MS BUSY_SEEK_MS < <(python3 - "$MNT/bench/big.bin" $((BYTES / 2)) \
  "https://$hoster_ADDR/_emulator/stats" "$ADMIN" "$WORK/cert.pem" <<'PY'
import json, os, subprocess, sys, time
path, middle, stats, admin_key, cacert = sys.argv[1:]
def admin(*args):
    return subprocess.run(["curl", "-s", "--cacert", cacert, "-H",
                           "Authorization: Bearer " + admin_key, *args],
                          check=True, capture_output=True).stdout
fd = os.open(path, os.O_RDONLY)
os.pread(fd, 4096, 0)
time.sleep(0.2)
admin("-X", "POST", stats + "/reset")
t = time.monotonic()
assert len(os.pread(fd, 1 << 20, int(middle))) == 1 << 20
ms = (time.monotonic() - t) * 1000
time.sleep(0.3)
requests = sum(json.loads(admin(stats))["requests"].values())
# First byte of a cold block once the link is held: 4 KiB further on.
t = time.monotonic()
os.pread(fd, 4096, int(middle) * 3 // 2)
first_ms = (time.monotonic() - t) * 1000
# A seek while read-ahead runs: 8 MiB read on from an eighth in (the
# read-ahead then holds every connection), and a jump back to a sixteenth.
eighth = int(middle) // 4
for offset in range(eighth, eighth + (8 << 20), 1 << 20):
    os.pread(fd, 1 << 20, offset)
t = time.monotonic()
assert len(os.pread(fd, 1 << 20, eighth // 2)) == 1 << 20
busy_ms = (time.monotonic() - t) * 1000
print("%.0f %d %.0f %.0f" % (ms, requests, first_ms, busy_ms))
os.close(fd)
PY
)
reset_stats
t=$(now)
ffprobe -hide_banner -loglevel error -show_streams "$MNT/bench/clip.mp4" >/dev/null
PROBE_MS=$(ms_since "$t")
sleep 0.3
PROBE_REQUESTS=$(requests)
stop_mount

start_mount hoster
read -r RAND_IOPS RAND_LAT < <(
  fio --name=rand --filename="$MNT/bench/big.bin" --rw=randread --bs=4k --ioengine=psync \
    --randrepeat=1 --size="${SIZE_MIB}M" --number_ios="$RANDOM_READS" --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print("%.1f %.1f" % (r["iops"], r["lat_ns"]["mean"] / 1e6))')
stop_mount

# --- hoster: N parallel range curls (the limit of N connections) -----------
echo "bench-read: hoster link, $STREAMS parallel range curls"
N=$((STREAMS > 0 ? STREAMS : 1))
t=$(now)
pids=()
for i in $(seq 0 $((N - 1))); do
  from=$((BYTES * i / N))
  to=$((BYTES * (i + 1) / N - 1))
  hcurl -o /dev/null -r "$from-$to" "$LINK" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
PARALLEL_MIBS=$(python3 -c "print($SIZE_MIB / ($(now) - $t))")

# --- loopback: the mount against a passthrough -----------------------------
echo "bench-read: loopback, mount and bindfs passthrough"
LOOP_COLD=0
for _ in 1 2; do
  start_mount loop
  LOOP_COLD=$(python3 -c "print(max($LOOP_COLD, $(dd_mibs "$MNT/bench/big.bin")))")
  stop_mount
done
cat "$WORK/local/big.bin" >/dev/null
PASS_COLD=0
for _ in 1 2; do
  bindfs "$WORK/local" "$PASS"
  PASS_COLD=$(python3 -c "print(max($PASS_COLD, $(dd_mibs "$PASS/big.bin")))")
  unmount_dir "$PASS"
done

# --- report ----------------------------------------------------------------
python3 - <<EOF
n = $N
curl, parallel, seq = $CURL_MIBS, $PARALLEL_MIBS, $SEQ_COLD
rows = [
    ("one curl (1 connection)", "MiB/s", f"{curl:.1f}", ""),
    (f"{n} parallel range curls (limit of {n} connections)", "MiB/s", f"{parallel:.1f}", ""),
    ("mount: sequential cold dd bs=1M", "MiB/s", f"{seq:.1f}",
     f"{seq / curl:.2f}x one curl (>= 3), {seq / parallel:.2f}x {n} curls (>= 0.9)"),
    ("mount: connections at once (peak), refused", "", f"{$STREAMS}, {$REFUSED}", ""),
    ("one curl: first byte", "ms", f"{$CURL_FIRST_MS:.0f}", ""),
    ("curl: token call + Range request, first byte", "ms", f"{$CURL_COLD_FIRST_MS:.0f}", ""),
    ("mount: first byte, cold dd bs=4k count=1", "ms", f"{$FIRST_MS:.0f}",
     f"{$FIRST_MS / $CURL_FIRST_MS:.2f}x curl (<= 1.5), {$FIRST_MS / $CURL_COLD_FIRST_MS:.2f}x token + curl"),
    ("mount: first byte of a cold block, link held, 4 KiB", "ms", f"{$LINKED_FIRST_MS:.0f}",
     f"{$LINKED_FIRST_MS / $CURL_FIRST_MS:.2f}x curl (<= 1.5)"),
    ("mount: open file, seek to the middle + 1 MiB", "ms, requests", f"{$SEEK_MS:.0f}, {$SEEK_REQUESTS}",
     f"(requests = 1, ms <= {$CURL_FIRST_MS:.0f} + 1 MiB at one connection's pace)"),
    ("mount: seek back while read-ahead holds every connection, 1 MiB", "ms", f"{$BUSY_SEEK_MS:.0f}", ""),
    ("mount: ffprobe of an MP4, index at the end", "ms, requests", f"{$PROBE_MS:.0f}, {$PROBE_REQUESTS}",
     "(requests <= 3)"),
    ("mount: random 4 KiB reads, cold (fio)", "IOPS, ms", f"{$RAND_IOPS}, {$RAND_LAT}", ""),
    ("loopback: mount, sequential cold dd bs=1M", "MiB/s", f"{$LOOP_COLD:.0f}",
     f"{$LOOP_COLD / $PASS_COLD:.2f}x passthrough (>= 0.9)"),
    ("loopback: bindfs passthrough, cold dd bs=1M", "MiB/s", f"{$PASS_COLD:.0f}", ""),
    ("peak RSS of the mount (cache $CACHE_MEMORY)", "MiB", f"{$PEAK_RSS_KIB / 1024:.0f}", ""),
]
print()
print(f"Read benchmark, hoster profile over TLS: {$SIZE_MIB} MiB file, memory cache $CACHE_MEMORY, options: $MOUNT_OPTS")
print(f"{'measure':52} {'unit':>13} {'value':>12}  against the target")
for name, unit, value, note in rows:
    print(f"{name:52} {unit:>13} {value:>12}  {note}")
EOF
