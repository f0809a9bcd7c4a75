//! `spin:mysql/mysql@3.0.0` on `mysql_async`, converting values the way Spin
//! 4.0 does: integers, floats, text and binary only. Errors carry the `{:?}`
//! of the `mysql_async` error, because components parse codes from that text.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use tokio::sync::{Mutex, mpsc, oneshot};
use wasmtime::component::{Destination, StreamProducer, StreamResult};
use wasmtime::StoreContextMut;

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::mysql::mysql::{Column, DbDataType, DbValue, Error, ParameterValue, Row};

/// Query results buffered by the host are capped, as in Spin.
const MAX_RESULT_BYTES: usize = 128 << 20;

/// One server connection, opened by `open` and closed on drop.
pub struct Connection {
    inner: Arc<Mutex<Option<mysql_async::Conn>>>,
}

impl Connection {
    pub async fn open(allowed: &AllowedHosts, address: &str) -> Result<Self, Error> {
        if !allowed.allows_url(address, "mysql") {
            return Err(Error::ConnectionFailed(format!("address {address} is not permitted")));
        }
        let opts = build_opts(address).map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        let conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Some(conn))),
        })
    }

    /// Returns a second handle on the same connection, for use outside the store borrow.
    pub fn share(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }

    /// Sends COM_QUIT in the background so the server does not count an aborted client.
    pub fn close(&self) {
        let inner = self.inner.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Some(conn) = inner.lock().await.take() {
                    let _ = conn.disconnect().await;
                }
            });
        }
    }

    pub async fn execute(&self, statement: String, params: Vec<ParameterValue>) -> Result<(), Error> {
        let mut guard = self.inner.lock().await;
        let conn = guard
            .as_mut()
            .ok_or_else(|| Error::ConnectionFailed("connection is closed".into()))?;
        let params = mysql_async::Params::Positional(params.into_iter().map(to_value).collect());
        conn.exec_batch(statement.as_str(), [params])
            .await
            .map_err(|e| Error::QueryFailed(format!("{e:?}")))
    }

    /// Runs the query on a task of its own. Rows arrive on the channel, and the
    /// final outcome (an error after the first row, or the size cap) on the oneshot.
    pub async fn query(
        &self,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<(Vec<Column>, mpsc::Receiver<Row>, oneshot::Receiver<Result<(), Error>>), Error> {
        let (columns_tx, columns_rx) = oneshot::channel::<Result<Vec<Column>, Error>>();
        let (rows_tx, rows_rx) = mpsc::channel(4);
        let (done_tx, done_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let params = mysql_async::Params::Positional(params.into_iter().map(to_value).collect());

        tokio::spawn(async move {
            let mut columns_tx = Some(columns_tx);
            let outcome = async {
                let mut guard = inner.lock().await;
                let conn = guard
                    .as_mut()
                    .ok_or_else(|| Error::ConnectionFailed("connection is closed".into()))?;
                let mut result = conn
                    .exec_iter(statement.as_str(), params)
                    .await
                    .map_err(|e| Error::QueryFailed(format!("{e:?}")))?;
                let columns: Vec<Column> = result
                    .columns()
                    .map(|cols| cols.iter().map(convert_column).collect())
                    .unwrap_or_default();
                if let Some(tx) = columns_tx.take() {
                    let _ = tx.send(Ok(columns.clone()));
                }
                let mut bytes = 0usize;
                while let Some(row) = result
                    .next()
                    .await
                    .map_err(|e| Error::Other(e.to_string()))?
                {
                    let row = convert_row(row, &columns)?;
                    bytes += row.iter().map(value_size).sum::<usize>();
                    if bytes > MAX_RESULT_BYTES {
                        return Err(Error::Other(format!(
                            "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
                        )));
                    }
                    if rows_tx.send(row).await.is_err() {
                        break;
                    }
                }
                // Drain any further result sets so the connection stays usable.
                drop(result);
                Ok(())
            }
            .await;
            match (outcome, columns_tx.take()) {
                (Err(error), Some(tx)) => {
                    let _ = tx.send(Err(error));
                }
                (outcome, _) => {
                    let _ = done_tx.send(outcome);
                }
            }
        });

        let columns = columns_rx
            .await
            .map_err(|_| Error::Other("the query task ended early".into()))??;
        Ok((columns, rows_rx, done_rx))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Only the last handle closes: shared handles live for one call.
        if Arc::strong_count(&self.inner) == 1 {
            self.close();
        }
    }
}

/// Feeds rows from the query task to the guest's `stream<row>`.
pub struct RowProducer {
    rows: mpsc::Receiver<Row>,
}

impl RowProducer {
    pub fn new(rows: mpsc::Receiver<Row>) -> Self {
        Self { rows }
    }
}

impl<D> StreamProducer<D> for RowProducer {
    type Item = Row;
    type Buffer = Option<Row>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        if destination.remaining(store) == Some(0) {
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        match self.get_mut().rows.poll_recv(cx) {
            Poll::Ready(Some(row)) => {
                destination.set_buffer(Some(row));
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(None) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn build_opts(address: &str) -> Result<mysql_async::Opts, mysql_async::Error> {
    let url = url::Url::parse(address).map_err(mysql_async::UrlError::from)?;
    let is_ssl = |k: &str| matches!(k.to_ascii_lowercase().as_str(), "ssl-mode" | "sslmode");
    let use_ssl = url
        .query_pairs()
        .any(|(k, v)| is_ssl(&k) && !v.eq_ignore_ascii_case("disabled"));
    let other_params: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !is_ssl(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut cleaned = url.clone();
    cleaned.set_query(None);
    if !other_params.is_empty() {
        cleaned.query_pairs_mut().extend_pairs(other_params);
    }
    let opts = mysql_async::Opts::from_url(cleaned.as_str())?;
    let builder = mysql_async::OptsBuilder::from_opts(opts);
    let builder = if use_ssl {
        builder.ssl_opts(Some(mysql_async::SslOpts::default()))
    } else {
        builder
    };
    Ok(builder.into())
}

fn to_value(value: ParameterValue) -> mysql_async::Value {
    use mysql_async::Value;
    match value {
        ParameterValue::Boolean(v) => Value::from(v),
        ParameterValue::Int8(v) => Value::from(v),
        ParameterValue::Int16(v) => Value::from(v),
        ParameterValue::Int32(v) => Value::from(v),
        ParameterValue::Int64(v) => Value::from(v),
        ParameterValue::Uint8(v) => Value::from(v),
        ParameterValue::Uint16(v) => Value::from(v),
        ParameterValue::Uint32(v) => Value::from(v),
        ParameterValue::Uint64(v) => Value::from(v),
        ParameterValue::Floating32(v) => Value::from(v),
        ParameterValue::Floating64(v) => Value::from(v),
        ParameterValue::Str(v) => Value::from(v),
        ParameterValue::Binary(v) => Value::from(v),
        ParameterValue::DbNull => Value::NULL,
    }
}

fn convert_column(column: &mysql_async::Column) -> Column {
    Column {
        name: column.name_str().into_owned(),
        data_type: data_type(column),
    }
}

/// Maps a column type as Spin 4.0 does. `DECIMAL`, `DATETIME`, `JSON` and the
/// like are `other` and fail to convert, and a `_bin` text column is binary.
fn data_type(column: &mysql_async::Column) -> DbDataType {
    let kind = column.column_type();
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = column.flags().contains(ColumnFlags::BINARY_FLAG);
    match kind {
        ColumnType::MYSQL_TYPE_DOUBLE => DbDataType::Floating64,
        ColumnType::MYSQL_TYPE_FLOAT => DbDataType::Floating32,
        ColumnType::MYSQL_TYPE_TINY if unsigned => DbDataType::Uint8,
        ColumnType::MYSQL_TYPE_TINY => DbDataType::Int8,
        ColumnType::MYSQL_TYPE_SHORT if unsigned => DbDataType::Uint16,
        ColumnType::MYSQL_TYPE_SHORT => DbDataType::Int16,
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG if unsigned => DbDataType::Uint32,
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG => DbDataType::Int32,
        ColumnType::MYSQL_TYPE_LONGLONG if unsigned => DbDataType::Uint64,
        ColumnType::MYSQL_TYPE_LONGLONG => DbDataType::Int64,
        ColumnType::MYSQL_TYPE_BLOB if !binary => DbDataType::Str,
        ColumnType::MYSQL_TYPE_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB => DbDataType::Binary,
        ColumnType::MYSQL_TYPE_STRING | ColumnType::MYSQL_TYPE_VAR_STRING if binary => DbDataType::Binary,
        ColumnType::MYSQL_TYPE_STRING | ColumnType::MYSQL_TYPE_VAR_STRING => DbDataType::Str,
        _ => DbDataType::Other,
    }
}

fn convert_row(mut row: mysql_async::Row, columns: &[Column]) -> Result<Row, Error> {
    (0..row.len())
        .map(|index| match (row.take::<mysql_async::Value, _>(index), columns.get(index)) {
            (None, _) | (Some(mysql_async::Value::NULL), _) => Ok(DbValue::DbNull),
            (_, None) => Err(Error::Other(format!("Can't get column at index {index}"))),
            (Some(value), Some(column)) => convert_value(value, column),
        })
        .collect()
}

fn convert_value(value: mysql_async::Value, column: &Column) -> Result<DbValue, Error> {
    fn to<T: mysql_async::prelude::FromValue>(value: mysql_async::Value) -> Result<T, Error> {
        mysql_async::from_value_opt::<T>(value).map_err(|e| Error::ValueConversionFailed(format!("{e}")))
    }
    Ok(match column.data_type {
        DbDataType::Boolean => DbValue::Boolean(to(value)?),
        DbDataType::Int8 => DbValue::Int8(to(value)?),
        DbDataType::Int16 => DbValue::Int16(to(value)?),
        DbDataType::Int32 => DbValue::Int32(to(value)?),
        DbDataType::Int64 => DbValue::Int64(to(value)?),
        DbDataType::Uint8 => DbValue::Uint8(to(value)?),
        DbDataType::Uint16 => DbValue::Uint16(to(value)?),
        DbDataType::Uint32 => DbValue::Uint32(to(value)?),
        DbDataType::Uint64 => DbValue::Uint64(to(value)?),
        DbDataType::Floating32 => DbValue::Floating32(to(value)?),
        DbDataType::Floating64 => DbValue::Floating64(to(value)?),
        DbDataType::Str => DbValue::Str(to(value)?),
        DbDataType::Binary => DbValue::Binary(to(value)?),
        DbDataType::Other => {
            return Err(Error::ValueConversionFailed(format!(
                "Cannot convert value {value:?} in column {} data type {:?}",
                column.name, column.data_type
            )));
        }
    })
}

fn value_size(value: &DbValue) -> usize {
    std::mem::size_of::<DbValue>()
        + match value {
            DbValue::Str(s) => s.len(),
            DbValue::Binary(b) => b.len(),
            _ => 0,
        }
}
