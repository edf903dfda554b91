// Package termfilter stands between a guest's console output and the
// operator's terminal (`spectrumd console NAME`). The terminal is the
// operator's: the guest gets the screen while attached, never the terminal
// itself.
//
// The filter parses the guest's bytes as a terminal would (a VT500-style
// state machine: text, C0 controls, ESC, CSI, and the strings of OSC, DCS,
// SOS, PM and APC) and writes out only what it has parsed and allowed, each
// sequence written afresh in one canonical 7-bit form, never the guest's own
// bytes. So the terminal only ever sees printable UTF-8 text, a few C0
// controls, and sequences from a short allow-list; a sequence the filter does
// not understand, or understands and refuses, is dropped whole, and a
// difference between how the filter and a terminal would parse a malformed
// sequence can only change what is dropped, never let one through.
//
// Allowed (what an interactive shell and full-screen programs such as lynx,
// less or vi use): cursor movement and addressing, erase in line and display
// (not the scrollback: ED 3 is dropped), insert and delete, scrolling and the
// scroll region, colours and attributes (SGR), save and restore cursor,
// the G0/G1 character sets (line drawing) and SO/SI, and the modes a
// full-screen program turns on while it runs: the alternate screen,
// application cursor keys and keypad, cursor visibility and shape,
// autowrap, origin and insert mode, mouse reporting (normal, button, any
// event, SGR encoding), focus events and bracketed paste.
//
// Dropped: every OSC (title and icon name, clipboard OSC 52, hyperlinks OSC
// 8, colour palette, working directory, notifications), every DCS, SOS, PM
// and APC string (DECRQSS, XTGETTCAP, sixel, tmux passthrough), every query
// whose answer the terminal would type back (DA, DSR and cursor position
// reports, DECRQM, window reports), window manipulation (XTWINOPS), full
// and soft reset, tab stop changes, keyboard and input-encoding modes
// (modifyOtherKeys, the kitty keyboard protocol, 8-bit controls, meta
// sends escape), 132 columns, reverse screen, printing (MC), C1 controls,
// and the C0 controls other than BEL, BS, HT, LF, VT, FF, CR, SO and SI.
// Malformed UTF-8 becomes U+FFFD.
//
// The filter tracks the modes the guest turned on; Restore returns the
// sequences that turn them off again, for the moment the operator detaches.
// It also never passes the code point Marker (U+23CF, ⏏), so a line that
// starts with it, written after Restore, is spectrumd's and not the guest's.
//
// The package is pure: no I/O, no clock, no global state.
package termfilter
