#!/usr/bin/env bash
# Create the virtual environment and put a suitable torch into it, without ever replacing
# a torch the user already has.
#
#   create_venv.sh PYTHON VENV [TORCH_SPEC]
#
# - If PYTHON itself can import torch (say a CUDA build installed by the user), the venv is
#   created with --system-site-packages and that torch is used as it is.
# - Otherwise, if the venv has no torch yet: TORCH_SPEC if given; else the registry's default
#   build (CUDA) when an NVIDIA GPU answers `nvidia-smi`; else the CPU wheel torch==2.13.0,
#   which our machines have locally (an unpinned torch would download gigabytes of CUDA).
set -euo pipefail
python=${1:?python}
venv=${2:?venv}
torch_spec=${3:-}

if [ ! -x "$venv/bin/python" ]; then
  if "$python" -c 'import torch' 2>/dev/null; then
    echo "create_venv: using the torch already installed for $python ($("$python" -c 'import torch; print(torch.__version__)'))"
    "$python" -m venv --system-site-packages "$venv"
  else
    "$python" -m venv "$venv"
  fi
fi

if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "create_venv: keeping torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  exit 0
fi

if [ -z "$torch_spec" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    torch_spec="torch"
  else
    torch_spec="torch==2.13.0"
  fi
fi
echo "create_venv: installing $torch_spec"
"$venv/bin/python" -m pip install --quiet "$torch_spec"
