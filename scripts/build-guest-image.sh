#!/usr/bin/env bash
# Builds the metald guest image from Debian packages only (guest/README.md):
#   vmlinuz            the kernel of Debian's linux-image-<abi>-cloud-amd64 (apt-get download + dpkg -x;
#                      never installed on the host)
#   initramfs.cpio.gz  busybox-static, the virtio/ACPI modules the kernel has as =m, guest/init and
#                      /bin/metald-pkt (guest/metald-pkt.c, compiled statically with Debian's gcc and
#                      libc6-dev: the ICMPv6 tool the end-to-end tests attack the port guards with)
# Cached under $CACHE/<key>/, the key made of both package versions and a hash of guest/ and this
# script, so it is rebuilt only when one of them changes. $CACHE/current points at the latest build.
# Prints the image directory as its last line of stdout.
#
#   scripts/build-guest-image.sh [--cache DIR] [--offline]
#   METALD_GUEST_CACHE=DIR scripts/build-guest-image.sh
#
# --offline (or no usable apt lists) reuses $CACHE/current instead of asking apt.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${METALD_GUEST_CACHE:-/var/cache/metald/guest}"
OFFLINE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE="$2"; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    *) echo "usage: $0 [--cache DIR] [--offline]" >&2; exit 2 ;;
  esac
done

# The modules, in load order (a module loaded before its dependencies fails with "unknown symbol").
# virtio_mmio: microvm's devices (found through ACPI, VIRTIO_MMIO_CMDLINE_DEVICES is not set);
# virtio_pci*: q35; button+evdev: the ACPI power button that QMP system_powerdown presses.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio
  failover net_failover virtio_net virtio_blk button evdev)

log() { echo "build-guest-image: $*" >&2; }

reuse_current() {
  if [ -f "$CACHE/current/vmlinuz" ] && [ -f "$CACHE/current/initramfs.cpio.gz" ]; then
    log "reusing $(readlink -f "$CACHE/current") ($1)"
    readlink -f "$CACHE/current"
    exit 0
  fi
  log "no cached image in $CACHE and $1"
  exit 1
}

[ "$OFFLINE" = 1 ] && reuse_current "--offline"

# The ABI package the metapackage points at (linux-image-cloud-amd64 -> linux-image-6.1.0-56-cloud-amd64).
KPKG="$(apt-cache depends --important linux-image-cloud-amd64 2>/dev/null \
  | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1)" || true
[ -n "$KPKG" ] || reuse_current "apt knows no linux-image-cloud-amd64 (run apt-get update)"
candidate() { apt-cache policy "$1" | sed -n 's/^ *Candidate: //p'; }
KVER="$(candidate "$KPKG")"
BVER="$(candidate busybox-static)"
{ [ -n "$KVER" ] && [ "$KVER" != "(none)" ] && [ -n "$BVER" ] && [ "$BVER" != "(none)" ]; } \
  || reuse_current "apt has no candidate for $KPKG or busybox-static"
KREL="${KPKG#linux-image-}"
command -v gcc >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] \
  || { log "gcc and libc6-dev are needed for guest/metald-pkt.c (apt-get install gcc libc6-dev)"; exit 1; }
# The compiler and C library versions are part of the key: a new libc6-dev rebuilds the tool.
CCVER="$(dpkg-query -W -f='${Version}' libc6-dev 2>/dev/null || gcc -dumpfullversion)"
SRCHASH="$(cat "$ROOT/guest/init" "$ROOT/guest/metald-pkt.c" "$0" <(echo "$CCVER" "$(gcc -dumpfullversion)") | sha256sum | cut -c1-12)"
KEY="$(echo "${KREL}_${KVER}_busybox_${BVER}_${SRCHASH}" | tr -c 'A-Za-z0-9._\n-' '_')"
OUT="$CACHE/$KEY"

if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ]; then
  ln -sfn "$KEY" "$CACHE/current"
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE"
W="$(mktemp -d "$CACHE/.build-XXXXXX")"
trap 'rm -rf "$W"' EXIT
log "building $KEY"
# apt-get download runs as _apt when it can; a root-only temp dir makes it fall back (with a warning).
chmod 755 "$W"
(cd "$W" && apt-get download -q "$KPKG=$KVER" "busybox-static=$BVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
ls "$W"/linux-image-*.deb "$W"/busybox-static_*.deb >/dev/null 2>&1 || { log "apt-get download failed"; exit 1; }
dpkg -x "$W"/linux-image-*.deb "$W/kernel"
dpkg -x "$W"/busybox-static_*.deb "$W/busybox"

R="$W/initramfs"
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules}
cp "$W/busybox/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
KMOD="$W/kernel/lib/modules/$KREL/kernel"
: > "$R/lib/modules/load-order"
for m in "${MODULES[@]}"; do
  f="$(find "$KMOD" -name "$m.ko" -print -quit)"
  if [ -z "$f" ]; then
    # Built in (=y) in this kernel: nothing to load.
    grep -q "/$m.ko\$" "$W/kernel/lib/modules/$KREL/modules.builtin" 2>/dev/null && continue
    log "module $m not found in $KPKG"; exit 1
  fi
  cp "$f" "$R/lib/modules/"
  echo "$m" >> "$R/lib/modules/load-order"
done
install -m 0755 "$ROOT/guest/init" "$R/init"
# Static: the initramfs has no C library. No name lookups in it (getaddrinfo would want NSS modules).
gcc -static -Os -Wall -Wextra -Werror -o "$R/bin/metald-pkt" "$ROOT/guest/metald-pkt.c"
strip "$R/bin/metald-pkt"

# Reproducible archive: sorted names, fixed times and owners.
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -6 > "$W/initramfs.cpio.gz"
mkdir -p "$W/out"
cp "$W/kernel/boot/vmlinuz-$KREL" "$W/out/vmlinuz"
cp "$W/kernel/boot/config-$KREL" "$W/out/kernel-config"
mv "$W/initramfs.cpio.gz" "$W/out/"
printf 'kernel_package=%s\nkernel_version=%s\nkernel_release=%s\nbusybox_version=%s\nlibc6_dev_version=%s\ngcc_version=%s\nsource_hash=%s\nmodules=%s\n' \
  "$KPKG" "$KVER" "$KREL" "$BVER" "$CCVER" "$(gcc -dumpfullversion)" "$SRCHASH" "$(tr '\n' ' ' < "$R/lib/modules/load-order")" > "$W/out/manifest"
# Rename into place last, so a concurrent or interrupted build never leaves a half image under $KEY.
rm -rf "$OUT"
mv "$W/out" "$OUT"
ln -sfn "$KEY" "$CACHE/current"
log "built $OUT ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1) initramfs)"
echo "$OUT"
