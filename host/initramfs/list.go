package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/cavaliergopher/cpio"
)

// Entry is one entry of an archive, as List reports it.
type Entry struct {
	Name     string
	Mode     fs.FileMode // type and permission bits
	Size     int64
	Segment  int    // which archive of the initramfs holds it, from 0
	Compress string // "" for an uncompressed archive, "gzip"
}

var (
	newcMagic = []byte("07070")
	gzipMagic = []byte{0x1f, 0x8b}
)

// List reads every archive of an initramfs made of newc archives, each
// uncompressed or gzip-compressed, with zero padding between them, and
// returns their entries in order (a later entry with the same name is the
// one the kernel keeps). An archive compressed another way is an error
// naming its offset: use the generator's own lister (lsinitramfs, lsinitrd)
// for those.
func List(r io.Reader) ([]Entry, error) {
	// gzip stops exactly at the end of its stream on an io.ByteReader, so
	// whatever follows is read from the same buffered reader.
	br := bufio.NewReader(r)
	var out []Entry
	var off int64
	for seg := 0; ; {
		b, err := br.Peek(1)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if b[0] == 0 {
			br.ReadByte()
			off++
			continue
		}
		magic, _ := br.Peek(6)
		cr := &countingReader{r: br}
		switch {
		case bytes.HasPrefix(magic, newcMagic):
			if off%4 != 0 {
				return out, fmt.Errorf("archive %d at offset %d: not at a multiple of 4 bytes (the kernel would not read it)", seg, off)
			}
			out, err = listArchive(out, cr, seg, "")
		case bytes.HasPrefix(magic, gzipMagic):
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(cr); err == nil {
				zr.Multistream(false)
				// A compressed archive may hold several archives too.
				var inner []Entry
				inner, err = List(zr)
				for _, e := range inner {
					e.Segment, e.Compress = seg, "gzip"
					out = append(out, e)
				}
				if err == nil {
					// Read to the stream's end: its checksum.
					_, err = io.Copy(io.Discard, zr)
				}
			}
		default:
			return out, fmt.Errorf("archive %d at offset %d: magic % x is neither newc nor gzip", seg, off, magic)
		}
		if err != nil {
			return out, fmt.Errorf("archive %d at offset %d: %w", seg, off, err)
		}
		off += cr.n
		seg++
	}
}

// listArchive reads one newc archive up to and including its trailer.
func listArchive(out []Entry, r io.Reader, seg int, compress string) ([]Entry, error) {
	cr := cpio.NewReader(r)
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, Entry{Name: h.Name, Mode: h.FileInfo().Mode(), Size: h.Size, Segment: seg, Compress: compress})
	}
}

type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadByte makes countingReader an io.ByteReader, so gzip does not read
// past its stream.
func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
