// Package gitfront serves git's own clients (git ls-remote, fetch, clone)
// over smart HTTP under /git/, answering ref discovery — the v0/v1
// advertisement of info/refs and the v2 ls-refs command — from the ref
// state refcast already holds, so the many no-op fetches of CI runners and
// mirrors never touch repository storage. Everything else (the fetch
// itself) is proxied, streamed, to the real git server: a local
// repository run as `git upload-pack --stateless-rpc`, or an http(s)
// upstream.
//
// It is not a git server: it holds no objects, serves no push
// (receive-pack is refused), and advertises only states the hook has made
// complete (bus.RefState.Complete); others are proxied to the upstream. It
// knows nothing about echo, tokens or metrics libraries: the node passes
// an access check and a metrics sink.
package gitfront
