#!/usr/bin/env bash
# Direct-link download throughput: the emulator versus nginx serving the same
# file on loopback. Target: emulator >= 0.7x nginx.
#
#   scripts/bench-emulator.sh            # 1 GiB file, best of 3 curl runs each
#   SIZE_MIB=256 RUNS=5 scripts/bench-emulator.sh
#
# Installs nginx (apt-get) when missing, builds the release binary, uploads
# the file to a fresh emulator through the real three-step upload, takes a
# download token, and times `curl -o /dev/null` on both servers. Both servers
# are started here and stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_need bench nginx:nginx-light curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
bench_build bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/filehostfs-bench.XXXXXX")
work=$WORK
nginx_pid=""
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT

mkdir -p "$work/www" "$work/nginx"
file="$work/www/big.bin"
echo "bench: creating a ${SIZE_MIB} MiB file"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$file"

# --- emulator ---------------------------------------------------------------
bench_keys
start_emulator bench 127.0.0.1:0 --no-flood-control
addr=$bench_ADDR
api=$bench_API
key=$KEY
emu_pid=$bench_PID
auth=(-H "Authorization: Bearer $key" -H "Content-Type: application/json")

echo "bench: uploading to the emulator at $addr"
server=$(curl -sS "${auth[@]}" "$api/upload/get_upload_server.cgi")
node=$(json_member url <<<"$server")
xid=$(json_member id <<<"$server")
upload_speed=$(curl -sS -o /dev/null -w '%{speed_upload}' -H "Authorization: Bearer $key" \
  -F did=0 -F "file[]=@$file" "http://$node/upload.cgi?id=$xid")
awk -v u="$upload_speed" 'BEGIN { printf "bench: upload (streamed to disk, Whirlpool computed): %.1f MB/s\n", u / 1e6 }'
link=$(curl -sS -H "JSON: 1" "http://$node/end.pl?xid=$xid" | json_member download)
[ -n "$link" ] || { echo "bench: upload failed" >&2; exit 1; }
peak_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$emu_pid/status")
echo "bench: emulator peak memory after the upload: $((peak_kib / 1024)) MiB"

token_url() {
  curl -sS "${auth[@]}" -d "{\"url\":\"$link\",\"single\":1}" "$api/download/get_token.cgi" |
    json_member url
}

# --- nginx ------------------------------------------------------------------
port=""
for candidate in $(shuf -i 20000-60000 -n 50); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    port=$candidate
    break
  fi
done
[ -n "$port" ] || { echo "bench: no free port for nginx" >&2; exit 1; }
# As root, nginx workers would switch to "nobody", who cannot read $work.
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$work/nginx/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  types { application/octet-stream bin; }
  server {
    listen 127.0.0.1:$port;
    root $work/www;
  }
}
EOF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr.log" &
nginx_pid=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done

# --- timing -----------------------------------------------------------------
best_speed() { # best_speed COMMAND-PRINTING-URL
  local best=0 speed url
  for _ in $(seq 1 "$RUNS"); do
    url=$($1)
    read -r code size speed < <(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' "$url")
    if [ "$code" != 200 ] || [ "$size" != "$((SIZE_MIB * 1024 * 1024))" ]; then
      echo "bench: $url answered HTTP $code with $size bytes" >&2
      exit 1
    fi
    best=$(awk -v a="$best" -v b="$speed" 'BEGIN { print (b > a) ? b : a }')
  done
  echo "$best"
}
nginx_url() { echo "http://127.0.0.1:$port/big.bin"; }

echo "bench: downloading ${SIZE_MIB} MiB, best of $RUNS runs each"
emu_speed=$(best_speed token_url)
nginx_speed=$(best_speed nginx_url)

awk -v e="$emu_speed" -v n="$nginx_speed" 'BEGIN {
  printf "emulator: %8.1f MB/s\n", e / 1e6
  printf "nginx:    %8.1f MB/s\n", n / 1e6
  printf "ratio:    %8.2f (target >= 0.70)\n", e / n
}'
