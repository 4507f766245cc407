#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need (fuse3, ffmpeg for
# ffprobe, rsync, chromium for the status page's browser test) when it is
# missing, then runs `cargo test`. Without arguments it then runs the demo
# on a fresh machine (scripts/test-fresh-demo.sh: needs root or sudo and the
# package registry; FILEHOSTFS_FRESH_DEMO=0 skips it); arguments go to
# `cargo test` and run only that.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -e /dev/fuse ]; then
  echo "test.sh: /dev/fuse is missing; the mount tests need FUSE" >&2
  exit 1
fi

if [ $# -gt 0 ]; then
  exec cargo test --all-targets "$@"
fi
cargo test --all-targets
if [ "${FILEHOSTFS_FRESH_DEMO:-1}" != 0 ]; then
  FILEHOSTFS_BIN=target/debug/filehostfs scripts/test-fresh-demo.sh
fi
