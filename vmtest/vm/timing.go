package vm

import (
	"fmt"
	"strconv"
	"time"
)

// Timing is how long a VM took to boot and configure itself.
type Timing struct {
	HostInit     time.Duration // QEMU launched → the init's first line read by the host
	HostState    time.Duration // QEMU launched → the network state reported ("state done n=1")
	GuestInit    time.Duration // kernel uptime when the init started
	GuestAgentIn time.Duration // kernel uptime when the agent started
	GuestAgentOK time.Duration // kernel uptime when the agent exited
	Agent        time.Duration // the agent's run time as the init measured it
	AgentExit    string        // its exit status, "" if it did not run
}

// Timing reads p's boot timing from the sentinel lines seen so far.
func (p *Proc) Timing() Timing {
	var tm Timing
	for _, l := range p.Serial.Lines() {
		e, ok := Event(l.Text)
		if !ok {
			continue
		}
		t := seconds(Field(e, "t"))
		switch {
		case hasPrefix(e, "init "):
			tm.HostInit, tm.GuestInit = l.At, t
		case hasPrefix(e, "agent start"):
			tm.GuestAgentIn = t
		case hasPrefix(e, "agent exit="):
			tm.GuestAgentOK, tm.AgentExit = t, Field(e, "exit")
			if ms, err := strconv.ParseFloat(trimSuffix(Field(e, "took"), "ms"), 64); err == nil {
				tm.Agent = time.Duration(ms * float64(time.Millisecond))
			}
		case hasPrefix(e, "state done n=1 "):
			tm.HostState = l.At
		}
	}
	return tm
}

func (tm Timing) String() string {
	return fmt.Sprintf("QEMU start → init %.2fs, → state reported %.2fs (host); guest uptime: init %.3fs, agent %.3fs → %.3fs (exit %s, took %v)",
		tm.HostInit.Seconds(), tm.HostState.Seconds(), tm.GuestInit.Seconds(),
		tm.GuestAgentIn.Seconds(), tm.GuestAgentOK.Seconds(), tm.AgentExit, tm.Agent)
}

func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func trimSuffix(s, x string) string {
	if len(s) >= len(x) && s[len(s)-len(x):] == x {
		return s[:len(s)-len(x)]
	}
	return s
}
