"""The requests service's tables: its migrations, applied in order at start (contacts_shared.db)."""

from __future__ import annotations

MIGRATIONS = [
    """
    CREATE TABLE accounts (
        nic   text PRIMARY KEY,
        email text NOT NULL,
        zone  text NOT NULL
    );
    CREATE TABLE services (
        service text PRIMARY KEY,
        type    text NOT NULL,
        admin   text NOT NULL,
        tech    text NOT NULL,
        billing text NOT NULL
    );
    CREATE INDEX services_admin ON services (admin);
    CREATE INDEX services_tech ON services (tech);
    CREATE INDEX services_billing ON services (billing);

    CREATE TABLE contact_changes (
        id              uuid PRIMARY KEY,
        service         text NOT NULL,
        type            text NOT NULL,
        from_nic        text NOT NULL,
        to_nic          text NOT NULL,
        requester       text NOT NULL,
        state           text NOT NULL,
        reason          text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        updated_at      timestamptz NOT NULL DEFAULT now(),
        expires_at      timestamptz NOT NULL,
        tokens_reset_at timestamptz NOT NULL DEFAULT now()
    );
    -- At most one open request per service and type, enforced where races cannot slip through.
    CREATE UNIQUE INDEX contact_changes_one_open ON contact_changes (service, type)
        WHERE state IN ('checking', 'validating', 'applying');
    CREATE INDEX contact_changes_requester ON contact_changes (requester, created_at DESC);
    CREATE INDEX contact_changes_from ON contact_changes (from_nic, created_at DESC);
    CREATE INDEX contact_changes_to ON contact_changes (to_nic, created_at DESC);
    CREATE INDEX contact_changes_expiring ON contact_changes (expires_at) WHERE state = 'validating';

    CREATE TABLE confirmers (
        request_id       uuid NOT NULL REFERENCES contact_changes (id),
        nic              text NOT NULL,
        state            text NOT NULL DEFAULT 'pending',
        token_hash       text,
        token_expires_at timestamptz,
        token_issued_at  timestamptz,
        failures         int NOT NULL DEFAULT 0,
        answered_at      timestamptz,
        PRIMARY KEY (request_id, nic)
    );

    CREATE TABLE history (
        id         bigserial PRIMARY KEY,
        request_id uuid NOT NULL REFERENCES contact_changes (id),
        at         timestamptz NOT NULL DEFAULT now(),
        state      text NOT NULL,
        actor      text NOT NULL,
        reason     text
    );
    CREATE INDEX history_request ON history (request_id, id);

    -- Idempotency keys of submissions (HTTP header or contact_change.submit), per requester.
    CREATE TABLE submissions (
        requester       text NOT NULL,
        idempotency_key text NOT NULL,
        request_ids     uuid[] NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (requester, idempotency_key)
    );
    """,
    # Replicas never go back in time: each row keeps the version of the message that last wrote
    # it (`occurred_at`, `message_id`), and a delete leaves a tombstone (`deleted`, its data
    # erased) that an older upsert cannot revive. `accounts` and `services` become views of the
    # live rows, so every read, here or anywhere, keeps ignoring deleted ones; writes go to the
    # tables (the views stay updatable for a process of the previous release during an upgrade).
    """
    ALTER TABLE accounts RENAME TO account_rows;
    ALTER TABLE account_rows
        ALTER COLUMN email DROP NOT NULL,
        ALTER COLUMN zone DROP NOT NULL,
        ADD COLUMN occurred_at timestamptz,
        ADD COLUMN message_id uuid,
        ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    CREATE VIEW accounts AS SELECT nic, email, zone FROM account_rows WHERE NOT deleted;

    ALTER TABLE services RENAME TO service_rows;
    ALTER TABLE service_rows
        ALTER COLUMN type DROP NOT NULL,
        ALTER COLUMN admin DROP NOT NULL,
        ALTER COLUMN tech DROP NOT NULL,
        ALTER COLUMN billing DROP NOT NULL,
        ADD COLUMN occurred_at timestamptz,
        ADD COLUMN message_id uuid,
        ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    CREATE VIEW services AS SELECT service, type, admin, tech, billing FROM service_rows WHERE NOT deleted;
    """,
    # When the billing check was last asked about a request waiting for its verdict; the open
    # requests by expiry (every open state now expires), those awaiting a verdict by last change.
    # Partial indexes: the periodic jobs read only what is open, however long the history.
    """
    ALTER TABLE contact_changes ADD COLUMN vetting_asked_at timestamptz;
    DROP INDEX contact_changes_expiring;
    CREATE INDEX contact_changes_open_expiring ON contact_changes (expires_at)
        WHERE state IN ('applying', 'checking', 'validating');
    CREATE INDEX contact_changes_awaiting_vetting ON contact_changes (updated_at)
        WHERE state IN ('applying', 'checking');
    """,
    # The round of validation codes each confirmer waits for (1, one more per resend): a
    # `token_issued` counts only for the current round, whatever the clocks of the two hosts say.
    # (tokens_reset_at and token_issued_at, which compared them, are left to a process of the
    # previous release during an upgrade; nothing reads them now.)
    """
    ALTER TABLE confirmers ADD COLUMN generation int NOT NULL DEFAULT 1;
    """,
    # Resends per request and when the last one was (rate_limits: at most one a minute, five
    # in all).
    """
    ALTER TABLE contact_changes
        ADD COLUMN resends int NOT NULL DEFAULT 0,
        ADD COLUMN last_resend_at timestamptz;
    """,
    # Where each confirmer's current code was mailed (masked, as the notifier announced it) and
    # when: the request's page and API show it ("where did my code go?"). Empty until the code of
    # the round the confirmer waits for is announced.
    """
    ALTER TABLE confirmers ADD COLUMN sent_to text, ADD COLUMN sent_at timestamptz;
    """,
    # Reminders: how many were sent, and when the next is due (the domain plans it); the timer
    # reads only the requests waiting for confirmers.
    """
    ALTER TABLE contact_changes ADD COLUMN reminders int NOT NULL DEFAULT 0, ADD COLUMN next_reminder_at timestamptz;
    CREATE INDEX contact_changes_reminder_due ON contact_changes (next_reminder_at) WHERE state = 'validating';
    """,
    # Support agents look up a service's requests, newest first.
    """
    CREATE INDEX contact_changes_service ON contact_changes (service, created_at DESC);
    """,
    # Batches (issue 20): one submission naming several services; its requests carry its id. The
    # confirmers' codes of a batch go out in one email each once none of its requests is still
    # being checked (`codes_asked_at`: they have gone).
    """
    CREATE TABLE batches (
        id             uuid PRIMARY KEY,
        requester      text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        codes_asked_at timestamptz
    );
    CREATE INDEX batches_requester ON batches (requester, created_at DESC);
    ALTER TABLE contact_changes ADD COLUMN batch_id uuid;
    CREATE INDEX contact_changes_batch ON contact_changes (batch_id) WHERE batch_id IS NOT NULL;
    ALTER TABLE submissions ADD COLUMN batch_id uuid, ADD COLUMN refused jsonb;
    """,
    # "My contacts" pages by service id (issue 20): each role's index also orders by service, so
    # a page reads from the cursor on and stops at its size, for an account with thousands of
    # services. They replace the indexes on the role alone, which they serve as well.
    """
    CREATE INDEX service_rows_admin_service ON service_rows (admin, service);
    CREATE INDEX service_rows_tech_service ON service_rows (tech, service);
    CREATE INDEX service_rows_billing_service ON service_rows (billing, service);
    DROP INDEX services_admin, services_tech, services_billing;
    """,
    # Languages (issue 20): each account's, from `account.upserted` (a BCP 47 tag; NULL for a row
    # written before, read as English). The view gains it last, as CREATE OR REPLACE VIEW allows.
    """
    ALTER TABLE account_rows ADD COLUMN language text;
    CREATE OR REPLACE VIEW accounts AS SELECT nic, email, zone, language FROM account_rows WHERE NOT deleted;
    """,
]
