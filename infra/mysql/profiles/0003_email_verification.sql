-- Email verification: a user's address is verified by a link sent to it.
--
-- The link carries a random token; only its SHA-256 is stored. A token is
-- valid until `expires_at` and only while the user still has the address it
-- was sent to (`email_key`). Changing the email clears `email_verified_at`.

ALTER TABLE users ADD COLUMN email_verified_at BIGINT NULL AFTER email_key;

CREATE TABLE email_verifications (
  token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  email_key VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (token_hash),
  KEY email_verifications_user (user_id),
  KEY email_verifications_expiry (expires_at),
  CONSTRAINT email_verifications_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- When a verification link last went to each address, so that one address
-- gets at most one link per interval (`email_verification_interval_seconds`),
-- whichever account requests it. Keyed on the address, not the user.
CREATE TABLE email_verification_sends (
  email_key VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  last_sent_at BIGINT NOT NULL,
  PRIMARY KEY (email_key),
  KEY email_verification_sends_time (last_sent_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
