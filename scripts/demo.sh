#!/usr/bin/env bash
# Zero-setup demo: installs fuse3 when missing, builds filehostfs, and mounts an
# emulated account with sample data on MOUNTPOINT (default ~/filehostfs-demo)
# in the foreground. Ctrl-C unmounts. Extra arguments go to `filehostfs demo`,
# e.g. `scripts/demo.sh ~/demo --service fii.one`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "demo.sh: installing fuse3"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends fuse3
fi

mountpoint="${1:-$HOME/filehostfs-demo}"
[ $# -gt 0 ] && shift
cargo build --release --quiet
exec target/release/filehostfs demo "$mountpoint" "$@"
