#!/bin/sh
# Brings Temporal's persistence and visibility schemas to the versions this admin-tools image ships
# (the same tag as the server). Run on every start: update-schema applies only what is missing, so an
# upgrade of both images is this one-shot followed by the server.
set -eu

for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir=temporal ;;
    *) dir=visibility ;;
  esac
  # Creates the schema_version bookkeeping on a fresh database; on one already set up it reports the
  # tables exist, which is the state we want, so its failure alone does not stop the setup.
  temporal-sql-tool --db "$db" setup-schema -v 0.0 || echo "schema bookkeeping of $db already present"
  temporal-sql-tool --db "$db" update-schema -d "/etc/temporal/schema/postgresql/v12/$dir/versioned"
done
echo "Temporal schemas are current"
