#!/usr/bin/env bash
# Shared helpers for scripts/test, scripts/demo and scripts/bench. Source it; do not run it.

# Installs the Debian packages named that are not installed yet (apt-get update only if needed).
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "${missing[@]}" >&2 ||
    { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q "${missing[@]}" >&2; }
}

# Prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something accepts connections on 127.0.0.1:$1 (at most ~10 s).
wait_for_port() {
  local port=$1 i
  for ((i = 0; i < 200; i++)); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing is listening on 127.0.0.1:$port" >&2
  return 1
}

# Starts a private redis-server (no persistence, temporary directory) on a free port.
# Sets REDIS_PORT and REDIS_PID; the caller stops it with stop_pids.
start_redis() {
  local dir=$1
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --daemonize no >/dev/null 2>&1 &
  REDIS_PID=$!
  wait_for_port "$REDIS_PORT"
}

# Stops the processes whose PIDs are given, politely first.
stop_pids() {
  local pid
  for pid in "$@"; do [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do [[ -n $pid ]] && wait "$pid" 2>/dev/null || true; done
}
