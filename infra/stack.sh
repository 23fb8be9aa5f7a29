#!/usr/bin/env bash
# Starts/stops the local stack on 127.0.0.1 with all state under var/ (git-ignored):
#   kafka (single-node KRaft), registry (Apicurio, Confluent-compatible API), clickhouse,
#   prometheus (scrapes the metering job's Flink reporter and `python -m meterflow.cli.exporter`),
#   `meterflow load` (the JVM job's output topics -> ClickHouse) and `meterflow serve` (the HTTP
#   API). `up` starts the first four; the loader and the API need the topics and tables
#   (`meterflow init`), so `make up` starts them after that with `start loader`, `start api`.
# usage: infra/stack.sh up|down|status|start NAME|stop NAME  (NAME: clickhouse, kafka, registry,
#   prometheus, loader, api; start/stop one service, e.g. the loader's ClickHouse-outage test)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/infra/versions.env"
# shellcheck source=ports.env
source "$ROOT/infra/ports.env"
BUILD="$ROOT/build"
VAR="${METERFLOW_VAR:-$ROOT/var}"
RUN="$VAR/run" LOGS="$VAR/log"
mkdir -p "$RUN" "$LOGS"

log() { printf '[stack] %s\n' "$*"; }
fail() { # fail NAME WHY LOGFILE
  printf '[stack] ERROR: %s %s; read %s\n' "$1" "$2" "$3" >&2
  tail -n 20 "$3" >&2 || true
  exit 1
}
pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
# wait_for NAME TIMEOUT LOGFILE CHECK...
wait_for() {
  local name="$1" timeout="$2" logfile="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$name" || fail "$name" "exited during start-up" "$logfile"
    [ $SECONDS -lt $deadline ] || fail "$name" "did not become healthy within ${timeout}s" "$logfile"
    sleep 0.5
  done
  log "$name healthy"
}
render() { # render TEMPLATE OUT KEY=VALUE...
  local tpl="$1" out="$2"; shift 2
  local content; content="$(cat "$tpl")"
  for kv in "$@"; do content="${content//@${kv%%=*}@/${kv#*=}}"; done
  printf '%s\n' "$content" > "$out"
}
need() { [ -e "$1" ] || { echo "[stack] $1 is missing: run 'make setup' first" >&2; exit 1; }; }

# The local stack's credentials (meterflow/credentials.py reads them): one random password per
# principal in var/secrets/NAME, generated once, readable by this user only, never committed.
SECRETS="${METERFLOW_SECRETS:-$VAR/secrets}"
secret() { # secret NAME -> prints the password, creating it on first use
  local f="$SECRETS/$1"
  if [ ! -s "$f" ]; then
    mkdir -p "$SECRETS" && chmod 700 "$SECRETS"
    (umask 077 && openssl rand -hex 24 > "$f")
  fi
  cat "$f"
}

sha256_secret() { secret "$1" | tr -d '\n' | sha256sum | cut -d' ' -f1; }

clickhouse_ok() { curl -sf "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping"; }
registry_ok() { curl -sf "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects"; }
prometheus_ok() { curl -sf "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"; }
kafka_ok() { # as the operator: the broker refuses anyone without credentials
  "$ROOT/.venv/bin/python" - <<'PY'
import sys
from confluent_kafka.admin import AdminClient
from meterflow.settings import Settings
settings = Settings()
md = AdminClient(settings.kafka_config("operator")).list_topics(timeout=2)
sys.exit(0 if len(md.brokers) >= settings.kafka_brokers else 1)
PY
}

# A local CA and the broker's certificate (127.0.0.1 and localhost; for serving and for the
# broker's own connections to its controller), generated once under var/secrets/.
ensure_tls() {
  local ca="$SECRETS/ca.crt" p12="$SECRETS/kafka-broker.p12"
  [ -s "$ca" ] && [ -s "$p12" ] && return
  local tmp; tmp="$(mktemp -d)"
  secret kafka-keystore >/dev/null
  (umask 077
   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=meterflow local CA" \
     -keyout "$SECRETS/ca.key" -out "$ca" 2>"$tmp/log"
   openssl req -newkey rsa:2048 -nodes -subj "/CN=meterflow-broker" \
     -keyout "$tmp/broker.key" -out "$tmp/broker.csr" 2>>"$tmp/log"
   printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$tmp/ext"
   openssl x509 -req -in "$tmp/broker.csr" -CA "$ca" -CAkey "$SECRETS/ca.key" -CAcreateserial \
     -days 3650 -extfile "$tmp/ext" -out "$tmp/broker.crt" 2>>"$tmp/log"
   openssl pkcs12 -export -inkey "$tmp/broker.key" -in "$tmp/broker.crt" -certfile "$ca" \
     -name broker -passout "file:$SECRETS/kafka-keystore" -out "$p12" 2>>"$tmp/log"
  ) || fail kafka "certificate generation failed" "$tmp/log"
  rm -rf "$tmp"
  log "generated a local CA and the broker's certificate in $SECRETS"
}

start_clickhouse() {
  if pid_alive clickhouse && clickhouse_ok >/dev/null 2>&1; then log "clickhouse already up"; return; fi
  need /usr/sbin/clickhouse-server
  local data="$VAR/clickhouse" conf="$VAR/clickhouse-conf"
  mkdir -p "$data/tmp" "$data/user_files" "$conf"
  render "$ROOT/infra/clickhouse/config.xml.in" "$conf/config.xml" \
    DATA_DIR="$data" LOG_DIR="$LOGS" CONF_DIR="$conf" CLICKHOUSE_PORT="$CLICKHOUSE_PORT" \
    CLICKHOUSE_HTTP_PORT="$CLICKHOUSE_HTTP_PORT" CLICKHOUSE_INTERSERVER_PORT="$CLICKHOUSE_INTERSERVER_PORT"
  # each ClickHouse user's password is its principal's secret, stored as a SHA-256 hash
  (umask 077 && render "$ROOT/infra/clickhouse/users.xml.in" "$conf/users.xml" \
    CONF_DIR="$conf" DATABASE="${METERFLOW_DB:-meterflow}" \
    ADMIN_SHA256="$(sha256_secret clickhouse-admin)" \
    MIGRATE_SHA256="$(sha256_secret clickhouse-migrate)" \
    LOADER_SHA256="$(sha256_secret clickhouse-loader)" \
    CLOSE_SHA256="$(sha256_secret clickhouse-close)" \
    READER_SHA256="$(sha256_secret clickhouse-reader)" \
    DASHBOARDS_SHA256="$(sha256_secret clickhouse-dashboards)" \
    KEYS_SHA256="$(sha256_secret clickhouse-keys)" \
    SCRATCH_WRITER_SHA256="$(sha256_secret clickhouse-scratch-writer)" \
    SCRATCH_READER_SHA256="$(sha256_secret clickhouse-scratch-reader)" &&
    chmod 600 "$conf/users.xml")  # an existing file keeps its mode through the umask
  (cd "$data" && exec /usr/sbin/clickhouse-server --config-file="$conf/config.xml" \
    >"$LOGS/clickhouse.out" 2>&1) &
  echo $! > "$RUN/clickhouse.pid"
  wait_for clickhouse 60 "$LOGS/clickhouse.err.log" clickhouse_ok
}

# KAFKA_BROKERS=1 (default): one node, ports KAFKA_PORT / KAFKA_CONTROLLER_PORT, data in
# var/kafka. KAFKA_BROKERS=3: nodes 1-3, node N on KAFKA_PORT+2(N-1) / KAFKA_CONTROLLER_PORT+2(N-1),
# data in var/kafka-N, pid files kafka-N; every topic has 3 replicas, min.insync.replicas 2.
KAFKA_BROKERS="${KAFKA_BROKERS:-1}"
case "$KAFKA_BROKERS" in 1|3) ;; *) echo "[stack] KAFKA_BROKERS: 1 or 3, got $KAFKA_BROKERS" >&2; exit 2 ;; esac
kafka_nodes() { if [ "$KAFKA_BROKERS" = 1 ]; then echo kafka; else seq -f 'kafka-%g' 1 "$KAFKA_BROKERS"; fi; }
kafka_node_id() { case "$1" in kafka) echo 1 ;; *) echo "${1#kafka-}" ;; esac; }

start_kafka() {
  ensure_tls
  local role
  for role in operator producer job loader alerts; do secret "kafka-$role" >/dev/null; done
  local node all_up=1
  for node in $(kafka_nodes); do pid_alive "$node" || all_up=""; done
  if [ -n "$all_up" ] && kafka_ok; then log "kafka already up ($KAFKA_BROKERS broker(s))"; return; fi
  local home="$BUILD/kafka-$KAFKA_VERSION" voters="" n
  need "$home/.installed"
  for n in $(seq 1 "$KAFKA_BROKERS"); do
    voters+="${voters:+,}$n@127.0.0.1:$((KAFKA_CONTROLLER_PORT + 2 * (n - 1)))"
  done
  local replication=1 min_isr=1
  if [ "$KAFKA_BROKERS" = 3 ]; then replication=3 min_isr=2; fi
  local java=(java -cp "$home/libs/*" "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.properties")
  local cluster_id=""
  for node in $(kafka_nodes); do
    local id data conf; id="$(kafka_node_id "$node")" data="$VAR/$node" conf="$VAR/$node-conf"
    if pid_alive "$node"; then continue; fi
    mkdir -p "$data" "$conf" && chmod 700 "$conf"
    (umask 077 && render "$ROOT/infra/kafka/server.properties.in" "$conf/server.properties" \
      DATA_DIR="$data" NODE_ID="$id" VOTERS="$voters" \
      KAFKA_PORT="$((KAFKA_PORT + 2 * (id - 1)))" \
      KAFKA_CONTROLLER_PORT="$((KAFKA_CONTROLLER_PORT + 2 * (id - 1)))" \
      REPLICATION="$replication" MIN_ISR="$min_isr" \
      BROKER_PASSWORD="$(secret kafka-broker)" KEYSTORE="$SECRETS/kafka-broker.p12" \
      KEYSTORE_PASSWORD="$(secret kafka-keystore)" CA_FILE="$SECRETS/ca.crt")
    if [ -f "$data/meta.properties" ] && [ ! -f "$data/.scram" ]; then
      fail kafka "data in $data predates authentication (no SCRAM users): delete it (local data only) and start again" "$data/meta.properties"
    fi
    if [ ! -f "$data/meta.properties" ]; then
      # One cluster id for all nodes. The broker's and the operator's SCRAM credentials go into
      # the first metadata; the other principals are created by the operator (`meterflow init`:
      # connectors.kafka_admin).
      if [ -z "$cluster_id" ]; then
        cluster_id="$(sed -n 's/^cluster.id=//p' "$VAR"/kafka*/meta.properties 2>/dev/null | head -n1 || true)"
        [ -n "$cluster_id" ] || cluster_id="$("${java[@]}" kafka.tools.StorageTool random-uuid)"
      fi
      "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$conf/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=broker,password=$(secret kafka-broker)]" \
        --add-scram "SCRAM-SHA-512=[name=operator,password=$(secret kafka-operator)]" \
        >"$LOGS/$node-format.log" 2>&1 || fail "$node" "storage format failed" "$LOGS/$node-format.log"
      touch "$data/.scram"
    fi
    "${java[@]}" -Xms256m -Xmx${KAFKA_HEAP:-768m} -XX:+UseG1GC kafka.Kafka "$conf/server.properties" \
      >"$LOGS/$node.log" 2>&1 &
    echo $! > "$RUN/$node.pid"
  done
  # a quorum of three needs two nodes up before any of them serves: wait for all at once
  local deadline=$((SECONDS + 120))
  until kafka_ok >/dev/null 2>&1; do
    for node in $(kafka_nodes); do pid_alive "$node" || fail "$node" "exited during start-up" "$LOGS/$node.log"; done
    [ $SECONDS -lt $deadline ] || fail kafka "did not become healthy within 120s" "$LOGS/$(kafka_nodes | head -n1).log"
    sleep 0.5
  done
  log "kafka healthy ($KAFKA_BROKERS broker(s))"
}

# All nodes at once: stopped one after the other, the last would wait for a quorum to shut down.
stop_kafka() {
  local node pids=()
  for node in $(kafka_nodes); do stop "$node" & pids+=($!); done
  wait "${pids[@]}"
}

start_registry() {
  if pid_alive registry && registry_ok >/dev/null 2>&1; then log "registry already up"; return; fi
  local jar="$BUILD/apicurio-$APICURIO_VERSION/apicurio-registry-app-$APICURIO_VERSION-runner.jar"
  need "$jar"
  mkdir -p "$VAR/registry"
  # H2 in a file keeps schema ids stable across restarts: records already in Kafka carry those ids.
  (cd "$VAR/registry" && exec java -Xms128m -Xmx${REGISTRY_HEAP:-384m} \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dapicurio.datasource.url="jdbc:h2:file:$VAR/registry/db;DB_CLOSE_ON_EXIT=FALSE" \
    -jar "$jar" >"$LOGS/registry.log" 2>&1) &
  echo $! > "$RUN/registry.pid"
  wait_for registry 120 "$LOGS/registry.log" registry_ok
}

# Renders the scrape config (and copies the rules next to it) into var/prometheus-conf/.
# Prints "changed" when either differs from what is there.
render_prometheus() {
  local conf="$1" lo="${FLINK_PROM_PORTS%-*}" hi="${FLINK_PROM_PORTS#*-}" targets="" p
  for p in $(seq "$lo" "$hi"); do targets+="${targets:+, }\"127.0.0.1:$p\""; done
  mkdir -p "$conf"
  render "$ROOT/infra/prometheus/prometheus.yml.in" "$conf/prometheus.yml.new" \
    RULES_FILE="$conf/rules.yml" FLINK_TARGETS="$targets" PROMETHEUS_PORT="$PROMETHEUS_PORT" \
    METERFLOW_EXPORTER_PORT="$METERFLOW_EXPORTER_PORT" METERFLOW_LOADER_PORT="$METERFLOW_LOADER_PORT"
  cp "$ROOT/infra/prometheus/rules.yml" "$conf/rules.yml.new"
  local f changed=""
  for f in prometheus.yml rules.yml; do
    if ! cmp -s "$conf/$f.new" "$conf/$f"; then mv "$conf/$f.new" "$conf/$f"; changed=1
    else rm -f "$conf/$f.new"; fi
  done
  if [ -n "$changed" ]; then echo changed; fi
}

start_prometheus() {
  need /usr/bin/prometheus
  local data="$VAR/prometheus" conf="$VAR/prometheus-conf" changed
  changed="$(render_prometheus "$conf")"
  if pid_alive prometheus && prometheus_ok >/dev/null 2>&1; then
    if [ -n "$changed" ]; then
      /usr/bin/promtool check config "$conf/prometheus.yml" >"$LOGS/prometheus-check.log" 2>&1 ||
        fail prometheus "rejects the new config" "$LOGS/prometheus-check.log"
      kill -HUP "$(cat "$RUN/prometheus.pid")"
      log "prometheus already up; config or rules changed: reloaded"
    else
      log "prometheus already up"
    fi
    return
  fi
  mkdir -p "$data"
  /usr/bin/prometheus --config.file="$conf/prometheus.yml" --storage.tsdb.path="$data" \
    --storage.tsdb.retention.time=7d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    >"$LOGS/prometheus.log" 2>&1 &
  echo $! > "$RUN/prometheus.pid"
  wait_for prometheus 60 "$LOGS/prometheus.log" prometheus_ok
}

loader_ok() { curl -sf "http://127.0.0.1:$METERFLOW_LOADER_PORT/metrics"; }

start_loader() {
  if pid_alive loader && loader_ok >/dev/null 2>&1; then log "loader already up"; return; fi
  need "$ROOT/.venv/bin/python"
  # the default topics into the default database; Prometheus scrapes its metrics port
  (cd "$ROOT" && exec "$ROOT/.venv/bin/python" -m meterflow.cli load \
    --metrics-port "$METERFLOW_LOADER_PORT") >>"$LOGS/loader.log" 2>&1 &
  echo $! > "$RUN/loader.pid"
  wait_for loader 60 "$LOGS/loader.log" loader_ok
}

api_ok() { curl -sf "http://127.0.0.1:$METERFLOW_API_PORT/health"; }

# `meterflow serve`, the HTTP API; like the loader it needs `meterflow init` first (topics,
# principals, tables), so `make up` starts it last
start_api() {
  if pid_alive api && api_ok >/dev/null 2>&1; then log "api already up"; return; fi
  need "$ROOT/.venv/bin/python"
  (cd "$ROOT" && exec "$ROOT/.venv/bin/python" -m meterflow.cli serve \
    --port "$METERFLOW_API_PORT") >>"$LOGS/api.log" 2>&1 &
  echo $! > "$RUN/api.pid"
  wait_for api 60 "$LOGS/api.log" api_ok
}

stop() { # stop NAME
  local name="$1"
  if ! pid_alive "$name"; then rm -f "$RUN/$name.pid"; return; fi
  local pid; pid="$(cat "$RUN/$name.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30s; killing"; kill -9 "$pid" || true; fi
  rm -f "$RUN/$name.pid"
  log "$name stopped"
}

case "${1:-}" in
  up)
    # the registry is independent of the others but the slowest to boot, so it goes last.
    start_clickhouse
    start_kafka
    start_registry
    start_prometheus
    ;;
  down)
    stop api; stop loader; stop prometheus; stop registry; stop_kafka; stop clickhouse ;;
  status)
    for s in clickhouse $(kafka_nodes) registry prometheus loader api; do
      if pid_alive "$s"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
    done ;;
  start|stop)
    case "${2:-}" in
      clickhouse|kafka|registry|prometheus|loader|api)
        if [ "$1" = start ]; then "start_$2"; elif [ "$2" = kafka ]; then stop_kafka; else stop "$2"; fi ;;
      *) echo "usage: $0 $1 clickhouse|kafka|registry|prometheus|loader|api" >&2; exit 2 ;;
    esac ;;
  *) echo "usage: $0 up|down|status|start NAME|stop NAME" >&2; exit 2 ;;
esac
