#!/usr/bin/env bash
# Adds every public symbol the PublicApiAnalyzers report as undeclared (RS0016) to the project's
# PublicAPI.Unshipped.txt, so an API change is a reviewed diff of that file. Usage: build/update-public-api.sh [project...]
set -euo pipefail
cd "$(dirname "$0")/.."
projects=("$@"); [ ${#projects[@]} -eq 0 ] && projects=(src/FastAttn src/FastAttn.Tagging src/FastAttn.Onnx src/FastAttn.Embeddings)
for p in "${projects[@]}"; do
  [ -f "$p/PublicAPI.Unshipped.txt" ] || continue
  for round in 1 2 3; do
    out=$(dotnet build "$p" -c Release --no-incremental 2>&1 || true)
    syms=$(grep "$(realpath "$p")/" <<<"$out" | grep -o "RS0016: Symbol '.*' is not part of the declared public API" | sed "s/^RS0016: Symbol '//; s/' is not part of the declared public API$//" | sort -u || true)
    [ -z "$syms" ] && break
    printf '%s\n' "$syms" >> "$p/PublicAPI.Unshipped.txt"
    { head -1 "$p/PublicAPI.Unshipped.txt"; tail -n +2 "$p/PublicAPI.Unshipped.txt" | sort -u; } > "$p/PublicAPI.tmp" && mv "$p/PublicAPI.tmp" "$p/PublicAPI.Unshipped.txt"
  done
done
