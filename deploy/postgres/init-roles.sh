#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is initialised (mounted in /docker-entrypoint-initdb.d;
# the entrypoint ignores the .psql file next to it). Creates one role per service, each owning
# only its own schema, and takes from everyone else the default rights on the database.
set -euo pipefail

sql() { psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"; }

# No one but the owner and the roles granted below may connect, create schemas or use `public`.
sql -c "REVOKE ALL ON DATABASE \"$POSTGRES_DB\" FROM PUBLIC" -c "REVOKE ALL ON SCHEMA public FROM PUBLIC"

# role:schema:password (the schemas carry CONTACTS_NAMESPACE, empty in this deployment).
for spec in \
  "contacts_requests:requests:$REQUESTS_DB_PASSWORD" \
  "contacts_billing_check:billing_check:$BILLING_CHECK_DB_PASSWORD" \
  "contacts_notifier:notifier:$NOTIFIER_DB_PASSWORD"; do
  IFS=: read -r role schema password <<<"$spec"
  sql -v role="$role" -v schema="$schema" -v password="$password" -v database="$POSTGRES_DB" \
      -f /docker-entrypoint-initdb.d/service-role.psql
done
