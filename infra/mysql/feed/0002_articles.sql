-- Feed: articles with their tags, comments and favourites. It also keeps
-- authors and follows from profiles' events, and has an outbox for the
-- comment and favourite events it publishes.
--
-- Times are BIGINT microseconds since the Unix epoch (UTC). Article ids are
-- UUIDv7 strings, comment ids integers below 2^53, both made by the
-- application.

-- The read model of profiles' users: what an author block shows. A deleted
-- user's row is removed, and with it (through the foreign keys) everything
-- they wrote or favourited; aggregate_state keeps the tombstone.
CREATE TABLE authors (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  username VARCHAR(32) NOT NULL,
  -- Not unique: two users' events can arrive in either order, so a name can
  -- briefly belong to two rows (one renamed away, one renamed to it).
  username_key VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  bio TEXT NOT NULL,
  image VARCHAR(2048) NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY authors_username_key (username_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The read model of profiles' follows. No foreign keys: a follow event can
-- arrive before the user events of either side.
CREATE TABLE follows (
  follower_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  followee_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  PRIMARY KEY (follower_id, followee_id),
  KEY follows_followee (followee_id)
) ENGINE = InnoDB;

CREATE TABLE articles (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  slug VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  author_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  title VARCHAR(200) NOT NULL,
  description VARCHAR(1000) NOT NULL,
  body MEDIUMTEXT NOT NULL,
  -- The tags as the article shows them, a JSON array of strings in the
  -- author's order. article_tags has the same tags, for filtering.
  tag_list TEXT NOT NULL,
  favorites_count INT UNSIGNED NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY articles_slug (slug),
  KEY articles_newest (created_at, id),
  KEY articles_author_newest (author_id, created_at),
  CONSTRAINT articles_author FOREIGN KEY (author_id) REFERENCES authors (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE article_tags (
  article_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  tag VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (article_id, tag),
  KEY article_tags_tag (tag, article_id),
  CONSTRAINT article_tags_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE favorites (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  article_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (user_id, article_id),
  KEY favorites_article (article_id),
  CONSTRAINT favorites_user FOREIGN KEY (user_id) REFERENCES authors (id) ON DELETE CASCADE,
  CONSTRAINT favorites_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE comments (
  id BIGINT UNSIGNED NOT NULL,
  article_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  author_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  body TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY comments_article (article_id, id),
  KEY comments_author (author_id),
  CONSTRAINT comments_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE,
  CONSTRAINT comments_author FOREIGN KEY (author_id) REFERENCES authors (id) ON DELETE CASCADE,
  CONSTRAINT comments_id_js_safe CHECK (id < 9007199254740992)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The outbox (shared::events), as in profiles: versions, events, and one
-- delivery row per event and consumer.
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
