package kernel

import (
	"bytes"
	"compress/gzip"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// TestDecompress finds the payload behind setup code that contains a stray
// magic and ahead of the trailer the kernel appends.
func TestDecompress(t *testing.T) {
	payload := append([]byte("\x7fELF"), bytes.Repeat([]byte("vmlinux "), 1<<16)...)
	setup := append([]byte("setup code"), 0x02, 0x21, 0x4c, 0x18, 0x1f, 0x8b, 0x08, 0, 0)
	trailer := []byte{0x12, 0x34, 0x56, 0x78, 0xde, 0xad}
	for _, c := range []struct {
		name     string
		compress func(*bytes.Buffer) error
	}{
		{"lz4 legacy", func(b *bytes.Buffer) error {
			w := lz4.NewWriter(b)
			if err := w.Apply(lz4.LegacyOption(true)); err != nil {
				return err
			}
			w.Write(payload)
			return w.Close()
		}},
		{"gzip", func(b *bytes.Buffer) error {
			w := gzip.NewWriter(b)
			w.Write(payload)
			return w.Close()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			b.Write(setup)
			if err := c.compress(&b); err != nil {
				t.Fatal(err)
			}
			b.Write(trailer)
			got, err := Decompress(b.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("Decompress returned %d bytes, want the %d-byte payload", len(got), len(payload))
			}
		})
	}
	if _, err := Decompress(setup); err == nil {
		t.Error("Decompress of a bzImage without payload succeeded")
	}
}
