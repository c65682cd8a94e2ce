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
bash "$(dirname "$0")/apt_install.sh" --no-recommends install_java \
    "please install a Java runtime, version 17 or newer (pyspark needs it)" \
    openjdk-17-jre-headless
java -version 2>&1 | head -1
