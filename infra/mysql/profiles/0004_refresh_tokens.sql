-- Refresh tokens, for clients that exchange a long-lived token for new
-- access tokens (`POST /api/users/refresh`). A token is `<id>.<secret>`;
-- only the secret's SHA-256 is stored. Each exchange marks the token used
-- and issues the next one of the same family. Presenting a used token again
-- means it was copied: the whole family is revoked and the user's token
-- version bumped, so every access token issued so far stops working too.

CREATE TABLE refresh_tokens (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  family_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  secret_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT NULL,
  revoked_at BIGINT NULL,
  PRIMARY KEY (id),
  KEY refresh_tokens_family (family_id),
  KEY refresh_tokens_user (user_id),
  KEY refresh_tokens_expiry (expires_at),
  CONSTRAINT refresh_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB;
