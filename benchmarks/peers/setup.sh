#!/usr/bin/env bash
# Create/refresh the "peers" virtual environment holding Kyutai's reference
# `moshi` package (and rustymimi when a wheel exists), reusing the system torch.
#
# Usage (from anywhere):   bash benchmarks/peers/setup.sh
# Env:  PEERS_VENV    venv location, relative to the repo root (default .venv-peers)
#       PEERS_PYTHON  base interpreter (default python3)
#       TORCH_SPEC    pip spec used only if torch is not importable
#                     (default torch==2.13.0+cpu on Linux, torch==2.13.0 elsewhere)
# Idempotent: re-running only installs what is missing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

VENV="${PEERS_VENV:-.venv-peers}"
PYTHON="${PEERS_PYTHON:-python3}"
MOSHI_VERSION="0.2.13"
RUSTYMIMI_VERSION="0.4.1"
TORCH_VERSION="2.13.0"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[peers] creating venv $VENV (with system site-packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
else
    echo "[peers] reusing venv $VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

has_module() { "$PY" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)" 2>/dev/null; }
dist_version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }

# 1. torch: reuse the system one; otherwise install a *pinned CPU* build.
#    Never an unpinned torch (nor plain torch==X from PyPI on Linux): those pull
#    gigabytes of CUDA wheels. On Linux we ask for the "+cpu" local version,
#    first from the configured indexes / find-links, then from PyTorch's CPU index.
if has_module torch; then
    echo "[peers] torch found: $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
else
    if [[ "$(uname -s)" == Linux ]]; then
        TORCH_SPEC="${TORCH_SPEC:-torch==${TORCH_VERSION}+cpu}"
    else
        TORCH_SPEC="${TORCH_SPEC:-torch==${TORCH_VERSION}}"   # macOS wheels are CPU/MPS only
    fi
    echo "[peers] torch missing: installing $TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC" \
        || "${PIP[@]}" install "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
fi

# 2. moshi without its dependency pins (it pins an older torch).
if [[ "$(dist_version moshi)" != "$MOSHI_VERSION" ]]; then
    echo "[peers] installing moshi==$MOSHI_VERSION --no-deps"
    "${PIP[@]}" install --no-deps "moshi==$MOSHI_VERSION"
else
    echo "[peers] moshi==$MOSHI_VERSION already installed"
fi

# 3. The small runtime deps moshi.models really needs (numpy: moshi.modules.seanet
#    imports it, rustymimi returns numpy arrays; usually already there).
missing=()
for spec in numpy:numpy einops:einops safetensors:safetensors sentencepiece:sentencepiece huggingface_hub:huggingface_hub; do
    mod="${spec%%:*}"; pkg="${spec##*:}"
    has_module "$mod" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    echo "[peers] installing ${missing[*]}"
    "${PIP[@]}" install "${missing[@]}"
else
    echo "[peers] numpy/einops/safetensors/sentencepiece/huggingface_hub present"
fi

# 4. rustymimi (Kyutai's Rust Mimi bindings): optional, binary wheel only.
if [[ "$(dist_version rustymimi)" == "$RUSTYMIMI_VERSION" ]]; then
    echo "[peers] rustymimi==$RUSTYMIMI_VERSION already installed"
elif "${PIP[@]}" install --only-binary=:all: "rustymimi==$RUSTYMIMI_VERSION"; then
    echo "[peers] rustymimi==$RUSTYMIMI_VERSION installed"
else
    echo "[peers] NOTE: no rustymimi wheel for this platform; skipping (optional)"
fi

# 5. Sanity check: the reference model must import against this torch.
"$PY" -c "import moshi.models; from moshi.models.compression import MimiModel; from moshi.models import loaders" \
    && echo "[peers] import moshi.models: OK"

echo "[peers] versions:"
"$PY" - <<'PY'
import importlib.metadata as m, sys
print(f"  python          {sys.version.split()[0]}  ({sys.executable})")
for d in ("torch", "numpy", "moshi", "einops", "safetensors", "sentencepiece",
          "huggingface_hub", "transformers", "rustymimi"):
    try:
        print(f"  {d:15s} {m.version(d)}")
    except m.PackageNotFoundError:
        print(f"  {d:15s} (not installed)")
PY
