//! MySQL access through Spin's asynchronous `spin:mysql/mysql@3.0.0`
//! interface, bound from the repository's `wit/` directory (spin-sdk 6.0.0's
//! own `mysql` module is the older synchronous interface, which blocks the whole
//! instance while it waits).
//!
//! Rules this module encodes (docs/architecture.md explains them):
//! - one connection per request per database, opened on first use: Spin opens
//!   a new server connection on every `open`, there is no pool;
//! - rows are decoded the way the interface really converts columns: times are
//!   `BIGINT`, text may arrive as bytes (`_bin` collations), `TINYINT(1)` is an integer;
//! - a transaction awaits nothing but its own statements, runs with a short
//!   lock wait timeout and is retried a bounded number of times on deadlock or
//!   lock wait timeout;
//! - errors come back from Spin as text. The MySQL error code is parsed from
//!   it, but the server's message is never logged because it can quote row values.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::error::ApiError;
use crate::telemetry::Stats;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        world: "conduit:platform/mysql",
        path: "../wit",
        generate_all,
    });
}

use bindings::spin::mysql::mysql::{Connection, DbValue, Error as WitError};
pub use bindings::spin::mysql::mysql::ParameterValue as Param;

/// The raw `spin:mysql/mysql@3.0.0` interface, for code that must see exactly
/// what the host returns (the host's own test component). A Wasm binary must
/// contain one copy of these bindings, because the linker merges the type
/// sections of a second `generate!` of this world into one that does not parse.
pub use bindings::spin::mysql::mysql as interface;

/// Seconds a statement waits for a row lock before MySQL gives up (error 1205).
pub const LOCK_WAIT_TIMEOUT_SECONDS: u32 = 2;
/// Attempts of one transaction when it meets a deadlock or a lock wait timeout.
pub const TRANSACTION_ATTEMPTS: u32 = 3;

/// MySQL server error codes the application reacts to.
pub mod codes {
    pub const DUPLICATE_KEY: u16 = 1062;
    /// A foreign key names a row that does not exist (`ER_NO_REFERENCED_ROW_2`).
    pub const FOREIGN_KEY_MISSING: u16 = 1452;
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const DEADLOCK: u16 = 1213;
}

/// The kind of a database failure, as far as the caller needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The server could not be reached or the connection broke: a 503.
    Unavailable,
    /// The server rejected a statement, and `code` gives the reason.
    Server,
    /// A column could not be decoded into the requested type.
    Decode,
    /// Anything else the interface reported.
    Other,
}

/// A database failure. `Display` shows the kind, the MySQL code and the
/// statement's label, never the server's message.
#[derive(Clone)]
pub struct DbError {
    kind: DbErrorKind,
    code: Option<u16>,
    /// Kept only to read a duplicate key's index name; never printed.
    server_message: Option<String>,
    detail: String,
}

impl DbError {
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// Returns the MySQL server error code, when the server sent one.
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == DbErrorKind::Unavailable
    }

    /// Deadlocks and lock wait timeouts: the whole transaction may be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code, Some(codes::DEADLOCK | codes::LOCK_WAIT_TIMEOUT))
    }

    /// For a duplicate key (1062), the name of the unique index that was
    /// violated, so the call site can name the field at fault.
    pub fn duplicate_key(&self) -> Option<&str> {
        if self.code != Some(codes::DUPLICATE_KEY) {
            return None;
        }
        let message = self.server_message.as_deref()?;
        let after = &message[message.rfind("for key '")? + "for key '".len()..];
        let name = &after[..after.find('\'')?];
        // MySQL 8 prefixes the table name ("users.users_email_key").
        Some(name.rsplit('.').next().unwrap_or(name))
    }

    /// Builds an error for a value that cannot be read as the type the caller expects.
    pub fn decode(detail: String) -> Self {
        Self { kind: DbErrorKind::Decode, code: None, server_message: None, detail }
    }

    /// Classifies an error as Spin returns it. Spin formats the driver's error
    /// with `{:?}`: a server error reads
    /// `Server(ServerError { code: 1062, message: "…", state: "23000" })`,
    /// a broken connection `Io(…)` or `Driver(…)`.
    fn from_wit(error: WitError, statement: &str) -> Self {
        let (text, connection_failed) = match error {
            WitError::ConnectionFailed(text) => (text, true),
            WitError::BadParameter(text)
            | WitError::QueryFailed(text)
            | WitError::ValueConversionFailed(text)
            | WitError::Other(text) => (text, false),
        };
        let code = parse_server_code(&text);
        let kind = if code.is_some_and(is_connection_code) || connection_failed && code.is_none() {
            DbErrorKind::Unavailable
        } else if code.is_some() {
            DbErrorKind::Server
        } else if text.starts_with("Io(") || text.starts_with("Driver(") {
            DbErrorKind::Unavailable
        } else {
            DbErrorKind::Other
        };
        let variant = text.split(['(', ' ', '{']).next().unwrap_or("").to_string();
        let detail = match code {
            Some(code) => format!("{statement}: server error {code}"),
            None => format!("{statement}: {variant}"),
        };
        Self { kind, code, server_message: code.map(|_| text), detail }
    }
}

/// Server codes that mean the database cannot serve us right now (access
/// denied, too many connections, shutting down), not that a statement is wrong.
fn is_connection_code(code: u16) -> bool {
    matches!(code, 1040 | 1044 | 1045 | 1053 | 1152 | 1153 | 2002 | 2003 | 2006 | 2013)
}

/// Parses the MySQL error code out of Spin's text for a server error.
pub fn parse_server_code(text: &str) -> Option<u16> {
    let start = text.find("ServerError {")?;
    let rest = &text[start..];
    let digits = &rest[rest.find("code: ")? + "code: ".len()..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DbErrorKind::Unavailable => "database unavailable",
            DbErrorKind::Server => "database error",
            DbErrorKind::Decode => "cannot decode a database value",
            DbErrorKind::Other => "database interface error",
        };
        write!(f, "{kind} ({})", self.detail)
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for DbError {}

/// Builds statement parameters: `params![id, name, 3_i64]`.
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::db::Param::from($value)),*]
    };
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Str(value.to_string())
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Str(value)
    }
}

impl From<&String> for Param {
    fn from(value: &String) -> Self {
        Param::Str(value.clone())
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int64(value)
    }
}

impl From<u64> for Param {
    fn from(value: u64) -> Self {
        Param::Uint64(value)
    }
}

impl From<u32> for Param {
    fn from(value: u32) -> Self {
        Param::Uint32(value)
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Self {
        Param::Boolean(value)
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(value: Option<T>) -> Self {
        value.map_or(Param::DbNull, Into::into)
    }
}

/// One row, with its column names for lookups.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Rc<[String]>,
    values: Vec<Value>,
}

/// A column value as the interface delivers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i128),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Unsupported,
}

impl From<DbValue> for Value {
    fn from(value: DbValue) -> Self {
        match value {
            DbValue::Boolean(v) => Value::Int(i128::from(v)),
            DbValue::Int8(v) => Value::Int(v.into()),
            DbValue::Int16(v) => Value::Int(v.into()),
            DbValue::Int32(v) => Value::Int(v.into()),
            DbValue::Int64(v) => Value::Int(v.into()),
            DbValue::Uint8(v) => Value::Int(v.into()),
            DbValue::Uint16(v) => Value::Int(v.into()),
            DbValue::Uint32(v) => Value::Int(v.into()),
            DbValue::Uint64(v) => Value::Int(v.into()),
            DbValue::Floating32(v) => Value::Float(v.into()),
            DbValue::Floating64(v) => Value::Float(v),
            DbValue::Str(v) => Value::Text(v),
            DbValue::Binary(v) => Value::Bytes(v),
            DbValue::DbNull => Value::Null,
            DbValue::Unsupported => Value::Unsupported,
        }
    }
}

/// Converts a column value into a Rust type, following what the interface
/// really sends.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

impl FromValue for String {
    /// Text columns with a binary collation arrive as bytes; both forms are accepted.
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(text) => Ok(text.clone()),
            Value::Bytes(bytes) => String::from_utf8(bytes.clone()).map_err(|_| "bytes are not UTF-8".into()),
            other => Err(format!("expected text, found {}", describe(other))),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(v) => i64::try_from(*v).map_err(|_| "integer out of range".into()),
            other => Err(format!("expected an integer, found {}", describe(other))),
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(v) => u64::try_from(*v).map_err(|_| "integer out of range".into()),
            other => Err(format!("expected an integer, found {}", describe(other))),
        }
    }
}

impl FromValue for bool {
    /// `BOOLEAN` is `TINYINT(1)`, which arrives as an integer.
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(v) => Ok(*v != 0),
            other => Err(format!("expected a boolean, found {}", describe(other))),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bytes(bytes) => Ok(bytes.clone()),
            Value::Text(text) => Ok(text.clone().into_bytes()),
            other => Err(format!("expected bytes, found {}", describe(other))),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Unsupported => "a type the interface cannot convert (DATETIME, DECIMAL, JSON?)",
    }
}

impl Row {
    pub fn new(columns: Rc<[String]>, values: Vec<Value>) -> Self {
        Self { columns, values }
    }

    /// Reads the column named `name`.
    pub fn get<T: FromValue>(&self, name: &str) -> Result<T, DbError> {
        let index = self
            .columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| DbError::decode(format!("no column `{name}`")))?;
        T::from_value(&self.values[index]).map_err(|problem| DbError::decode(format!("column `{name}`: {problem}")))
    }
}

/// A request's connection to one database, opened on first use and counted.
pub struct Db {
    address: crate::config::Secret,
    connection: RefCell<Option<Rc<Connection>>>,
    session_prepared: RefCell<bool>,
    stats: Rc<Stats>,
}

impl Db {
    /// Prepares access to the database at `address` (a `mysql://` URL from a
    /// secret variable). Nothing is opened until the first statement.
    pub fn new(address: crate::config::Secret, stats: Rc<Stats>) -> Self {
        Self { address, connection: RefCell::new(None), session_prepared: RefCell::new(false), stats }
    }

    async fn connection(&self) -> Result<Rc<Connection>, DbError> {
        if let Some(connection) = self.connection.borrow().as_ref() {
            return Ok(connection.clone());
        }
        self.stats.db_connection_opened();
        let connection = Connection::open(self.address.expose().to_string())
            .await
            .map(Rc::new)
            .map_err(|e| DbError::from_wit(e, "open"))?;
        *self.connection.borrow_mut() = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a connection that failed, so a later statement opens a new one.
    fn drop_connection_if_broken(&self, error: &DbError) {
        if error.is_unavailable() {
            self.connection.borrow_mut().take();
            *self.session_prepared.borrow_mut() = false;
        }
    }

    /// Runs a statement that returns no rows.
    pub async fn execute(&self, statement: &str, params: Vec<Param>) -> Result<(), DbError> {
        let connection = self.connection().await?;
        self.stats.db_statement();
        let result = connection
            .execute(statement.to_string(), params)
            .await
            .map_err(|e| DbError::from_wit(e, first_word(statement)));
        if let Err(error) = &result {
            self.drop_connection_if_broken(error);
        }
        result
    }

    /// Runs a query and reads every row.
    pub async fn query(&self, statement: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        let result = self.query_inner(statement, params).await;
        if let Err(error) = &result {
            self.drop_connection_if_broken(error);
        }
        result
    }

    async fn query_inner(&self, statement: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        let connection = self.connection().await?;
        self.stats.db_statement();
        let label = first_word(statement);
        let (columns, rows, completion) = connection
            .query(statement.to_string(), params)
            .await
            .map_err(|e| DbError::from_wit(e, label))?;
        let rows = rows.collect().await;
        completion.await.map_err(|e| DbError::from_wit(e, label))?;

        let columns: Rc<[String]> = columns.into_iter().map(|column| column.name).collect();
        Ok(rows
            .into_iter()
            .map(|row| Row::new(columns.clone(), row.into_iter().map(Value::from).collect()))
            .collect())
    }

    /// Runs `body` in a transaction and commits it. On a deadlock or lock
    /// wait timeout the whole transaction is rolled back and run again, up to
    /// [`TRANSACTION_ATTEMPTS`] times. After that the request gets 503 with
    /// `Retry-After`. Any other error rolls back and is returned.
    ///
    /// `body` gets a [`Tx`], which offers only statements on this
    /// transaction's connection. It must await nothing else, so that row
    /// locks are held only as long as the statements take.
    pub async fn transaction<T>(
        &self,
        mut body: impl AsyncFnMut(&Tx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut attempt = 1;
        loop {
            match self.try_transaction(&mut body).await {
                Ok(value) => return Ok(value),
                Err(TxFailure::Retryable(_)) if attempt < TRANSACTION_ATTEMPTS => {
                    self.stats.db_transaction_retried();
                    // Spread the retries of colliding requests a little.
                    let pause = 5 * u64::from(attempt) + u64::from(crate::ids::random_u32() % 20);
                    spin_sdk::time::sleep(std::time::Duration::from_millis(pause)).await;
                    attempt += 1;
                }
                // Still contended after every attempt: the database is busy, not broken.
                Err(TxFailure::Retryable(error)) => {
                    return Err(ApiError::Unavailable(format!("{error} after {TRANSACTION_ATTEMPTS} attempts")));
                }
                Err(TxFailure::Failed(error)) => return Err(error),
            }
        }
    }

    async fn try_transaction<T>(
        &self,
        body: &mut impl AsyncFnMut(&Tx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, TxFailure> {
        self.begin().await.map_err(|e| TxFailure::Failed(e.into()))?;

        let outcome = body(&Tx { db: self }).await;

        let failure = match outcome {
            Ok(value) => match self.execute("COMMIT", Vec::new()).await {
                Ok(()) => return Ok(value),
                Err(error) => ApiError::from(error),
            },
            Err(error) => error,
        };
        self.rollback().await;

        // A database error reaches here converted into `ApiError::Internal`.
        Err(match failure {
            ApiError::Internal(cause) if cause.downcast_ref::<DbError>().is_some_and(DbError::is_retryable) => {
                TxFailure::Retryable(cause.downcast::<DbError>().expect("the guard checked the type"))
            }
            other => TxFailure::Failed(other),
        })
    }

    async fn begin(&self) -> Result<(), DbError> {
        if !*self.session_prepared.borrow() {
            let statement = format!("SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECONDS}");
            self.execute(&statement, Vec::new()).await?;
            *self.session_prepared.borrow_mut() = true;
        }
        self.execute("START TRANSACTION", Vec::new()).await
    }

    /// Rolls back. When that fails too, the connection's state is unknown, so it is dropped.
    async fn rollback(&self) {
        if self.execute("ROLLBACK", Vec::new()).await.is_err() {
            self.connection.borrow_mut().take();
            *self.session_prepared.borrow_mut() = false;
        }
    }
}

enum TxFailure {
    Retryable(DbError),
    Failed(ApiError),
}

/// Statements inside a transaction (see [`Db::transaction`]).
pub struct Tx<'a> {
    db: &'a Db,
}

/// The statements both a [`Db`] and a [`Tx`] run, so a component's store
/// functions work inside and outside transactions.
// Async functions in this trait are used only with static dispatch inside
// one-threaded components, so their futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Statements {
    async fn execute(&self, statement: &str, params: Vec<Param>) -> Result<(), DbError>;
    async fn query(&self, statement: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError>;

    /// Runs a query expected to return at most one row.
    async fn query_one(&self, statement: &str, params: Vec<Param>) -> Result<Option<Row>, DbError> {
        Ok(self.query(statement, params).await?.into_iter().next())
    }
}

impl Statements for Db {
    async fn execute(&self, statement: &str, params: Vec<Param>) -> Result<(), DbError> {
        Db::execute(self, statement, params).await
    }

    async fn query(&self, statement: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        Db::query(self, statement, params).await
    }
}

impl Statements for Tx<'_> {
    async fn execute(&self, statement: &str, params: Vec<Param>) -> Result<(), DbError> {
        self.db.execute(statement, params).await
    }

    async fn query(&self, statement: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        self.db.query(statement, params).await
    }
}

/// Returns a statement's first word, its label in errors ("SELECT").
fn first_word(statement: &str) -> &str {
    let trimmed = statement.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    &trimmed[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text Spin 4.0.2 returns for a duplicate key, `format!("{e:?}")` of
    /// mysql_async 0.35's error.
    const DUPLICATE: &str = r#"Server(ServerError { code: 1062, message: "Duplicate entry 'jose' for key 'users_username_key'", state: "23000" })"#;

    #[test]
    fn server_code_is_parsed_from_spins_error_text() {
        assert_eq!(parse_server_code(DUPLICATE), Some(1062));
        assert_eq!(
            parse_server_code(r#"Server(ServerError { code: 1213, message: "Deadlock found", state: "40001" })"#),
            Some(1213)
        );
        assert_eq!(parse_server_code("Io(Io(Os { code: 111, kind: ConnectionRefused }))"), None);
    }

    #[test]
    fn duplicate_key_hides_message() {
        let error = DbError::from_wit(WitError::QueryFailed(DUPLICATE.into()), "INSERT");

        assert_eq!(error.kind(), DbErrorKind::Server);
        assert_eq!(error.duplicate_key(), Some("users_username_key"));
        assert!(!error.is_retryable());
        let printed = format!("{error} {error:?}");
        assert!(!printed.contains("jose"), "{printed}");
        assert_eq!(error.to_string(), "database error (INSERT: server error 1062)");
    }

    #[test]
    fn duplicate_key_drops_table_name() {
        let text = r#"Server(ServerError { code: 1062, message: "Duplicate entry 'a' for key 'users.users_email_key'", state: "23000" })"#;

        let error = DbError::from_wit(WitError::QueryFailed(text.into()), "UPDATE");

        assert_eq!(error.duplicate_key(), Some("users_email_key"));
    }

    #[test]
    fn deadlocks_and_lock_waits_are_retryable() {
        for code in [1205, 1213] {
            let text = format!(r#"Server(ServerError {{ code: {code}, message: "x", state: "HY000" }})"#);
            assert!(DbError::from_wit(WitError::QueryFailed(text), "UPDATE").is_retryable());
        }
    }

    #[test]
    fn broken_and_refused_connections_are_unavailable() {
        let connection_refused = DbError::from_wit(
            WitError::ConnectionFailed("Io(Io(Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }))".into()),
            "open",
        );
        let broken = DbError::from_wit(WitError::QueryFailed("Io(Io(Kind(UnexpectedEof)))".into()), "SELECT");
        let denied = DbError::from_wit(
            WitError::ConnectionFailed(r#"Server(ServerError { code: 1045, message: "Access denied for user 'x'", state: "28000" })"#.into()),
            "open",
        );

        assert!(connection_refused.is_unavailable());
        assert!(broken.is_unavailable());
        assert!(denied.is_unavailable());
        assert_eq!(connection_refused.to_string(), "database unavailable (open: Io)");
        assert!(!denied.to_string().contains("Access denied"));
    }

    #[test]
    fn row_decodes_bytes_and_integers() {
        let columns: Rc<[String]> = vec!["name".to_string(), "n".to_string(), "missing".to_string()].into();
        let row = Row::new(columns, vec![Value::Bytes("José".as_bytes().to_vec()), Value::Int(42), Value::Null]);

        assert_eq!(row.get::<String>("name").unwrap(), "José");
        assert_eq!(row.get::<i64>("n").unwrap(), 42);
        assert!(row.get::<bool>("n").unwrap());
        assert_eq!(row.get::<Option<String>>("missing").unwrap(), None);
        assert_eq!(
            row.get::<i64>("name").unwrap_err().to_string(),
            "cannot decode a database value (column `name`: expected an integer, found bytes)"
        );
        assert!(row.get::<String>("absent").is_err());
    }

    #[test]
    fn statement_labels_are_the_first_word() {
        assert_eq!(first_word("  SELECT id FROM users"), "SELECT");
        assert_eq!(first_word("COMMIT"), "COMMIT");
    }
}
