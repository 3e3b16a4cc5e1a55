#!/usr/bin/env bash
# Runs one `peftsharp train` step under /usr/bin/time -v and samples the process's memory every second.
#   bench/scale/run-step.sh PEFTSHARP_BINARY MODEL_FOLDER LOG_FOLDER [--set key=value ...]
# Writes LOG_FOLDER/{time.txt, samples.tsv, train.log, summary.txt}: the peak RSS (time -v), the peaks of VmRSS, RssAnon and
# RssFile (/proc/PID/status, 1 s samples), the load average before and after, and the trainer's metrics.
set -euo pipefail
bin=$1 model=$2 log=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$log"
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) free: $(free -m | awk '/Mem:/{print "used " $3 " MB, available " $7 " MB"}')" > "$log/summary.txt"
/usr/bin/time -v -o "$log/time.txt" "$bin" train "$here/qlora-step.yaml" --set "model.name_or_path=$model" --set "training.output_dir=$log/out" "$@" \
  > "$log/train.log" 2>&1 &
timer=$!
child=""
for _ in $(seq 50); do child=$(pgrep -P "$timer" || true); [ -n "$child" ] && break; sleep 0.1; done
printf 't_s\tVmRSS_kB\tRssAnon_kB\tRssFile_kB\tload1\n' > "$log/samples.tsv"
t0=$(date +%s)
while [ -n "$child" ] && [ -r "/proc/$child/status" ]; do
  awk -v t=$(( $(date +%s) - t0 )) -v l="$(cut -d' ' -f1 /proc/loadavg)" '/^VmRSS/{r=$2}/^RssAnon/{a=$2}/^RssFile/{f=$2}END{if(r)printf "%s\t%s\t%s\t%s\t%s\n",t,r,a,f,l}' "/proc/$child/status" >> "$log/samples.tsv" 2>/dev/null || true
  sleep 1
done
wait "$timer" || echo "exit status $?" >> "$log/summary.txt"
{
  echo "end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
  grep -E 'Maximum resident|Elapsed|User time|System time|Major' "$log/time.txt"
  awk -F'\t' 'NR>1{if($2>r)r=$2; if($3>a)a=$3; if($4>f)f=$4; s+=$5; n++}END{printf "sampled peaks: VmRSS %.0f MB, RssAnon %.0f MB, RssFile %.0f MB; mean load1 %.2f over %d samples\n", r/1024, a/1024, f/1024, s/n, n}' "$log/samples.tsv"
} >> "$log/summary.txt"
cat "$log/summary.txt"
