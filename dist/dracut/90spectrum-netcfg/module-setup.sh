#!/bin/bash
# dracut module: puts spectrum-netcfg (the static guest agent) and the
# virtio-net driver into the initramfs and runs the agent from a pre-mount
# hook. Installed by `make install` as
# /usr/lib/dracut/modules.d/90spectrum-netcfg/.
#
# Settings come from /etc/default/spectrum-netcfg (SPECTRUM_NETCFG_DEFAULTS
# names another file): BINARY=PATH, the agent to copy (default: the first of
# /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin), and WATCH=yes, to
# leave `spectrum-netcfg -watch` running (see spectrum-netcfg-pre-mount.sh).

# spectrum_netcfg_settings sets BINARY and WATCH.
spectrum_netcfg_settings() {
    BINARY=
    WATCH=no
    local defaults="${SPECTRUM_NETCFG_DEFAULTS:-/etc/default/spectrum-netcfg}"
    # shellcheck disable=SC1090
    [[ -r $defaults ]] && . "$defaults"
    if [[ -z $BINARY ]]; then
        local d
        for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin; do
            if [[ -x $d/spectrum-netcfg ]]; then
                BINARY=$d/spectrum-netcfg
                break
            fi
        done
    fi
    case "$WATCH" in
        yes | YES | y | 1 | true) WATCH=yes ;;
        *) WATCH=no ;;
    esac
}

# Included whenever the agent is installed: a guest that has it wants its
# NICs configured, host-only image or not.
check() {
    local BINARY WATCH
    spectrum_netcfg_settings
    [[ -n $BINARY && -x $BINARY ]] || return 1
    return 0
}

# udev loads virtio_net for the NIC before the pre-mount hook runs.
depends() {
    echo udev-rules
    return 0
}

# virtio_net even in a host-only image built on a machine without a
# virtio NIC; a no-op when the driver is built in.
installkernel() {
    hostonly='' instmods virtio_net
}

install() {
    local BINARY WATCH
    spectrum_netcfg_settings
    if [[ -z $BINARY || ! -x $BINARY ]]; then
        derror "spectrum-netcfg: no agent binary (${BINARY:-not found})"
        return 1
    fi
    inst_simple "$BINARY" /usr/sbin/spectrum-netcfg
    printf 'SPECTRUM_NETCFG_WATCH=%s\n' "$WATCH" >"${initdir}/etc/spectrum-netcfg.conf"
    inst_hook pre-mount 10 "$moddir/spectrum-netcfg-pre-mount.sh"
}
