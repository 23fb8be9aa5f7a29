#!/usr/bin/env bash
# A local one-machine standalone Flink cluster (one JobManager, FLINK_TASKMANAGERS TaskManagers
# with 2 slots each) on 127.0.0.1, from the Flink distribution PyFlink ships in .venv, configured
# by infra/flink/ (FLINK_CONF_DIR). Logs in var/log/flink/, pid files in var/run/flink/.
# usage: infra/flink-cluster.sh start|stop|status|start-jobmanager|start-taskmanager
#   start-jobmanager / start-taskmanager: one more daemon of that kind, as a process supervisor
#   would start after a crash (the fault harness kills them)
#   FLINK_REST_PORT [8081]        REST API / web UI port
#   FLINK_TASKMANAGERS [1]        TaskManagers `start` starts and waits for
#   FLINK_START_TIMEOUT [90]      seconds to wait for them
# Submit a job to it (PYFLINK = the pyflink package directory):
#   FLINK_CONF_DIR=infra/flink FLINK_LOG_DIR=var/log/flink $PYFLINK/bin/flink run \
#     -m 127.0.0.1:8081 \
#     -pyclientexec .venv/bin/python -pyexec .venv/bin/python -py jobs/metering.py -- --bounded
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${METERFLOW_VAR:-$ROOT/var}"
PY="$ROOT/.venv/bin/python"
PORT="${FLINK_REST_PORT:-8081}"
TIMEOUT="${FLINK_START_TIMEOUT:-90}"
TMS="${FLINK_TASKMANAGERS:-1}"
URL="http://127.0.0.1:$PORT"

export FLINK_CONF_DIR="$ROOT/infra/flink"
export FLINK_LOG_DIR="$VAR/log/flink"
export FLINK_PID_DIR="$VAR/run/flink"
export FLINK_IDENT_STRING="meterflow"
TMP_DIR="$VAR/flink/tmp"
# Paths of this checkout, which config.yaml cannot know, as dynamic properties of each daemon.
PROPS=(-D "rest.port=$PORT" -D "python.executable=$PY" -D "python.client.executable=$PY"
  -D "io.tmp.dirs=$TMP_DIR")

log() { printf '[flink] %s\n' "$*"; }
die() { printf '[flink] ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY is missing: run 'make setup' first"
FLINK_HOME="$("$PY" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
BIN="$FLINK_HOME/bin"
[ -x "$BIN/jobmanager.sh" ] || die "no Flink distribution in $FLINK_HOME"

JM_PIDS="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-standalonesession.pid"
TM_PIDS="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid"
JM_LOG="$FLINK_LOG_DIR/flink-$FLINK_IDENT_STRING-standalonesession-0-${HOSTNAME:-$(hostname)}.log"
TM_LOG="$FLINK_LOG_DIR/flink-$FLINK_IDENT_STRING-taskexecutor-0-${HOSTNAME:-$(hostname)}.log"

# live pids recorded in a pid file (the Flink scripts append one line per started daemon)
live_pids() {
  [ -f "$1" ] || return 0
  local p
  while read -r p; do
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
  done < "$1"
  return 0
}
overview() { curl -sf --max-time 2 "$URL/overview"; }
# the REST API answers with exactly $TMS TaskManagers offering 2 slots each
ready() {
  local o
  o="$(overview)" || return 1
  [[ $o == *"\"taskmanagers\":$TMS,"* && $o == *"\"slots-total\":$((2 * TMS)),"* ]]
}

fail_start() { # fail_start WHY LOGFILE
  printf '[flink] ERROR: cluster %s; read %s\n' "$1" "$2" >&2
  # the causes first (the tail of a failed start is mostly shutdown noise), then the tail
  grep -E '^(Caused by|[^ ].* ERROR )' "$2" 2>/dev/null | tail -n 5 >&2 || true
  tail -n 15 "$2" >&2 2>/dev/null || true
  [ -f "${2%.log}.out" ] && tail -n 10 "${2%.log}.out" >&2
  stop_cluster >/dev/null 2>&1 || true
  exit 1
}

start_cluster() {
  local jm tm
  jm="$(live_pids "$JM_PIDS")" tm="$(live_pids "$TM_PIDS")"
  if [ -n "$jm" ] && [ -n "$tm" ] && ready; then
    log "already up at $URL (jobmanager $jm, taskmanager $tm)"
    return
  fi
  if [ -n "$jm$tm" ]; then
    log "a previous cluster is half up (jobmanager '${jm}', taskmanager '${tm}'): restarting it"
    stop_cluster
  fi
  if overview >/dev/null 2>&1; then
    die "something else already answers on $URL: stop it or set FLINK_REST_PORT"
  fi
  rm -f "$JM_PIDS" "$TM_PIDS"  # only dead pids were left in them
  rm -rf "$TMP_DIR"  # what killed daemons left behind (a clean stop removes its own files)
  mkdir -p "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$TMP_DIR"
  # From the repo root, so nothing a daemon resolves against its working directory lands in
  # the venv.
  cd "$ROOT"
  log "starting jobmanager and $TMS taskmanager(s) (FLINK_CONF_DIR=$FLINK_CONF_DIR, logs in" \
    "$FLINK_LOG_DIR)"
  "$BIN/jobmanager.sh" start "${PROPS[@]}" >/dev/null
  local i
  for ((i = 0; i < TMS; i++)); do "$BIN/taskmanager.sh" start "${PROPS[@]}" >/dev/null; done
  local deadline=$((SECONDS + TIMEOUT))
  until ready; do
    [ -n "$(live_pids "$JM_PIDS")" ] || fail_start "jobmanager exited during start-up" "$JM_LOG"
    [ -n "$(live_pids "$TM_PIDS")" ] || fail_start "taskmanager exited during start-up" "$TM_LOG"
    if [ $SECONDS -ge $deadline ]; then
      if overview >/dev/null 2>&1; then
        fail_start "REST API up but not $TMS taskmanager(s) with 2 slots within ${TIMEOUT}s" "$TM_LOG"
      fi
      fail_start "REST API not up on $URL within ${TIMEOUT}s" "$JM_LOG"
    fi
    sleep 0.5
  done
  log "up at $URL: $TMS taskmanager(s), 2 slots each (jobmanager $(live_pids "$JM_PIDS")," \
    "taskmanagers" $(live_pids "$TM_PIDS") ")"
}

# SIGTERM every daemon recorded in the pid files, SIGKILL what is still alive after 15s.
stop_cluster() {
  local pids p deadline
  pids="$(live_pids "$TM_PIDS") $(live_pids "$JM_PIDS")"
  if [ -z "${pids// /}" ]; then
    rm -f "$JM_PIDS" "$TM_PIDS"
    log "not running"
    return
  fi
  log "stopping pids" $pids
  # shellcheck disable=SC2086  # a list of pids
  kill $pids 2>/dev/null || true
  deadline=$((SECONDS + 15))
  for p in $pids; do
    while kill -0 "$p" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        log "pid $p did not stop within 15s: killing it"
        kill -9 "$p" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  done
  for p in $pids; do
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  rm -f "$JM_PIDS" "$TM_PIDS"
  log "stopped"
}

status_cluster() {
  local jm tm
  jm="$(live_pids "$JM_PIDS")" tm="$(live_pids "$TM_PIDS")"
  if ready; then
    log "up at $URL (jobmanager ${jm:-?}, taskmanager ${tm:-?}): $(overview)"
    return 0
  fi
  log "not ready at $URL (jobmanager '${jm}', taskmanager '${tm}'; logs in $FLINK_LOG_DIR)"
  return 1
}

# One more daemon beside whatever runs (after a crash of one): no wait, the caller watches REST.
start_daemon() { # start_daemon jobmanager|taskmanager
  cd "$ROOT"
  mkdir -p "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$TMP_DIR"
  "$BIN/$1.sh" start "${PROPS[@]}" >/dev/null
  log "started a $1"
}

case "${1:-}" in
  start) start_cluster ;;
  start-jobmanager) start_daemon jobmanager ;;
  start-taskmanager) start_daemon taskmanager ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
  *) echo "usage: $0 start|stop|status|start-jobmanager|start-taskmanager" >&2; exit 2 ;;
esac
