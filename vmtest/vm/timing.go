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
	AgentCPU     time.Duration // the agent's user+system CPU time
	Baseline     time.Duration // run time of the agent exiting at once (spectrum.baseline), 0 if not measured
	BaselineCPU  time.Duration // its user+system CPU time
	// BaselineWarm is the same run after the agent's: under TCG the first
	// run of a binary also pays for translating its code.
	BaselineWarm, BaselineWarmCPU time.Duration
	// Again is the agent's second run (spectrum.baseline), its code
	// already run once; AgainExit its exit status.
	Again, AgainCPU time.Duration
	AgainExit       string
	AgentExit       string // its exit status, "" if it did not run
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
			tm.Agent, tm.AgentCPU = millis(Field(e, "took")), millis(Field(e, "cpu"))
		case hasPrefix(e, "agent again exit="):
			tm.AgainExit = Field(e, "exit")
			tm.Again, tm.AgainCPU = millis(Field(e, "took")), millis(Field(e, "cpu"))
		case hasPrefix(e, "agent baseline warm "):
			tm.BaselineWarm, tm.BaselineWarmCPU = millis(Field(e, "took")), millis(Field(e, "cpu"))
		case hasPrefix(e, "agent baseline "):
			tm.Baseline, tm.BaselineCPU = millis(Field(e, "took")), millis(Field(e, "cpu"))
		case hasPrefix(e, "state done n=1 "):
			tm.HostState = l.At
		}
	}
	return tm
}

func (tm Timing) String() string {
	s := fmt.Sprintf("QEMU start → init %.2fs, → state reported %.2fs (host); guest uptime: init %.3fs, agent %.3fs → %.3fs (exit %s, took %v, cpu %v)",
		tm.HostInit.Seconds(), tm.HostState.Seconds(), tm.GuestInit.Seconds(),
		tm.GuestAgentIn.Seconds(), tm.GuestAgentOK.Seconds(), tm.AgentExit, tm.Agent, tm.AgentCPU)
	if tm.Baseline > 0 {
		s += fmt.Sprintf("; baseline (exit at once) %v before, %v after", tm.Baseline, tm.BaselineWarm)
	}
	return s
}

// millis parses "12.3ms".
func millis(s string) time.Duration {
	f, err := strconv.ParseFloat(trimSuffix(s, "ms"), 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Millisecond))
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
