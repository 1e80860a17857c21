#!/usr/bin/env bash
# Load test of samples/FastAttn.Service on 127.0.0.1 with wrk (one command; about 6 minutes here at the default 20 s per run):
#   perf/loadtest.sh [seconds-per-run]
# Runs, in one go: FastAttn's in-process encode time and packed-batch throughput for the same sentences (the yardsticks);
# then the service with batching on (/embed and /tag), batching off (/embed) and the ONNX Runtime backend (/embed), each
# at 1, 16 and 64 closed-loop connections, and batching with short batches on one thread (/embed, 1 connection). Writes perf/results/service.md and perf/results/service.png.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
port=${LOADTEST_PORT:-5080}
url="http://127.0.0.1:$port"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing wrk (Debian package)…"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "loadtest: wrk is not installed; install it with: sudo apt-get install wrk" >&2; exit 2
  fi
fi
for tool in curl; do command -v $tool >/dev/null || { echo "loadtest: $tool is not installed" >&2; exit 2; }; done
if curl -s -o /dev/null "$url/healthz"; then echo "loadtest: something already listens on $url" >&2; exit 2; fi

work=$(mktemp -d); trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
raw=perf/results/service.jsonl; : > "$raw"; server=""   # the run's raw figures, kept beside the report
export LOADTEST_OUT="$PWD/$raw" LOADTEST_SENTENCES="$PWD/perf/loadtest/sentences.txt"

echo "building…"
dotnet build -c Release -v q -nologo samples/FastAttn.Service >/dev/null
dotnet build -c Release -v q -nologo perf/FastAttn.Benchmarks >/dev/null
bench=perf/FastAttn.Benchmarks/bin/Release/net10.0/FastAttn.Benchmarks.dll
service=samples/FastAttn.Service/bin/Release/net10.0/FastAttn.Service.dll

echo "in-process yardsticks…"
dotnet "$bench" service-inprocess "$LOADTEST_SENTENCES" >> "$raw"

metric() { # value of one Prometheus sample at /metrics
  curl -s "$url/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" { print $2; exit }'
}
snapshot() { # RSS and gen-2 count as a JSON line
  printf '{"kind":"snapshot","label":"%s","when":"%s","rss_bytes":%s,"gen2":%s}\n' "$1" "$2" "$(metric fastattn_process_rss_bytes)" "$(metric fastattn_gc_gen2)" >> "$raw"
}
run_wrk() { # label endpoint connections seconds
  LOADTEST_LABEL=$1 LOADTEST_ENDPOINT=$2 LOADTEST_CONNECTIONS=$3 \
    timeout $(( $4 + 30 )) wrk -t1 -c"$3" -d"$4"s --timeout 10s --latency -s perf/loadtest/post.lua "$url" > "$work/wrk.txt"
  tail -n 1 "$raw"
}

# batching-1t: the same service with batches under 64 word pieces on a one-thread session (--ParallelFromTokens 64,
# the default before 2026-12-02), at one connection only
for config in "batching:--Batching true" "batching-1t:--Batching true --ParallelFromTokens 64" "no-batching:--Batching false" "onnxruntime:--Backend ort"; do
  label=${config%%:*}; switches=${config#*:}
  echo "== $label"
  # shellcheck disable=SC2086
  dotnet "$service" --urls "$url" $switches > "$work/$label.log" 2>&1 & server=$!
  for _ in $(seq 240); do curl -s -o /dev/null "$url/healthz" && break; sleep 0.5; done
  curl -sf -o /dev/null "$url/healthz" || { echo "loadtest: the service did not start; its log:" >&2; cat "$work/$label.log" >&2; exit 1; }
  endpoints=(embed); [ "$label" = batching ] && endpoints=(embed tag)
  # warm-up: 10 s per endpoint. With 3 s the runtime's tiered compilation was still recompiling for the next ~8 s
  # (its thread took 7.7 % of the service's CPU samples in the 8 s after a 3 s warm-up, none in the 8 s after that),
  # which landed in the first measured runs.
  for e in "${endpoints[@]}"; do LOADTEST_LABEL=warm-up LOADTEST_ENDPOINT=$e LOADTEST_CONNECTIONS=16 LOADTEST_OUT=/dev/null \
    wrk -t1 -c16 -d10s -s perf/loadtest/post.lua "$url" >/dev/null; done
  snapshot "$label" after-warm-up
  for e in "${endpoints[@]}"; do
    conns=(1 16 64); [ "$label" = batching-1t ] && conns=(1)
    for c in "${conns[@]}"; do run_wrk "$label" "$e" "$c" "$seconds"; done
  done
  snapshot "$label" end
  kill -TERM $server; wait $server || true; server=""   # SIGTERM: a graceful stop (background jobs ignore SIGINT)
done

dotnet "$bench" service-report "$raw" perf/results/service.md perf/results/service.png
