#!/usr/bin/env bash
# Runs gato-train on every worker of a Cloud TPU VM slice, with checkpoints and TensorBoard in a bucket.
#
# usage: launch/tpu_vm.sh COMMAND --name=TPU --zone=ZONE --project=PROJECT [flags] [-- gato-train flags]
#
# commands
#   create   create the slice, or reuse it if a TPU of that name and type exists   (needs --accelerator)
#   setup    put this working tree (or --git=URL --ref=REF) on every worker and pip install it
#   train    start gato-train on every worker, detached, then follow the logs   (needs --experiment, --bucket)
#   logs     stream the workers' logs, each line prefixed with its worker's hostname
#   stop     send SIGTERM to gato-train on every worker (it checkpoints, then exits)
#   delete   delete the slice
#   up       create + setup + train
#
# flags
#   --name=TPU --zone=ZONE --project=PROJECT   the TPU VM (always required)
#   --accelerator=TYPE    v4-32, v5p-128, v5e-256, v6e-256, ...   --version=V   TPU software version
#                         (default: the generation's usual runtime)  --spot   create a spot slice
#   --service_account=EMAIL   the workers' identity; needs write access to the bucket
#   --experiment=FILE     experiments/gato_79m.py, or just gato_79m
#   --bucket=gs://B/DIR   the run's workdir is BUCKET/RUN: Orbax checkpoints and TensorBoard logs
#   --run=NAME            default: the experiment's name; the same run name resumes from its checkpoint
#   --git=URL --ref=REF   clone a git ref on the workers instead of copying this working tree
#   --extras=tpu          pip extras to install on the workers
#   --worker=all|N        whose log `logs` streams (default all)     --no-follow   train: don't follow logs
#   --skip_preflight      don't compile the experiment for the slice here first (see below)
#   --dry-run             print every command it would run, run nothing
#
# Anything after `--` goes to gato-train unchanged, e.g. -- --config.data.data_dir=gs://B/tfds
# Pre-flight: `train` and `up` first compile the experiment (with those flags) for the slice's topology
# on this machine (python -m launch.preflight: gato-train --compile_only, needs the `tpu` extra here);
# a config that does not compile or fit in HBM stops here, before any slice is created or used.
# No coordinator flags are passed: on a TPU VM, jax.distributed.initialize() reads the slice's workers
# and this worker's rank from the TPU metadata server, so one process per worker joins by itself.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
remote_dir='$HOME/gato-jax'
remote_log='$HOME/gato-train.log'
remote_pid='$HOME/gato-train.pid'

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "tpu_vm.sh: $*" >&2
  echo "run 'launch/tpu_vm.sh --help' for usage" >&2
  exit 2
}

# One shell word, quoted only when it needs to be (as Python's shlex.quote does).
quote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_@%+=:,./]+$ ]]; then
    printf '%s' "$1"
  else
    local sq="'" esc="'\\''"
    printf "'%s'" "${1//${sq}/${esc}}"
  fi
}

quote_all() {
  local word sep=""
  for word in "$@"; do printf '%s%s' "${sep}" "$(quote "${word}")"; sep=" "; done
}

# Prints a command as one copy-pasteable line, then runs it unless --dry-run.
run() {
  echo "+ $(quote_all "$@")"
  if [[ "${dry_run}" -eq 0 ]]; then "$@"; fi
}

command="${1:-}"
case "${command}" in
  -h|--help|help) usage; exit 0 ;;
  create|setup|train|logs|stop|delete|up) shift ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown command '${command}' (create, setup, train, logs, stop, delete, up)" ;;
esac

name="" zone="" project="" accelerator="" version="" spot=0 service_account=""
experiment="" bucket="" run_name="" git_url="" git_ref="main" extras="tpu" worker="all"
follow=1 dry_run=0 preflight=1
train_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --spot) spot=1 ;;
    --service_account=*) service_account="${1#*=}" ;;
    --experiment=*) experiment="${1#*=}" ;;
    --bucket=*) bucket="${1#*=}" ;;
    --run=*) run_name="${1#*=}" ;;
    --git=*) git_url="${1#*=}" ;;
    --ref=*) git_ref="${1#*=}" ;;
    --extras=*) extras="${1#*=}" ;;
    --worker=*) worker="${1#*=}" ;;
    --no-follow|--no_follow) follow=0 ;;
    --dry-run|--dry_run) dry_run=1 ;;
    --skip_preflight|--skip-preflight) preflight=0 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; gato-train flags go after --)" ;;
  esac
  shift
done

[[ -n "${name}" ]] || die "--name=TPU is required"
[[ -n "${zone}" ]] || die "--zone=ZONE is required (e.g. us-central2-b for v4)"
[[ -n "${project}" ]] || die "--project=PROJECT is required"
[[ "${name}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "--name='${name}' must be lower-case letters, digits and dashes, starting with a letter"
[[ "${worker}" == all || "${worker}" =~ ^[0-9]+$ ]] || die "--worker must be 'all' or a number, got '${worker}'"
gflags=(--zone="${zone}" --project="${project}")

# The slice's shape comes from the one table in launch/topology.py.
describe_slice() {
  local shape
  shape="$(PYTHONPATH="${repo_root}" "${PYTHON}" -m launch.topology --shell "${accelerator}")" \
    || die "bad --accelerator='${accelerator}'"
  eval "${shape}"
  [[ -n "${version}" ]] || version="${TPU_RUNTIME_VERSION}"
  echo "# ${TPU_ACCELERATOR_TYPE}: ${TPU_CHIPS} chips (${TPU_TOPOLOGY}), ${TPU_HOSTS} workers x" \
       "${TPU_CHIPS_PER_HOST} chips, ${TPU_HBM_GIB_PER_CHIP} GiB HBM per chip; one gato-train" \
       "process per worker = ${TPU_HOSTS} processes; the config's mesh must multiply to" \
       "${TPU_DEVICES} devices"
}

resolve_experiment() {
  [[ -n "${experiment}" ]] || die "--experiment is required (e.g. --experiment=gato_79m)"
  if [[ "${experiment}" != */* && "${experiment}" != *.py ]]; then
    experiment="experiments/${experiment}.py"
  fi
  [[ -f "${repo_root}/${experiment}" ]] \
    || die "no experiment file '${experiment}' under ${repo_root} (give a path relative to the repo root)"
  [[ -n "${bucket}" ]] || die "--bucket=gs://BUCKET/DIR is required: checkpoints and logs go there"
  [[ "${bucket}" == gs://?* ]] || die "--bucket must be a gs:// path, got '${bucket}'"
  if [[ -z "${run_name}" ]]; then
    run_name="$(basename "${experiment}" .py)"
  fi
  [[ "${run_name}" =~ ^[-A-Za-z0-9_.]+$ ]] || die "--run='${run_name}' may hold letters, digits, - _ ."
  workdir="${bucket%/}/${run_name}"
}

cmd_create() {
  [[ -n "${accelerator}" ]] || die "create needs --accelerator=TYPE (e.g. v4-32)"
  describe_slice
  local create=(gcloud compute tpus tpu-vm create "${name}" "${gflags[@]}"
                --accelerator-type="${TPU_ACCELERATOR_TYPE}" --version="${version}"
                --scopes=https://www.googleapis.com/auth/cloud-platform)
  [[ "${spot}" -eq 0 ]] || create+=(--spot)
  [[ -z "${service_account}" ]] || create+=(--service-account="${service_account}")
  local describe=(gcloud compute tpus tpu-vm describe "${name}" "${gflags[@]}"
                  --format='value(acceleratorType)')
  if [[ "${dry_run}" -eq 1 ]]; then
    run "${describe[@]}"
    echo "# create runs only when describe finds no TPU named ${name}"
    run "${create[@]}"
    return
  fi
  local existing
  if existing="$("${describe[@]}" 2>/dev/null)"; then
    [[ "${existing}" == "${TPU_ACCELERATOR_TYPE}" ]] \
      || die "TPU '${name}' exists as ${existing}, not ${TPU_ACCELERATOR_TYPE}: delete it or pick another --name"
    echo "# reusing TPU VM ${name} (${existing})"
  else
    run "${create[@]}"
  fi
}

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "${name}" "${gflags[@]}" --worker="${1}" --command="${2}"
}

cmd_setup() {
  local fetch
  if [[ -n "${git_url}" ]]; then
    fetch="rm -rf ${remote_dir} && git clone --quiet $(quote "${git_url}") ${remote_dir}"
    fetch+=" && git -C ${remote_dir} checkout --quiet $(quote "${git_ref}")"
  else
    # Tracked and untracked-but-not-ignored files: what `git status` shows, without .venv or outputs.
    local tarball="${TMPDIR:-/tmp}/gato-jax-${name}.tar.gz"
    run bash -c "git -C $(quote "${repo_root}") ls-files -z --cached --others --exclude-standard \
| tar -C $(quote "${repo_root}") --null --ignore-failed-read -T - -czf $(quote "${tarball}")"
    run gcloud compute tpus tpu-vm scp "${tarball}" "${name}:gato-jax.tar.gz" "${gflags[@]}" --worker=all
    fetch="rm -rf ${remote_dir} && mkdir -p ${remote_dir}"
    fetch+=" && tar -xzf \$HOME/gato-jax.tar.gz -C ${remote_dir}"
  fi
  ssh_all all "set -e; ${fetch}; cd ${remote_dir}; python3 -m pip install --user --quiet --upgrade pip; \
python3 -m pip install --user --quiet -e $(quote ".[${extras}]")"
}

# The compile-only check of the experiment for this slice, on this machine; a failure stops the launch.
run_preflight() {
  [[ "${preflight}" -eq 1 ]] || { echo "# pre-flight skipped (--skip_preflight)"; return 0; }
  [[ -n "${accelerator}" ]] \
    || die "the pre-flight compile needs --accelerator=TYPE (the slice's type), or pass --skip_preflight"
  local check=(env PYTHONPATH="${repo_root}" "${PYTHON}" -m launch.preflight --accelerator="${accelerator}"
               --experiment="${experiment}")
  [[ "${dry_run}" -eq 0 ]] || check+=(--dry-run)
  check+=(-- ${train_args[@]+"${train_args[@]}"})
  (cd "${repo_root}" && "${check[@]}") || exit 2
}

cmd_train() {
  resolve_experiment
  [[ -z "${accelerator}" || -n "${TPU_HOSTS:-}" ]] || describe_slice
  [[ "${command}" == up ]] || run_preflight
  echo "# workdir ${workdir}: checkpoints, TensorBoard logs and the resolved config"
  echo "# jax.distributed.initialize() finds the coordinator, process count and rank in the TPU metadata"
  # ${a[@]+"${a[@]}"}: an empty array under `set -u` in the bash 3.2 macOS ships.
  local train=(gato-train --config="${experiment}" --workdir="${workdir}" ${train_args[@]+"${train_args[@]}"})
  local quoted
  quoted="$(quote_all "${train[@]}")"
  # Detached with nohup, so the run outlives this shell; the pid file lets `stop` reach it.
  ssh_all all "cd ${remote_dir} || exit 1; export PATH=\$HOME/.local/bin:\$PATH; \
if [ -f ${remote_pid} ] && kill -0 \$(cat ${remote_pid}) 2>/dev/null; then \
echo \"gato-train is already running on \$(hostname): launch/tpu_vm.sh stop first\" >&2; exit 1; fi; \
nohup ${quoted} > ${remote_log} 2>&1 < /dev/null & echo \$! > ${remote_pid}"
  if [[ "${follow}" -eq 1 ]]; then
    cmd_logs
  fi
}

cmd_logs() {
  ssh_all "${worker}" "tail -n +1 -F ${remote_log} | sed -u \"s/^/[\$(hostname)] /\""
}

cmd_stop() {
  ssh_all all "if [ -f ${remote_pid} ]; then kill -TERM \$(cat ${remote_pid}) 2>/dev/null || true; fi"
}

cmd_delete() {
  run gcloud compute tpus tpu-vm delete "${name}" "${gflags[@]}" --quiet
}

case "${command}" in
  create) cmd_create ;;
  setup) cmd_setup ;;
  train) cmd_train ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  up)
    [[ -n "${accelerator}" ]] || die "up needs --accelerator=TYPE (e.g. v4-32)"
    resolve_experiment  # fail on a bad experiment or bucket before paying for a slice
    run_preflight  # and on a config that would not compile or fit on it
    cmd_create
    cmd_setup
    cmd_train
    ;;
esac
