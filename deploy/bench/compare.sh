#!/usr/bin/env bash
# compare.sh runs refcast and nginx+nchan side by side with the same load
# tool (cmd/refcast-bench), in rounds, each server freshly started for each
# measurement, and prints the figures as Markdown tables.
#
#   deploy/bench/compare.sh                  # the full set (docs/performance.md)
#   SMALL=1 deploy/bench/compare.sh          # a quick one (make bench)
#   SIZES="10000" ROUNDS=2 RATE=0 deploy/bench/compare.sh
#
# Environment (defaults in brackets):
#   SIZES         fanout subscriber counts ["1000 10000 18000"]
#   SPREAD_SIZES  sizes that also run the spread scenario over REPOS repos ["10000"]
#   REPOS         repos for spread [1000]
#   RATE          1: run the throughput search each round [1]
#   RATE_CONNS    subscribers for the throughput search [1000]
#   RATE_DURATION length of a throughput trial [10s]
#   ROUNDS        rounds [3]; FIRST_ROUND numbers them from [1]
#   TARGETS       servers to measure ["refcast nchan:1 nchan:2"]:
#                 refcast is `refcast serve` as shipped (embedded bus on disk,
#                 concurrent publishes share an fsync'd commit), with
#                 --debug-addr so goroutines are counted and the node can be
#                 profiled while it runs; refcast-redis
#                 is `refcast serve --redis` on a redis-server of its own (AOF,
#                 appendfsync everysec, as docs/operations.md recommends; the
#                 node's CPU is measured, not Redis's); nchan:N is
#                 nginx+nchan with N worker processes (nchan's faster setting
#                 differs by load, so both are measured)
#   EVENTS, INTERVAL  fanout events and spacing [20, 750ms: longer than a fan-out to 18,000 takes, so events do not overlap]
#   OUT           output directory [a new one under /tmp]
#   NOBUILD       1: reuse $OUT/bin (another round with the same binaries)
#   BENCH_FLAGS   extra refcast-bench flags
#
# Needs Go, and for nchan: apt-get install -y libnginx-mod-nchan (any
# Debian nginx flavour loads it; nginx-light does). Every server this script
# starts is stopped by its own pid when it exits. Loopback only. Do not
# edit this file while it runs: bash reads it as it goes.
set -euo pipefail

cd "$(dirname "$0")/../.."

if [[ "${SMALL:-0}" == 1 ]]; then
	: "${SIZES:=500}" "${SPREAD_SIZES:=500}" "${REPOS:=100}" "${RATE_CONNS:=200}"
	: "${RATE_DURATION:=3s}" "${ROUNDS:=1}" "${EVENTS:=10}" "${INTERVAL:=250ms}" "${SETTLE:=1s}"
	: "${BENCH_FLAGS:=-spread-events 300}" "${TARGETS:=refcast refcast-redis nchan:1}"
fi
SIZES=${SIZES:-"1000 10000 18000"}
SPREAD_SIZES=${SPREAD_SIZES:-"10000"}
REPOS=${REPOS:-1000}
RATE=${RATE:-1}
RATE_CONNS=${RATE_CONNS:-1000}
RATE_DURATION=${RATE_DURATION:-10s}
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-"refcast nchan:1 nchan:2"}
EVENTS=${EVENTS:-20}
INTERVAL=${INTERVAL:-750ms}
SETTLE=${SETTLE:-3s}
BENCH_FLAGS=${BENCH_FLAGS:-}
REFCAST_PORT=${REFCAST_PORT:-28380}
NCHAN_PORT=${NCHAN_PORT:-28381}
PPROF_PORT=${PPROF_PORT:-28382}
REDIS_PORT=${REDIS_PORT:-28383}
TOKEN=bench-token
OUT=${OUT:-$(mktemp -d /tmp/refcast-bench.XXXXXX)}
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

mkdir -p "$OUT/bin"
if [[ "${NOBUILD:-0}" == 1 && -x "$OUT/bin/refcast" && -x "$OUT/bin/refcast-bench" ]]; then
	echo "reusing the binaries in $OUT/bin"
else
	echo "building into $OUT/bin"
	go build -o "$OUT/bin/refcast" ./cmd/refcast
	go build -o "$OUT/bin/refcast-bench" ./cmd/refcast-bench
fi

if [[ " $TARGETS " == *" nchan"* ]] && { ! command -v nginx >/dev/null || [[ ! -f $NCHAN_MODULE ]]; }; then
	echo "nchan is not installed (apt-get install -y libnginx-mod-nchan): measuring refcast only" >&2
	TARGETS=${TARGETS//nchan:1/}
	TARGETS=${TARGETS//nchan:2/}
fi

if [[ " $TARGETS " == *" refcast-redis "* ]] && ! command -v redis-server >/dev/null; then
	echo "redis-server is not installed (apt-get install -y redis-server): skipping refcast-redis" >&2
	TARGETS=${TARGETS//refcast-redis/}
fi

SERVER_PID=""
REDIS_PID=""
# shellcheck source=deploy/bench/lib.sh
source deploy/bench/lib.sh
stop_server() {
	if [[ -n "$SERVER_PID" ]]; then
		stop_pid "$SERVER_PID"
		SERVER_PID=""
	fi
	if [[ -n "$REDIS_PID" ]]; then
		stop_pid "$REDIS_PID"
		REDIS_PID=""
	fi
}
trap stop_server EXIT

# start_server TARGET: a fresh server; sets SERVER_PID and URL.
start_server() {
	case "$1" in
	refcast)
		rm -rf "$OUT/refcast-data"
		"$OUT/bin/refcast" serve --listen "127.0.0.1:$REFCAST_PORT" --publish-token "$TOKEN" \
			--max-connections 30000 --max-per-client 0 --publish-rate -1 --drain 1s --log-level warn --data "$OUT/refcast-data" \
			--debug-addr "127.0.0.1:$PPROF_PORT" >>"$OUT/refcast.log" 2>&1 &
		SERVER_PID=$!
		URL="http://127.0.0.1:$REFCAST_PORT"
		;;
	refcast-redis)
		rm -rf "$OUT/redis" && mkdir -p "$OUT/redis"
		redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis" --save '' \
			--appendonly yes --appendfsync everysec >>"$OUT/redis.log" 2>&1 &
		REDIS_PID=$!
		for _ in $(seq 50); do
			redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
			sleep 0.1
		done
		"$OUT/bin/refcast" serve --listen "127.0.0.1:$REFCAST_PORT" --publish-token "$TOKEN" \
			--max-connections 30000 --max-per-client 0 --publish-rate -1 --drain 1s --log-level warn --redis "redis://127.0.0.1:$REDIS_PORT" \
			--debug-addr "127.0.0.1:$PPROF_PORT" >>"$OUT/refcast-redis.log" 2>&1 &
		SERVER_PID=$!
		URL="http://127.0.0.1:$REFCAST_PORT"
		;;
	nchan*)
		local dir="$OUT/nchan" workers=${1#nchan:}
		[[ "$workers" == nchan ]] && workers=1
		rm -rf "$dir" && mkdir -p "$dir"
		sed -e "s#__PORT__#$NCHAN_PORT#g; s#__WORKERS__#$workers#g; s#__NOFILE__#20000#g; s#__PREFIX__#$dir#g" \
			deploy/bench/nchan.conf >"$dir/nchan.conf"
		nginx -p "$dir" -c "$dir/nchan.conf" >>"$OUT/nginx.log" 2>&1 &
		SERVER_PID=$!
		URL="http://127.0.0.1:$NCHAN_PORT"
		;;
	esac
	for _ in $(seq 50); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			break # exited (port taken?): do not measure whoever answers there
		fi
		if curl -s -o /dev/null "$URL/" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "$1 did not start; see $OUT/*.log" >&2
	return 1
}

# measure TARGET LABEL FLAGS...: one refcast-bench run on a fresh server.
measure() {
	local target=$1 label=$2
	shift 2
	start_server "$target"
	local kind=${target%%[:-]*} extra=()
	case "$target" in
	nchan:*) label="$label ${target#nchan:}w" ;;
	refcast) extra=(-pprof "http://127.0.0.1:$PPROF_PORT") ;;
	refcast-redis) label="$label redis" extra=(-pprof "http://127.0.0.1:$PPROF_PORT") ;;
	esac
	local cmd=("$OUT/bin/refcast-bench" -target "$kind" "${extra[@]}" -url "$URL" -pid "$SERVER_PID" -label "$label" -settle "$SETTLE" "$@")
	# shellcheck disable=SC2086
	cmd+=($BENCH_FLAGS)
	{ printf '$ REFCAST_PUBLISH_TOKEN=%s' "$TOKEN"; printf ' %q' "${cmd[@]}"; echo; } | sed "s#$OUT/bin/##" | tee -a "$OUT/results.txt"
	REFCAST_PUBLISH_TOKEN=$TOKEN "${cmd[@]}" 2>&1 | tee -a "$OUT/results.txt" || echo "(run failed)" | tee -a "$OUT/results.txt"
	stop_server
}

FIRST_ROUND=${FIRST_ROUND:-1}
for round in $(seq "$FIRST_ROUND" $((FIRST_ROUND + ROUNDS - 1))); do
	for n in $SIZES; do
		scen=fanout
		[[ " $SPREAD_SIZES " == *" $n "* ]] && scen=fanout,spread
		for t in $TARGETS; do
			measure "$t" "r$round" -scenarios "$scen" -conns "$n" -repos "$REPOS" -events "$EVENTS" -interval "$INTERVAL"
		done
	done
	if [[ "$RATE" == 1 ]]; then
		for t in $TARGETS; do
			measure "$t" "r$round" -scenarios rate -rate-conns "$RATE_CONNS" -rate-duration "$RATE_DURATION"
		done
	fi
done

echo
echo "results: $OUT/results.txt"
"$OUT/bin/refcast-bench" report <"$OUT/results.txt" | tee "$OUT/report.md"
