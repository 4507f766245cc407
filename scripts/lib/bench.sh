# shellcheck shell=bash
# Set-up the benchmarks share, sourced by scripts/bench-*.sh: missing tools
# installed, the binary built, emulators and mounts started in the bench's
# scratch dir ($WORK) and stopped by PID. The sourcing script sets WORK
# before starting anything and calls bench_cleanup from its EXIT trap.

# bench_need NAME TOOL[:PACKAGE]...: installs (apt-get) the package of each
# tool that is missing (PACKAGE defaults to TOOL).
bench_need() {
  local name=$1 spec tool need=() sudo_cmd=()
  shift
  for spec in "$@"; do
    tool=${spec%%:*}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("${spec#*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "$name: installing ${need[*]}"
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
}

# bench_build NAME [PROFILE]: builds filehostfs (release by default) and
# sets BIN to it; a BIN set by the caller (another build to measure) is
# kept as it is.
bench_build() {
  local name=$1 profile=${2:-release}
  [ -z "${BIN:-}" ] || return 0
  echo "$name: building ($profile)"
  cargo build --profile "$profile" --quiet --bin filehostfs
  case "$profile" in
    dev) BIN=$PWD/target/debug/filehostfs ;;
    *) BIN=$PWD/target/$profile/filehostfs ;;
  esac
}

now() { date +%s.%N; }

# json_member NAME < JSON: the value of a flat string member.
json_member() {
  sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
}

# bench_keys: a fresh account key and admin key for the emulators, in
# $WORK/keys and $WORK/admin; sets KEY and ADMIN.
bench_keys() {
  KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  ADMIN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$KEY" >"$WORK/keys"
  echo "$ADMIN" >"$WORK/admin"
}

EMULATORS=()

# start_emulator NAME LISTEN [SERVE-ARGS...]: `filehostfs serve` on LISTEN
# (127.0.0.1:0 for any port) with its data in $WORK/emu-NAME and the keys of
# bench_keys; returns once it serves, with NAME_ADDR (host:port), NAME_API
# (its 1fichier API URL) and NAME_PID set. Log: $WORK/emu-NAME.log.
start_emulator() {
  local name=$1 listen=$2 api
  shift 2
  : >"$WORK/emu-$name.out"
  "$BIN" serve --listen "$listen" --data-dir "$WORK/emu-$name" --keys-file "$WORK/keys" \
    --admin-key-file "$WORK/admin" "$@" >"$WORK/emu-$name.out" 2>>"$WORK/emu-$name.log" &
  printf -v "${name}_PID" '%s' "$!"
  EMULATORS+=("$name")
  for _ in $(seq 300); do
    grep -q '^1fichier ' "$WORK/emu-$name.out" 2>/dev/null && break
    sleep 0.1
  done
  api=$(awk '$1 == "1fichier" {print $2}' "$WORK/emu-$name.out")
  [ -n "$api" ] || { echo "the $name emulator did not start:" >&2; cat "$WORK/emu-$name.log" >&2; exit 1; }
  printf -v "${name}_API" '%s' "$api"
  printf -v "${name}_ADDR" '%s' "$(head -1 "$WORK/emu-$name.out")"
}

# stop_emulator NAME: stops the emulator NAME (its data stays).
stop_emulator() {
  local pid_var="${1}_PID"
  local pid=${!pid_var:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  printf -v "$pid_var" '%s' ""
}

# wait_mounted DIR PID LOG: returns once DIR is a mount point; fails with
# LOG if the process PID exits first or 60 s pass.
wait_mounted() {
  for _ in $(seq 600); do
    grep -qs " $1 " /proc/self/mountinfo && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "the mount did not appear:" >&2
  cat "$3" >&2
  exit 1
}

# unmount_dir DIR: unmounts DIR if it is a mount point (lazily if busy).
unmount_dir() {
  if grep -qs " $1 " /proc/self/mountinfo; then
    fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null || true
  fi
}

# stop_mount_process DIR PID: unmounts DIR, then waits up to 30 s for the
# mount process PID to end (it drains its uploads) before killing it.
stop_mount_process() {
  unmount_dir "$1"
  [ -n "$2" ] || return 0
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  kill "$2" 2>/dev/null || true
  wait "$2" 2>/dev/null || true
}

# bench_cleanup: stops every emulator started here and removes $WORK.
bench_cleanup() {
  local name
  for name in "${EMULATORS[@]}"; do
    stop_emulator "$name"
  done
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
