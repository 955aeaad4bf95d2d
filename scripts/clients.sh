#!/usr/bin/env bash
# Installs the real Kafka clients the broker tests drive into a private virtualenv:
#   kafka-python   (an independent pure-Python implementation of the protocol)
#   confluent-kafka (Python bindings over librdkafka; the wheel bundles librdkafka)
# and kafkajs (an independent JavaScript implementation) into a private node_modules next to it,
# for the admin APIs neither Python client has (partition reassignment).
# Prints the venv's python path on its last line. Idempotent and quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FJORD_CLIENTS_VENV:-target/fjord-clients/venv}
KAFKA_PYTHON=kafka-python==3.0.12
CONFLUENT_KAFKA=confluent-kafka==2.16.1
# Codecs kafka-python needs for snappy, lz4 and zstd (gzip is built in).
CODECS="python-snappy==0.7.3 lz4==4.4.4 zstandard==0.23.0"
KAFKAJS=kafkajs@2.2.4
NODE_DIR=${FJORD_CLIENTS_NODE:-target/fjord-clients/node}
stamp="$VENV/.fjord-clients-$KAFKA_PYTHON-$CONFLUENT_KAFKA-${CODECS// /-}"

mkdir -p "$(dirname "$VENV")"
# Test binaries may call this concurrently; one installs, the others wait.
exec 9>"$VENV.lock"
flock 9
if [ ! -f "$stamp" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$KAFKA_PYTHON" "$CONFLUENT_KAFKA" $CODECS >&2
  # Fail here, not in a test, if either client cannot load.
  "$VENV/bin/python" -c 'import kafka, confluent_kafka, snappy, lz4.frame, zstandard; print("kafka-python", kafka.__version__, "librdkafka", confluent_kafka.libversion()[0])' >&2
  touch "$stamp"
fi
node_stamp="$NODE_DIR/.fjord-clients-$KAFKAJS"
if [ ! -f "$node_stamp" ]; then
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent "$KAFKAJS" >&2
  NODE_PATH="$NODE_DIR/node_modules" node -e 'require("kafkajs")' >&2
  touch "$node_stamp"
fi
echo "$(cd "$VENV" && pwd)/bin/python"
