#!/usr/bin/env bash
# Installs a Java runtime (17 or newer) for the Spark test of the Python package
# (python/tests/test_spark.py runs crosspool.spark in a local-mode pyspark session, and
# pyspark 4 needs Java 17). Debian/Ubuntu only; elsewhere it says what to install. Safe to
# run again.
set -euo pipefail
version() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if command -v java >/dev/null 2>&1 && [ "$(version)" -ge 17 ] 2>/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_java: please install a Java runtime, version 17 or newer (pyspark needs it)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "install_java: installing openjdk-17-jre-headless" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
java -version 2>&1 | head -1
