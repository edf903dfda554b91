#!/bin/busybox sh
# The baseline `make bench` measures spectrum-netcfg against: what a
# reference system does today in its initramfs, with busybox alone. Per
# client NIC (MAC 0a:b3:ec:00:A:B) it derives the address with awk and calls
# ip three times: link up, address 100.64.A.B/16, default route via
# 169.254.A.B with the ifindex as metric. It does not check or log anything.
bb=/bin/busybox
$bb ip -o link show | while read -r idx name rest; do
	case $rest in
	*" link/ether 0a:b3:ec:00:"*) ;;
	*) continue ;;
	esac
	idx=${idx%:}
	name=${name%:}
	name=${name%@*}
	mac=${rest#* link/ether }
	mac=${mac%% *}
	set -- $(echo "$mac" | $bb awk -F: '
		function hex(s,  i, v) {
			v = 0
			for (i = 1; i <= 2; i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
			return v
		}
		{ a = hex($5); b = hex($6); print "100.64." a "." b, "169.254." a "." b }')
	$bb ip link set "$name" up
	$bb ip addr add "$1/16" dev "$name"
	$bb ip route add default via "$2" dev "$name" metric "$idx" onlink
done
