// Package stubkernel builds a tiny stand-in for a vmlinux that QEMU boots
// through the same PVH path as a real kernel, for tests of the host side
// (QEMU's arguments, supervision, links) that do not need a guest OS. It
// is for tests only.
package stubkernel

import "encoding/binary"

// Message is the line the stub kernel writes to its serial port.
const Message = "spectrum-smoke: hello from PVH"

// base is where the image is loaded (guest physical address).
const base = 0x100000

// ELF returns a minimal ELF32 "kernel" with a PVH entry point (the
// XEN_ELFNOTE_PHYS32_ENTRY note QEMU looks for), so the same -kernel path
// as a real vmlinux is exercised without a kernel build. In 32-bit protected
// mode it writes Message and a newline to COM1 (0x3f8), then halts
// forever. It ignores ACPI, like a guest that never answers the power button.
func ELF() []byte {
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
	return build(code, func(code []byte, msg, _ uint32) {
		binary.LittleEndian.PutUint32(code[5:], msg)
	})
}

// Burst returns a stub kernel like ELF's that writes Message n times, as
// fast as the serial port takes it, and then resets the machine at once
// (a triple fault: an empty interrupt table and an int3), which QEMU's
// -no-reboot turns into QEMU exiting. It is a guest that crashes right
// after a burst of output, the case where the last lines matter most.
func Burst(n uint32) []byte {
	code := []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb9, 0, 0, 0, 0, // mov ecx, n
		0xbe, 0, 0, 0, 0, // line: mov esi, msg
		0xac,       // char: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz next
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp char
		0xe2, 0xf1, // next: loop line
		0x0f, 0x01, 0x1d, 0, 0, 0, 0, // lidt [idtr]: limit 0
		0xcc,       // int3: no handler, so a triple fault
		0xf4,       // hlt (never reached)
		0xeb, 0xfd, // jmp hlt
	}
	return build(code, func(code []byte, msg, idtr uint32) {
		le := binary.LittleEndian
		le.PutUint32(code[5:], n)
		le.PutUint32(code[10:], msg)
		le.PutUint32(code[27:], idtr)
	})
}

// build lays out an ELF32 PVH image: headers, the PVH note, code, then
// Message with a newline and a NUL, then six zero bytes (an empty
// descriptor-table register). patch gets the code and the guest addresses
// of the message and of the zero bytes.
func build(code []byte, patch func(code []byte, msg, idtr uint32)) []byte {
	const (
		ehdrSize = 52
		phSize   = 32
		noteOff  = ehdrSize + 2*phSize
		noteSize = 20 // namesz, descsz, type, "Xen\0", entry
		codeOff  = noteOff + noteSize
	)
	le := binary.LittleEndian
	msg := append([]byte(Message+"\n"), 0)
	msgOff := codeOff + len(code)
	idtrOff := msgOff + len(msg)
	size := idtrOff + 6
	patch(code, uint32(base+msgOff), uint32(base+idtrOff))

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
