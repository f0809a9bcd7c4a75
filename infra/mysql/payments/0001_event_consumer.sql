-- Payments: the tables of an event consumer (shared::events) and the token
-- versions it keeps from profiles' user events (shared::revocation).

CREATE TABLE event_inbox (
  event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  producer VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  received_at BIGINT NOT NULL,
  PRIMARY KEY (event_id),
  KEY event_inbox_received (received_at)
) ENGINE = InnoDB;

CREATE TABLE aggregate_state (
  producer VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  version BIGINT UNSIGNED NOT NULL,
  deleted TINYINT(1) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (producer, aggregate_type, aggregate_id)
) ENGINE = InnoDB;

CREATE TABLE resync_state (
  producer VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  aggregate_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  after_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  finished_at BIGINT NULL,
  PRIMARY KEY (producer, aggregate_type)
) ENGINE = InnoDB;

CREATE TABLE user_tokens (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  token_version BIGINT UNSIGNED NOT NULL,
  deleted TINYINT(1) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (user_id)
) ENGINE = InnoDB;
