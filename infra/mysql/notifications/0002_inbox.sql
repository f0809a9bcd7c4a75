-- Notifications: the in-app inbox with exact unread counts, preferences per
-- type and channel, the email outbox, and the read models of profiles'
-- users (names shown as actors) and email addresses.
--
-- Times are BIGINT microseconds since the Unix epoch (UTC). Ids are UUIDv7
-- strings made by the application.

-- Actors: the name a notification shows for the user who acted.
CREATE TABLE users (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  username VARCHAR(32) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Each user's address and whether profiles has verified it. Only a verified
-- address receives anything but a verification link.
CREATE TABLE addresses (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  email VARCHAR(254) NOT NULL,
  verified TINYINT(1) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The inbox. `source` names the event's aggregate
-- (`<producer>:<aggregate type>:<aggregate id>`), so the event that undoes
-- one (an unfollow, a deleted comment) finds the notification it made.
-- Pages are read newest first on (created_at, id).
CREATE TABLE notifications (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  type VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  actor_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  source VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The type's fields as a JSON object (article slug, amount, status).
  data TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  read_at BIGINT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY notifications_source (source, user_id),
  KEY notifications_page (user_id, created_at, id),
  KEY notifications_unread (user_id, read_at, created_at, id),
  KEY notifications_age (created_at)
) ENGINE = InnoDB;

-- The exact number of unread notifications per user, changed in the same
-- transaction as the notifications themselves.
CREATE TABLE unread_counts (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  unread BIGINT NOT NULL,
  PRIMARY KEY (user_id),
  CONSTRAINT unread_counts_not_negative CHECK (unread >= 0)
) ENGINE = InnoDB;

-- Choices that differ from the defaults (see preferences.rs); a missing row
-- means the default.
CREATE TABLE preferences (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  type VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  channel VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  enabled TINYINT(1) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (user_id, type, channel)
) ENGINE = InnoDB;

-- The email outbox. A row is written in the transaction that applies the
-- event and sent by the dispatch run, which claims due rows with a lease.
-- `status`: pending, sent, failed (given up; `last_error` contains the reason) or
-- dropped (unsubscribed or the user deleted before it left). The bodies are
-- cleared once the row is no longer pending, so a verification token does
-- not outlive its sending.
CREATE TABLE emails (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  kind VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  to_address VARCHAR(254) NOT NULL,
  subject VARCHAR(200) NOT NULL,
  text_body TEXT NOT NULL,
  html_body TEXT NOT NULL,
  unsubscribe_url VARCHAR(1000) NULL,
  status VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL,
  lease_until BIGINT NOT NULL DEFAULT 0,
  lease_owner VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  last_error VARCHAR(200) NULL,
  provider_message_id VARCHAR(200) NULL,
  created_at BIGINT NOT NULL,
  sent_at BIGINT NULL,
  PRIMARY KEY (id),
  KEY emails_due (status, next_attempt_at),
  KEY emails_user (user_id, kind, status),
  KEY emails_age (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
