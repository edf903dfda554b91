//go:build !race

package vmlog

const raceEnabled = false
