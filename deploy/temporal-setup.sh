#!/bin/sh
# The namespace orderflow runs in, and the search attributes its sagas publish, registered if missing.
# ORDERFLOW_SEARCH_ATTRIBUTES is "Name=Type ..." (the compose file keeps it equal to orderflow/temporal.py).
# Idempotent: a second run finds everything and changes nothing.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${ORDERFLOW_SEARCH_ATTRIBUTES:?}"
export TEMPORAL_ADDRESS

attempt=0
until temporal operator cluster health >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "Temporal at $TEMPORAL_ADDRESS is not serving after $attempt attempts" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $TEMPORAL_NAMESPACE exists"
else
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention "${NAMESPACE_RETENTION:-30d}"
  echo "namespace $TEMPORAL_NAMESPACE created"
fi

existing=$(temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE")
for pair in $ORDERFLOW_SEARCH_ATTRIBUTES; do
  name=${pair%%=*}
  type=${pair#*=}
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "$type"
    echo "search attribute $name ($type) created"
  fi
done
