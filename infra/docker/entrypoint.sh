#!/usr/bin/env bash
# Entrypoint of the LoRI service image. The first argument picks the role; one line per role
# (tests/test_infra_images.py parses these lines and checks each command exists in the package).
#
#   serve [FLAGS]        the coordinator: `lori serve`; store, database and Ray address come from
#                        LORI_STORE_URL, LORI_DB and LORI_RAY_ADDRESS
#   ray-head [FLAGS]     the Ray head: GCS on 6379, dashboard on 8265, Ray client server on 10001
#   ray-worker [FLAGS]   a Ray worker joining RAY_HEAD_ADDRESS (host:6379); GPUs are detected, or
#                        set RAY_NUM_GPUS
#   lori ARGS...         any CLI command, e.g. `lori schedule trigger NAME --server HOST:PORT`
#   anything else        executed as given
set -euo pipefail

role="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$role" in
  serve) exec lori serve --host "${LORI_HOST:-0.0.0.0}" --port "${LORI_PORT:-50051}" "$@" ;;
  ray-head) exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --ray-client-server-port=10001 --disable-usage-stats "$@" --block ;;
  ray-worker) exec ray start --address="${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS=host:6379}" ${RAY_NUM_GPUS:+--num-gpus="$RAY_NUM_GPUS"} --disable-usage-stats "$@" --block ;;
  lori) exec lori "$@" ;;
  *) exec "$role" "$@" ;;
esac
