package main

import (
	"bytes"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/guest"
)

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		console string
		wantErr string
	}{
		{name: "none", console: guest.DefaultConsole},
		{name: "console", args: []string{"-console", "/dev/ttyS1"}, console: "/dev/ttyS1"},
		{name: "console equals", args: []string{"--console=/tmp/x"}, console: "/tmp/x"},
		{name: "empty console", args: []string{"-console="}, wantErr: "empty path"},
		{name: "watch is implied, not a flag", args: []string{"-watch"}, wantErr: "-watch"},
		{name: "positional", args: []string{"eth0"}, wantErr: `unexpected argument "eth0"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseArgs(%q) error = %v, want one naming %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !cfg.Watch || cfg.Console != tt.console {
				t.Errorf("parseArgs(%q) = %+v, want Watch and Console %q", tt.args, cfg, tt.console)
			}
		})
	}
}

// TestUsage: -h is not an error; a bad flag is exit 2 with the synopsis.
func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if got := run([]string{"-h"}, &out); got != 0 || !strings.Contains(out.String(), usage) {
		t.Errorf("run(-h) = %d, %q; want 0 and the usage", got, out.String())
	}
	out.Reset()
	if got := run([]string{"-route"}, &out); got != 2 || !strings.Contains(out.String(), "-route") || !strings.Contains(out.String(), usage) {
		t.Errorf("run(-route) = %d, %q; want 2, naming the flag, and the usage", got, out.String())
	}
}
