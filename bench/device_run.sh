#!/bin/bash
# The one prepared run for a lent GPU (the `device` tool), from the repo root on the device machine:
#   run(command="bash bench/device_run.sh", carry=[".whl", "data/demo"], timeout_s=600)
# .whl/site312.tar.xz comes from bench/device_pack.sh; data/demo is the built demo (make demo), which
# bench/explain.py reads. In order, each writing into $OUT (what comes back):
#   1. bench/gpu.py, all steps (Qwen3-8B's shape, about 6 minutes) -> bench_gpu_h100.json
#   2. bench/explain.py --preset qwen3-8b                          -> bench_explain_h100.json
#   3. bench/gpu.py --only training --compile-llm, if 200 s are left -> bench_gpu_h100_compile_llm.json
#   4. the non-demo, non-browser suite on CUDA with the time left   -> pytest_cuda.log
# TOTAL_S (default 570) bounds the whole run; GPU_S, EXPLAIN_S and LLM_S bound steps 1 to 3.
# SUITE_ONLY=1 runs step 4 alone (a second call, when the first spent its time on the benches).
T0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site
tar -xJf .whl/site312.tar.xz -C /tmp/site || { echo "no .whl/site312.tar.xz: run bench/device_pack.sh here and carry .whl"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
elapsed() { echo $(( $(date +%s) - T0 )); }
echo "unpacked at $(elapsed) s; $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"
if [ -z "$SUITE_ONLY" ]; then
timeout "${GPU_S:-400}" python3 bench/gpu.py --out "$OUT/bench_gpu_h100.json" 2> "$OUT/bench_gpu_stderr.log" > /dev/null
echo "bench/gpu.py rc=$? at $(elapsed) s"; tail -c 600 "$OUT/bench_gpu_stderr.log"
timeout "${EXPLAIN_S:-90}" python3 bench/explain.py --preset qwen3-8b > "$OUT/bench_explain_h100.json" 2> "$OUT/bench_explain_stderr.log"
echo "bench/explain.py rc=$? at $(elapsed) s"; tail -c 300 "$OUT/bench_explain_stderr.log"
if [ $(( ${TOTAL_S:-570} - $(elapsed) )) -gt 200 ]; then
  timeout "${LLM_S:-170}" python3 bench/gpu.py --only training --compile-llm --out "$OUT/bench_gpu_h100_compile_llm.json" \
    2> "$OUT/bench_llm_stderr.log" > /dev/null
  echo "bench/gpu.py --compile-llm rc=$? at $(elapsed) s"; tail -c 300 "$OUT/bench_llm_stderr.log"
fi
fi
LEFT=$(( ${TOTAL_S:-570} - $(elapsed) ))
echo "the suite gets $LEFT s"
if [ "$LEFT" -gt 30 ]; then
  timeout "$LEFT" python3 -m pytest -m "not e2e and not demo" -n 12 --dist loadfile --ignore=tests/e2e -q \
    -p no:cacheprovider -rfE > "$OUT/pytest_cuda.log" 2>&1
  echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_cuda.log" | tail -n 40
fi
echo "total $(elapsed) s"
