#!/usr/bin/env bash
# Build (once) a Debian root filesystem that boots as a systemd host under systemd-nspawn,
# for the end-to-end tests of `make install` and the systemd units.
#
# Usage: scripts/build-host-rootfs.sh [--force] [--print-path] [-v]
#   prints the path of the ready root filesystem directory on stdout
#
# How it works
#   debootstrap --variant=minbase of bookworm with the packages below (systemd as PID 1,
#   python3-venv for the installer, haproxy for the agent's data plane, iproute2 for tc),
#   then a few settings for a booted test host: hostname, no getty on the console, the
#   journal in memory, no units that wait for a network. The result is a directory
#   <cache>/rootfs-<hash>; <hash> covers the suite, the packages and ROOTFS_RECIPE, so it is
#   rebuilt only when those change. Tests never write into it: they boot an overlay of it
#   (tests/support/nspawn.py), so every boot starts from the same clean host.
#
# Package mirror: read from this machine's apt configuration by
# scripts/build-demo-image.sh --print-mirror (DEBIAN_MIRROR overrides); only needed cold.
#
# Cache (outside the repo): ${LANDLORD_DEV_STATE:-/var/lib/landlord-dev}/host-rootfs/
#   rootfs-<hash>/     the root filesystem (about 330 MB)
#   debootstrap.log    output of the last debootstrap
#   lock               flock: concurrent runs wait for one builder
# A warm run only checks a stamp file and takes a few milliseconds.
set -euo pipefail

SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,python3-venv,haproxy,make,iproute2,curl,procps,ca-certificates
ROOTFS_RECIPE=1        # bump when the steps below change

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${LANDLORD_DEV_STATE:-/var/lib/landlord-dev}/host-rootfs

force=0
verbose=0
say() { echo "build-host-rootfs: $*" >&2; }
die() { say "error: $*"; exit 1; }

for arg in "$@"; do
    case $arg in
        -h|--help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -f|--force) force=1 ;;
        -v|--verbose) verbose=1 ;;
        --print-path) ;;  # the default: kept for readability at call sites
        *) die "unknown argument $arg (see --help)" ;;
    esac
done

hash=$(printf 'suite=%s\npackages=%s\nrecipe=%s\n' "$SUITE" "$PACKAGES" "$ROOTFS_RECIPE" \
    | sha256sum | cut -c1-16)
ROOTFS=$CACHE_DIR/rootfs-$hash
STAMP=$ROOTFS/.landlord-rootfs-ready

if [[ $force == 0 && -f $STAMP ]]; then
    [[ $verbose == 0 ]] || say "up to date: $ROOTFS"
    echo "$ROOTFS"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/lock"
if ! flock -n 9; then
    say "another build holds $CACHE_DIR/lock; waiting"
    flock -w 1800 9 || die "timed out waiting for $CACHE_DIR/lock"
fi
if [[ $force == 0 && -f $STAMP ]]; then echo "$ROOTFS"; exit 0; fi  # built while we waited

workdir=""
cleanup() {
    [[ -n $workdir && -d $workdir ]] || return 0
    # debootstrap may leave proc/sys mounted inside the target on failure
    local m
    while read -r m; do
        umount -l "$m" || true
    done < <( (findmnt -rn -o TARGET || true) | grep -F "$workdir/" | sort -r || true)
    rm -rf --one-file-system "$workdir" || true
}
trap cleanup EXIT

mirror=${DEBIAN_MIRROR:-$("$REPO_ROOT/scripts/build-demo-image.sh" --print-mirror)} \
    || die "no Debian mirror found in the apt configuration; set DEBIAN_MIRROR"
workdir=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
target=$workdir/rootfs
say "debootstrap $SUITE (minbase + $PACKAGES) from $mirror; log: $CACHE_DIR/debootstrap.log"
start=$SECONDS
if ! debootstrap --variant=minbase --include="$PACKAGES" --components=main \
        "$SUITE" "$target" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
    tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
    die "debootstrap failed (full log: $CACHE_DIR/debootstrap.log)"
fi
say "debootstrap done in $((SECONDS - start)) s; configuring"

echo landlord-test-host >"$target/etc/hostname"
# a test host: no login prompt on the console, the journal in memory, nothing that waits
# for a network the host already has (the container shares it)
ln -sf /dev/null "$target/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$target/etc/systemd/system/getty@.service"
ln -sf /dev/null "$target/etc/systemd/system/systemd-networkd-wait-online.service"
mkdir -p "$target/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n' \
    >"$target/etc/systemd/journald.conf.d/landlord-test.conf"
# the image's haproxy.service would bind *:80-style defaults nobody asked for; the agent
# runs its own HAProxy
ln -sf /dev/null "$target/etc/systemd/system/haproxy.service"
rm -rf "$target"/var/cache/apt/archives/*.deb "$target"/var/lib/apt/lists/*
touch "$target/.landlord-rootfs-ready"

rm -rf --one-file-system "$ROOTFS"
mv "$target" "$ROOTFS"
say "ready: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
echo "$ROOTFS"
