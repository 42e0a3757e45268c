#!/usr/bin/env bash
# Build the C stress test warning-free, then run it plain, under ThreadSanitizer and
# under AddressSanitizer + UndefinedBehaviorSanitizer.  Used by .ci/run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${STRESS_OUT:-$(mktemp -d)}
CC=${CC:-gcc}
src=("$here/stress_table.c" "$root"/csrc/*.c)
hsrc=("$here/hist_stress.c" "$root"/csrc/*.c) # the shared latency histograms
asrc=("$here/adaptive_stress.c" "$root"/csrc/*.c) # the adaptive limiter's AIMD words
# interleave_table.c includes sg_table.c itself, to replay stalled-process interleavings step by step
isrc=("$here/interleave_table.c")
for f in "$root"/csrc/*.c; do [[ $(basename "$f") == sg_table.c ]] || isrc+=("$f"); done
# interleave_breaker.c includes sg_breaker.c itself, to run a report's steps one at a time
bsrc=("$here/interleave_breaker.c")
for f in "$root"/csrc/*.c; do [[ $(basename "$f") == sg_breaker.c ]] || bsrc+=("$f"); done
common=(-std=c11 -g -Wall -Wextra -Werror -I"$root/csrc" -pthread)
hook=(-DSG_AFTER_LOOKUP=sg_test_after_lookup) # interleave_table.c runs "another process" there

echo "== C core: -Wall -Wextra -Werror build"
$CC "${common[@]}" -O2 -o "$out/stress" "${src[@]}"
"$out/stress"
$CC "${common[@]}" -O2 "${hook[@]}" -o "$out/interleave" "${isrc[@]}"
"$out/interleave"
# fast_clock.c includes sg_clock.c with CLOCK_MONOTONIC held back by simulated suspends
$CC "${common[@]}" -O2 -o "$out/fast_clock" "$here/fast_clock.c" "$root/csrc/sg_hash.c"
"$out/fast_clock"
$CC "${common[@]}" -O2 -o "$out/interleave_breaker" "${bsrc[@]}"
"$out/interleave_breaker"
$CC "${common[@]}" -O2 -o "$out/hist" "${hsrc[@]}"
"$out/hist"
$CC "${common[@]}" -O2 -o "$out/adaptive" "${asrc[@]}"
"$out/adaptive"

echo "== C core under ThreadSanitizer"
$CC "${common[@]}" -O1 -fsanitize=thread -o "$out/stress_tsan" "${src[@]}"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/stress_tsan"
$CC "${common[@]}" -O1 -fsanitize=thread -o "$out/hist_tsan" "${hsrc[@]}"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/hist_tsan"
$CC "${common[@]}" -O1 -fsanitize=thread -o "$out/adaptive_tsan" "${asrc[@]}"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$out/adaptive_tsan"

echo "== C core under AddressSanitizer + UBSan"
$CC "${common[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -o "$out/stress_asan" "${src[@]}"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" "$out/stress_asan"
$CC "${common[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    "${hook[@]}" -o "$out/interleave_asan" "${isrc[@]}"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" "$out/interleave_asan"
$CC "${common[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -o "$out/interleave_breaker_asan" "${bsrc[@]}"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" "$out/interleave_breaker_asan"
$CC "${common[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -o "$out/hist_asan" "${hsrc[@]}"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" "$out/hist_asan"
$CC "${common[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -o "$out/adaptive_asan" "${asrc[@]}"
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" "$out/adaptive_asan"
echo "== C core: all sanitizer runs clean"
