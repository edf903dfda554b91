#!/bin/sh
# dracut pre-mount hook (sourced by dracut's shell, so it never exits):
# configures the 0A:B3:EC NICs with spectrum-netcfg before the root file
# system is mounted. By pre-mount, udev has loaded the NIC drivers and the
# initqueue has settled; pre-udev would run before any driver is loaded. The
# agent logs to the serial console (/dev/ttyS0) itself.
#
# WATCH=yes in /etc/default/spectrum-netcfg (read when the initramfs was
# built) or spectrum.watch on the kernel command line (spectrum.watch=0 turns
# it off) leaves `spectrum-netcfg -watch` running for hot-plugged NICs. Without
# systemd in the initramfs it survives switch_root (its binary stays in
# memory as a deleted file). With systemd, it is a left-over process of
# dracut-pre-mount.service, and whether it outlives switch-root is up to
# systemd: run `spectrum-netcfg -watch` as a service of the real root there.

type getargbool >/dev/null 2>&1 || . /lib/dracut-lib.sh

modprobe -q virtio_net 2>/dev/null
udevadm settle --timeout=10 2>/dev/null

/usr/sbin/spectrum-netcfg </dev/null || warn "spectrum-netcfg: exit status $? (see its lines on ttyS0)"

SPECTRUM_NETCFG_WATCH=no
[ -r /etc/spectrum-netcfg.conf ] && . /etc/spectrum-netcfg.conf
if [ "$SPECTRUM_NETCFG_WATCH" = yes ]; then
    spectrum_netcfg_watch=1
else
    spectrum_netcfg_watch=0
fi
if getargbool "$spectrum_netcfg_watch" spectrum.watch; then
    /usr/sbin/spectrum-netcfg -watch </dev/null >/dev/null 2>&1 &
    info "spectrum-netcfg: -watch running, pid $!"
fi
unset spectrum_netcfg_watch
