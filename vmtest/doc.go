// Package vmtest holds the end-to-end tests: real guests under QEMU (TCG on
// machines without nested virtualisation) booting the Debian test kernel
// (`make kernel`) with an initramfs that runs spectrum-netcfg, launched,
// wired and supervised by the real `spectrumd serve` in each test's own
// network namespace and driven through its command line. The harness is in
// vmtest/vm, the guests' init in vmtest/cmd/testinit. TestBootForeignNIC
// (spectrumd never gives a VM a NIC without the OUI) and the distribution
// initramfs tests start QEMU without spectrumd, through vm.Boot: still
// host/qemu's command line and qemu.Start, as spectrumd boots a VM.
package vmtest
