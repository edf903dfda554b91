// Package vmtest holds the end-to-end tests: real guests under QEMU (TCG on
// machines without nested virtualisation) booting the Debian test kernel
// (`make kernel`) with an initramfs that runs spectrum-netcfg, launched,
// wired and supervised by the real `spectrumd serve` in each test's own
// network namespace and driven through its command line. The harness is in
// vmtest/vm, the guests' init in vmtest/cmd/testinit, the LAN that netvm's
// uplink joins (DHCP, DNS, a web site, all in a namespace of the test's
// own) in vmtest/lan, and the guests' DHCP client in vmtest/dhcpc. Only
// TestBootForeignNIC launches QEMU by hand: spectrumd never gives a VM a
// NIC without the OUI except an uplink.
package vmtest
