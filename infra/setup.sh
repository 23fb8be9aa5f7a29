#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine; idempotent and cached.
#   - Debian packages: clickhouse-server/client, prometheus (+ promtool)
#   - the project virtualenv (.venv) with pinned Python dependencies
#   - Flink SQL jars, the Kafka broker jars and the Apicurio registry from Maven Central
# Nothing is downloaded at test or job run time beyond what this script fetches.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/infra/versions.env"
BUILD="$ROOT/build"
PY="${PYTHON:-python3.11}"
mkdir -p "$BUILD"

log() { printf '[setup] %s\n' "$*"; }

apt_packages() {
  local want=(
    "clickhouse-server=$CLICKHOUSE_DEB_VERSION" "clickhouse-client=$CLICKHOUSE_DEB_VERSION"
    "prometheus=$PROMETHEUS_DEB_VERSION"
  )
  local missing=()
  for spec in "${want[@]}"; do
    local name="${spec%%=*}" version="${spec#*=}"
    if [ "$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null)" != "install ok installed $version" ]; then
      missing+=("$spec")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then log "debian packages present"; return; fi
  log "installing debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "[setup] need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
  local stamp="$ROOT/.venv/.installed" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then log "python env up to date"; return; fi
  log "creating/updating .venv"
  [ -x "$ROOT/.venv/bin/python" ] || "$PY" -m venv "$ROOT/.venv"
  # pip's build chatter goes to a log; it is shown only when the install fails
  local pip_log="$BUILD/pip-install.log"
  if ! { "$ROOT/.venv/bin/pip" install -q --upgrade pip &&
         "$ROOT/.venv/bin/pip" install -q -e "$ROOT[dev]"; } >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2
    echo "[setup] pip install failed; full log: $pip_log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
}

# mvn_copy GROUP:ARTIFACT:VERSION[:TYPE[:CLASSIFIER]] DEST_DIR FILE_NAME
mvn_copy() {
  local coords="$1" dest="$2" file="$3"
  if [ -f "$dest/$file" ]; then return; fi
  log "fetching $coords"
  mkdir -p "$dest"
  mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$coords" -DoutputDirectory="$dest" -Dmdep.overWriteIfNewer=true
  [ -f "$dest/$file" ] || { echo "[setup] $coords did not produce $dest/$file" >&2; exit 1; }
}

flink_jars() {
  local dest="$BUILD/flink-jars"
  mvn_copy "org.apache.flink:flink-sql-connector-kafka:$FLINK_KAFKA_CONNECTOR_VERSION" "$dest" \
    "flink-sql-connector-kafka-$FLINK_KAFKA_CONNECTOR_VERSION.jar"
  mvn_copy "org.apache.flink:flink-sql-avro-confluent-registry:$FLINK_VERSION" "$dest" \
    "flink-sql-avro-confluent-registry-$FLINK_VERSION.jar"
  log "flink jars present"
}

# The JVM functions of the metering job (java/, docs/decisions/0009), into build/flink-jars where
# the job loads every jar. Rebuilt only when java/pom.xml or java/src change (stamp = their
# sha256). The JUnit tests run in `make test` (make java-test, offline): surefire's JUnit provider
# is fetched here so that run needs nothing from the network.
java_functions() {
  local dest="$BUILD/flink-jars" jar="meterflow-flink-functions-0.1.0.jar"
  local stamp="$BUILD/java-functions.sha256" want
  want="$(cd "$ROOT/java" && find pom.xml src -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
  if [ -f "$dest/$jar" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "java functions up to date"; return
  fi
  log "building java functions"
  mvn -q -B -Dstyle.color=never -f "$ROOT/java/pom.xml" package -DskipTests
  mvn -q -B -Dstyle.color=never -f "$ROOT/java/pom.xml" dependency:get \
    -Dartifact=org.apache.maven.surefire:surefire-junit-platform:3.5.2
  cp "$ROOT/java/target/$jar" "$dest/$jar"
  echo "$want" > "$stamp"
}

# Prometheus metrics reporter of the metering job.
# A local mini-cluster loads metric reporters from its JVM classpath only, not from plugins/
# (a standalone cluster does), so the reporter PyFlink ships under plugins/ is copied into
# pyflink/lib, which the PyFlink gateway puts on that classpath. Idempotent.
flink_prometheus_reporter() {
  local home jar
  home="$("$ROOT/.venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
  jar="$home/plugins/metrics-prometheus/flink-metrics-prometheus-$FLINK_VERSION.jar"
  [ -f "$jar" ] || { echo "[setup] $jar is missing" >&2; exit 1; }
  [ -f "$home/lib/${jar##*/}" ] || cp "$jar" "$home/lib/"
  log "flink prometheus reporter present"
}

kafka_broker() {
  local dest="$BUILD/kafka-$KAFKA_VERSION" want
  want="$(sha256sum "$ROOT/infra/maven/kafka-pom.xml" | cut -d' ' -f1)"
  if [ "$(cat "$dest/.installed" 2>/dev/null)" = "$want" ]; then
    log "kafka $KAFKA_VERSION present"; return
  fi
  log "resolving kafka_2.13:$KAFKA_VERSION and its runtime dependencies"
  rm -rf "$dest"
  KAFKA_VERSION="$KAFKA_VERSION" mvn -q -B -Dstyle.color=never -f "$ROOT/infra/maven/kafka-pom.xml" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs"
  echo "$want" > "$dest/.installed"
}

registry() {
  local dest="$BUILD/apicurio-$APICURIO_VERSION"
  if [ -f "$dest/.installed" ]; then log "apicurio registry $APICURIO_VERSION present"; return; fi
  mvn_copy "io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" "$BUILD/dl" \
    "apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  rm -rf "$dest" && mkdir -p "$dest"
  tar xzf "$BUILD/dl/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$dest"
  touch "$dest/.installed"
}

apt_packages
python_env
flink_jars
java_functions
flink_prometheus_reporter
kafka_broker
registry
log "done"
