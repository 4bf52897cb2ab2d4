#!/usr/bin/env bash
# Submits gato-train to a SLURM GPU cluster: sbatch of launch/slurm/gato.sbatch with the layout's flags.
#
# usage: launch/slurm/submit.sh --nodes=N --gpus_per_node=G --experiment=FILE --workdir=DIR [flags]
#            [-- gato-train flags]
#
# flags
#   --nodes=N --gpus_per_node=G   the allocation (N x G devices in the mesh)
#   --per=gpu|node                one process per GPU (default) or one per node driving all its GPUs
#   --experiment=FILE             experiments/gato_364m.py, or just gato_364m
#   --workdir=DIR                 shared filesystem path or gs://...; the run's workdir is DIR/RUN
#   --run=NAME                    default: the experiment's name; the same run resumes from its checkpoint
#   --partition=P --account=A --time=HH:MM:SS --venv=DIR   passed to sbatch / activated on the nodes
#   --log_dir=DIR                 where SLURM writes the job's log (default ~/gato-jax-logs)
#   --dry-run                     print the sbatch command, submit nothing
#
# The config's mesh must multiply to N x G devices: pass e.g. -- --config.mesh.data=N
# --config.mesh.fsdp=G --config.mesh.tensor=1 (FSDP inside a node's NVLink domain, data across nodes).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "submit.sh: $*" >&2
  echo "run 'launch/slurm/submit.sh --help' for usage" >&2
  exit 2
}

quote_all() {
  local word out="" sep=""
  for word in "$@"; do
    if [[ "${word}" =~ ^[-A-Za-z0-9_@%+=:,./]+$ ]]; then out+="${sep}${word}"
    else out+="${sep}'${word//\'/\'\\\'\'}'"; fi
    sep=" "
  done
  printf '%s' "${out}"
}

nodes="" gpus_per_node="" per="gpu" experiment="" workdir="" run_name="" partition="" account=""
time_limit="" venv="" log_dir="${HOME}/gato-jax-logs" dry_run=0
train_args=()
[[ $# -gt 0 ]] || { usage >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus_per_node="${1#*=}" ;;
    --per=*) per="${1#*=}" ;;
    --experiment=*) experiment="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --run=*) run_name="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --account=*) account="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --venv=*) venv="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; gato-train flags go after --)" ;;
  esac
  shift
done

[[ "${nodes}" =~ ^[1-9][0-9]*$ ]] || die "--nodes=N is required (a positive integer), got '${nodes}'"
[[ "${gpus_per_node}" =~ ^[1-9][0-9]*$ ]] \
  || die "--gpus_per_node=G is required (a positive integer), got '${gpus_per_node}'"
case "${per}" in
  gpu) tasks_per_node="${gpus_per_node}" ;;
  node) tasks_per_node=1 ;;
  *) die "--per must be 'gpu' or 'node', got '${per}'" ;;
esac
[[ -n "${experiment}" ]] || die "--experiment is required (e.g. --experiment=gato_364m)"
if [[ "${experiment}" != */* && "${experiment}" != *.py ]]; then
  experiment="experiments/${experiment}.py"
fi
[[ -f "${repo_root}/${experiment}" ]] \
  || die "no experiment file '${experiment}' under ${repo_root} (give a path relative to the repo root)"
[[ "${workdir}" == /* || "${workdir}" == gs://?* ]] \
  || die "--workdir must be an absolute path on a shared filesystem or a gs:// path, got '${workdir}'"
[[ -n "${run_name}" ]] || run_name="$(basename "${experiment}" .py)"
[[ "${run_name}" =~ ^[-A-Za-z0-9_.]+$ ]] || die "--run='${run_name}' may hold letters, digits, - _ ."
run_workdir="${workdir%/}/${run_name}"

# A mesh given in full must cover every device; -1 (the rest) is checked by gato-train itself.
devices=$((nodes * gpus_per_node))
mesh_product=1 mesh_given=0
for arg in ${train_args[@]+"${train_args[@]}"}; do
  if [[ "${arg}" =~ ^--config\.mesh\.(data|fsdp|tensor)=(-?[0-9]+)$ ]]; then
    mesh_given=$((mesh_given + 1))
    if [[ "${BASH_REMATCH[2]}" -lt 0 ]]; then mesh_given=-9; fi
    mesh_product=$((mesh_product * BASH_REMATCH[2]))
  fi
done
if [[ "${mesh_given}" -eq 3 && "${mesh_product}" -ne "${devices}" ]]; then
  die "the mesh overrides multiply to ${mesh_product}, but ${nodes} nodes x ${gpus_per_node} GPUs = ${devices}"
fi

sbatch_cmd=(sbatch --job-name="${run_name}" --nodes="${nodes}" --gpus-per-node="${gpus_per_node}"
            --ntasks-per-node="${tasks_per_node}" --chdir="${repo_root}"
            --output="${log_dir%/}/%x-%j.out")
[[ -z "${partition}" ]] || sbatch_cmd+=(--partition="${partition}")
[[ -z "${account}" ]] || sbatch_cmd+=(--account="${account}")
[[ -z "${time_limit}" ]] || sbatch_cmd+=(--time="${time_limit}")
sbatch_cmd+=("${repo_root}/launch/slurm/gato.sbatch" --experiment="${experiment}" --workdir="${run_workdir}")
[[ -z "${venv}" ]] || sbatch_cmd+=(--venv="${venv}")
sbatch_cmd+=(-- ${train_args[@]+"${train_args[@]}"})

echo "# ${nodes} nodes x ${gpus_per_node} GPUs = ${devices} devices; one process per ${per}:" \
     "$((nodes * tasks_per_node)) processes"
echo "# workdir ${run_workdir}"
[[ "${mesh_given}" -ne 0 ]] || echo "# no --config.mesh.* given: the experiment's mesh must fit ${devices}" \
  "devices (e.g. -- --config.mesh.data=${nodes} --config.mesh.fsdp=${gpus_per_node} --config.mesh.tensor=1)"
echo "+ $(quote_all "${sbatch_cmd[@]}")"
if [[ "${dry_run}" -eq 1 ]]; then
  exit 0
fi
command -v sbatch >/dev/null || die "sbatch is not on PATH: run this on the cluster's login node"
mkdir -p "${log_dir}"
"${sbatch_cmd[@]}"
