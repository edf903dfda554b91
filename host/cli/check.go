package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/vfio"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/printable"
)

// Check implements `spectrumd check [-data DIR] [-state DIR] [-json]`: it
// loads and validates every VM directory and prints each valid VM, in start
// order, with its kernel, images, providers and the link ids and MACs its
// NICs will have, then every error, each naming the file at fault. The ids
// are those the state directory holds, with new links shown with the ids
// spectrumd would give them: check plans, it never writes the state. It
// returns ErrInvalid (exit 1) when any VM is invalid, having said why.
func Check(args []string, stdout, stderr io.Writer) error {
	return checkCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var checkCmd = &Command{
	Name:    "check",
	Summary: "validate every VM directory; show providers, images and MACs",
	About: `Validate every VM directory under the data directory and print each valid VM
in start order (providers first) with its kernel, disk images, providers and
the MACs of its network links and its uplinks, then every error, naming the
file at fault. A PCI uplink's device is checked on this host as spectrumd
checks it at start (an IOMMU with interrupt remapping, a network controller,
an IOMMU group the host drives nothing else of); nothing is bound.
Link ids come from the state directory; new links are shown with the ids
spectrumd would assign. Nothing is written.

Exit status: 0 every VM is valid, 1 a VM is invalid or an error, 2 usage.`,
	Define: func(fs *flag.FlagSet) Runner {
		data := fs.String("data", DefaultData, "data `DIR` holding one directory per VM")
		state := fs.String("state", DefaultState, "state `DIR` whose links.json holds the link ids (only read)")
		asJSON := fs.Bool("json", false, "print JSON (for scripts) instead of text")
		hostRoot := fs.String("host-root", "/", "read the host's sys, dev and proc under `DIR` (PCI uplinks' checks)")
		return func(_ []string, s Stdio) error { return runCheck(*data, *state, *hostRoot, *asJSON, s.Out, s.Err) }
	},
}

func runCheck(data, state, hostRoot string, asJSON bool, stdout, stderr io.Writer) error {
	cfg := config.Load(data)
	// check is a report, not a daemon: the link id state's informational
	// lines ("no link id state yet") stay out of it; a warning (a corrupt
	// links.json) is still shown.
	a, err := alloc.Open(state, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	links, err := a.Plan(alloc.Pairs(cfg), nil)
	if err != nil {
		return err
	}
	r := report(cfg, links)
	r.checkBridges(cfg, link.HostAddrs)
	r.checkPCI(cfg, vfio.Host{Sys: filepath.Join(hostRoot, "sys"), Dev: filepath.Join(hostRoot, "dev"), Proc: filepath.Join(hostRoot, "proc")})
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = r.writeText(stdout)
	}
	if err != nil {
		return err
	}
	if len(r.Errors) > 0 {
		return ErrInvalid
	}
	return nil
}

// checkReport is what check prints; its JSON form is the -json output.
type checkReport struct {
	VMs    []vmReport    `json:"vms"`    // valid VMs in start order
	Errors []errorReport `json:"errors"` // one per invalid VM, and one per unusable PCI uplink
	// unusable are the VMs of VMs whose PCI uplink cannot be passed
	// through on this host: valid, but they would not start.
	unusable map[string]bool
}

// checkPCI checks each valid VM's PCI uplinks on host h as spectrumd does
// at start (vfio.Host.Check), and that no two VMs' devices share an IOMMU
// group (one group goes to one QEMU). Each problem is an error naming the
// VM's file.
func (r *checkReport) checkPCI(cfg *config.Config, h vfio.Host) {
	p := printable.String
	r.unusable = map[string]bool{}
	groups := map[int]string{} // IOMMU group -> the first VM (start order) with a device in it
	for i, name := range cfg.Order {
		vm := cfg.VMs[name]
		for _, u := range vm.PCI {
			file := filepath.Join(vm.Dir, "uplinks", "pci", u.Addr)
			d, err := h.Check(u.Addr)
			rep := pciReport{Addr: u.Addr, Driver: p(d.Driver), Group: d.Group}
			if d.Class != 0 || err == nil {
				rep.Class = fmt.Sprintf("0x%06x", d.Class)
			}
			r.VMs[i].PCI = append(r.VMs[i].PCI, rep)
			if err == nil && d.Group >= 0 {
				if o, ok := groups[d.Group]; ok && o != name {
					err = fmt.Errorf("IOMMU group %d is VM %s's too: a group goes to one VM", d.Group, o)
				}
				groups[d.Group] = name
			}
			if err != nil {
				r.unusable[name] = true
				for _, e := range unjoin(err) {
					r.Errors = append(r.Errors, errorReport{VM: p(name), Path: p(file), Error: p(e.Error())})
				}
			}
		}
	}
}

// checkBridges warns of each VM's uplink on a host bridge that carries an
// address of the host here, where check runs as spectrumd would (addrs:
// link.HostAddrs). A bridge missing here is not reported: spectrumd names
// it when the VM starts, and check may run on another machine.
func (r *checkReport) checkBridges(cfg *config.Config, addrs func(string) ([]string, error)) {
	p := printable.String
	for i, name := range cfg.Order {
		vm := cfg.VMs[name]
		for _, u := range vm.Uplinks {
			if as, err := addrs(u.Iface); err == nil && len(as) > 0 {
				r.VMs[i].Warnings = append(r.VMs[i].Warnings, warnReport{
					Path:    p(filepath.Join(vm.Dir, "uplinks", "net", u.Iface)),
					Warning: p(link.HostAddrWarning(u.Iface, as)),
				})
			}
		}
	}
}

// unjoin lists the errors errors.Join made err of, or err.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

type vmReport struct {
	Name      string         `json:"name"`
	Dir       string         `json:"dir"`
	Kernel    string         `json:"kernel"`
	Images    []string       `json:"images"`
	Initramfs string         `json:"initramfs,omitempty"`
	Cmdline   string         `json:"cmdline,omitempty"`
	Providers []string       `json:"providers"`
	Net       []linkReport   `json:"net"`      // links on which it is the client, one per provider
	Serves    []linkReport   `json:"serves"`   // links on which it is the provider, one per client
	Uplinks   []uplinkReport `json:"uplinks"`  // NICs on host bridges, by interface
	PCI       []pciReport    `json:"pci"`      // host PCI NICs by VFIO, by address
	Warnings  []warnReport   `json:"warnings"` // entries of its directory that are not used
}

// warnReport is one entry of a VM's directory that is not used
// (config.Warning).
type warnReport struct {
	Path    string `json:"path"`
	Warning string `json:"warning"`
}

func warnReports(ws []config.Warning) []warnReport {
	out := []warnReport{}
	for _, w := range ws {
		out = append(out, warnReport{Path: printable.String(w.Path), Warning: printable.String(w.Msg)})
	}
	return out
}

// writeWarnings writes a VM's warnings, one a line.
func writeWarnings(b *strings.Builder, ws []warnReport) {
	for _, w := range ws {
		fmt.Fprintf(b, "  warning    %s: %s\n", w.Path, w.Warning)
	}
}

// pciReport is one host PCI NIC a VM gets by VFIO, as sysfs shows it now.
type pciReport struct {
	Addr   string `json:"addr"`            // uplinks/pci/<addr>
	Class  string `json:"class,omitempty"` // 0x020000; "" when the device is not there
	Driver string `json:"driver"`          // its driver now; "" none
	Group  int    `json:"group"`           // its IOMMU group; -1 none
}

// uplinkReport is one NIC of a VM on a host bridge.
type uplinkReport struct {
	Iface   string `json:"iface"`   // the host bridge (uplinks/net/<iface>)
	MAC     string `json:"mac"`     // the VM's NIC on it
	Derived bool   `json:"derived"` // the file is empty: MAC derived from the VM's and the interface's names
	Tap     string `json:"tap"`     // spectrumd's tap on the bridge while the VM runs
}

// linkReport is one link seen from one of its ends: MAC and Address are that
// end's.
type linkReport struct {
	Client   string `json:"client"`
	Provider string `json:"provider"`
	ID       string `json:"id"`
	MAC      string `json:"mac"`
	Address  string `json:"address"`           // 100.64.A.B/16 (client) or 169.254.A.B/32 (provider)
	Gateway  string `json:"gateway,omitempty"` // the client's default gateway
}

type errorReport struct {
	VM       string       `json:"vm"`
	Path     string       `json:"path"`
	Error    string       `json:"error"`
	Warnings []warnReport `json:"warnings,omitempty"` // those found before the error
}

func report(cfg *config.Config, links []alloc.Link) *checkReport {
	byClient := map[string][]alloc.Link{}
	byProvider := map[string][]alloc.Link{}
	for _, l := range links {
		byClient[l.Client] = append(byClient[l.Client], l)
		byProvider[l.Provider] = append(byProvider[l.Provider], l)
	}
	for _, ls := range byClient {
		slices.SortFunc(ls, func(a, b alloc.Link) int { return strings.Compare(a.Provider, b.Provider) })
	}
	for _, ls := range byProvider {
		slices.SortFunc(ls, func(a, b alloc.Link) int { return strings.Compare(a.Client, b.Client) })
	}
	// Every string from the file system is escaped, in the text and in
	// the JSON: a directory's name or a symlink's target is anyone's to
	// choose, and both are shown on terminals (jq -r prints a JSON string
	// raw).
	p := printable.String
	r := &checkReport{VMs: []vmReport{}, Errors: []errorReport{}}
	for _, name := range cfg.Order {
		vm := cfg.VMs[name]
		v := vmReport{
			Name: p(vm.Name), Dir: p(vm.Dir), Kernel: p(vm.Kernel), Images: []string{},
			Initramfs: p(vm.Initramfs), Cmdline: p(vm.Cmdline),
			Providers: []string{},
			Net:       []linkReport{}, Serves: []linkReport{}, Uplinks: []uplinkReport{}, PCI: []pciReport{},
			Warnings: warnReports(vm.Warnings),
		}
		for _, img := range vm.Images {
			v.Images = append(v.Images, p(img))
		}
		for _, pv := range vm.Providers {
			v.Providers = append(v.Providers, p(pv))
		}
		for _, u := range vm.Uplinks {
			v.Uplinks = append(v.Uplinks, uplinkReport{Iface: p(u.Iface), MAC: u.MAC.String(), Derived: u.Derived, Tap: link.UplinkTapName(u.MAC)})
		}
		for _, l := range byClient[name] {
			v.Net = append(v.Net, linkReport{
				Client: p(l.Client), Provider: p(l.Provider), ID: l.ID.String(),
				MAC:     l.ID.MAC(mac.Client).String(),
				Address: l.ID.ClientPrefix().String(),
				Gateway: l.ID.Gateway().String(),
			})
		}
		for _, l := range byProvider[name] {
			v.Serves = append(v.Serves, linkReport{
				Client: p(l.Client), Provider: p(l.Provider), ID: l.ID.String(),
				MAC:     l.ID.MAC(mac.Provider).String(),
				Address: l.ID.Gateway().String() + "/32",
			})
		}
		r.VMs = append(r.VMs, v)
	}
	for _, err := range cfg.Errors {
		e := errorReport{Error: p(err.Error())}
		var ve *config.VMError
		if errors.As(err, &ve) {
			e = errorReport{VM: p(ve.VM), Path: p(ve.Path), Error: p(ve.Err.Error())}
			if len(ve.Warnings) > 0 {
				e.Warnings = warnReports(ve.Warnings)
			}
		}
		r.Errors = append(r.Errors, e)
	}
	return r
}

func (r *checkReport) writeText(w io.Writer) error {
	var b strings.Builder
	for _, v := range r.VMs {
		fmt.Fprintf(&b, "%s\n", v.Name)
		fmt.Fprintf(&b, "  kernel     %s\n", v.Kernel)
		for _, img := range v.Images {
			fmt.Fprintf(&b, "  image      %s\n", img)
		}
		if v.Initramfs != "" {
			fmt.Fprintf(&b, "  initramfs  %s\n", v.Initramfs)
		}
		if v.Cmdline != "" {
			fmt.Fprintf(&b, "  cmdline    %s\n", v.Cmdline)
		}
		for _, l := range v.Net {
			fmt.Fprintf(&b, "  net from   %-16s link %s  mac %s  %s via %s\n", l.Provider, l.ID, l.MAC, l.Address, l.Gateway)
		}
		for _, l := range v.Serves {
			fmt.Fprintf(&b, "  serves     %-16s link %s  mac %s  %s\n", l.Client, l.ID, l.MAC, l.Address)
		}
		for _, u := range v.Uplinks {
			how := "given"
			if u.Derived {
				how = "derived"
			}
			fmt.Fprintf(&b, "  uplink     %-16s tap %s  mac %s  (%s)\n", u.Iface, u.Tap, u.MAC, how)
		}
		for _, d := range v.PCI {
			drv, group := "no driver", "no IOMMU group"
			if d.Driver != "" {
				drv = "driver " + d.Driver
			}
			if d.Group >= 0 {
				group = fmt.Sprintf("IOMMU group %d", d.Group)
			}
			if d.Class == "" {
				fmt.Fprintf(&b, "  pci        %s  (not on this host)\n", d.Addr)
				continue
			}
			fmt.Fprintf(&b, "  pci        %s  class %s  %s  %s\n", d.Addr, d.Class, group, drv)
		}
		writeWarnings(&b, v.Warnings)
	}
	if len(r.Errors) > 0 && len(r.VMs) > 0 {
		b.WriteString("\n")
	}
	for _, e := range r.Errors {
		if e.VM != "" {
			fmt.Fprintf(&b, "invalid %s: %s: %s\n", e.VM, e.Path, e.Error)
			writeWarnings(&b, e.Warnings)
		} else if e.Path != "" {
			fmt.Fprintf(&b, "error: %s: %s\n", e.Path, e.Error)
		} else {
			fmt.Fprintf(&b, "error: %s\n", e.Error)
		}
	}
	invalid := map[string]bool{}
	for _, e := range r.Errors {
		if e.VM != "" {
			invalid[e.VM] = true
		}
	}
	warnings := 0
	for _, v := range r.VMs {
		warnings += len(v.Warnings)
	}
	for _, e := range r.Errors {
		warnings += len(e.Warnings)
	}
	fmt.Fprintf(&b, "%d VMs valid, %d invalid", len(r.VMs)-len(r.unusable), len(invalid))
	if warnings > 0 {
		fmt.Fprintf(&b, "; %d warnings", warnings)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
