#!/usr/bin/env bash
# Service start-up: seconds from process start to the first 200 of /healthz (the service loads and warms both models
# before it listens), and the process's peak RSS. 127.0.0.1 only.
#   perf/startup.sh [SERVICE_DLL] [ROUNDS]    (default: the Release build of samples/FastAttn.Service, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
dll=${1:-samples/FastAttn.Service/bin/Release/net10.0/FastAttn.Service.dll}
rounds=${2:-3}
[ -f "$dll" ] || dotnet build -c Release samples/FastAttn.Service -v q --nologo >/dev/null
command -v curl >/dev/null || { echo "curl not found: apt-get install curl"; exit 2; }
for _ in $(seq "$rounds"); do
  start=$(date +%s%N)
  dotnet "$dll" --urls http://127.0.0.1:5091 >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null http://127.0.0.1:5091/healthz; do
    kill -0 "$pid" 2>/dev/null || { echo "the service exited before it was ready"; exit 1; }
    sleep 0.02
  done
  end=$(date +%s%N)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(( (end - start) / 1000000 )) ms to ready, peak RSS $(( rss / 1024 )) MB"
done
