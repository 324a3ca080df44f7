// Package hook is the git side of refcast: it turns the ref updates git
// hands a post-receive or reference-transaction hook into a bus.Push,
// enriches them with what the repository can tell cheaply (forced?, tip
// commit, commits added), publishes the push to a node or straight to a bus,
// and spools it to disk when the destination cannot be reached so that no
// update is lost.
//
// Runner is the whole of each command built on that: the post-receive and
// reference-transaction hooks, flush, sync, check and install-hook (with
// validation); Resolve gives the settings' precedence (flag, environment,
// git config). It also installs and uninstalls the hook script.
//
// It is not a transport and not a server: a Publisher is anything that can
// take a push (an HTTP node, a bus.Bus); a Redis bus is opened through a
// BusOpener the command injects, so no bus implementation (and no server)
// is imported. The package reads the environment only through the Getenv (and
// LookupEnv) a command hands a Runner. Its only package-level state is the counter that
// orders spool files one process writes within one clock tick (see
// Spool.Write's file names).
package hook
