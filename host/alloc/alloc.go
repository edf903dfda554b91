// Package alloc assigns every (client, provider) pair a stable link id and
// persists the assignments in the state directory.
package alloc

import "spectrum/internal/mac"

// Pair is one network link: Client gets networking from Provider.
type Pair struct {
	Client   string
	Provider string
}

// Link is a pair with its assigned id. The client NIC's MAC is
// ID.MAC(mac.Client), the provider's ID.MAC(mac.Provider).
type Link struct {
	Pair
	ID mac.LinkID
}
