#!/usr/bin/env bash
# Thin wrapper over `python -m launch.local`: N local processes joined by jax.distributed on 127.0.0.1.
#
#   launch/local.sh --num_processes=2 --devices_per_process=4 -- \
#       gato-train --config experiments/tiny_demo.py --workdir /tmp/gato_2proc
#
# Uses the repo's .venv when there is one ($PYTHON overrides). Flags: see `launch/local.sh --help`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ ! -x "${repo_root}/.venv/bin/python" ]] || PYTHON="${repo_root}/.venv/bin/python"
fi
# launch/ is importable from any working directory, so relative --config paths keep their meaning.
export PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}"
if [[ $# -eq 0 ]]; then
  exec "${PYTHON}" -m launch.local --help
fi
exec "${PYTHON}" -m launch.local "$@"
