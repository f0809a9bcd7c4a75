//! Every SQL statement of the profiles component, except the outbox's
//! (`shared::events`) and the event snapshots (`events.rs`). Each function
//! runs exactly one statement unless its comment states otherwise, so a
//! route's statement count follows from the calls it makes here.

use shared::auth::{Identity, ROLE_USER};
use shared::db::{DbError, Row, Statements};
use shared::params;

/// A user as the routes see it (the password hash stays in [`Credentials`]).
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    /// Whether the current address was confirmed through a verification link.
    pub email_verified: bool,
    pub bio: String,
    pub image: String,
    pub token_version: u64,
    /// Roles granted on top of `user`, which everyone has.
    pub granted_roles: Vec<String>,
}

impl User {
    pub fn identity(&self) -> Identity {
        let mut roles = vec![ROLE_USER.to_string()];
        roles.extend(self.granted_roles.iter().cloned());
        Identity { user_id: self.id.clone(), token_version: self.token_version, roles }
    }

    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        let roles: Option<String> = row.get("roles")?;
        Ok(Self {
            id: row.get("id")?,
            username: row.get("username")?,
            email: row.get("email")?,
            email_verified: row.get("email_verified")?,
            bio: row.get("bio")?,
            image: row.get("image")?,
            token_version: row.get("token_version")?,
            granted_roles: roles
                .map(|r| r.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
        })
    }
}

/// A user with the password hash, for login.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// The columns of [`User`], with granted roles folded into one value.
pub const USER_COLUMNS: &str = "u.id, u.username, u.email, u.email_verified_at IS NOT NULL AS email_verified,
    u.bio, u.image, u.token_version,
    (SELECT GROUP_CONCAT(r.role ORDER BY r.role SEPARATOR ',') FROM user_roles r WHERE r.user_id = u.id) AS roles";

pub async fn user_by_id(db: &impl Statements, id: &str) -> Result<Option<User>, DbError> {
    let statement = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?");
    db.query_one(&statement, params![id]).await?.as_ref().map(User::from_row).transpose()
}

/// Reads and locks the caller's row until the transaction ends.
pub async fn lock_user(db: &impl Statements, id: &str) -> Result<Option<User>, DbError> {
    let statement = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ? FOR UPDATE");
    db.query_one(&statement, params![id]).await?.as_ref().map(User::from_row).transpose()
}

pub async fn credentials_by_email(db: &impl Statements, email_key: &str) -> Result<Option<Credentials>, DbError> {
    let statement = format!("SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email_key = ?");
    match db.query_one(&statement, params![email_key]).await? {
        Some(row) => Ok(Some(Credentials { user: User::from_row(&row)?, password_hash: row.get("password_hash")? })),
        None => Ok(None),
    }
}

/// Replaces a password hash made with older parameters. It changes nothing
/// when the hash is no longer `old_hash` (a password change won the race),
/// and leaves the token version alone because the password is the same.
pub async fn replace_password_hash(db: &impl Statements, id: &str, old_hash: &str, new_hash: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        params![new_hash, id, old_hash],
    )
    .await
}

/// Checks which of a username key and an email key are already taken by
/// anyone other than `except_id`.
pub async fn taken(
    db: &impl Statements,
    username_key: &str,
    email_key: &str,
    except_id: &str,
) -> Result<(bool, bool), DbError> {
    let rows = db
        .query(
            "SELECT username_key = ? AS username_taken, email_key = ? AS email_taken
             FROM users WHERE (username_key = ? OR email_key = ?) AND id <> ?",
            params![username_key, email_key, username_key, email_key, except_id],
        )
        .await?;
    let mut found = (false, false);
    for row in rows {
        found.0 |= row.get::<bool>("username_taken")?;
        found.1 |= row.get::<bool>("email_taken")?;
    }
    Ok(found)
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub username_key: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub password_hash: &'a str,
    pub now: i64,
}

pub async fn insert_user(db: &impl Statements, user: &NewUser<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash, bio, image,
                            token_version, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, '', '', 1, ?, ?)",
        params![user.id, user.username, user.username_key, user.email, user.email_key, user.password_hash, user.now, user.now],
    )
    .await
}

/// The new values of a user's row; `password_hash` is `Some` on a password
/// change, which also bumps the token version. A new email address clears
/// its verification (`email_changed`).
pub struct UserUpdate<'a> {
    pub email_changed: bool,
    pub username: &'a str,
    pub username_key: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub bio: &'a str,
    pub image: &'a str,
    pub password_hash: Option<&'a str>,
    pub now: i64,
}

pub async fn update_user(db: &impl Statements, id: &str, update: &UserUpdate<'_>) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET username = ?, username_key = ?, email = ?, email_key = ?, bio = ?, image = ?,
                email_verified_at = IF(?, NULL, email_verified_at),
                password_hash = COALESCE(?, password_hash),
                token_version = token_version + IF(? IS NULL, 0, 1),
                updated_at = ?
         WHERE id = ?",
        params![
            update.username,
            update.username_key,
            update.email,
            update.email_key,
            update.bio,
            update.image,
            update.email_changed,
            update.password_hash,
            update.password_hash,
            update.now,
            id
        ],
    )
    .await
}

/// A profile as the RealWorld contract shows it, `following` from the viewer's side.
pub struct Profile {
    pub id: String,
    pub username: String,
    pub bio: String,
    pub image: String,
    pub following: bool,
}

/// Reads the profile with `username_key`, and whether `viewer_id` follows it, in one statement.
pub async fn profile(db: &impl Statements, username_key: &str, viewer_id: Option<&str>) -> Result<Option<Profile>, DbError> {
    let row = db
        .query_one(
            "SELECT u.id, u.username, u.bio, u.image,
                    EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = ? AND f.followee_id = u.id) AS following
             FROM users u WHERE u.username_key = ?",
            params![viewer_id, username_key],
        )
        .await?;
    row.map(|row| {
        Ok(Profile {
            id: row.get("id")?,
            username: row.get("username")?,
            bio: row.get("bio")?,
            image: row.get("image")?,
            following: row.get("following")?,
        })
    })
    .transpose()
}

/// Records a follow; following twice changes nothing.
pub async fn follow(db: &impl Statements, follower_id: &str, followee_id: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, ?, ?)
         ON DUPLICATE KEY UPDATE follower_id = follower_id",
        params![follower_id, followee_id, now],
    )
    .await
}

pub async fn unfollow(db: &impl Statements, follower_id: &str, followee_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM follows WHERE follower_id = ? AND followee_id = ?", params![follower_id, followee_id])
        .await
}

/// Reads and locks a user by username key until the transaction ends.
pub async fn lock_user_by_username(db: &impl Statements, username_key: &str) -> Result<Option<User>, DbError> {
    let statement = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username_key = ? FOR UPDATE");
    db.query_one(&statement, params![username_key]).await?.as_ref().map(User::from_row).transpose()
}

/// Bumps a user's token version: every token issued before stops working.
pub async fn bump_token_version(db: &impl Statements, id: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET token_version = token_version + 1, updated_at = ? WHERE id = ?",
        params![now, id],
    )
    .await
}

/// Grants and revokes roles and writes one audit row per change: at most
/// three statements whatever the number of changes, none when there is no change.
pub async fn change_roles(
    db: &impl Statements,
    actor: &str,
    user_id: &str,
    grant: &[&str],
    revoke: &[&str],
    now: i64,
) -> Result<(), DbError> {
    if !revoke.is_empty() {
        let statement = format!(
            "DELETE FROM user_roles WHERE user_id = ? AND role IN ({})",
            vec!["?"; revoke.len()].join(", ")
        );
        let mut values = params![user_id];
        values.extend(revoke.iter().map(|role| shared::db::Param::from(*role)));
        db.execute(&statement, values).await?;
    }
    if !grant.is_empty() {
        let statement = format!(
            "INSERT INTO user_roles (user_id, role, granted_at) VALUES {}",
            vec!["(?, ?, ?)"; grant.len()].join(", ")
        );
        let mut values = Vec::new();
        for role in grant {
            values.extend(params![user_id, *role, now]);
        }
        db.execute(&statement, values).await?;
    }
    let changes: Vec<(&str, &str)> =
        grant.iter().map(|r| (*r, "grant")).chain(revoke.iter().map(|r| (*r, "revoke"))).collect();
    if changes.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "INSERT INTO role_audit (id, actor, user_id, role, action, at) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?)"; changes.len()].join(", ")
    );
    let mut values = Vec::new();
    for (role, action) in changes {
        values.extend(params![shared::ids::uuid_v7(), actor, user_id, role, action, now]);
    }
    db.execute(&statement, values).await
}

pub async fn delete_user(db: &impl Statements, id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM users WHERE id = ?", params![id]).await
}

// ---- email verification ----

/// A pending verification link, looked up by its token's hash.
pub struct Verification {
    pub user_id: String,
    pub email_key: String,
    pub expires_at: i64,
}

/// Reads and locks the time a verification link last went to an address.
pub async fn lock_last_verification_send(db: &impl Statements, email_key: &str) -> Result<Option<i64>, DbError> {
    let row = db
        .query_one("SELECT last_sent_at FROM email_verification_sends WHERE email_key = ? FOR UPDATE", params![email_key])
        .await?;
    row.map(|row| row.get("last_sent_at")).transpose()
}

/// Stores a new link's token hash and the time it goes to the address (two statements).
pub async fn insert_verification(
    db: &impl Statements,
    token_hash: &str,
    user_id: &str,
    email_key: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO email_verifications (token_hash, user_id, email_key, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        params![token_hash, user_id, email_key, now, expires_at],
    )
    .await?;
    db.execute(
        "INSERT INTO email_verification_sends (email_key, last_sent_at) VALUES (?, ?)
         ON DUPLICATE KEY UPDATE last_sent_at = VALUES(last_sent_at)",
        params![email_key, now],
    )
    .await
}

/// Reads and locks the link whose token has this hash.
pub async fn lock_verification(db: &impl Statements, token_hash: &str) -> Result<Option<Verification>, DbError> {
    let row = db
        .query_one(
            "SELECT user_id, email_key, expires_at FROM email_verifications WHERE token_hash = ? FOR UPDATE",
            params![token_hash],
        )
        .await?;
    row.map(|row| Ok(Verification { user_id: row.get("user_id")?, email_key: row.get("email_key")?, expires_at: row.get("expires_at")? }))
        .transpose()
}

/// Marks the user's current address verified.
pub async fn set_email_verified(db: &impl Statements, user_id: &str, now: i64) -> Result<(), DbError> {
    db.execute("UPDATE users SET email_verified_at = ?, updated_at = ? WHERE id = ?", params![now, now, user_id]).await
}

/// Deletes every pending link of a user (after verifying, or when the address changes).
pub async fn delete_verifications(db: &impl Statements, user_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM email_verifications WHERE user_id = ?", params![user_id]).await
}


/// Purges expired links and send times older than `sends_before`, at most
/// `limit` rows each (two statements).
pub async fn purge_verifications(db: &impl Statements, now: i64, sends_before: i64, limit: u32) -> Result<(), DbError> {
    db.execute("DELETE FROM email_verifications WHERE expires_at < ? ORDER BY expires_at LIMIT ?", params![now, limit])
        .await?;
    db.execute(
        "DELETE FROM email_verification_sends WHERE last_sent_at < ? ORDER BY last_sent_at LIMIT ?",
        params![sends_before, limit],
    )
    .await
}
