#!/usr/bin/env bash
# The tagger's 20-token sentence, this checkout against an earlier commit, on the same host in one session:
# BenchmarkDotNet's tagger suite (default job) alternately in a git worktree of that commit and in this checkout.
#   perf/tagger-ab.sh [COMMIT] [ROUNDS]     (defaults: f1edf1a — issue 15's starting commit — and 2 rounds)
# Prints each run's medians (attention and FC models, Tag(text) and TagWords, and libtorch's row of the same run);
# about 2 minutes per run here (each side builds first). Leaves perf/results/tagger-ab.md.
set -euo pipefail
commit=${1:-f1edf1a}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(mktemp -d /tmp/fastattn-ab.XXXXXX)
trap 'git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true; rm -rf "$base"' EXIT
git -C "$root" worktree add --detach "$base" "$commit" >/dev/null
# the suite rewrites this checkout's perf/results/{tagger,latest}.md; they are put back at the end
mkdir -p "$base.save" && cp "$root/perf/results/tagger.md" "$root/perf/results/latest.md" "$base.save/"
trap 'cp "$base.save/"*.md "$root/perf/results/" 2>/dev/null || true; rm -rf "$base.save"; git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true; rm -rf "$base"' EXIT
row() { grep "$2 | 1 | '$3" "$1" | awk -F'|' '{gsub(/ /, "", $6); print $6}'; }
out="$root/perf/results/tagger-ab.md"
{
  echo "# Tagger, 20-token sentence, 1 thread: $(git -C "$root" rev-parse --short HEAD) against $commit"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); \`perf/tagger-ab.sh $commit $rounds\`: BenchmarkDotNet's tagger suite (\`-- tagger --full\`), alternately in a worktree of $commit and in this checkout; medians in µs."
  echo
  echo "| run | build | attention Tag(text) | attention TagWords | attention libtorch | FC Tag(text) | FC TagWords | FC libtorch |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
} > "$out"
for i in $(seq 1 "$rounds"); do
  for side in start current; do
    dir=$([ $side = start ] && echo "$base" || echo "$root")
    (cd "$dir" && dotnet run -c Release --project perf/FastAttn.Benchmarks -- tagger --full > "$base/run.log" 2>&1) || { tail -20 "$base/run.log"; exit 1; }
    md="$dir/perf/results/tagger.md"
    echo "| $i | $side | $(row "$md" attention "FastAttn Tag(text") | $(row "$md" attention "FastAttn TagWords") | $(row "$md" attention libtorch) | $(row "$md" fc "FastAttn Tag(text") | $(row "$md" fc "FastAttn TagWords") | $(row "$md" fc libtorch) |" | tee -a "$out"
  done
done
echo "written to $out"
