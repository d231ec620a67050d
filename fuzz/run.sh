#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each (default 600), from its
# committed corpus, with cargo-fuzz on the stable toolchain (no sanitizer: -s none).
#
#   fuzz/run.sh                    # all targets, 10 minutes each
#   SECONDS_EACH=60 fuzz/run.sh join control
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). A crash leaves its input in
# fuzz/artifacts/<target>/; once fixed, copy it into fuzz/corpus/<target>/ so
# `cargo test` replays it for good. New corpus entries found stay in fuzz/corpus (commit
# the small ones you want kept).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${SECONDS_EACH:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(flow_header reply control join subflow_frames config_text sealed datagram_frames)
fi
status=0
for t in "${targets[@]}"; do
  echo "== $t (${seconds}s)"
  mkdir -p "corpus/$t" "artifacts/$t"
  if ! cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=8192 \
       -artifact_prefix="artifacts/$t/" -print_final_stats=1; then
    echo "!! $t: crash, see fuzz/artifacts/$t/" >&2
    status=1
  fi
done
exit $status
