package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/qmp"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// smokeMessage is what the stub kernel writes to its serial port.
const smokeMessage = stubkernel.Message

// stubKernel is the PVH stub kernel of internal/stubkernel.
func stubKernel() []byte { return stubkernel.ELF() }

// requireQEMU stops the test where QEMU is missing (internal/testenv), or
// where it cannot run as Start runs it: another uid and a network
// namespace of its own need root.
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.Tool(t, DefaultBinary, "make deps installs qemu-system-x86")
	testenv.Root(t, "to start QEMU under its own uid in a network namespace of its own")
}

// lastUID numbers the uids testUID hands out.
var lastUID atomic.Uint32

// testUID returns a uid (and gid) no other QEMU of this test binary has:
// from 400000 (outside the range spectrumd uses by default and any
// /etc/passwd), spaced by process so that parallel test binaries differ.
func testUID() uint32 {
	return 400000 + uint32(os.Getpid()%1000)*100 + lastUID.Add(1)%100
}

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperStart: startHelper, helperKill: killHelper, helperFilter: filterHelper})
	os.Exit(m.Run())
}

// testConfig writes the stub kernel, an initramfs and a disk image into a
// directory whose name has a comma (to prove the escaping against the real
// parser) and returns a Config for them.
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vm,1")
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"vmlinux", stubKernel()},
		{"initramfs", []byte("not really a cpio")},
		{"blk/root,a.img", make([]byte, 1<<20)},
	} {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := t.TempDir()
	uid := testUID()
	c := Config{
		Name:          "smoke,vm",
		Accel:         "tcg", // KVM guests hang on the CI machines: always TCG in tests
		MemoryMiB:     64,
		UID:           uid,
		GID:           uid,
		QMPSocket:     filepath.Join(run, "qmp.sock"),
		ConsoleSocket: filepath.Join(run, "console.sock"),
	}
	if err := openFiles(&c, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFiles(c) })
	return c
}

// openFiles opens the files testConfig wrote into dir, as config.Open
// would.
func openFiles(c *Config, dir string) error {
	var errs []error
	open := func(name string) *os.File {
		f, err := os.Open(filepath.Join(dir, name))
		errs = append(errs, err)
		return f
	}
	c.Kernel = open("vmlinux")
	c.Initramfs = open("initramfs")
	c.Images = []*os.File{open("blk/root,a.img")}
	return errors.Join(errs...)
}

func closeFiles(c Config) {
	for _, f := range append([]*os.File{c.Kernel, c.Initramfs}, c.Images...) {
		f.Close()
	}
}

// testDir is the directory of the files of a testConfig.
func testDir(c Config) string { return filepath.Dir(c.Kernel.Name()) }

// testContext ends a little before the test's own deadline, so a hang is
// reported with the serial log rather than by a panic.
func testContext(t *testing.T, max time.Duration) context.Context {
	d := time.Now().Add(max)
	if td, ok := t.Deadline(); ok && td.Add(-5*time.Second).Before(d) {
		d = td.Add(-5 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serialLines collects the serial output and signals when a line equal to
// want arrives.
func serialLines(p *Process, want string) (seen <-chan struct{}, log *syncbuf.Buffer) {
	ch := make(chan struct{})
	log = &syncbuf.Buffer{}
	go func() {
		sc := bufio.NewScanner(p.Serial)
		found := false
		for sc.Scan() {
			log.Write(append(sc.Bytes(), '\n'))
			if !found && sc.Text() == want {
				found = true
				close(ch)
			}
		}
	}()
	return ch, log
}

func start(t *testing.T, ctx context.Context, c Config) (*Process, *bytes.Buffer) {
	t.Helper()
	var stderr bytes.Buffer
	p, err := Start(ctx, c, &stderr)
	if err != nil {
		t.Fatalf("Start: %v\nstderr: %s", err, stderr.String())
	}
	t.Logf("started: %s", Quote(p.Argv))
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
		p.Serial.Close()
	})
	return p, &stderr
}

// monitor is p's QMP session.
func monitor(t *testing.T, ctx context.Context, p *Process) *qmp.Client {
	t.Helper()
	q, err := p.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestBoot boots the stub kernel under TCG with the exact production
// arguments (sandbox included) and waits for its line on the serial reader.
func TestBoot(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	t0 := time.Now()
	p, stderr := start(t, ctx, c)
	started := time.Since(t0)
	seen, serial := serialLines(p, smokeMessage)
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatalf("no %q on the serial port\nserial:\n%s\nstderr: %s\nreproduce: %s", smokeMessage, serial, stderr, Quote(p.Argv))
	}
	// A measure, not an assertion (the machine's load decides it).
	t.Logf("Start returned after %v, the guest's line arrived %v after Start was called", started, time.Since(t0))

	st, err := monitor(t, ctx, p).Status(ctx)
	if err != nil || !st.Running {
		t.Errorf("query-status = %+v, %v; want running", st, err)
	}
	// The image is the descriptor's file (in a directory whose name has a
	// comma), read-only, reached through its fd set and not by a path.
	var blocks []struct {
		Inserted struct {
			File string `json:"file"`
			RO   bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := monitor(t, ctx, p).Run(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || !strings.HasPrefix(blocks[0].Inserted.File, "/dev/fdset/") || !blocks[0].Inserted.RO {
		t.Errorf("query-block = %+v, want one read-only /dev/fdset/N", blocks)
	}
	if !holds(t, p.Pid(), c.Images[0]) {
		t.Errorf("QEMU holds no descriptor of the image %s", c.Images[0].Name())
	}
	// The console socket accepts a client.
	if conn, err := net.Dial("unix", c.ConsoleSocket); err != nil {
		t.Errorf("console socket: %v", err)
	} else {
		conn.Close()
	}

	if err := monitor(t, ctx, p).Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("QEMU exit after quit: %v\nstderr: %s", err, stderr)
	}
	for _, s := range []string{c.QMPSocket, c.ConsoleSocket} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after exit (%v)", s, err)
		}
	}
}

// TestStopKills: the stub guest ignores the power button, so Stop kills it
// after the timeout.
func TestStopKills(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	p, _ := start(t, ctx, c)
	t0 := time.Now()
	graceful, err := p.Stop(500 * time.Millisecond)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if graceful {
		t.Error("Stop reported a graceful shutdown of a guest that ignores ACPI")
	}
	if d := time.Since(t0); d < 500*time.Millisecond || d > 10*time.Second {
		t.Errorf("Stop took %v, want a little over the 500ms timeout", d)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Stop returned before QEMU exited")
	}
	// A killed QEMU leaves no socket behind, and its serial reader ends.
	if _, err := io.ReadAll(p.Serial); err != nil {
		t.Errorf("reading the serial port to EOF: %v", err)
	}
	for _, s := range []string{c.QMPSocket, c.ConsoleSocket} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after kill (%v)", s, err)
		}
	}
}

// TestDiesWithParent: when spectrumd dies, even by SIGKILL, its QEMUs die
// too. A child test process starts QEMU and exits at once. QEMU runs under
// a uid of its own: the parent-death signal is set after the uid switch
// (before exec), so nothing clears it. (With -runas, QEMU's own switch to
// its user cleared it and QEMU outlived its parent.)
func TestDiesWithParent(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 15*time.Second)
	pid := startInHelper(t, ctx, testConfig(t))
	for !gone(pid) {
		if ctx.Err() != nil {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("QEMU %d still running after its parent exited", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestParentDeathNeedsCAPKILL: the kernel checks the parent-death signal
// as it checks kill(2), against the dying parent's credentials. A spectrumd
// without CAP_KILL (setpriv drops it) cannot signal a QEMU under another
// uid, so that QEMU outlives it: this is what the pid file and KillOrphan
// (the next serve's KillOrphans) are for, and why the unit must grant
// CAP_KILL.
func TestParentDeathNeedsCAPKILL(t *testing.T) {
	requireQEMU(t)
	setpriv := testenv.Tool(t, "setpriv", "util-linux provides it")
	ctx := testContext(t, 15*time.Second)
	c := testConfig(t)
	c.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")
	pid := startInHelper(t, ctx, c, setpriv, "--bounding-set=-kill", "--inh-caps=-kill", "--")
	defer syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	if gone(pid) {
		t.Fatalf("QEMU %d died with a parent that lacked CAP_KILL: the kernel no longer checks the parent-death signal; update the docs (spectrumd(8) in docs/man, Start)", pid)
	}
	if got, err := KillOrphan(c.PIDFile, 5*time.Second); err != nil || got != pid {
		t.Fatalf("KillOrphan = %d, %v; want %d killed", got, err, pid)
	}
}

// gone tells whether pid has exited (no such process, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

// helperStart is the helper process of startInHelper: it starts QEMU for
// the Config in SPECTRUM_QEMU_CONFIG (JSON, without its files) with the
// files of the testConfig directory SPECTRUM_QEMU_DIR, prints its pid, and
// exits without stopping it.
const helperStart = "qemu-start"

func startHelper() int {
	var c Config
	if err := json.Unmarshal([]byte(os.Getenv("SPECTRUM_QEMU_CONFIG")), &c); err != nil {
		fmt.Fprintln(os.Stderr, "helper: config:", err)
		return 1
	}
	if err := openFiles(&c, os.Getenv("SPECTRUM_QEMU_DIR")); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	p, err := Start(context.Background(), c, devnull)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Printf("qemu-pid=%d\n", p.Pid())
	return 0
}

// TestNICs cold-plugs the client tap of a link and hot-plugs the provider
// tap through QMP (getfd over SCM_RIGHTS, netdev_add, device_add), and
// checks both in QEMU and on the host: an attached tap has carrier. QEMU
// runs under its own uid in its own empty network namespace: taps are
// descriptors, so neither matters to them.
func TestNICs(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	n, err := link.OpenPath(ns.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const id = mac.LinkID(0xa546)
	if err := n.Create(id); err != nil {
		t.Fatal(err)
	}
	clientTap, err := n.OpenTap(id, mac.Client)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	c.NICs = []NIC{{ID: "client", MAC: id.MAC(mac.Client), Tap: clientTap}}
	p, _ := start(t, ctx, c)
	clientTap.Close() // QEMU holds it now

	providerTap, err := n.OpenTap(id, mac.Provider)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.HotplugNIC(ctx, NIC{ID: "provider", MAC: id.MAC(mac.Provider), Tap: providerTap}); err != nil {
		t.Fatal(err)
	}
	providerTap.Close()

	info, err := monitor(t, ctx, p).HumanMonitorCommand(ctx, "info network")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"macaddr=0a:b3:ec:00:a5:46", "macaddr=0a:b3:ec:80:a5:46", "client: index=0,type=tap", "provider: index=0,type=tap"} {
		if !strings.Contains(info, want) {
			t.Errorf("info network lacks %q:\n%s", want, info)
		}
	}
	if got := carrier(t, ns); !slices.Equal(got, []string{"spc-a546", "spp-a546"}) {
		t.Errorf("taps with carrier = %v, want both", got)
	}

	// A NIC whose id is taken is refused, and QEMU keeps nothing of it:
	// once our copy is closed, that tap has no carrier.
	if err := n.Create(2); err != nil {
		t.Fatal(err)
	}
	other, err := n.OpenTap(2, mac.Provider)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.HotplugNIC(ctx, NIC{ID: "client", MAC: mac.LinkID(2).MAC(mac.Provider), Tap: other}); err == nil {
		t.Error("hot-plugging a second NIC named client succeeded")
	}
	other.Close()
	if got := carrier(t, ns); !slices.Equal(got, []string{"spc-a546", "spp-a546"}) {
		t.Errorf("taps with carrier after a refused hot-plug = %v, want spc-a546 and spp-a546", got)
	}

	// The stub guest never answers ACPI hot-unplug: UnplugNIC times out,
	// but the netdev goes, so QEMU lets go of the tap.
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = p.UnplugNIC(uctx, "provider")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("UnplugNIC with a guest that ignores it = %v, want DeadlineExceeded", err)
	}
	if got := carrier(t, ns); !slices.Equal(got, []string{"spc-a546"}) {
		t.Errorf("taps with carrier after unplug = %v, want only the client's", got)
	}
}

// holds tells whether process pid has a descriptor of f's file.
func holds(t *testing.T, pid int, f *os.File) bool {
	t.Helper()
	want, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if fi, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && os.SameFile(fi, want) {
			return true
		}
	}
	return false
}

// carrier lists the taps in ns whose carrier is up (a process holds them).
func carrier(t *testing.T, ns *nstest.NS) []string {
	var links []struct {
		Ifname string   `json:"ifname"`
		Flags  []string `json:"flags"`
	}
	if err := json.Unmarshal(ns.IP("-j", "link", "show"), &links); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Ifname, "sp") && !strings.HasPrefix(l.Ifname, "spbr") && slices.Contains(l.Flags, "LOWER_UP") {
			out = append(out, l.Ifname)
		}
	}
	slices.Sort(out)
	return out
}

// startInHelper starts QEMU for c in a helper process (startHelper) that
// exits at once, and returns QEMU's pid.
func startInHelper(t *testing.T, ctx context.Context, c Config, wrap ...string) int {
	t.Helper()
	dir := testDir(c)
	c.Kernel, c.Initramfs, c.Images = nil, nil, nil
	cfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := testenv.HelperCommand(ctx, helperStart, "SPECTRUM_QEMU_CONFIG="+string(cfg), "SPECTRUM_QEMU_DIR="+dir)
	if len(wrap) > 0 { // run the helper under wrap (setpriv ... --)
		cmd.Args = append(wrap, cmd.Path)
		cmd.Path = wrap[0]
	}
	cmd.WaitDelay = time.Second // an orphaned QEMU must not keep us reading
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "qemu-pid=")
	pid, err := strconv.Atoi(strings.Fields(rest + " x")[0])
	if !ok || err != nil {
		t.Fatalf("helper printed no pid:\n%s", out)
	}
	return pid
}
