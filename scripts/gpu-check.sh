#!/usr/bin/env bash
# GPU paths proven on a GPU: finetuning (bf16 LoRA, full with autocast), extraction, the probe grid and the
# batched == unbatched check on CUDA, timed next to the same run on the CPU.  All options go to gpu_check.py
# (--help); without a GPU it runs the CPU path.  Example: scripts/gpu-check.sh --out gpu-check.json
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"
exec "$python" "$root/scripts/gpu_check.py" "$@"
