#!/usr/bin/env bash
# Zero-setup demo: installs what the demo and the README's commands use when
# missing (fuse3; ffmpeg, which makes the sample video and gives ffprobe; attr
# for getfattr), builds filehostfs, and mounts an emulated account with
# sample data on MOUNTPOINT (default ~/filehostfs-demo) in the foreground.
# Ctrl-C unmounts. Extra arguments go to `filehostfs demo`, e.g.
# `scripts/demo.sh ~/demo --service fii.one`. With FILEHOSTFS_BIN set to a
# filehostfs binary, that one runs instead of a fresh release build (the
# fresh-machine test, scripts/test-fresh-demo.sh, passes its debug build).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v getfattr >/dev/null 2>&1 || need+=(attr)
if [ ${#need[@]} -gt 0 ]; then
  echo "demo.sh: installing ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

mountpoint="${1:-$HOME/filehostfs-demo}"
[ $# -gt 0 ] && shift
if [ -n "${FILEHOSTFS_BIN:-}" ]; then
  exec "$FILEHOSTFS_BIN" demo "$mountpoint" "$@"
fi
cargo build --release --quiet
exec target/release/filehostfs demo "$mountpoint" "$@"
