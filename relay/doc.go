// Package relay turns refcast's lossless event stream into webhooks: each
// ref update is delivered to every matching target (Argo CD, Flux, Tekton,
// Jenkins, any HTTP endpoint) in the target's format, signed with its
// secret, in order per target and repo, retried with exponential backoff
// until acknowledged or dead-lettered.
//
// Relay is the delivery engine; it knows which updates are still owed to
// which target and reports the cursor below which nothing is owed, with
// the id last delivered per ref as of that cursor (the caller stores both,
// so a restart resends at most what was in flight, with the same delivery
// ids, and a reset after it sends only the refs that changed). Formats
// build the HTTP requests.
//
// The package does not follow a node, parse flags or read the environment:
// cmd/refcast wires it to watch.Client and to the --state file.
package relay
