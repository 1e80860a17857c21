#!/usr/bin/env bash
# Fuzz one FastAttn parser with AFL++ through SharpFuzz for a bounded time.
#   fuzz/run.sh TARGET SECONDS        TARGET: safetensors | npy | conllu | tokenizer | onnx | wordpiece | stconfig | tokjson | vocab | charsmap | unigram | bpe | config | tokconfig
# Needs afl-fuzz (Debian: apt-get install afl++); installs the SharpFuzz instrumenter (SharpFuzz.CommandLine 2.3.0)
# into fuzz/.tools. Output (queue, crashes, hangs) goes to fuzz/out/TARGET (not committed); a summary line is printed.
# A finding is reproduced with the plain (not instrumented) build, which runs outside AFL++:
#   dotnet run -c Release --project fuzz/FastAttn.Fuzz -- TARGET fuzz/out/TARGET/default/crashes/id:...
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET SECONDS}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS}
[ -d "corpus/$target" ] || { echo "no corpus for target '$target' (fuzz/corpus/*)"; exit 2; }
command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install afl++"; exit 2; }
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
if [ ! -x .tools/sharpfuzz ]; then
  dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path .tools >/dev/null
fi
bin=out/bin
if [ ! -f "$bin/.instrumented" ] || [ -n "$(find ../src FastAttn.Fuzz -name '*.cs' -newer "$bin/.instrumented" 2>/dev/null | head -1)" ]; then
  rm -rf "$bin"
  dotnet publish FastAttn.Fuzz/FastAttn.Fuzz.csproj -c Release -o "$bin" --nologo -v q >/dev/null
  for dll in FastAttn.dll FastAttn.Tagging.dll FastAttn.Onnx.dll FastAttn.Embeddings.dll Microsoft.ML.Tokenizers.dll; do
    [ -f "$bin/$dll" ] && .tools/sharpfuzz "$bin/$dll" >/dev/null
  done
  touch "$bin/.instrumented"
fi
mkdir -p "out/$target"
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1
# -t: 10 s per input (a .NET start-up is slow; a real hang is a finding), -m none: .NET reserves much virtual memory
afl-fuzz -i "corpus/$target" -o "out/$target" -V "$seconds" -t 10000 -m none -- dotnet "$bin/FastAttn.Fuzz.dll" "$target" \
  > "out/$target/afl.log" 2>&1 || { echo "afl-fuzz failed; see fuzz/out/$target/afl.log"; tail -20 "out/$target/afl.log"; exit 1; }
stats="out/$target/default/fuzzer_stats"
get() { grep "^$1 " "$stats" | sed 's/.*: //'; }
echo "$target: $(get run_time) s, $(get execs_done) executions ($(get execs_per_sec)/s), corpus $(get corpus_count), saved crashes $(get saved_crashes), saved hangs $(get saved_hangs), edges $(get edges_found)/$(get total_edges)"
