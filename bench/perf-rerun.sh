#!/bin/bash
# The quiet-machine re-run of docs/PERFORMANCE.md's decode, prefill, GEMM and LoRA-step figures, in one go (about 3
# minutes on the 2-core machine). Run from the repository root on a quiet machine, after
# `dotnet build -c Release bench/PeftSharp.Bench` and, once, `dotnet run -c Release --project src/PeftSharp.Cli --
# init-model --preset distilgpt2 --out /tmp/perf_dg32`. OpenBLAS (libopenblas.so.0) is the GEMM reference when installed.
set -e
B="dotnet bench/PeftSharp.Bench/bin/Release/net10.0/PeftSharp.Bench.dll"
D=${1:-/tmp/perf_dg32}
echo "# $(date -u) $(git log --oneline | head -1)"; uptime
$B peak --rounds 3
$B stream --mib 256 --threads 1,2 --iterations 10
$B llama --model-dir "$D" --pairs f32:f32,f16:bf16,q8_0:nf4 --rounds 3 --threads 1
uptime
$B llama --model-dir "$D" --pairs f32:f32,f16:bf16,q8_0:nf4 --rounds 3 --threads 2
uptime
$B gemm --decode --threads 1,2 --rounds 3
$B gemm --only prefill --threads 1,2 --rounds 3 --grouped-rows 8
uptime
$B train --model distilgpt2 --target c_attn -r 8 --batch 4 --seq 256 --steps 5
$B train --model distilgpt2 --target c_attn -r 8 --batch 4 --seq 256 --steps 5 --dropout 0.05
OPENBLAS_CORETYPE=SkylakeX $B gemm --quick --rounds 3 --threads 1,2
$B peak --rounds 3
uptime
