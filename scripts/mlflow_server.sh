#!/usr/bin/env bash
# Team MLflow tracking server (`make mlflow-server`): PostgreSQL backend store, artifacts
# proxied by the server (clients need no storage credentials), bound to 127.0.0.1 unless
# MLFLOW_HOST says otherwise. Clients log to it with MLFLOW_TRACKING_URI=http://HOST:PORT.
#
# Credentials come from the environment and never reach the command line or the log:
#   MLFLOW_BACKEND_STORE_URI  full SQLAlchemy URL (read by `mlflow server` itself), or
#   PGHOST PGPORT PGUSER PGDATABASE (+ PGPASSWORD or ~/.pgpass, read by libpq) to build it.
#   MLFLOW_ARTIFACTS_DESTINATION  where the proxied artifacts live (default ./mlartifacts-server;
#                                 s3://bucket/... with the cloud SDK's own credentials).
set -euo pipefail
export MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export MLFLOW_ARTIFACTS_DESTINATION="${MLFLOW_ARTIFACTS_DESTINATION:-./mlartifacts-server}"
if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  # No password in the URL: libpq takes it from PGPASSWORD / ~/.pgpass.
  export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://${PGUSER:-mlflow}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/${PGDATABASE:-mlflow}"
fi
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql*) ;;
  *) echo "error: MLFLOW_BACKEND_STORE_URI must be a postgresql:// URL (the team server's backend)" >&2; exit 2 ;;
esac
BIN="$(dirname "$0")/../.venv/bin"
MLFLOW="$BIN/mlflow"; [ -x "$MLFLOW" ] || MLFLOW=mlflow
# The URL as printed: user and host only, password masked by the project's one redaction.
SHOWN="$("$BIN/python" -c 'import os; from img2spec.logs import redact_text; print(redact_text(os.environ["MLFLOW_BACKEND_STORE_URI"]))' 2>/dev/null || echo '(backend from MLFLOW_BACKEND_STORE_URI)')"
echo "MLflow server on http://$MLFLOW_HOST:$MLFLOW_PORT (backend $SHOWN, artifacts $MLFLOW_ARTIFACTS_DESTINATION)"
echo "clients: export MLFLOW_TRACKING_URI=http://$MLFLOW_HOST:$MLFLOW_PORT"
# Options travel as environment variables (MLFLOW_BACKEND_STORE_URI, ...), not argv: `ps` shows no secret.
exec "$MLFLOW" server --serve-artifacts --workers "${MLFLOW_WORKERS:-2}"
