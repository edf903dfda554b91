// Package host is the logic of the host daemon spectrumd.
package host
