#!/usr/bin/env bash
# Installs the system programs notice-bus's local components need, when they are missing:
#   kafka     Java 17+ and Maven (the local broker runs Kafka's official jars)
#   postgres  PostgreSQL's server binaries (the tests start a throwaway cluster)
#   chromium  a headless browser, in which the tests render the HTML report and dashboard
#   promtool  Prometheus's checker (Debian's prometheus package), with which the tests check
#             the metrics endpoints and the example alert rules
# Skipped for Kafka when KAFKA_BOOTSTRAP_SERVERS names a cluster, and for PostgreSQL when
# NOTICE_BUS_TEST_DATABASE_URL names a server. Uses apt-get when run as root on Debian/Ubuntu;
# otherwise says what to install.
set -euo pipefail

need=()
for what in "$@"; do
  case "$what" in
    kafka)
      [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && continue
      java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1 || true)
      if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
      command -v mvn >/dev/null || need+=(maven)
      ;;
    postgres)
      [ -n "${NOTICE_BUS_TEST_DATABASE_URL:-}" ] && continue
      if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        need+=(postgresql)
      fi
      ;;
    chromium)
      command -v chromium >/dev/null || need+=(chromium)
      ;;
    promtool)
      command -v promtool >/dev/null || need+=(prometheus)
      ;;
    *) echo "system-deps: unknown component $what" >&2; exit 2 ;;
  esac
done

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts a cluster of its own on install; the tests start theirs on free ports.
  if [[ " ${need[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null; then
    service postgresql stop >/dev/null 2>&1 || true
  fi
  # Only promtool is wanted: stop the server the package starts (port 9090) and keep it off.
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    service prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
else
  echo "notice-bus needs: ${need[*]} (install them with your package manager)," >&2
  echo "or point KAFKA_BOOTSTRAP_SERVERS / NOTICE_BUS_TEST_DATABASE_URL at existing servers." >&2
  exit 1
fi
