#!/usr/bin/env bash
# Two builds of FastAttn in one process: this checkout (B) against an earlier commit (A), the same workloads alternated
# A B, B A, … over 11 rounds (perf/ab/AbHost loads each build, with perf/ab/AbShim compiled against it, into its own
# AssemblyLoadContext). On a shared, noisy host this compares builds far more steadily than runs in separate processes.
#   perf/ab.sh COMMIT SPEC...
#   SPEC: d,heads,ff,tokens,pre|post,gelu|relu,threads[,causal] (one encoder layer) | heads,tokens,headWidth (attention alone,
#         1 thread) | gM,K,N (y = x·Wᵀ, 1 thread)
#   e.g. perf/ab.sh 919321f 1024,16,4096,200,pre,relu,1 384,12,1536,13,post,gelu,2 9,512,80 g200,4096,1024
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
commit=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(mktemp -d /tmp/fastattn-ab.XXXXXX)
trap 'git -C "$root" worktree remove --force "$base/src" >/dev/null 2>&1 || true; rm -rf "$base"' EXIT
git -C "$root" worktree add --detach "$base/src" "$commit" >/dev/null
# the shim is copied once per side, so each copy restores and builds in its own folder
build() {
  mkdir -p "$base/shim-$2" && cp "$root/perf/ab/AbShim/"*.cs "$root/perf/ab/AbShim/AbShim.csproj" "$base/shim-$2/"
  dotnet build -c Release "$base/shim-$2/AbShim.csproj" -o "$base/$2" -p:FastAttnProject="$1/src/FastAttn/FastAttn.csproj" \
    > "$base/build.log" 2>&1 || { tail -20 "$base/build.log"; exit 1; }
}
echo "building $commit (A) and this checkout (B)…"
build "$base/src" a
build "$root" b
dotnet build -c Release "$root/perf/ab/AbHost/AbHost.csproj" -o "$base/host" > "$base/build.log" 2>&1 || { tail -20 "$base/build.log"; exit 1; }
echo "A = $commit, B = $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- src || echo ' + uncommitted changes')"
dotnet "$base/host/AbHost.dll" "$base/a" "$base/b" "$@"
