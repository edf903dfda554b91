package router

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirstNameserver(t *testing.T) {
	for _, tt := range []struct {
		name, conf, want string // want "" = none
	}{
		{name: "empty", conf: ""},
		{name: "one", conf: "nameserver 192.0.2.53\n", want: "192.0.2.53"},
		{name: "no newline", conf: "nameserver 192.0.2.53", want: "192.0.2.53"},
		{name: "tab and trailing words", conf: "nameserver\t  192.0.2.53  # the LAN's\n", want: "192.0.2.53"},
		{name: "first of two", conf: "nameserver 192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.1"},
		{name: "comments and options", conf: "# nameserver 192.0.2.9\n; nameserver 192.0.2.8\nsearch example.org\noptions edns0\nnameserver 192.0.2.7\n", want: "192.0.2.7"},
		{name: "IPv6 first", conf: "nameserver 2001:db8::53\nnameserver 192.0.2.53\n", want: "192.0.2.53"},
		{name: "IPv6 with zone", conf: "nameserver fe80::1%eth0\nnameserver 192.0.2.53\n", want: "192.0.2.53"},
		{name: "only IPv6", conf: "nameserver 2001:db8::53\n"},
		{name: "fourth is ignored, as glibc does", conf: "nameserver 2001:db8::1\nnameserver 2001:db8::2\nnameserver 2001:db8::3\nnameserver 192.0.2.53\n"},
		{name: "invalid ones do not count", conf: "nameserver x\nnameserver 300.1.1.1\nnameserver 2001:db8::1\nnameserver 2001:db8::2\nnameserver 192.0.2.53\n", want: "192.0.2.53"},
		{name: "leading blank: not a nameserver line for glibc", conf: " nameserver 192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.2"},
		{name: "keyword glued to the address", conf: "nameserver192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.2"},
		{name: "keyword alone", conf: "nameserver\nnameserver \n", want: ""},
		{name: "inet_aton shorthand is not recognised", conf: "nameserver 127.1\n"},
		{name: "CRLF: glibc fails the address too", conf: "nameserver 192.0.2.1\r\n"},
		{name: "loopback", conf: "nameserver 127.0.0.53\n", want: "127.0.0.53"},
		{name: "v4-mapped IPv6 counts as IPv6", conf: "nameserver ::ffff:192.0.2.1\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := FirstNameserver([]byte(tt.conf))
			var want netip.Addr
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got != want {
				t.Errorf("FirstNameserver(%q) = %v, want %v", tt.conf, got, want)
			}
		})
	}
}

func FuzzFirstNameserver(f *testing.F) {
	f.Add([]byte("nameserver 192.0.2.53\n"))
	f.Add([]byte("# comment\nnameserver 2001:db8::1\nnameserver\t192.0.2.1 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := FirstNameserver(b)
		if !a.IsValid() {
			return
		}
		if !a.Is4() {
			t.Fatalf("FirstNameserver returned a non-IPv4 address %v", a)
		}
		// The address is written in the file, on a nameserver line.
		if !strings.Contains(string(b), "nameserver") || !strings.Contains(string(b), a.String()) {
			t.Fatalf("FirstNameserver(%q) = %v, which the file does not name", b, a)
		}
	})
}

func TestDecideDNS(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name string
		path string
		want DNS
	}{
		{"resolver", write("ok", "nameserver 192.0.2.53\n"),
			DNS{Mode: DNSNAT, Addr: netip.MustParseAddr("192.0.2.53"), Why: "first IPv4 nameserver of " + dir + "/ok"}},
		{"chained", write("chained", "nameserver 100.127.255.53\n"),
			DNS{Mode: DNSForward, Why: dir + "/chained names it too: this provider is a client of another"}},
		{"resolved's stub", write("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n"),
			DNS{Why: dir + "/stub names 127.0.0.53, on this provider's loopback, which clients cannot reach"}},
		{"unspecified", write("any", "nameserver 0.0.0.0\n"),
			DNS{Why: dir + "/any names 0.0.0.0, on this provider's loopback, which clients cannot reach"}},
		{"empty", write("empty", ""), DNS{Why: dir + "/empty names no IPv4 nameserver"}},
		{"IPv6 only", write("v6", "nameserver 2001:db8::53\n"), DNS{Why: dir + "/v6 names no IPv4 nameserver"}},
		{"missing", filepath.Join(dir, "missing"),
			DNS{Why: "cannot read " + dir + "/missing: no such file or directory"}},
		{"a directory", dir, DNS{Why: "cannot read " + dir + ": is a directory"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, decideDNS(tt.path), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("decideDNS(%s) mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}
