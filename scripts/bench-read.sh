#!/usr/bin/env bash
# Read benchmark of the mount against its limit: a direct download of the
# same file from the same local emulator.
#
#   scripts/bench-read.sh            # 1 GiB file, 15 s fio runs
#   SIZE_MIB=256 FIO_SECONDS=5 scripts/bench-read.sh
#   MOUNT_OPTS="--block-size 4M" scripts/bench-read.sh
#   scripts/bench-read.sh --profile hoster   # over TLS and a hoster-like
#                                            # link: scripts/bench-read-hoster.sh
#
# Measures, on one emulator (flood control off) and one file:
#   - curl of the file's direct link (the limit; best of two), and one 4 KiB
#     Range request per random read, each on a new connection (the limit for
#     random reads);
#   - through the mount: sequential dd bs=1M cold and warm (best of two fresh
#     mounts), fio random 4 KiB reads cold and warm (IOPS, mean latency),
#     `ls -l` of a folder of 10,000 files cold and warm (best of three), HTTP
#     requests of an ffprobe per file, and the peak RSS of the mount process;
# and prints a table with each figure's ratio to the direct download.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") ;;
  --profile)
    [ "${2:-}" = hoster ] || { echo "bench-read: the only profile is hoster" >&2; exit 2; }
    exec scripts/bench-read-hoster.sh
    ;;
  *) echo "usage: scripts/bench-read.sh [--profile hoster]" >&2; exit 2 ;;
esac

SIZE_MIB=${SIZE_MIB:-1024}
FIO_SECONDS=${FIO_SECONDS:-15}
MANY_FILES=${MANY_FILES:-10000}
CACHE_MEMORY=${CACHE_MEMORY:-256M}
# DISK_CACHE=1 adds --cache-dir (blocks also written to disk while reading);
# otherwise --no-disk-cache (the default disk cache would make fresh mounts warm).
DISK_CACHE=${DISK_CACHE:-0}
MOUNT_OPTS=${MOUNT_OPTS:-}

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_need bench-read fio ffprobe:ffmpeg curl fusermount3:fuse3 python3
bench_build bench-read

WORK=$(mktemp -d /tmp/filehostfs-bench.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT"
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
start_emulator bench 127.0.0.1:0 --no-flood-control
ADDR=$bench_ADDR
API=$bench_API
admin() { curl -s -H "Authorization: Bearer $ADMIN" "$@"; }
api() { curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" "$@"; }

CFG=$WORK/config.toml
umask 077
cat >"$CFG" <<EOF
[bench]
type = "1fichier"
api_url = "$API"
key = "$KEY"
rate = 1000.0
burst = 100
EOF
umask 022
fh() { "$BIN" --config "$CFG" "$@"; }

# --- data ----------------------------------------------------------------
echo "bench-read: seeding a ${SIZE_MIB} MiB file, two videos and ${MANY_FILES} small files"
head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/big.bin"
fh mkdir bench:bench >/dev/null
fh put "$WORK/big.bin" bench:bench >/dev/null
rm "$WORK/big.bin"
mkdir -p "$WORK/videos"
for ext in mp4 mkv; do
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc=duration=10:size=640x360:rate=25,noise=alls=30:allf=t" \
    -f lavfi -i sine=frequency=440:duration=10 \
    -c:v mpeg4 -b:v 6M -c:a aac -b:a 96k "$WORK/videos/clip.$ext"
done
fh put "$WORK/videos" bench:videos >/dev/null
fh mkdir bench:many >/dev/null
MANY_ID=$(api -d '{"folder_id":0}' "$API/folder/ls.cgi" |
  python3 -c 'import json,sys; print(next(f["id"] for f in json.load(sys.stdin)["sub_folders"] if f["name"] == "many"))')
mkdir -p "$WORK/many"
python3 - "$WORK/many" "$MANY_FILES" <<'EOF'
import os, sys
folder, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with open(os.path.join(folder, f"file-{i:05d}.txt"), "w") as f:
        f.write(f"content of file {i}\n")
EOF
# Reference: `ls -l` of the same 10,000 names on the local disk (best of
# three runs after a first one).
ls -l "$WORK/many" >/dev/null
LOCAL_LS_MS=
for _ in 1 2 3; do
  t=$(now)
  ls -l "$WORK/many" >/dev/null
  LOCAL_LS_MS=$(python3 -c "t = ($(now) - $t) * 1000; print(min(t, ${LOCAL_LS_MS:-t}))")
done
# The upload API takes up to 500 files per request.
(cd "$WORK/many" && ls | split -l 500 - "$WORK/batch.")
for batch in "$WORK"/batch.*; do
  read -r HOST UPID < <(api "$API/upload/get_upload_server.cgi" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["url"], d["id"])')
  args=()
  while read -r name; do args+=(-F "file[]=@$WORK/many/$name"); done <"$batch"
  curl -s -o /dev/null -H "Authorization: Bearer $KEY" -F "did=$MANY_ID" "${args[@]}" \
    "http://$HOST/upload.cgi?id=$UPID"
  curl -s -o /dev/null -H "JSON: 1" "http://$HOST/end.pl?xid=$UPID"
done
rm -rf "$WORK/many" "$WORK"/batch.*

# --- the limit: direct downloads -----------------------------------------
LINK=$(fh link bench:bench/big.bin)
BYTES=$((SIZE_MIB * 1024 * 1024))
best=0
for _ in 1 2; do
  t=$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $KEY" "$LINK")
  speed=$(python3 -c "print($BYTES / 1048576 / $t)")
  best=$(python3 -c "print(max($best, $speed))")
done
CURL_MIBS=$best
read -r DIRECT_IOPS DIRECT_LAT_MS < <(python3 - "$LINK" "$KEY" "$BYTES" "$FIO_SECONDS" <<'EOF'
# One 4 KiB Range request per read, each on a new connection: what a client
# without a cache pays per random read. (Reusing one connection would stall
# ~40 ms per request on Nagle/delayed-ACK, the server not setting NODELAY.)
import http.client, random, sys, time, urllib.parse
link, key, size, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
url = urllib.parse.urlsplit(link)
rng = random.Random(1)
count, total = 0, 0.0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    offset = rng.randrange(0, size // 4096) * 4096
    started = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname, url.port)
    conn.request("GET", url.path, headers={"Range": f"bytes={offset}-{offset + 4095}",
                                           "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 206 and len(body) == 4096, response.status
    total += time.monotonic() - started
    count += 1
print(f"{count / seconds:.0f} {total / count * 1000:.3f}")
EOF
)

# --- the mount -------------------------------------------------------------
start_mount() {
  # shellcheck disable=SC2086
  local disk=(--no-disk-cache)
  [ "$DISK_CACHE" = 1 ] && disk=(--cache-dir "$WORK/cache" --cache-max-size 4G)
  "$BIN" --config "$CFG" mount bench: "$MNT" --cache-max-memory "$CACHE_MEMORY" \
    "${disk[@]}" $MOUNT_OPTS 2>>"$WORK/mount.log" &
  MOUNT_PID=$!
  wait_mounted "$MNT" "$MOUNT_PID" "$WORK/mount.log"
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
  dd if="$MNT/bench/big.bin" of=/dev/null bs=1M status=none
  python3 -c "print($SIZE_MIB / ($(now) - $t))"
}
# fio random 4 KiB reads; prints "IOPS mean-latency-ms". fio drops the
# kernel's page cache of the file first, so every read reaches the mount.
fio_run() {
  fio --name=rand --filename="$MNT/bench/big.bin" --rw=randread --bs=4k --ioengine=psync \
    --randrepeat=1 --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print("%.0f %.3f" % (r["iops"], r["lat_ns"]["mean"] / 1e6))'
}
ls_ms() {
  local t
  t=$(now)
  ls -l "$MNT/many" >/dev/null
  python3 -c "print(($(now) - $t) * 1000)"
}

echo "bench-read: sequential reads"
# Best of two fresh mounts, as curl above is the best of two downloads.
SEQ_COLD=0
SEQ_WARM=0
for _ in 1 2; do
  rm -rf "$WORK/cache"
  start_mount
  cold=$(dd_mibs)
  warm=$(dd_mibs)
  stop_mount
  SEQ_COLD=$(python3 -c "print(max($SEQ_COLD, $cold))")
  SEQ_WARM=$(python3 -c "print(max($SEQ_WARM, $warm))")
done

echo "bench-read: random reads"
rm -rf "$WORK/cache"
start_mount
# Cold: 1000 reads over the whole file, nearly all in blocks not yet fetched.
read -r RAND_COLD_IOPS RAND_COLD_LAT < <(fio_run --size="${SIZE_MIB}M" --number_ios=1000)
# Warm: a region that fits the memory cache, read once to fill it, then measured.
WARM_MIB=$(python3 -c "print(min($SIZE_MIB, max(16, $(numfmt --from=iec "$CACHE_MEMORY") // 1048576 // 2)))")
fio_run --size="${WARM_MIB}M" --runtime=3 --time_based >/dev/null
read -r RAND_WARM_IOPS RAND_WARM_LAT < <(fio_run --size="${WARM_MIB}M" --runtime="$FIO_SECONDS" --time_based)
stop_mount

echo "bench-read: listing and probing"
start_mount
LS_COLD=$(ls_ms)
# Warm: best of three, as for the local reference.
LS_WARM=$(python3 -c "print(min($(ls_ms), $(ls_ms), $(ls_ms)))")
ls "$MNT/videos" >/dev/null
probe_requests() {
  admin -X POST "http://$ADDR/_emulator/stats/reset" >/dev/null
  ffprobe -hide_banner -loglevel error -show_streams "$MNT/videos/$1" >/dev/null
  admin "http://$ADDR/_emulator/stats" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["requests"].values()))'
}
PROBE_MP4=$(probe_requests clip.mp4)
PROBE_MKV=$(probe_requests clip.mkv)
stop_mount

# --- report ----------------------------------------------------------------
python3 - <<EOF
rows = [
    ("sequential read, cold (dd bs=1M)", "MiB/s", $CURL_MIBS, $SEQ_COLD, True),
    ("sequential read, warm (dd bs=1M)", "MiB/s", $CURL_MIBS, $SEQ_WARM, True),
    ("random 4 KiB reads, cold (fio)", "IOPS", $DIRECT_IOPS, $RAND_COLD_IOPS, True),
    ("random 4 KiB reads, warm (fio, $WARM_MIB MiB)", "IOPS", $DIRECT_IOPS, $RAND_WARM_IOPS, True),
    ("random 4 KiB mean latency, cold", "ms", $DIRECT_LAT_MS, $RAND_COLD_LAT, False),
    ("random 4 KiB mean latency, warm", "ms", $DIRECT_LAT_MS, $RAND_WARM_LAT, False),
    ("ls -l of $MANY_FILES files, cold", "ms", $LOCAL_LS_MS, $LS_COLD, False),
    ("ls -l of $MANY_FILES files, warm", "ms", $LOCAL_LS_MS, $LS_WARM, False),
    ("ffprobe of an MP4: HTTP requests", "requests", None, $PROBE_MP4, False),
    ("ffprobe of an MKV: HTTP requests", "requests", None, $PROBE_MKV, False),
    ("peak RSS of the mount (cache $CACHE_MEMORY)", "MiB", None, $PEAK_RSS_KIB / 1024, False),
]
print()
disk = " + disk tier" if "$DISK_CACHE" == "1" else ""
print(f"Read benchmark: {$SIZE_MIB} MiB file, emulator on loopback, memory cache $CACHE_MEMORY{disk}, options: $MOUNT_OPTS")
print(f"{'measure':46} {'unit':>8} {'direct':>10} {'mount':>10} {'ratio':>8}")
def shown(value):
    if value >= 100:
        return f"{value:10.0f}"
    if value >= 1:
        return f"{value:10.1f}"
    return f"{value:10.3f}"
for name, unit, direct, mount, higher_is_better in rows:
    d = shown(direct) if direct is not None else f"{'-':>10}"
    if direct:
        ratio = mount / direct
        r = f"{ratio:7.2f}x"
    else:
        r = f"{'-':>8}"
    print(f"{name:46} {unit:>8} {d} {shown(mount)} {r}")
print()
print("direct = curl of the direct link (sequential) / one 4 KiB Range request per read")
print("(random) / ls -l of the same names in a local folder (listing);")
print("ratio = mount / direct (for latency and times, lower is better).")
EOF
