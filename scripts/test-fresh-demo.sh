#!/usr/bin/env bash
# The demo on a fresh machine, tested: `scripts/demo.sh` on a machine
# without fuse3, ffmpeg and attr must install them, mount the demo account
# and serve a video ffprobe reads and files getfattr shows the attributes of.
#
# The fresh machine is a throwaway copy of this one: in a private mount and
# PID namespace, an overlay over the root filesystem (its changes kept on a
# tmpfs) is the root of a chroot in which those three packages are purged;
# then a copy of scripts/demo.sh runs there as a new user would (a fresh
# home, a bare environment) and must apt-get them back from the package
# registry. dpkg only ever writes to the overlay: the host keeps its
# packages. When this script's inner shell ends, for whatever reason, the
# kernel ends every process of the namespace (the demo's mount with them)
# and drops its mounts (the overlay, its tmpfs, the demo's FUSE mount).
#
# Needs root (re-runs itself with sudo otherwise), overlayfs, /dev/fuse, a
# root filesystem holding /usr, /etc and /var, and the package registry.
# FILEHOSTFS_BIN: the filehostfs binary the demo runs (default:
# target/debug/filehostfs, built when missing); the install part is always
# the real script. Scripts/test.sh runs this after the cargo tests.
set -euo pipefail

# How long the demo may take to install its packages and mount.
START_TIMEOUT=${FRESH_DEMO_START_TIMEOUT:-900}

fail() {
  echo "test-fresh-demo.sh: FAILED: $*" >&2
  exit 1
}

# Runs in the chroot: the fresh machine.
on_the_fresh_machine() {
  set -euo pipefail
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  DEBIAN_FRONTEND=noninteractive dpkg --purge --force-depends fuse3 ffmpeg attr >/dev/null
  for tool in fusermount3 ffmpeg ffprobe getfattr; do
    if command -v "$tool" >/dev/null; then
      echo "$tool is still installed after the purge" >&2
      return 1
    fi
  done
  echo "fresh machine: fuse3, ffmpeg and attr purged"
  home=/home/newcomer
  mkdir -p "$home"
  mnt=$home/filehostfs-demo
  # As a new user runs it: the README's first command, nothing else set.
  env -i HOME="$home" PATH="$PATH" LANG=C.UTF-8 FILEHOSTFS_BIN=/opt/filehostfs/filehostfs \
    /opt/filehostfs/scripts/demo.sh "$mnt" >"$home/demo.log" 2>&1 &
  demo=$!
  started=$SECONDS
  # The demo prints its guide once the mount answers.
  until grep -qs "Press Ctrl-C" "$home/demo.log"; do
    if ! kill -0 "$demo" 2>/dev/null; then
      echo "demo.sh ended before mounting; its output:" >&2
      cat "$home/demo.log" >&2
      return 1
    fi
    if [ $((SECONDS - started)) -gt "$1" ]; then
      echo "demo.sh did not mount within $1 s; its output:" >&2
      cat "$home/demo.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "demo mounted after $((SECONDS - started)) s"
  # The packages came back through demo.sh itself.
  grep -x "demo.sh: installing fuse3 ffmpeg attr" "$home/demo.log" ||
    { echo "demo.sh did not install the packages; its output:"; cat "$home/demo.log"; return 1; } >&2
  mountpoint -q "$mnt" || { echo "$mnt is not a mount point" >&2; return 1; }
  # A playable video: ffprobe reads its streams and length through the mount.
  probe=$(ffprobe -v error -show_entries stream=codec_type:format=duration \
    -of default=noprint_wrappers=1 "$mnt/Videos/sample.mp4")
  echo "$probe"
  grep -qx "codec_type=video" <<<"$probe" || { echo "no video stream" >&2; return 1; }
  grep -qx "codec_type=audio" <<<"$probe" || { echo "no audio stream" >&2; return 1; }
  duration=$(sed -n 's/^duration=//p' <<<"$probe")
  awk -v d="$duration" 'BEGIN { exit !(d > 9 && d < 11) }' ||
    { echo "the video lasts $duration s, not 10" >&2; return 1; }
  # A working getfattr: the file's attributes as the demo's guide shows
  # them, and its download link.
  attrs=$(getfattr --absolute-names -d -m user.filehostfs "$mnt/Documents/notes.md")
  echo "$attrs"
  grep -q '^user.filehostfs.id="' <<<"$attrs" || { echo "no id attribute" >&2; return 1; }
  link=$(getfattr --absolute-names --only-values -n user.filehostfs.link "$mnt/Documents/notes.md")
  echo "user.filehostfs.link: $link"
  [[ $link == http* ]] || { echo "no link attribute" >&2; return 1; }
  # Ctrl-C unmounts and stops.
  kill -INT "$demo"
  status=0
  wait "$demo" || status=$?
  [ "$status" -eq 0 ] || { echo "the demo exited with $status"; cat "$home/demo.log"; return 1; } >&2
  if mountpoint -q "$mnt"; then
    echo "$mnt is still mounted after Ctrl-C" >&2
    return 1
  fi
  echo "fresh machine: demo stopped cleanly"
}

# Runs in the private namespaces: builds the fresh machine and enters it.
inside_the_namespace() {
  local work=$1 root=$1/root layers=$1/layers
  # Upper and work dirs on a tmpfs: outside the lower root, gone with it.
  mount -t tmpfs -o mode=0755,size=4G fresh-demo-layers "$layers"
  mkdir "$layers/upper" "$layers/work"
  mount -t overlay fresh-demo -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  # Name resolution as the host has it (its files may be mounts of their own).
  for file in resolv.conf hosts; do
    rm -f "$root/etc/$file"
    cat "/etc/$file" >"$root/etc/$file"
  done
  mkdir -p "$root/opt/filehostfs/scripts"
  cp "$work/filehostfs" "$root/opt/filehostfs/filehostfs"
  cp "$work/demo.sh" "$root/opt/filehostfs/scripts/demo.sh"
  chroot "$root" /bin/bash -c "$(declare -f on_the_fresh_machine); on_the_fresh_machine $START_TIMEOUT"
}

if [ "${1:-}" = "--inside" ]; then
  inside_the_namespace "$2"
  exit
fi

cd "$(dirname "$0")/.."
repo=$PWD
if [ -z "${FILEHOSTFS_BIN:-}" ]; then
  FILEHOSTFS_BIN=$repo/target/debug/filehostfs
  [ -x "$FILEHOSTFS_BIN" ] || cargo build --quiet --bin filehostfs
fi
FILEHOSTFS_BIN=$(realpath "$FILEHOSTFS_BIN")
export FILEHOSTFS_BIN
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=FILEHOSTFS_BIN,FRESH_DEMO_START_TIMEOUT "$repo/scripts/test-fresh-demo.sh" "$@"
fi
[ -e /dev/fuse ] || fail "/dev/fuse is missing"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || fail "the kernel has no overlayfs"
for dir in /usr /etc /var; do
  [ "$(stat -c %d /)" = "$(stat -c %d "$dir")" ] ||
    fail "$dir is a filesystem of its own; the overlay copies the root filesystem only"
done

started=$SECONDS
host_tools_before=$(command -v fusermount3 ffprobe getfattr || true)
work=$(mktemp -d "${TMPDIR:-/tmp}/filehostfs-fresh-demo.XXXXXX")
# The namespace's mounts are gone by the time this runs (see above).
trap 'rm -rf "$work"' EXIT
mkdir "$work/root" "$work/layers"
cp "$FILEHOSTFS_BIN" "$work/filehostfs"
cp scripts/demo.sh "$work/demo.sh"
unshare --mount --propagation private --pid --fork --kill-child -- \
  "$repo/scripts/test-fresh-demo.sh" --inside "$work" ||
  fail "the demo on a fresh machine (see above)"
host_tools_after=$(command -v fusermount3 ffprobe getfattr || true)
[ "$host_tools_before" = "$host_tools_after" ] ||
  fail "the host's tools changed: before: $host_tools_before; after: $host_tools_after"
echo "test-fresh-demo.sh: passed in $((SECONDS - started)) s"
