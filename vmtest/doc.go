// Package vmtest holds the end-to-end tests: real guests under QEMU (TCG on
// machines without nested virtualisation) booting the Debian test kernel
// (`make kernel`) with an initramfs that runs spectrum-netcfg, wired by
// bridges and taps in each test's own network namespace. The harness is in
// vmtest/vm, the guests' init in vmtest/cmd/testinit.
package vmtest
