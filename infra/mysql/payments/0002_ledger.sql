-- Payments: a double-entry ledger behind users' wallets, the payments users
-- see (provider top-ups and tips), idempotency keys, the users it keeps
-- from profiles' events, and the outbox of its own events.
--
-- Amounts are BIGINT minor units with an ISO 4217 code, never floats. Times
-- are BIGINT microseconds since the Unix epoch (UTC).

-- The read model of profiles' users: who may receive a tip, by name.
CREATE TABLE users (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  username VARCHAR(32) NOT NULL,
  username_key VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY users_username_key (username_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per wallet (a user's, per currency) and per system account
-- (`provider_clearing`: money on its way from the provider;
-- `refunds_pending`: money on its way back). System accounts have the
-- empty string as user_id, so the unique key covers them too.
CREATE TABLE accounts (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  kind VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The sum of the account's entries, kept in the entries' transaction.
  balance BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY accounts_owner (kind, user_id, currency),
  CONSTRAINT accounts_kind CHECK (kind IN ('wallet', 'provider_clearing', 'refunds_pending')),
  CONSTRAINT accounts_wallet_not_negative CHECK (kind <> 'wallet' OR balance >= 0),
  CONSTRAINT accounts_wallet_owner CHECK ((kind = 'wallet') = (user_id <> ''))
) ENGINE = InnoDB;

-- A money movement: entries that sum to zero per currency.
CREATE TABLE ledger_transactions (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  kind VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  payment_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY ledger_transactions_payment (payment_id)
) ENGINE = InnoDB;

CREATE TABLE ledger_entries (
  transaction_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  account_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Positive into the account, negative out of it.
  amount BIGINT NOT NULL,
  PRIMARY KEY (transaction_id, account_id),
  KEY ledger_entries_account (account_id),
  CONSTRAINT ledger_entries_transaction FOREIGN KEY (transaction_id) REFERENCES ledger_transactions (id),
  CONSTRAINT ledger_entries_account FOREIGN KEY (account_id) REFERENCES accounts (id),
  CONSTRAINT ledger_entries_not_zero CHECK (amount <> 0)
) ENGINE = InnoDB;

-- What users see as their payments: top-ups (user_id is who paid in) and
-- tips (user_id sent to counterparty_id). A top-up follows the provider's
-- states. check_after is when dispatch next fetches a top-up still open
-- from the provider, in case its webhook was lost.
CREATE TABLE payments (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  kind VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  counterparty_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  status VARCHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  amount_minor BIGINT NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- What refunds have given back so far; never above amount_minor.
  refunded_minor BIGINT NOT NULL DEFAULT 0,
  article_slug VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NULL,
  message VARCHAR(280) NULL,
  provider_payment_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  checkout_url VARCHAR(2048) NULL,
  check_after BIGINT NULL,
  check_lease_until BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY payments_provider (provider_payment_id),
  KEY payments_user_newest (user_id, created_at, id),
  KEY payments_counterparty_newest (counterparty_id, created_at, id),
  KEY payments_to_check (check_after),
  CONSTRAINT payments_kind CHECK (kind IN ('top_up', 'tip')),
  CONSTRAINT payments_amount_positive CHECK (amount_minor > 0),
  CONSTRAINT payments_refunds_bounded CHECK (refunded_minor BETWEEN 0 AND amount_minor)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Refunds of payments. A tip's is completed at once; a top-up's is pending
-- until the provider confirms it (dispatch fetches it from the provider).
CREATE TABLE refunds (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  payment_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  amount_minor BIGINT NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  provider_refund_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  actor_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  check_after BIGINT NULL,
  check_lease_until BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY refunds_payment (payment_id),
  KEY refunds_to_check (check_after),
  CONSTRAINT refunds_payment FOREIGN KEY (payment_id) REFERENCES payments (id),
  CONSTRAINT refunds_amount_positive CHECK (amount_minor > 0),
  CONSTRAINT refunds_status CHECK (status IN ('pending', 'completed', 'failed'))
) ENGINE = InnoDB;

-- What admins did to money (refunds), with the acting admin's user id. No
-- foreign keys: the history outlives the users. The triggers refuse changes,
-- so even the runtime user, which may UPDATE and DELETE in this schema, can
-- only append.
CREATE TABLE admin_audit (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  actor VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  action VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  payment_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  amount_minor BIGINT NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY admin_audit_payment (payment_id, at)
) ENGINE = InnoDB;

CREATE TRIGGER admin_audit_no_update BEFORE UPDATE ON admin_audit FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'admin_audit is append-only';

CREATE TRIGGER admin_audit_no_delete BEFORE DELETE ON admin_audit FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'admin_audit is append-only';

-- Idempotency keys, scoped to a user and a route, kept 24 hours. A row is
-- in flight while lease_until is in the future and no status is stored.
-- resource_id names what the first request created (a top-up's payment),
-- so a retry after a failure continues with the same one.
CREATE TABLE idempotency_keys (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  route VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  request_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  resource_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  status SMALLINT NULL,
  response MEDIUMTEXT NULL,
  lease_until BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (user_id, route, idempotency_key),
  KEY idempotency_keys_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The outbox (shared::events), as in profiles and feed.
CREATE TABLE event_versions (
  aggregate_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  version BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id)
) ENGINE = InnoDB;

CREATE TABLE outbox_events (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  type VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_version BIGINT UNSIGNED NOT NULL,
  occurred_at BIGINT NOT NULL,
  payload TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (id),
  KEY outbox_events_occurred (occurred_at)
) ENGINE = InnoDB;

CREATE TABLE outbox_deliveries (
  event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  consumer VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT UNSIGNED NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL,
  lease_until BIGINT NOT NULL DEFAULT 0,
  lease_owner CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NULL,
  delivered_at BIGINT NULL,
  last_error VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  PRIMARY KEY (event_id, consumer),
  KEY outbox_deliveries_due (delivered_at, next_attempt_at),
  CONSTRAINT outbox_deliveries_event FOREIGN KEY (event_id) REFERENCES outbox_events (id) ON DELETE CASCADE
) ENGINE = InnoDB;
