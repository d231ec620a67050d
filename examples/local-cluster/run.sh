#!/usr/bin/env bash
# A local three-node cluster with a scheduler, from the configs in this folder.
#
#   examples/local-cluster/run.sh        # builds, makes certificates once, starts all, Ctrl-C stops
#
# Then: curl http://127.0.0.1:8080/ goes app -> a => (b =>) c -> the service on :9000
# (a Python file server, when python3 is there), and
#   target/release/proxy status --admin 127.0.0.1:9911
#   target/release/proxy status --scheduler 127.0.0.1:9900
# show the nodes' links and routes. Logs go to examples/local-cluster/logs/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build --release --quiet
proxy="$root/target/release/proxy"
cd "$here"
if [ ! -f certs/ca.crt ]; then
  "$proxy" mesh init --dir certs --nodes a,b,c >/dev/null
  echo "made certificates in $here/certs (keys mode 0600, not committed)"
fi
for f in scheduler.yaml node-a.yaml node-b.yaml node-c.yaml; do "$proxy" check -c "$f"; done
mkdir -p logs
pids=()
cleanup() { kill ${pids[@]+"${pids[@]}"} 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
if command -v python3 >/dev/null; then
  # Serve a folder of its own: never this one, which holds the keys.
  mkdir -p site && echo "hello through the mesh" > site/index.html
  python3 -m http.server 9000 --bind 127.0.0.1 --directory "$here/site" >logs/service.log 2>&1 &
  pids+=($!)
fi
"$proxy" scheduler -c scheduler.yaml 2>logs/scheduler.log & pids+=($!)
for n in c b a; do "$proxy" run -c "node-$n.yaml" 2>"logs/$n.log" & pids+=($!); done
sleep 2
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a process exited early: see $here/logs/" >&2; exit 1; }
done
echo "cluster up: app -> 127.0.0.1:8080 (node a); admin APIs on 127.0.0.1:9911-9913, scheduler 127.0.0.1:9900"
if command -v curl >/dev/null && command -v python3 >/dev/null; then
  curl -s --max-time 5 -o /dev/null -w "GET through the mesh: HTTP %{http_code} in %{time_total}s\n" http://127.0.0.1:8080/ || true
fi
echo "Ctrl-C stops the cluster"
wait
