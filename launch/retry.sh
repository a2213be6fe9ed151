#!/usr/bin/env bash
# Runs a command and reruns it, unchanged, while it exits 143: prune_ofa_jax.main's status for
# "preempted (SIGTERM) after saving a checkpoint; the same command resumes". Any other non-zero
# status stops at once (a real error is not retried); 0 ends the loop.
#
#   launch/retry.sh .venv/bin/python -m prune_ofa_jax.main --config ... --workdir ...
#
# Environment:
#   MAX_RESTARTS=20          reruns after the first attempt (then the last 143 is returned)
#   RETRY_BACKOFF_S=30       wait before the first rerun; doubled for each further one ...
#   RETRY_BACKOFF_MAX_S=600  ... up to this
#   RETRY_LOG_DIR=~/prune_ofa_jax_logs   where attempts.log gets one line per start and exit
#                                        (UTC time, host, attempt, exit status); also stderr
# SIGTERM to this script (a preemption signals the whole process group) does not end the loop:
# the command saves and exits 143, and the loop reruns it. SIGINT (Ctrl-C) stops it after the
# current attempt. Exit status: the command's last one.
set -euo pipefail
if [[ $# -eq 0 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
max_restarts=${MAX_RESTARTS:-20}
backoff=${RETRY_BACKOFF_S:-30}
backoff_max=${RETRY_BACKOFF_MAX_S:-600}
log_dir=${RETRY_LOG_DIR:-$HOME/prune_ofa_jax_logs}
for var in MAX_RESTARTS=$max_restarts RETRY_BACKOFF_S=$backoff RETRY_BACKOFF_MAX_S=$backoff_max; do
  if [[ ! ${var#*=} =~ ^[0-9]+$ ]]; then
    echo "error: ${var}: must be a whole number >= 0 (unset it for the default)" >&2
    exit 2
  fi
done
mkdir -p "$log_dir"
log_file="$log_dir/attempts.log"
host=$(hostname 2>/dev/null || echo unknown)
stop=""
trap 'note "SIGTERM received (preemption): the command saves and exits 143"' TERM
trap 'stop="SIGINT"' INT

note() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $host retry.sh: $*"
  echo "$line" >&2
  echo "$line" >>"$log_file"
}

attempt=1
total=$((max_restarts + 1))
while true; do
  note "attempt $attempt/$total start: $*"
  rc=0
  "$@" || rc=$?  # in the foreground: Ctrl-C reaches it; a trapped signal is handled after it
  if [[ $rc -eq 0 ]]; then
    note "attempt $attempt/$total exit 0: done"
    exit 0
  elif [[ $rc -ne 143 ]]; then
    note "attempt $attempt/$total exit $rc: failed, not restarting"
    exit "$rc"
  elif [[ -n $stop ]]; then
    note "attempt $attempt/$total exit 143: preempted; $stop received, not restarting"
    exit 143
  elif [[ $attempt -ge $total ]]; then
    note "attempt $attempt/$total exit 143: preempted; no restarts left (MAX_RESTARTS=$max_restarts)"
    exit 143
  fi
  note "attempt $attempt/$total exit 143: preempted; rerun in ${backoff} s"
  sleep "$backoff" || true
  if [[ -n $stop ]]; then
    note "$stop received during the wait, not restarting"
    exit 143
  fi
  backoff=$((backoff * 2 > backoff_max ? backoff_max : backoff * 2))
  attempt=$((attempt + 1))
done
