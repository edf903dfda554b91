// Package stubkernel builds a tiny stand-in for a vmlinux that QEMU boots
// through the same PVH path as a real kernel, for tests of the host side
// (QEMU's arguments, supervision, links) that do not need a guest OS. It
// is for tests only.
package stubkernel

import "encoding/binary"

// Message is the line the stub kernel writes to its serial port.
const Message = "spectrum-smoke: hello from PVH"

// ELF returns a minimal ELF32 "kernel" with a PVH entry point (the
// XEN_ELFNOTE_PHYS32_ENTRY note QEMU looks for), so the same -kernel path
// as a real vmlinux is exercised without a kernel build. In 32-bit protected
// mode it writes Message and a newline to COM1 (0x3f8), then halts
// forever. It ignores ACPI, like a guest that never answers the power button.
func ELF() []byte {
	const (
		base     = 0x100000
		ehdrSize = 52
		phSize   = 32
		noteOff  = ehdrSize + 2*phSize
		noteSize = 20 // namesz, descsz, type, "Xen\0", entry
		codeOff  = noteOff + noteSize
		msgOff   = codeOff + 21
	)
	le := binary.LittleEndian
	code := []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xbe, 0, 0, 0, 0, // mov esi, msg
		0xac,       // loop: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz done
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp loop
		0xfa,       // done: cli
		0xf4,       // hlt
		0xeb, 0xfd, // jmp hlt
	}
	le.PutUint32(code[5:], base+msgOff)
	msg := append([]byte(Message+"\n"), 0)
	size := msgOff + len(msg)

	b := make([]byte, size)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 1 /* 32-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)            // ET_EXEC
	le.PutUint16(b[18:], 3)            // EM_386
	le.PutUint32(b[20:], 1)            // version
	le.PutUint32(b[24:], base+codeOff) // entry
	le.PutUint32(b[28:], ehdrSize)     // phoff
	le.PutUint16(b[40:], ehdrSize)     // ehsize
	le.PutUint16(b[42:], phSize)       // phentsize
	le.PutUint16(b[44:], 2)            // phnum
	ph := func(off int, typ, offset, addr, size, flags, align uint32) {
		for i, v := range []uint32{typ, offset, addr, addr, size, size, flags, align} {
			le.PutUint32(b[off+4*i:], v)
		}
	}
	ph(ehdrSize, 1 /* PT_LOAD */, 0, base, uint32(size), 5 /* R+X */, 0x1000)
	ph(ehdrSize+phSize, 4 /* PT_NOTE */, noteOff, base+noteOff, noteSize, 4 /* R */, 4)
	le.PutUint32(b[noteOff:], 4)    // namesz
	le.PutUint32(b[noteOff+4:], 4)  // descsz
	le.PutUint32(b[noteOff+8:], 18) // XEN_ELFNOTE_PHYS32_ENTRY
	copy(b[noteOff+12:], "Xen\x00") // name
	le.PutUint32(b[noteOff+16:], base+codeOff)
	copy(b[codeOff:], code)
	copy(b[msgOff:], msg)
	return b
}
