#!/usr/bin/env bash
# PeftSharp against LibTorch (TorchSharp) on the same f32 checkpoint, each run in its own process, alternated round by
# round so a ratio holds while a shared machine's speed drifts. Prints JSON lines: first the agreement check, then per
# mode and MKL path the medians of both engines and the median of the per-round ratios PeftSharp / LibTorch (> 1:
# PeftSharp faster).
#
#   bench/torch-peer.sh [--rounds 3] [--threads 2] [--modes train,forward,decode] [--mkl default,avx512]
#                       [--model-dir DIR] [--iterations 2] [--steps 2] [--dropout 0] [--no-build] [--log FILE]
#
# DIR (default /tmp/peftsharp-torch-dg32) is made with `peftsharp init-model --preset distilgpt2` when missing.
# Modes: train (a LoRA step, c_attn r 8 alpha 16, batch 4×256, AdamW over the LoRA matrices), forward (4×256 to the
# logits, no grad), decode (a 32-token prompt through an empty KV cache, then 128 greedy tokens: the prefill and decode
# rates of the same runs). MKL paths of the LibTorch side: default (MKL's choice: AVX2 kernels on AMD) and avx512
# (MKL_ENABLE_INSTRUCTIONS=AVX512, as on an Intel AVX-512 server).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 threads=2 modes=train,forward,decode mkl=default,avx512 dir=/tmp/peftsharp-torch-dg32
iterations=2 steps=2 dropout=0 build=1 log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --mkl) mkl=$2; shift 2 ;;
    --model-dir) dir=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --dropout) dropout=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --log) log=$2; shift 2 ;;
    *) echo "torch-peer.sh: unknown option '$1' (see the header of $0)" >&2; exit 1 ;;
  esac
done

if [ "$build" = 1 ]; then
  # The TorchSharp project's build also marks libLibTorchSharp.so's GLIBCXX_3.4.32 marker weak (see its README.md).
  for p in bench/PeftSharp.Bench src/PeftSharp.Cli bench/PeftSharp.Bench.Torch; do
    dotnet build -c Release "$p" -v quiet -nologo >&2
  done
fi
B="dotnet bench/PeftSharp.Bench/bin/Release/net10.0/PeftSharp.Bench.dll"
T="dotnet bench/PeftSharp.Bench.Torch/bin/Release/net10.0/PeftSharp.Bench.Torch.dll"
if [ ! -f "$dir/model.safetensors" ]; then
  dotnet src/PeftSharp.Cli/bin/Release/net10.0/PeftSharp.Cli.dll init-model --preset distilgpt2 --out "$dir" >&2
fi

raw=${log:-$(mktemp)}
: > "$raw"
[ -n "$log" ] || trap 'rm -f "$raw"' EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)

# Agreement first: both engines on the same weights in one process (logits, loss, greedy tokens).
$T --modes check --model-dir "$dir" --threads "$threads"

# One line of output, tagged with the round, the engine and the MKL path.
run() {  # round engine mkl mode command...
  local round=$1 engine=$2 path=$3 mode=$4; shift 4
  local out
  out=$("$@" | grep '^{' | tail -n 1)
  echo "{\"round\": $round, \"engine\": \"$engine\", \"mkl\": \"$path\", \"mode\": \"$mode\", \"line\": $out}" >> "$raw"
}

IFS=, read -ra mode_list <<< "$modes"
IFS=, read -ra mkl_list <<< "$mkl"
for ((round = 1; round <= rounds; round++)); do
  for mode in "${mode_list[@]}"; do
    case "$mode" in
      train)
        ours=($B train --model-dir "$dir" --target c_attn -r 8 --batch 4 --seq 256 --steps "$steps" --dropout "$dropout" --threads "$threads")
        theirs=($T --modes train --model-dir "$dir" -r 8 --batch 4 --seq 256 --steps "$steps" --dropout "$dropout" --threads "$threads") ;;
      forward)
        ours=($B model --model-dir "$dir" --modes forward --shapes 4x256 --iterations "$iterations" --threads "$threads")
        theirs=($T --modes forward --model-dir "$dir" --shapes 4x256 --iterations "$iterations" --threads "$threads") ;;
      decode)
        ours=($B model --model-dir "$dir" --modes greedy_decode --iterations "$iterations" --threads "$threads")
        theirs=($T --modes decode --model-dir "$dir" --prompt 32 --generate 128 --iterations "$iterations" --threads "$threads") ;;
      *) echo "torch-peer.sh: --modes $mode: expected train, forward or decode" >&2; exit 1 ;;
    esac
    # Alternate which engine goes first from round to round.
    if (( round % 2 == 1 )); then run "$round" peftsharp - "$mode" "${ours[@]}"; fi
    for path in "${mkl_list[@]}"; do
      case "$path" in
        default) run "$round" libtorch default "$mode" "${theirs[@]}" ;;
        avx512) run "$round" libtorch avx512 "$mode" "${theirs[@]}" --mkl-avx512 ;;
        *) echo "torch-peer.sh: --mkl $path: expected default or avx512" >&2; exit 1 ;;
      esac
    done
    if (( round % 2 == 0 )); then run "$round" peftsharp - "$mode" "${ours[@]}"; fi
  done
done

python3 - "$raw" "$threads" "$load_start" "$(loadavg)" <<'EOF'
import json, statistics, sys
raw, threads, load_start, load_end = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [json.loads(l) for l in open(raw) if l.strip()]
# The rate each mode compares: tokens/s of the same work on both sides.
metrics = {"train": [("tokens_per_s", "tok_per_s", "tokens_per_s")],
           "forward": [("tokens_per_s", "tokens_per_s", "tokens_per_s")],
           "decode": [("prefill_tokens_per_s", "prefill_tokens_per_s", "prefill_tokens_per_s"),
                      ("decode_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s")]}
for mode in dict.fromkeys(r["mode"] for r in rows):
    for path in dict.fromkeys(r["mkl"] for r in rows if r["engine"] == "libtorch" and r["mode"] == mode):
        for name, ours_key, theirs_key in metrics[mode]:
            ours = {r["round"]: r["line"][ours_key] for r in rows if r["mode"] == mode and r["engine"] == "peftsharp"}
            theirs = {r["round"]: r["line"][theirs_key] for r in rows if r["mode"] == mode and r["engine"] == "libtorch" and r["mkl"] == path}
            pairs = [(ours[k], theirs[k]) for k in sorted(ours) if k in theirs]
            ratios = [round(a / b, 3) for a, b in pairs]
            rss = lambda e, p: statistics.median(r["line"].get("peak_rss_mib", r["line"].get("peak_rss_mb", 0)) for r in rows
                                                  if r["mode"] == mode and r["engine"] == e and (e == "peftsharp" or r["mkl"] == p))
            print(json.dumps({"bench": "torch-peer", "mode": mode if len(metrics[mode]) == 1 else name.replace("_tokens_per_s", ""),
                              "metric": name, "mkl": path, "threads": threads, "rounds": len(pairs),
                              "peftsharp_median": statistics.median(a for a, _ in pairs),
                              "libtorch_median": statistics.median(b for _, b in pairs),
                              "ratio_median": statistics.median(ratios), "ratios": ratios,
                              "peftsharp_peak_rss_mib": rss("peftsharp", None), "libtorch_peak_rss_mib": rss("libtorch", path),
                              "load_avg_start": load_start, "load_avg_end": load_end}))
EOF
