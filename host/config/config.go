// Package config turns the VM directories under svc/data into a validated
// model. It reads the file system and nothing else: no QEMU, no netlink.
package config

// VM is one valid VM directory.
type VM struct {
	Name      string   // the directory's name
	Dir       string   // absolute path of the directory
	Kernel    string   // absolute path of vmlinux
	Images    []string // absolute paths of blk/*.img, sorted by name
	Initramfs string   // absolute path of the optional initramfs; "" means none
	Cmdline   string   // the optional cmdline file's line; "" means the default (console on ttyS0)
	Providers []string // names of the VMs in providers/net, sorted
}

// Config is the result of loading a data directory: the good VMs and an error
// per broken one. One broken VM never stops the others from loading.
type Config struct {
	VMs    map[string]*VM // valid VMs by name
	Order  []string       // names of valid VMs, each after its providers; deterministic
	Errors []error        // one per rejected VM; each names the VM and the path at fault
}
