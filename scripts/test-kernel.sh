#!/usr/bin/env bash
# Fetches Debian's cloud kernel into .cache/kernel/ for the VM tests: the
# package the linux-image-cloud-amd64 metapackage depends on, its module tree,
# and its bzImage decompressed into the ELF vmlinux a VM directory requires.
# Idempotent: does nothing when that version is already cached.
#   .cache/kernel/vmlinux  -> <package>/vmlinux
#   .cache/kernel/modules  -> <package>/root/lib/modules/<version>
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/kernel
mkdir -p "$cache"

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
if [ -z "$pkg" ]; then
  # apt's lists may not be there yet on a fresh machine.
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-cloud-amd64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
fi
[ -n "$pkg" ] || { echo "test-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
ver=${pkg#linux-image-}
dir=$cache/$pkg

if [ ! -f "$dir/vmlinux" ]; then
  echo "test-kernel: fetching $pkg"
  rm -rf "$dir" && mkdir -p "$dir"
  # apt-get download writes into the working directory; as root the
  # sandbox user _apt cannot, so it warns and downloads unsandboxed.
  (cd "$dir" && apt-get download -qq "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$dir"/"$pkg"_*.deb)
  dpkg-deb -x "$deb" "$dir/root"
  rm -f "$deb"
  go run ./vmtest/cmd/mkkernel "$dir/root/boot/vmlinuz-$ver" "$dir/vmlinux.tmp"
  mv "$dir/vmlinux.tmp" "$dir/vmlinux"
fi
ln -sfn "$pkg/vmlinux" "$cache/vmlinux"
ln -sfn "$pkg/root/lib/modules/$ver" "$cache/modules"
echo "test-kernel: $cache/vmlinux ($pkg)"
