#!/usr/bin/env bash
# kill -9 trials of `peftsharp train` (CrashSafetyTests): each trial kills a run (and its resume, once) at random moments,
# checks that every folder left is complete or absent, resumes to the end and compares the adapter with the uninterrupted run's.
# Usage: bash bench/crash-safety.sh [TRIALS]   (default 20; CI runs 3)
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build tests/PeftSharp.Tests -c Release >/dev/null
PEFTSHARP_CRASH_TRIALS="${1:-20}" dotnet test tests/PeftSharp.Tests -c Release --no-build \
  --filter "FullyQualifiedName~CrashSafetyTests.KilledRunsLeaveNothingTornAndResumeToTheUninterruptedAdapter"
