// Package hook is the git side of refcast: it turns the ref updates git
// hands a post-receive or reference-transaction hook into a bus.Push,
// enriches them with what the repository can tell cheaply (forced?, tip
// commit, commits added), publishes the push to a node or straight to a bus,
// and spools it to disk when the destination cannot be reached so that no
// update is lost.
//
// It also installs and uninstalls the hook script in a repository.
//
// It is not a transport and not a server: a Publisher is anything that can
// take a push (an HTTP node, a bus.Bus); the package reads no environment
// variables, so the command that uses it decides every setting explicitly.
// Its only package-level state is the counter that orders spool files one
// process writes within one clock tick (see Spool.Write's file names).
package hook
