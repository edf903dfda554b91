//go:build race

package vmlog

// raceEnabled: the race detector is on (its shadow memory and slower
// collector loosen memory bounds).
const raceEnabled = true
