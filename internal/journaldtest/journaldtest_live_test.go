package journaldtest_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"spectrum-os.org/netcfg/internal/journaldtest"
)

func TestMain(m *testing.M) {
	os.Exit(journaldtest.Main(m))
}

// namespaceIdle is how long a systemd-journald namespace instance runs
// without a client before it exits (IDLE_TIMEOUT_USEC in journald-server.c).
const namespaceIdle = 30 * time.Second

// TestOutlivesIdle: the journald takes and files an entry after hearing
// nothing for longer than a namespace instance's idle timeout. It once
// exited 30 s into each test binary, so the package's later tests found no
// journal (dist's TestUnitSandboxJournal: its spectrumd logged to stderr,
// the journal's socket not answering).
func TestOutlivesIdle(t *testing.T) {
	j := journaldtest.Get(t)
	time.Sleep(namespaceIdle + 5*time.Second)
	const msg = "journaldtest: after the idle timeout"
	if err := journal.Send(msg, journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": "journaldtest"}); err != nil {
		t.Fatalf("send to the journal after %v without a message: %v\n%s", namespaceIdle+5*time.Second, err, j.Dump())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j.Wait(ctx, t, 1, "SYSLOG_IDENTIFIER=journaldtest", "MESSAGE="+msg, "_PID="+strconv.Itoa(os.Getpid()))
}
