#!/usr/bin/env bash
# A local three-node Fjord cluster from config/cluster-3/node{1,2,3}.toml: three combined
# broker+controller processes on 127.0.0.1 (clients on 9092, 9094, 9096).
#
#   scripts/cluster.sh start [N...]   build, start the nodes (all by default), wait until they serve
#   scripts/cluster.sh stop [N...]    SIGTERM (controlled shutdown), wait, SIGKILL if still running
#   scripts/cluster.sh status         each node's pid and listener, and the cluster as a broker sees it
#
# Data, logs and pid files live under ./data/node-N (relative to the repository root):
# logs/ and metadata/ (the node's log.dirs and metadata.log.dir), fjord.log (its log),
# fjord.out (stdout) and fjord.pid.
#
# Environment: FJORD_BUILD_PROFILE=debug uses a debug build (default release); FJORD_BIN=path uses
# that binary and skips the build; RUST_LOG is passed to the nodes (default info).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=(1 2 3)
BROKERS=127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096
START_TIMEOUT=${FJORD_START_TIMEOUT:-90}
STOP_TIMEOUT=${FJORD_STOP_TIMEOUT:-30}
PROFILE=${FJORD_BUILD_PROFILE:-release}

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

config_of() { echo "config/cluster-3/node$1.toml"; }
dir_of() { echo "data/node-$1"; }
pid_file() { echo "$(dir_of "$1")/fjord.pid"; }

# The pid of node N if it is running (the pid file names a live process started with its config).
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(config_of "$1")" || return 1
  echo "$pid"
}

binary() {
  if [ -n "${FJORD_BIN:-}" ]; then
    echo "$FJORD_BIN"
    return
  fi
  local target=${CARGO_TARGET_DIR:-target}
  echo "$target/$PROFILE/fjord"
}

build() {
  [ -n "${FJORD_BIN:-}" ] && return
  case "$PROFILE" in
    release) cargo build --release -p fjord >&2 ;;
    debug) cargo build -p fjord >&2 ;;
    *) cargo build --profile "$PROFILE" -p fjord >&2 ;;
  esac
}

nodes_or_all() {
  if [ "$#" -eq 0 ]; then
    echo "${NODES[@]}"
    return
  fi
  for n in "$@"; do
    [[ " ${NODES[*]} " == *" $n "* ]] || { echo "no node $n (nodes: ${NODES[*]})" >&2; exit 2; }
  done
  echo "$@"
}

start() {
  local nodes bin n dir pid
  nodes=$(nodes_or_all "$@")
  build
  bin=$(binary)
  [ -x "$bin" ] || { echo "no fjord binary at $bin" >&2; exit 1; }
  local started=()
  for n in $nodes; do
    dir=$(dir_of "$n")
    mkdir -p "$dir"
    if pid=$(running_pid "$n"); then
      echo "node $n already running (pid $pid)"
      continue
    fi
    : >"$dir/fjord.out"
    # Its own session, so Ctrl-C in this terminal does not reach it; stop it with `stop`.
    RUST_LOG=${RUST_LOG:-info} setsid "$bin" broker --config "$(config_of "$n")" \
      </dev/null >"$dir/fjord.out" 2>>"$dir/fjord.log" &
    echo $! >"$(pid_file "$n")"
    started+=("$n")
  done
  # All nodes start at once: a node serves only after the controller quorum (a majority of
  # the three) has elected a leader and unfenced it.
  local deadline=$((SECONDS + START_TIMEOUT)) waiting
  for n in "${started[@]}"; do
    dir=$(dir_of "$n")
    until grep -q '^fjord: listening PLAINTEXT' "$dir/fjord.out" 2>/dev/null; do
      if ! running_pid "$n" >/dev/null; then
        echo "node $n exited while starting; last lines of $dir/fjord.log:" >&2
        tail -n 20 "$dir/fjord.log" >&2
        exit 1
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        waiting=$(printf '%s ' "${started[@]}")
        echo "node $n did not serve within ${START_TIMEOUT}s (started: $waiting); last lines of $dir/fjord.log:" >&2
        tail -n 20 "$dir/fjord.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "node $n serving: $(sed -n 's/^fjord: listening PLAINTEXT //p' "$dir/fjord.out" | tail -n 1) (pid $(cat "$(pid_file "$n")"))"
  done
  echo "bootstrap servers: $BROKERS"
}

stop() {
  local nodes n pid
  nodes=$(nodes_or_all "$@")
  local stopping=()
  for n in $nodes; do
    if pid=$(running_pid "$n"); then
      kill -TERM "$pid"
      stopping+=("$n:$pid")
    else
      rm -f "$(pid_file "$n")"
      echo "node $n not running"
    fi
  done
  local deadline=$((SECONDS + STOP_TIMEOUT)) entry
  for entry in "${stopping[@]}"; do
    n=${entry%%:*}
    pid=${entry#*:}
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "node $n (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    else
      echo "node $n stopped"
    fi
    rm -f "$(pid_file "$n")"
  done
}

status() {
  local n pid port any=0 bin
  for n in "${NODES[@]}"; do
    port=$((9090 + 2 * n))
    if pid=$(running_pid "$n"); then
      any=1
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "node $n: running (pid $pid), serving on 127.0.0.1:$port"
      else
        echo "node $n: running (pid $pid), not yet serving on 127.0.0.1:$port"
      fi
    else
      echo "node $n: stopped"
    fi
  done
  bin=$(binary)
  if [ "$any" = 1 ] && [ -x "$bin" ]; then
    echo
    # Brokers, controller and partition health as the cluster reports them (exit code 6 means
    # unhealthy: fenced brokers or under-replicated partitions).
    "$bin" cluster info -b "$BROKERS" || true
  fi
  [ "$any" = 1 ]
}

[ "$#" -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  status) status ;;
  *) usage ;;
esac
