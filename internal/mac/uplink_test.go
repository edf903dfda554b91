package mac

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

func TestCheckUplink(t *testing.T) {
	for _, tt := range []struct {
		mac     string
		wantErr error
	}{
		{"02:00:00:00:00:01", nil},
		{"52:54:00:12:34:56", nil}, // QEMU's own prefix: a user's choice
		{"3c:ec:ef:01:02:03", nil}, // globally administered: allowed
		{"0a:b3:ed:00:00:01", nil}, // next to the OUI
		{"0e:b3:ec:00:00:01", nil},
		{"0a:b3:ec:00:a5:46", ErrOUI},
		{"0a:b3:ec:80:a5:46", ErrOUI},
		{"0a:b3:ec:12:34:56", ErrOUI}, // reserved bits: still the OUI
		{"01:00:5e:00:00:01", ErrMulticast},
		{"03:00:00:00:00:01", ErrMulticast},
		{"ff:ff:ff:ff:ff:ff", ErrMulticast},
		{"00:00:00:00:00:00", ErrZero},
	} {
		hw, err := Parse(tt.mac)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckUplink(hw)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("CheckUplink(%s) = %v, want %v", tt.mac, err, tt.wantErr)
		}
		var re *RefusedError
		if err != nil && (!errors.As(err, &re) || re.MAC != tt.mac) {
			t.Errorf("error %v does not name %s", err, tt.mac)
		}
	}
	for _, hw := range []net.HardwareAddr{nil, {2, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 0, 0, 1}} {
		if err := CheckUplink(hw); !errors.Is(err, ErrSyntax) {
			t.Errorf("CheckUplink(%v) = %v, want ErrSyntax", hw, err)
		}
	}
}

func TestDeriveUplink(t *testing.T) {
	// Fixed values: a derived MAC must never change between releases, or
	// a VM's DHCP lease and the LAN's switch tables would be lost.
	for _, tt := range []struct{ vm, iface, want string }{
		{"netvm", "br0", "3e:53:19:79:9f:e9"},
		{"appvm-lynx", "br-lan", "4a:80:46:08:1b:fa"},
		// This pair's hash lands in the OUI and is moved out.
		{"vm6366236", "br0", "0e:b3:ec:c1:60:f7"},
	} {
		if got := DeriveUplink(tt.vm, tt.iface).String(); got != tt.want {
			t.Errorf("DeriveUplink(%q, %q) = %s, want %s", tt.vm, tt.iface, got, tt.want)
		}
	}
	seen := map[string]string{}
	for i := range 20000 {
		vm, iface := fmt.Sprintf("vm%d", i), fmt.Sprintf("br%d", i%7)
		hw := DeriveUplink(vm, iface)
		if err := CheckUplink(hw); err != nil {
			t.Fatalf("DeriveUplink(%q, %q) = %v: %v", vm, iface, hw, err)
		}
		if hw[0]&0x02 == 0 {
			t.Fatalf("DeriveUplink(%q, %q) = %v: not locally administered", vm, iface, hw)
		}
		if other, ok := seen[hw.String()]; ok {
			t.Fatalf("DeriveUplink(%q, %q) = %v, as %s", vm, iface, hw, other)
		}
		seen[hw.String()] = vm + "/" + iface
	}
	if DeriveUplink("ab", "c").String() == DeriveUplink("a", "bc").String() {
		t.Error("the boundary between the names is not hashed")
	}
}
