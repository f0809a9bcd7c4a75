-- Profiles publishes events through a transactional outbox, and records
-- every role change in an append-only audit table.

-- The last version of each aggregate (a user, a follow pair); bumped in
-- the transaction that changes it. Never purged, so versions only grow.
CREATE TABLE event_versions (
  aggregate_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  version BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id)
) ENGINE = InnoDB;

-- Events as published; the payload is JSON text.
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

-- One row per event and consumer. A row is leased (lease_owner, lease_until)
-- while a request or a dispatch run pushes it; delivered_at is set once the
-- consumer acknowledged it. last_error keeps a kind ("deadline passed",
-- "status 503"), never a response body.
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

-- Every role grant and revocation with its actor (an admin's user id, or
-- `operator` for the admin command). No foreign keys: the history outlives
-- the users. The triggers refuse changes, so even the runtime user, which
-- may UPDATE and DELETE in this schema, can only append.
CREATE TABLE role_audit (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  actor VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  role VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  action VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY role_audit_user (user_id, at),
  CONSTRAINT role_audit_action CHECK (action IN ('grant', 'revoke'))
) ENGINE = InnoDB;

CREATE TRIGGER role_audit_no_update BEFORE UPDATE ON role_audit FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'role_audit is append-only';

CREATE TRIGGER role_audit_no_delete BEFORE DELETE ON role_audit FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'role_audit is append-only';
