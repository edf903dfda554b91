package guest

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		want    Config
		wantErr bool
		help    bool
	}{
		{name: "none", args: nil, want: Config{Console: DefaultConsole}},
		{name: "watch", args: []string{"-watch"}, want: Config{Watch: true, Console: DefaultConsole}},
		{name: "double dash", args: []string{"--watch", "--console", "/dev/ttyS1"}, want: Config{Watch: true, Console: "/dev/ttyS1"}},
		{name: "console value", args: []string{"-console", "/tmp/x"}, want: Config{Console: "/tmp/x"}},
		{name: "console equals", args: []string{"-console=/tmp/x", "-watch"}, want: Config{Watch: true, Console: "/tmp/x"}},
		{name: "watch=false", args: []string{"-watch=false"}, want: Config{Console: DefaultConsole}},
		{name: "watch=true", args: []string{"-watch=true"}, want: Config{Watch: true, Console: DefaultConsole}},
		{name: "terminator", args: []string{"-watch", "--"}, want: Config{Watch: true, Console: DefaultConsole}},
		{name: "route is the router's", args: []string{"-watch", "-route"}, wantErr: true},
		{name: "watch=bad", args: []string{"-watch=maybe"}, wantErr: true},
		{name: "console missing value", args: []string{"-console"}, wantErr: true},
		{name: "console empty", args: []string{"-console="}, wantErr: true},
		{name: "unknown flag", args: []string{"-verbose"}, wantErr: true},
		{name: "positional", args: []string{"eth0"}, wantErr: true},
		{name: "after terminator", args: []string{"--", "eth0"}, wantErr: true},
		{name: "lone dash", args: []string{"-"}, wantErr: true},
		{name: "help", args: []string{"-h"}, wantErr: true, help: true},
		{name: "long help", args: []string{"--help"}, wantErr: true, help: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseArgs(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if errors.Is(err, ErrHelp) != tt.help {
				t.Errorf("ParseArgs(%q) error = %v, want ErrHelp %v", tt.args, err, tt.help)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseArgs(%q) mismatch (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestDoneLine(t *testing.T) {
	got := DoneLine(2, 1, 1)
	want := "spectrum-netcfg: done: 2 configured, 1 failed, status 1"
	if got != want {
		t.Errorf("DoneLine(2, 1, 1) = %q, want %q", got, want)
	}
	if got[:len(DonePrefix)] != DonePrefix {
		t.Errorf("DoneLine does not start with DonePrefix %q", DonePrefix)
	}
}
