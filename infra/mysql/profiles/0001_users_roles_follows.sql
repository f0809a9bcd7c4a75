-- Profiles: users, their roles, and who follows whom.
--
-- Times are BIGINT microseconds since the Unix epoch (UTC): the MySQL
-- interface components use cannot read DATETIME. Ids are UUIDv7 strings made
-- by the application. Usernames and emails are kept as entered for display
-- and made unique through normalised keys with a binary collation.

CREATE TABLE users (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  username VARCHAR(32) NOT NULL,
  username_key VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  email VARCHAR(254) NOT NULL,
  email_key VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  bio TEXT NOT NULL,
  image VARCHAR(2048) NOT NULL,
  -- Bumped by a password change: tokens carrying an older version are refused.
  token_version BIGINT UNSIGNED NOT NULL DEFAULT 1,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY users_username_key (username_key),
  UNIQUE KEY users_email_key (email_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Roles granted on top of `user`, which every user has without a row here.
CREATE TABLE user_roles (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  role VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  granted_at BIGINT NOT NULL,
  PRIMARY KEY (user_id, role),
  CONSTRAINT user_roles_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT user_roles_known CHECK (role IN ('admin'))
) ENGINE = InnoDB;

CREATE TABLE follows (
  follower_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  followee_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (follower_id, followee_id),
  KEY follows_followee (followee_id),
  CONSTRAINT follows_follower FOREIGN KEY (follower_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT follows_followee FOREIGN KEY (followee_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT follows_not_self CHECK (follower_id <> followee_id)
) ENGINE = InnoDB;
