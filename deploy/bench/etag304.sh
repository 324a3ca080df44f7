#!/usr/bin/env bash
# The cheap "no": 304 Not Modified answers per second from refcast's
# /v1/refs with a matching If-None-Match, side by side with nginx (one
# worker) serving a static file with a matching ETag, in one run on this
# machine. Usage: deploy/bench/etag304.sh [ROUNDS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
dur=${2:-10s}
for b in wrk nginx go; do command -v $b >/dev/null || { echo "missing $b" >&2; exit 1; }; done
tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx workers run as an unprivileged user
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null; rm -rf "$tmp"' EXIT

go build -o "$tmp/refcast" ./cmd/refcast
"$tmp/refcast" serve --listen 127.0.0.1:18304 --data "$tmp/data" --publish-token bench --log-level warn &
for _ in $(seq 100); do curl -fs 127.0.0.1:18304/readyz >/dev/null && break; sleep 0.1; done
z=0000000000000000000000000000000000000000
curl -fs -XPOST -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' 127.0.0.1:18304/v1/publish \
  -d "{\"id\":\"b1\",\"repo\":\"acme/app\",\"time\":\"2026-11-25T00:00:00Z\",\"updates\":[{\"ref\":\"refs/heads/main\",\"old\":\"$z\",\"new\":\"$(printf 'ab%.0s' $(seq 20))\"}]}" >/dev/null
rtag=$(curl -fsI '127.0.0.1:18304/v1/refs?repo=acme/app' | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')

mkdir -p "$tmp/www"
curl -fs '127.0.0.1:18304/v1/refs?repo=acme/app' > "$tmp/www/refs.json"
cat > "$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:18305; root $tmp/www; etag on; }
}
NGINX
nginx -c "$tmp/nginx.conf" -p "$tmp"
sleep 0.3
ntag=$(curl -fsI 127.0.0.1:18305/refs.json | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')

check() { # url etag: must be 304
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $2" "$1")
  [ "$code" = 304 ] || { echo "expected 304 from $1, got $code" >&2; exit 1; }
}
check '127.0.0.1:18304/v1/refs?repo=acme/app' "$rtag"
check 127.0.0.1:18305/refs.json "$ntag"

rps() { wrk -t2 -c64 -d"$dur" -H "If-None-Match: $2" "$1" | awk '/Requests\/sec/{print $2}'; }
echo "round nginx_304_per_s refcast_304_per_s ratio"
for r in $(seq "$rounds"); do
  n=$(rps http://127.0.0.1:18305/refs.json "$ntag")
  c=$(rps 'http://127.0.0.1:18304/v1/refs?repo=acme/app' "$rtag")
  echo "$r $n $c $(awk -v a="$c" -v b="$n" 'BEGIN{printf "%.2f", a/b}')"
done
