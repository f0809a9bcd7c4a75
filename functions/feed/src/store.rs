//! Every SQL statement of the feed component, except the outbox's and the
//! event consumer's (`shared::events`). Each function runs exactly one
//! statement unless its comment states otherwise, so a route's statement
//! count follows from the calls it makes here, and no list runs a statement
//! per article.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use shared::db::{DbError, Param, Row, Statements};
use shared::params;

/// An article as every viewer sees it: no `favorited`, no author block
/// (only the author's id). Cached as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Article {
    pub id: String,
    pub slug: String,
    pub author_id: String,
    pub title: String,
    pub description: String,
    /// `None` in list pages, which never show the body.
    pub body: Option<String>,
    pub tag_list: Vec<String>,
    pub favorites_count: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A user's author block, from profiles' user events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Author {
    pub id: String,
    pub username: String,
    pub bio: String,
    pub image: String,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub author_id: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const SUMMARY_COLUMNS: &str =
    "a.id, a.slug, a.author_id, a.title, a.description, a.tag_list, a.favorites_count, a.created_at, a.updated_at";
const AUTHOR_COLUMNS: &str = "u.id AS author_id, u.username, u.bio, u.image";

fn in_list(count: usize) -> String {
    vec!["?"; count].join(", ")
}

fn article_from_row(row: &Row, with_body: bool) -> Result<Article, DbError> {
    let tags: String = row.get("tag_list")?;
    Ok(Article {
        id: row.get("id")?,
        slug: row.get("slug")?,
        author_id: row.get("author_id")?,
        title: row.get("title")?,
        description: row.get("description")?,
        body: if with_body { Some(row.get("body")?) } else { None },
        tag_list: serde_json::from_str(&tags).map_err(|_| DbError::decode("tag_list is not a JSON list".into()))?,
        favorites_count: row.get("favorites_count")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn author_from_row(row: &Row) -> Result<Author, DbError> {
    Ok(Author {
        id: row.get("author_id")?,
        username: row.get("username")?,
        bio: row.get("bio")?,
        image: row.get("image")?,
    })
}

// ---- articles ----

/// Reads an article with its body. The author block is read on its own,
/// through its cache entry.
pub async fn article_by_slug(db: &impl Statements, slug: &str) -> Result<Option<Article>, DbError> {
    let statement = format!("SELECT {SUMMARY_COLUMNS}, a.body FROM articles a WHERE a.slug = ?");
    let row = db.query_one(&statement, params![slug]).await?;
    row.map(|row| article_from_row(&row, true)).transpose()
}

/// Locks an article's row for a write and returns it with its body.
pub async fn lock_article(db: &impl Statements, slug: &str) -> Result<Option<Article>, DbError> {
    let statement = format!("SELECT {SUMMARY_COLUMNS}, a.body FROM articles a WHERE a.slug = ? FOR UPDATE");
    let row = db.query_one(&statement, params![slug]).await?;
    row.map(|row| article_from_row(&row, true)).transpose()
}

/// Reads the summaries (no body) of the articles with these slugs, with
/// their authors, in no particular order.
pub async fn summaries_by_slug(db: &impl Statements, slugs: &[String]) -> Result<Vec<(Article, Author)>, DbError> {
    if slugs.is_empty() {
        return Ok(Vec::new());
    }
    let statement = format!(
        "SELECT {SUMMARY_COLUMNS}, {AUTHOR_COLUMNS}
         FROM articles a JOIN authors u ON u.id = a.author_id WHERE a.slug IN ({})",
        in_list(slugs.len())
    );
    let rows = db.query(&statement, slugs.iter().map(|s| Param::from(s.as_str())).collect()).await?;
    rows.iter().map(|row| Ok((article_from_row(row, false)?, author_from_row(row)?))).collect()
}

/// A list item read for one viewer: the summary, its author and the viewer's flags.
pub struct ViewedArticle {
    pub article: Article,
    pub author: Author,
    pub favorited: bool,
    pub following: bool,
}

/// Reads the summaries of the articles with these ids, with their authors
/// and `viewer_id`'s flags, in no particular order. One statement, whatever
/// the number of ids.
pub async fn viewed_by_id(db: &impl Statements, viewer_id: &str, ids: &[String]) -> Result<Vec<ViewedArticle>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = format!(
        "SELECT {SUMMARY_COLUMNS}, {AUTHOR_COLUMNS},
                EXISTS(SELECT 1 FROM favorites f WHERE f.user_id = ? AND f.article_id = a.id) AS favorited,
                EXISTS(SELECT 1 FROM follows w WHERE w.follower_id = ? AND w.followee_id = a.author_id) AS following
         FROM articles a JOIN authors u ON u.id = a.author_id WHERE a.id IN ({})",
        in_list(ids.len())
    );
    let mut values = params![viewer_id, viewer_id];
    values.extend(ids.iter().map(|id| Param::from(id.as_str())));
    let rows = db.query(&statement, values).await?;
    rows.iter()
        .map(|row| {
            Ok(ViewedArticle {
                article: article_from_row(row, false)?,
                author: author_from_row(row)?,
                favorited: row.get("favorited")?,
                following: row.get("following")?,
            })
        })
        .collect()
}

/// The filters of a list: none for every article. The usernames are
/// normalised keys, and `followed_by` is a user id.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub tag: Option<String>,
    pub author_key: Option<String>,
    pub favorited_by_key: Option<String>,
    pub followed_by: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.author_key.is_none() && self.favorited_by_key.is_none() && self.followed_by.is_none()
    }

    /// Builds the joins and conditions of the filter, with their parameters.
    fn clauses(&self) -> (String, Vec<Param>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        if let Some(tag) = &self.tag {
            sql.push_str(" JOIN article_tags t ON t.article_id = a.id AND t.tag = ?");
            values.push(Param::from(tag.as_str()));
        }
        if let Some(key) = &self.author_key {
            sql.push_str(" JOIN authors fa ON fa.id = a.author_id AND fa.username_key = ?");
            values.push(Param::from(key.as_str()));
        }
        if let Some(key) = &self.favorited_by_key {
            sql.push_str(
                " JOIN favorites fv ON fv.article_id = a.id
                  JOIN authors fu ON fu.id = fv.user_id AND fu.username_key = ?",
            );
            values.push(Param::from(key.as_str()));
        }
        if let Some(user_id) = &self.followed_by {
            sql.push_str(" JOIN follows fo ON fo.followee_id = a.author_id AND fo.follower_id = ?");
            values.push(Param::from(user_id.as_str()));
        }
        (sql, values)
    }
}

/// Counts the articles a filter matches.
pub async fn count_articles(db: &impl Statements, filter: &Filter) -> Result<u64, DbError> {
    let (joins, values) = filter.clauses();
    let statement = format!("SELECT COUNT(*) AS n FROM articles a{joins}");
    let row = db.query_one(&statement, values).await?;
    row.map(|row| row.get("n")).transpose().map(Option::unwrap_or_default)
}

/// Reads one page of summaries, newest first, with their authors.
pub async fn page(db: &impl Statements, filter: &Filter, limit: u32, offset: u64) -> Result<Vec<(Article, Author)>, DbError> {
    let (joins, mut values) = filter.clauses();
    let statement = format!(
        "SELECT {SUMMARY_COLUMNS}, {AUTHOR_COLUMNS}
         FROM articles a{joins} JOIN authors u ON u.id = a.author_id
         ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?"
    );
    values.extend(params![limit, offset]);
    let rows = db.query(&statement, values).await?;
    rows.iter().map(|row| Ok((article_from_row(row, false)?, author_from_row(row)?))).collect()
}

/// The values a new or changed article row holds.
pub struct ArticleRow<'a> {
    pub id: &'a str,
    pub slug: &'a str,
    pub author_id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub body: &'a str,
    pub tags: &'a [String],
    pub created_at: i64,
    pub updated_at: i64,
}

fn tag_list_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("a list of strings serialises")
}

pub async fn insert_article(db: &impl Statements, row: &ArticleRow<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO articles (id, slug, author_id, title, description, body, tag_list, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![row.id, row.slug, row.author_id, row.title, row.description, row.body, tag_list_json(row.tags), row.created_at, row.updated_at],
    )
    .await
}

pub async fn update_article(db: &impl Statements, row: &ArticleRow<'_>) -> Result<(), DbError> {
    db.execute(
        "UPDATE articles SET slug = ?, title = ?, description = ?, body = ?, tag_list = ?, updated_at = ? WHERE id = ?",
        params![row.slug, row.title, row.description, row.body, tag_list_json(row.tags), row.updated_at, row.id],
    )
    .await
}

/// Replaces an article's tags: two statements (one when `tags` is empty).
pub async fn replace_tags(db: &impl Statements, article_id: &str, tags: &[String]) -> Result<(), DbError> {
    db.execute("DELETE FROM article_tags WHERE article_id = ?", params![article_id]).await?;
    insert_tags(db, article_id, tags).await
}

/// Adds a new article's tags: one statement, none when `tags` is empty.
pub async fn insert_tags(db: &impl Statements, article_id: &str, tags: &[String]) -> Result<(), DbError> {
    if tags.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "INSERT INTO article_tags (article_id, tag) VALUES {}",
        vec!["(?, ?)"; tags.len()].join(", ")
    );
    let values = tags.iter().flat_map(|tag| params![article_id, tag.as_str()]).collect();
    db.execute(&statement, values).await
}

/// Deletes an article; its tags, comments and favourites go with it
/// through the foreign keys.
pub async fn delete_article(db: &impl Statements, article_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM articles WHERE id = ?", params![article_id]).await
}

// ---- per-viewer flags ----

/// One viewer's flags on one page: the articles they favourited and the
/// authors they follow, out of those given.
#[derive(Debug, Default)]
pub struct ViewerFlags {
    pub favorited: HashSet<String>,
    pub following: HashSet<String>,
}

/// Reads a viewer's `favorited` and `following` flags for a whole page in
/// one statement, whatever the page size.
pub async fn viewer_flags(
    db: &impl Statements,
    viewer_id: &str,
    article_ids: &[&str],
    author_ids: &[&str],
) -> Result<ViewerFlags, DbError> {
    if article_ids.is_empty() && author_ids.is_empty() {
        return Ok(ViewerFlags::default());
    }
    // `IN ()` is not valid SQL, so an empty side gets a value no id has.
    let none = [""];
    let article_ids = if article_ids.is_empty() { &none[..] } else { article_ids };
    let author_ids = if author_ids.is_empty() { &none[..] } else { author_ids };
    let statement = format!(
        "SELECT 'favorited' AS kind, article_id AS id FROM favorites WHERE user_id = ? AND article_id IN ({})
         UNION ALL
         SELECT 'following', followee_id FROM follows WHERE follower_id = ? AND followee_id IN ({})",
        in_list(article_ids.len()),
        in_list(author_ids.len())
    );
    let mut values = params![viewer_id];
    values.extend(article_ids.iter().map(|id| Param::from(*id)));
    values.push(Param::from(viewer_id));
    values.extend(author_ids.iter().map(|id| Param::from(*id)));
    let mut flags = ViewerFlags::default();
    for row in db.query(&statement, values).await? {
        let kind: String = row.get("kind")?;
        let id: String = row.get("id")?;
        if kind == "favorited" {
            flags.favorited.insert(id);
        } else {
            flags.following.insert(id);
        }
    }
    Ok(flags)
}

// ---- authors ----

pub async fn authors_by_id(db: &impl Statements, ids: &[&str]) -> Result<Vec<Author>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = format!("SELECT {AUTHOR_COLUMNS} FROM authors u WHERE u.id IN ({})", in_list(ids.len()));
    let rows = db.query(&statement, ids.iter().map(|id| Param::from(*id)).collect()).await?;
    rows.iter().map(author_from_row).collect()
}

pub async fn upsert_author(db: &impl Statements, author: &Author, username_key: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO authors (id, username, username_key, bio, image, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE username = VALUES(username), username_key = VALUES(username_key),
                                 bio = VALUES(bio), image = VALUES(image), updated_at = VALUES(updated_at)",
        params![&author.id, &author.username, username_key, &author.bio, &author.image, now],
    )
    .await
}

/// Lists the slugs of articles a user wrote or favourited: the cache
/// entries their deletion makes stale.
pub async fn slugs_touched_by(db: &impl Statements, user_id: &str) -> Result<Vec<String>, DbError> {
    let rows = db
        .query(
            "SELECT slug FROM articles WHERE author_id = ?
             UNION
             SELECT a.slug FROM favorites f JOIN articles a ON a.id = f.article_id WHERE f.user_id = ?",
            params![user_id, user_id],
        )
        .await?;
    rows.iter().map(|row| row.get("slug")).collect()
}

/// Removes a deleted user: two statements. The favourite counts of what
/// they favourited drop first, then the author row goes, and with it their
/// articles, comments, favourites and tags (foreign keys). Follows have no
/// foreign keys and are removed by the caller.
pub async fn delete_author(db: &impl Statements, user_id: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE articles a JOIN favorites f ON f.article_id = a.id
         SET a.favorites_count = a.favorites_count - 1 WHERE f.user_id = ?",
        params![user_id],
    )
    .await?;
    db.execute("DELETE FROM authors WHERE id = ?", params![user_id]).await
}

// ---- follows ----

pub async fn set_follow(db: &impl Statements, follower_id: &str, followee_id: &str, following: bool) -> Result<(), DbError> {
    if following {
        db.execute(
            "INSERT IGNORE INTO follows (follower_id, followee_id) VALUES (?, ?)",
            params![follower_id, followee_id],
        )
        .await
    } else {
        db.execute(
            "DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
            params![follower_id, followee_id],
        )
        .await
    }
}

pub async fn delete_follows_of(db: &impl Statements, user_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM follows WHERE follower_id = ? OR followee_id = ?", params![user_id, user_id]).await
}

// ---- favourites ----

/// Checks, under a lock, whether `user_id` has favourited the article.
pub async fn lock_favorite(db: &impl Statements, user_id: &str, article_id: &str) -> Result<bool, DbError> {
    let row = db
        .query_one(
            "SELECT 1 AS present FROM favorites WHERE user_id = ? AND article_id = ? FOR UPDATE",
            params![user_id, article_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Adds or removes a favourite and adjusts the article's count: two statements.
pub async fn set_favorite(db: &impl Statements, user_id: &str, article_id: &str, favorited: bool, now: i64) -> Result<(), DbError> {
    if favorited {
        db.execute(
            "INSERT INTO favorites (user_id, article_id, created_at) VALUES (?, ?, ?)",
            params![user_id, article_id, now],
        )
        .await?;
        db.execute("UPDATE articles SET favorites_count = favorites_count + 1 WHERE id = ?", params![article_id]).await
    } else {
        db.execute("DELETE FROM favorites WHERE user_id = ? AND article_id = ?", params![user_id, article_id]).await?;
        db.execute("UPDATE articles SET favorites_count = favorites_count - 1 WHERE id = ?", params![article_id]).await
    }
}

// ---- comments ----

/// The maximum number of comments one article shows, newest first.
pub const COMMENTS_MAX: u32 = 500;

/// Reads an article's id and its comments, newest first, with their
/// authors. `None` when no article has this slug.
pub async fn comments(db: &impl Statements, slug: &str) -> Result<Option<Vec<(Comment, Author)>>, DbError> {
    let statement = format!(
        "SELECT a.id AS article_id, c.id, c.body, c.created_at, c.updated_at, {AUTHOR_COLUMNS}
         FROM articles a
         LEFT JOIN comments c ON c.article_id = a.id
         LEFT JOIN authors u ON u.id = c.author_id
         WHERE a.slug = ?
         ORDER BY c.id DESC LIMIT ?"
    );
    let rows = db.query(&statement, params![slug, COMMENTS_MAX]).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut comments = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(id) = row.get::<Option<u64>>("id")? else { continue };
        comments.push((
            Comment {
                id,
                author_id: row.get("author_id")?,
                body: row.get("body")?,
                created_at: row.get("created_at")?,
                updated_at: row.get("updated_at")?,
            },
            author_from_row(row)?,
        ));
    }
    Ok(Some(comments))
}

pub async fn insert_comment(db: &impl Statements, article_id: &str, comment: &Comment) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO comments (id, article_id, author_id, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        params![comment.id, article_id, &comment.author_id, &comment.body, comment.created_at, comment.updated_at],
    )
    .await
}

/// Locks a comment of the article with this slug: returns its author's id,
/// or `None` when the article has no such comment.
pub async fn lock_comment(db: &impl Statements, slug: &str, comment_id: u64) -> Result<Option<(String, String)>, DbError> {
    let row = db
        .query_one(
            "SELECT c.author_id, a.id AS article_id FROM comments c JOIN articles a ON a.id = c.article_id
             WHERE a.slug = ? AND c.id = ? FOR UPDATE",
            params![slug, comment_id],
        )
        .await?;
    row.map(|row| Ok((row.get("author_id")?, row.get("article_id")?))).transpose()
}

pub async fn delete_comment(db: &impl Statements, comment_id: u64) -> Result<(), DbError> {
    db.execute("DELETE FROM comments WHERE id = ?", params![comment_id]).await
}

// ---- tags ----

/// The maximum number of tags `GET /api/tags` returns.
pub const TAGS_MAX: u32 = 100;

/// Lists the tags in use, most used first, then alphabetically.
pub async fn popular_tags(db: &impl Statements) -> Result<Vec<String>, DbError> {
    let rows = db
        .query(
            "SELECT tag FROM article_tags GROUP BY tag ORDER BY COUNT(*) DESC, tag LIMIT ?",
            params![TAGS_MAX],
        )
        .await?;
    rows.iter().map(|row| row.get("tag")).collect()
}
