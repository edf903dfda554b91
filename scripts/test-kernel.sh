#!/usr/bin/env bash
# Fetches a Debian kernel for the VM tests, never installing it on the host:
# the package a metapackage depends on, its module tree, and its kernel.
# Idempotent: does nothing when that version is already cached.
#
# test-kernel.sh (cloud, the default): Debian's cloud kernel, the test
# guests' (its bzImage decompressed into the ELF vmlinux a VM directory
# requires):
#   .cache/kernel/vmlinux  -> <package>/vmlinux
#   .cache/kernel/modules  -> <package>/root/lib/modules/<version>
# test-kernel.sh full: Debian's full kernel, for the nested VFIO test's
# middle VM (it has 9p, the cloud kernel has not):
#   .cache/kernel-full/vmlinuz -> <package>/root/boot/vmlinuz-<version>
#   .cache/kernel-full/modules -> <package>/root/lib/modules/<version>
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cloud}
case $flavour in
cloud) meta=linux-image-cloud-amd64 cache=.cache/kernel re='linux-image-[0-9].*-cloud-amd64' ;;
full) meta=linux-image-amd64 cache=.cache/kernel-full re='linux-image-[0-9].*-amd64' ;;
*) echo "test-kernel: unknown flavour $flavour (cloud or full)" >&2; exit 2 ;;
esac
mkdir -p "$cache"

resolve() {
  apt-cache depends "$meta" 2>/dev/null |
    sed -n "s/^ *Depends: \\($re\\)\$/\\1/p" | head -n1
}
pkg=$(resolve)
if [ -z "$pkg" ]; then
  # apt's lists may not be there yet on a fresh machine.
  apt-get update -qq
  pkg=$(resolve)
fi
[ -n "$pkg" ] || { echo "test-kernel: cannot resolve $meta" >&2; exit 1; }
ver=${pkg#linux-image-}
dir=$cache/$pkg
done=$dir/vmlinux
[ "$flavour" = full ] && done=$dir/.done

if [ ! -f "$done" ]; then
  echo "test-kernel: fetching $pkg"
  rm -rf "$dir" && mkdir -p "$dir"
  # apt-get download writes into the working directory; as root the
  # sandbox user _apt cannot, so it warns and downloads unsandboxed.
  (cd "$dir" && apt-get download -qq "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$dir"/"$pkg"_*.deb)
  dpkg-deb -x "$deb" "$dir/root"
  rm -f "$deb"
  if [ "$flavour" = cloud ]; then
    go run ./vmtest/cmd/mkkernel "$dir/root/boot/vmlinuz-$ver" "$dir/vmlinux.tmp"
    mv "$dir/vmlinux.tmp" "$dir/vmlinux"
  else
    touch "$done"
  fi
fi
if [ "$flavour" = cloud ]; then
  ln -sfn "$pkg/vmlinux" "$cache/vmlinux"
  ln -sfn "$pkg/root/lib/modules/$ver" "$cache/modules"
  echo "test-kernel: $cache/vmlinux ($pkg)"
else
  ln -sfn "$pkg/root/boot/vmlinuz-$ver" "$cache/vmlinuz"
  ln -sfn "$pkg/root/lib/modules/$ver" "$cache/modules"
  echo "test-kernel: $cache/vmlinuz ($pkg)"
fi
