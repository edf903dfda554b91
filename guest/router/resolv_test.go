package router

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNameservers(t *testing.T) {
	for _, tt := range []struct {
		name, conf, want string // want: space-separated
	}{
		{name: "empty", conf: ""},
		{name: "one", conf: "nameserver 192.0.2.53\n", want: "192.0.2.53"},
		{name: "no newline", conf: "nameserver 192.0.2.53", want: "192.0.2.53"},
		{name: "tab and trailing words", conf: "nameserver\t  192.0.2.53  # the LAN's\n", want: "192.0.2.53"},
		{name: "two", conf: "nameserver 192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.1 192.0.2.2"},
		{name: "comments and options", conf: "# nameserver 192.0.2.9\n; nameserver 192.0.2.8\nsearch example.org\noptions edns0\nnameserver 192.0.2.7\n", want: "192.0.2.7"},
		{name: "IPv6 first", conf: "nameserver 2001:db8::53\nnameserver 192.0.2.53\n", want: "2001:db8::53 192.0.2.53"},
		{name: "IPv6 with zone", conf: "nameserver fe80::1%eth0\nnameserver 192.0.2.53\n", want: "fe80::1%eth0 192.0.2.53"},
		{name: "fourth is ignored, as glibc does", conf: "nameserver 2001:db8::1\nnameserver 2001:db8::2\nnameserver 2001:db8::3\nnameserver 192.0.2.53\n", want: "2001:db8::1 2001:db8::2 2001:db8::3"},
		{name: "invalid ones do not count", conf: "nameserver x\nnameserver 300.1.1.1\nnameserver 2001:db8::1\nnameserver 192.0.2.53\n", want: "2001:db8::1 192.0.2.53"},
		{name: "leading blank: not a nameserver line for glibc", conf: " nameserver 192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.2"},
		{name: "keyword glued to the address", conf: "nameserver192.0.2.1\nnameserver 192.0.2.2\n", want: "192.0.2.2"},
		{name: "keyword alone", conf: "nameserver\nnameserver \n", want: ""},
		{name: "inet_aton shorthand is not recognised", conf: "nameserver 127.1\n"},
		{name: "CRLF: glibc fails the address too", conf: "nameserver 192.0.2.1\r\n"},
		{name: "loopback", conf: "nameserver 127.0.0.53\n", want: "127.0.0.53"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, a := range Nameservers([]byte(tt.conf)) {
				got = append(got, a.String())
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("Nameservers(%q) = %v, want %v", tt.conf, got, tt.want)
			}
		})
	}
}

func FuzzNameservers(f *testing.F) {
	f.Add([]byte("nameserver 192.0.2.53\n"))
	f.Add([]byte("# comment\nnameserver 2001:db8::1\nnameserver\t192.0.2.1 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		as := Nameservers(b)
		if len(as) > maxNameservers {
			t.Fatalf("Nameservers returned %d addresses", len(as))
		}
		// Each address is written in the file, on a nameserver line, in
		// any of its spellings ("0::A" is ::a).
		named := map[netip.Addr]bool{}
		for _, w := range strings.Fields(string(b)) {
			if a, err := netip.ParseAddr(w); err == nil {
				named[a.WithZone("")] = true
			}
		}
		for _, a := range as {
			if !a.IsValid() || !strings.Contains(string(b), "nameserver") || !named[a.WithZone("")] {
				t.Fatalf("Nameservers(%q) has %v, which the file does not name", b, a)
			}
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
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tt := range []struct {
		name string
		path string
		want DNS
	}{
		{"resolver", write("ok", "nameserver 192.0.2.53\n"),
			DNS{Upstreams: addrs("192.0.2.53"), Why: "first nameserver of " + dir + "/ok"}},
		{"three, either family", write("three", "nameserver 2001:db8::53\nnameserver 192.0.2.53\nnameserver ::ffff:192.0.2.54\n"),
			DNS{Upstreams: addrs("2001:db8::53", "192.0.2.53", "192.0.2.54"), Why: "nameservers of " + dir + "/three"}},
		{"chained", write("chained", "nameserver 100.127.255.53\n"),
			DNS{Upstreams: addrs("100.127.255.53"), Why: "first nameserver of " + dir + "/chained: this provider's own provider, while it routes through a client NIC"}},
		{"resolved's stub", write("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n"),
			DNS{Upstreams: addrs("127.0.0.53"), Why: "first nameserver of " + dir + "/stub"}},
		{"never upstreams", write("bad", "nameserver 0.0.0.0\nnameserver 100.64.0.2\nnameserver 224.0.0.251\n"),
			DNS{Why: dir + "/bad names no nameserver that may be used", Skipped: []string{
				dir + "/bad names nameserver 0.0.0.0, never used: not a unicast address",
				dir + "/bad names nameserver 100.64.0.2, never used: a client address (100.64.0.0/16)",
				dir + "/bad names nameserver 224.0.0.251, never used: a multicast address",
			}}},
		{"a link's IPv6", write("ula", "nameserver fd9f:2b8:5010:1::2\nnameserver fd9f:2b8:5010:1::1\n"),
			DNS{Why: dir + "/ula names no nameserver that may be used", Skipped: []string{
				dir + "/ula names nameserver fd9f:2b8:5010:1::2, never used: a client address (fd9f:2b8:5010::/48)",
				dir + "/ula names nameserver fd9f:2b8:5010:1::1, never used: a client address (fd9f:2b8:5010::/48)",
			}}},
		{"some skipped", write("some", "nameserver 169.254.0.1\nnameserver 192.0.2.53\n"),
			DNS{Upstreams: addrs("192.0.2.53"), Why: "first nameserver of " + dir + "/some",
				Skipped: []string{dir + "/some names nameserver 169.254.0.1, never used: a link-local address"}}},
		{"empty", write("empty", ""), DNS{Why: dir + "/empty names no nameserver"}},
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
