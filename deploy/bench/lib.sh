# Shared by the bench scripts (source it; it runs nothing).

# stop_pid PID: SIGTERM, up to 5 s for the process to go (a node drains),
# then SIGKILL; reaps it.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
