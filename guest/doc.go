// Package guest is the logic of the guest agent spectrum-netcfg.
package guest
