// Package deploy holds how operators run refcast: the Dockerfile, the
// HAProxy and nginx configurations, the systemd unit, the Kubernetes
// manifests and the Redis Sentinel and Cluster examples, next to the
// repository's top-level docker-compose.yml.
//
// The package has no code to import. Its tests keep those files honest:
// they parse the YAML, run the real haproxy and nginx config checks, push
// Server-Sent Events through both proxies to loopback backends, and check
// every flag and REFCAST_* variable the files use against what
// `refcast serve -h` prints. It is not for application logic or for tests
// of refcast itself.
//
// Tools the tests need (haproxy, nginx, systemd-analyze) are skipped with a
// message when missing, except under CI=true, where haproxy and nginx must
// be installed.
package deploy
