package main

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

const (
	consoleDev = "/dev/hvc0" // the virtio-console, `spectrumd console NAME`
	shellPath  = "/bin/sh"   // busybox's ash
)

// consoleShell keeps a shell on the virtio-console for as long as the VM
// runs, as the VM's user interface (the reference documentation's "every
// VM has a virtio-console device to use to interact with the user"), so
// any test VM can be looked into with `spectrumd console NAME`. The shell
// is a session leader with hvc0 as its controlling terminal (job control,
// Ctrl-C); when it exits (the user typed exit) a new one starts. term is
// its TERM. Nothing is written to the serial console but "shell hvc0
// pid=N" for the first shell.
func consoleShell(term string) {
	if _, err := os.Stat(shellPath); err != nil {
		report("shell none: no %s in this initramfs", shellPath)
		return
	}
	// virtio_console was loaded with the other modules; its device node
	// appears when the port is probed.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(consoleDev); err == nil {
			break
		}
		if time.Now().After(deadline) {
			report("shell none: no %s", consoleDev)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	for n := 1; ; n++ {
		start := time.Now()
		tty, err := os.OpenFile(consoleDev, os.O_RDWR, 0)
		if err != nil {
			report("fail shell: %v", err)
			return
		}
		cmd := exec.Command(shellPath, "-l")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.Env = guestEnv(term)
		cmd.Dir = "/root"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := cmd.Start(); err != nil {
			tty.Close()
			report("fail shell: %v", err)
			return
		}
		if n == 1 {
			report("shell %s pid=%d", consoleDev, cmd.Process.Pid)
		}
		cmd.Wait()
		tty.Close()
		// A shell that dies at once (a broken terminal) must not spin.
		if time.Since(start) < time.Second {
			time.Sleep(time.Second)
		}
	}
}
