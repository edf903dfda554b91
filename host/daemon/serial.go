package daemon

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
)

// PumpSerial reads a VM's serial console until EOF and hands every line to
// the host's log (tagged with the VM's name) and to the VM's log file. It
// only ever reads: the serial console is write-only from the guest's side,
// and nothing is written back. Lines are sanitised and cut at maxLine bytes,
// so a guest that spams its console costs bounded memory.
func PumpSerial(r io.Reader, vm string, log *slog.Logger, lf *LogFile) {
	br := bufio.NewReaderSize(r, maxLine)
	var cont bool // the previous chunk was cut: this one continues its line
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			full := bytes.HasSuffix(chunk, []byte{'\n'})
			line := bytes.TrimRight(chunk, "\r\n")
			if len(line) > 0 || full && !cont {
				s := Sanitize(string(line))
				if !full {
					s += "…"
				}
				log.Info(s, "vm", vm, "source", "serial")
				if lf != nil {
					if werr := lf.WriteLine(s); werr != nil {
						log.Warn("writing VM log file", "vm", vm, "err", werr)
					}
				}
			}
			cont = !full
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}
