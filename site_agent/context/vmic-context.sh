#!/bin/sh
# vmic-context: run the site's contextualisation CD at boot (installed by `vmic context install`).
#
#   vmic-context prolog    before the network (vmic-context-prolog.service)
#   vmic-context epilog    once the network is online (vmic-context-epilog.service)
#
# Finds the CD labelled CONTEXT, mounts it read-only under /run/vmic-context/PHASE,
# then, in a child shell and under a time limit, sources context.sh (exporting the
# site's settings) and runs PHASE.sh with sh, in the CD's folder. Output goes to
# stdout/stderr, which systemd sends to the journal. No CD: says so and exits 0.
#
# Environment:
#   VMIC_CONTEXT_DIR      use this folder as the CD and mount nothing (tests, image builders)
#   VMIC_CONTEXT_LABEL    the volume label to look for (default CONTEXT)
#   VMIC_CONTEXT_TIMEOUT  seconds PHASE.sh may run (default 300), then it is stopped
# The scripts see VMIC_CONTEXT_DIR (the CD's folder) and VMIC_CONTEXT_PHASE.
set -eu

phase=${1:-}
case $phase in
    prolog | epilog) ;;
    *)
        echo "usage: vmic-context prolog|epilog" >&2
        exit 2
        ;;
esac
label=${VMIC_CONTEXT_LABEL:-CONTEXT}
limit=${VMIC_CONTEXT_TIMEOUT:-300}
case $limit in
    '' | *[!0-9]*)
        echo "vmic-context: VMIC_CONTEXT_TIMEOUT must be whole seconds, not '$limit'" >&2
        exit 2
        ;;
esac

find_cd() {
    if [ -e "/dev/disk/by-label/$label" ]; then
        echo "/dev/disk/by-label/$label"
    elif command -v blkid >/dev/null 2>&1; then
        blkid -L "$label" 2>/dev/null || true
    fi
}

mounted=
cleanup() {
    if [ -n "$mounted" ]; then
        cd /
        umount "$mounted" || echo "vmic-context: could not unmount $mounted" >&2
    fi
}
trap cleanup EXIT

if [ -n "${VMIC_CONTEXT_DIR:-}" ]; then
    dir=$VMIC_CONTEXT_DIR
else
    device=$(find_cd)
    if [ -z "$device" ] && command -v udevadm >/dev/null 2>&1; then
        # the CD may not have been probed yet this early in boot
        udevadm settle --timeout=10 || true
        device=$(find_cd)
    fi
    if [ -z "$device" ]; then
        echo "vmic-context: no CD labelled $label; nothing to do"
        exit 0
    fi
    dir=/run/vmic-context/$phase
    mkdir -p "$dir"
    # noexec: nothing on the CD runs by itself; the scripts are run with sh below
    mount -t iso9660 -o ro,nosuid,nodev,noexec "$device" "$dir"
    mounted=$dir
fi

if [ ! -f "$dir/$phase.sh" ]; then
    echo "vmic-context: $dir has no $phase.sh; is this a CD built by vmic context build?" >&2
    exit 1
fi

echo "vmic-context: running $phase.sh from $dir (time limit ${limit}s)"
status=0
(
    cd "$dir" || exit 1
    export VMIC_CONTEXT_DIR="$dir" VMIC_CONTEXT_PHASE="$phase"
    # The settings and the script run in this child shell only, so nothing they set
    # reaches this script; the timeout covers both.
    exec timeout -k 10 "$limit" sh -c \
        'if [ -f ./context.sh ]; then set -a; . ./context.sh; set +a; fi; exec sh "./$1.sh"' \
        vmic-context "$phase"
) || status=$?

case $status in
    0) echo "vmic-context: $phase.sh finished" ;;
    124 | 137) echo "vmic-context: $phase.sh was stopped after ${limit}s" >&2 ;;
    *) echo "vmic-context: $phase.sh failed with exit status $status" >&2 ;;
esac
exit "$status"
