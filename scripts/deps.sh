#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and `make run` need,
# only those that are missing, with one apt-get update at most. Idempotent.
set -euo pipefail
pkgs=(
  iproute2          # ip, for tests and make run
  procps            # sysctl, for tests
  busybox-static    # the test guests' console shell; the guest benchmark's baseline
  hyperfine         # make bench
  bc                # make bench (scripts/bench-daemon.sh)
  qemu-system-x86   # VMs (TCG where nested virtualisation is missing)
  kmod              # modinfo, to order the guest's virtio modules
  xz-utils          # compressed (.ko.xz) modules of an override test kernel
  zstd              # compressed (.ko.zst) modules of an override test kernel
  systemd           # systemd-analyze verify of the unit; systemd-journald for the journal tests
  mandoc            # mandoc -T lint of the manual pages (docs/man)
  zsh               # the zsh completion's test (cmd/spectrumd)
  # Initramfs generators the agent's hooks are tested with (dist/, vmtest):
  # the -core packages only. They hold mkinitramfs and dracut but not
  # update-initramfs, the kernel postinst hooks or the dpkg triggers, so no
  # initramfs of the host is ever rebuilt, and the two do not conflict (the
  # initramfs-tools and dracut packages do).
  initramfs-tools-core  # mkinitramfs, lsinitramfs, unmkinitramfs
  dracut-core       # dracut, lsinitrd
  udev              # needed by both; pinned below to the installed systemd
  e2fsprogs         # mke2fs -d: the boot test's root file system
  cpio              # the generators' archiver
  # The VM tests' LAN and make run (vmtest/lan, vmtest/vm):
  dnsmasq-base      # the LAN's DHCP and DNS servers
  lynx              # appvm-lynx's browser, copied with its libraries into its initramfs
  tmux              # a real terminal for the console tests (host/cli, host/termfilter)
  vim               # a full-screen program replayed through the console filter
  nftables          # nft -j: the router's tests read its ruleset back
  conntrack         # the router's tests create and read conntrack entries
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # udev must match systemd's version; without a pin apt would upgrade the
  # installed systemd (and libsystemd0, libudev1) under a running machine.
  sysv=$(dpkg-query -W -f='${Status} ${Version}' systemd 2>/dev/null | sed -n 's/^install ok installed //p')
  if [ -n "$sysv" ] && apt-cache madison udev | grep -q " $sysv "; then
    for i in "${!missing[@]}"; do
      [ "${missing[$i]}" = udev ] && missing[$i]="udev=$sysv"
    done
  fi
  # -q, not -qq: a line per package fetched and set up is the first
  # run's progress.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
go mod download
