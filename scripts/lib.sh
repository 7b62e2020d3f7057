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

# Starts a private PostgreSQL (temporary data directory, free loopback port, password auth,
# durability off unless PG_FSYNC=on: it only ever holds test data) as the `postgres` system user when run as root,
# since PostgreSQL refuses to run as root. Sets PG_PORT, PG_DIR, PG_BIN, PG_PASSWORD and
# POSTGRES_URL; the caller stops it with stop_postgres.
start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR=$(mktemp -d /tmp/idemproxy-pg.XXXXXX)
  PG_PORT=$(free_port)
  PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  # Known before anything can fail, so that stop_postgres stops what did start.
  PG_AS="${as[*]}"
  echo "$PG_PASSWORD" >"$PG_DIR/pwfile"
  chmod 644 "$PG_DIR/pwfile"
  "${as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=scram-sha-256 --pwfile="$PG_DIR/pwfile" \
    -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$PG_DIR/pwfile"
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 30 start \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-off} -c full_page_writes=${PG_FSYNC:-off} -c max_connections=200" \
    >/dev/null || { cat "$PG_DIR/postgres.log" >&2; return 1; }
  POSTGRES_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
}

# Starts Debian's PgBouncer in front of the PostgreSQL that start_postgres started, as
# production stacks reach PostgreSQL: transaction pooling and otherwise its default settings.
# It refuses to run as root, so it runs as the postgres user, with an auth file for the test
# role. Sets PGBOUNCER_PORT, PGBOUNCER_PID and PGBOUNCER_URL; stop_postgres stops it.
start_pgbouncer() {
  PGBOUNCER_PORT=$(free_port)
  cat >"$PG_DIR/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PG_DIR/userlist.txt
pool_mode = transaction
max_client_conn = 2000
logfile = $PG_DIR/pgbouncer.log
INI
  printf '"postgres" "%s"\n' "$PG_PASSWORD" >"$PG_DIR/userlist.txt"
  chmod 600 "$PG_DIR/userlist.txt"
  [[ $(id -u) -eq 0 ]] && chown postgres "$PG_DIR/pgbouncer.ini" "$PG_DIR/userlist.txt"
  $PG_AS /usr/sbin/pgbouncer "$PG_DIR/pgbouncer.ini" >/dev/null 2>&1 &
  PGBOUNCER_PID=$!
  wait_for_port "$PGBOUNCER_PORT" || { cat "$PG_DIR/pgbouncer.log" >&2; return 1; }
  PGBOUNCER_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PGBOUNCER_PORT/postgres"
}

# Stops the server start_postgres started, if any, and removes its data.
stop_postgres() {
  [[ -n ${PG_DIR:-} ]] || return 0
  if [[ -n ${PGBOUNCER_PID:-} ]]; then
    stop_pids "$PGBOUNCER_PID"
    pkill -KILL -f "$PG_DIR/pgbouncer.ini" 2>/dev/null || true
  fi
  if [[ -f $PG_DIR/data/postmaster.pid ]]; then
    ${PG_AS:-} "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}

# Makes a throwaway CA and a server certificate it signed for 127.0.0.1 and localhost in $1:
# ca.pem, server.pem, server.key (for benchmarks over TLS; never committed).
make_certificates() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
}
