// Package docs holds the tests of the project's prose: the README stays a
// guide (short, showing the two commands), and every relative link in the
// README and in docs/ leads to a file that exists, so text moved between
// them is not left pointing at nothing.
package docs

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// linkRE is a Markdown link's target: [text](target).
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

func TestREADMEIsAGuide(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "\n"); n > 300 {
		t.Errorf("README.md is %d lines; a guide a newcomer reads in five minutes is at most 300: reference material goes into docs/man or docs/", n)
	}
	for _, cmd := range []string{"make run", "make test"} {
		if !strings.Contains(s, "\n"+cmd+" ") {
			t.Errorf("README.md does not show %q as a command of its own", cmd)
		}
	}
}

func TestLinksResolve(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	man, err := filepath.Glob("man/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(append(files, man...), "../README.md")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, m[1])
			}
		}
	}
}

// The VMs of the documented `spectrumd check` samples: the reference
// documentation's example, a VPN VM between netvm and a mail VM, and a VM
// whose vmlinux is not an uncompressed kernel.
var sampleVMs = map[string]string{
	"netvm/vmlinux":                  "ELF",
	"netvm/blk/root.img":             "",
	"netvm/uplinks/net/br-lan":       "",
	"appvm-lynx/vmlinux":             "ELF",
	"appvm-lynx/blk/root.img":        "",
	"appvm-lynx/providers/net/netvm": "",
	"vpn/vmlinux":                    "ELF",
	"vpn/blk/root.img":               "",
	"vpn/cmdline":                    "console=ttyS0 quiet\n",
	"vpn/providers/net/netvm":        "",
	"appvm-mail/vmlinux":             "ELF",
	"appvm-mail/blk/root.img":        "",
	"appvm-mail/providers/net/vpn":   "",
	"broken/vmlinux":                 "MZ" + strings.Repeat("\x00", 510), // a bzImage's start
	"broken/blk/root.img":            "",
}

// TestCheckSamples runs `spectrumd check` as each documented sample shows
// it (README.md, spectrumd(8)) on the VMs the sample shows, with no link
// ids assigned yet, and compares its output with the sample: a sample may
// not drift from what check prints. The VMs of a sample are those it names
// (netvm's uplink where it shows one).
func TestCheckSamples(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "spectrumd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/spectrumd")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const prompt = "/tmp/demo$ spectrumd check -state state"
	for _, f := range []string{"../README.md", "man/spectrumd.8.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, after, ok := strings.Cut(string(b), prompt)
		if !ok {
			t.Errorf("%s shows no %q", f, prompt)
			continue
		}
		_, after, _ = strings.Cut(after, "\n")
		want, _, _ := strings.Cut(after, "```")
		t.Run(filepath.Base(f), func(t *testing.T) {
			dir := t.TempDir()
			for p, body := range sampleVMs {
				vm, _, _ := strings.Cut(p, "/")
				if !strings.Contains(want, vm+"\n") && !strings.Contains(want, "invalid "+vm+":") ||
					strings.Contains(p, "/uplinks/") && !strings.Contains(want, "  uplink ") {
					continue
				}
				if body == "ELF" {
					elf := make([]byte, 64)
					copy(elf, "\x7fELF\x02\x01\x01")
					binary.LittleEndian.PutUint16(elf[16:], 2)
					body = string(elf)
				}
				path := filepath.Join(dir, "svc/data", p)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(bin, "check", "-state", "state")
			cmd.Dir = dir
			out, _ := cmd.CombinedOutput()
			got := strings.ReplaceAll(string(out), dir, "/tmp/demo")
			if got != want {
				t.Errorf("%s: spectrumd check prints\n%s\nthe sample shows\n%s", f, got, want)
			}
		})
	}
}
