#!/usr/bin/env bash
# Packs every package, then, as a new user would: a fresh console app restores FastAttn and FastAttn.Tagging from
# the local folder feed and runs the README's quick-start snippet (the C# block between the snippet markers), and
# the fastattn tool is installed from the same feed and run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/fastattn-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -1)
echo "== dotnet pack (version $version)"
dotnet pack -c Release -o "$work/feed" --nologo -v q
ls "$work/feed"
export NUGET_PACKAGES="$work/packages"     # a clean package cache: nothing left over from earlier builds
cat > "$work/nuget.config" <<CFG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
CFG
echo "== a fresh console app with the README's snippet"
mkdir "$work/app" && cd "$work/app"
dotnet new console --framework net10.0 -o . --force >/dev/null
cp "$work/nuget.config" .
dotnet add package FastAttn --version "$version" >/dev/null
dotnet add package FastAttn.Tagging --version "$version" >/dev/null
awk '/<!-- snippet:quickstart -->/{on=1; next} on && /^```csharp/{code=1; next} code && /^```/{exit} code{print}' "$root/README.md" > Program.cs
[ -s Program.cs ] || { echo "README has no quick-start snippet"; exit 1; }
out=$(dotnet run -c Release)
echo "$out"
grep -q "saw/NOUN" <<<"$out" || { echo "the snippet did not tag the tutorial's sentence"; exit 1; }
echo "== FastAttn.Embeddings (with FastAttn.Onnx) restores and runs from the feed"
dotnet add package FastAttn.Embeddings --version "$version" >/dev/null
cat > Program.cs <<'CS'
var vocab = new MemoryStream(System.Text.Encoding.UTF8.GetBytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncafe\nnaive\n"));
var tokenizer = FastAttn.Embeddings.BertWordPieceTokenizer.FromVocab(vocab);
Console.WriteLine("ids: " + string.Join(" ", tokenizer.Encode("Café NAÏVE")));
CS
out=$(dotnet run -c Release)
echo "$out"
grep -q "ids: 2 5 6 3" <<<"$out" || { echo "the embeddings package did not tokenize as expected"; exit 1; }
echo "== dotnet tool install FastAttn.Cli from the feed"
cd "$work"
dotnet tool install FastAttn.Cli --version "$version" --tool-path "$work/tools" --add-source "$work/feed" >/dev/null
"$work/tools/fastattn" tag I saw a saw. | tee "$work/tag.txt"
grep -q "saw/NOUN" "$work/tag.txt"
echo "== packages restore and run from a local feed"
