//! Host side of the Spin interfaces in `wit/`: key-value (Spin's and the
//! draft WASI one), MySQL and variables. Generated from the same WIT the
//! components bind to, so the two sides cannot drift apart.

use wasmtime::component::{Accessor, FutureReader, HasSelf, Linker, Resource, StreamReader};

use crate::kv;
use crate::mysql;
use crate::state::HostState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "conduit:platform/component",
    imports: { default: async | trappable },
    with: {
        "spin:key-value/key-value@3.0.0.store": KvHandle,
        "wasi:keyvalue/store@0.2.0-draft2.bucket": KvHandle,
        "wasi:keyvalue/atomics@0.2.0-draft2.cas": CasHandle,
        "spin:mysql/mysql@3.0.0.connection": mysql::Connection,
    },
    trappable_error_type: {
        "spin:key-value/key-value@3.0.0.error" => spin::key_value::key_value::Error,
        "spin:mysql/mysql@3.0.0.error" => spin::mysql::mysql::Error,
        "spin:variables/variables@3.0.0.error" => spin::variables::variables::Error,
        "wasi:keyvalue/store@0.2.0-draft2.error" => wasi::keyvalue::store::Error,
        "wasi:keyvalue/atomics@0.2.0-draft2.cas-error" => wasi::keyvalue::atomics::CasError,
    },
});

use spin::key_value::key_value as spin_kv;
use spin::mysql::mysql as spin_mysql;
use spin::variables::variables as spin_vars;
use wasi::keyvalue::atomics as wasi_atomics;
use wasi::keyvalue::store as wasi_store;

/// An open store, for either key-value interface.
pub struct KvHandle {
    store: kv::Store,
}

/// A compare-and-swap in progress.
pub struct CasHandle {
    cas: kv::Cas,
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    spin_kv::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    spin_mysql::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    spin_vars::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi_store::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi_atomics::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

type WResult<T> = wasmtime::Result<T>;

// ---- spin:key-value ----

impl spin_kv::Host for HostState {
    fn convert_error(&mut self, error: spin_kv::Error) -> WResult<spin_kv::Error> {
        Ok(error)
    }
}

fn kv_error(error: kv::KvError) -> spin_kv::Error {
    spin_kv::Error::Other(error.0)
}

/// Looks up the store behind a handle without holding the store borrow across awaits.
fn kv_store<T>(accessor: &Accessor<T, HasSelf<HostState>>, handle: &Resource<KvHandle>) -> Result<kv::Store, spin_kv::Error> {
    accessor.with(|mut access| {
        access
            .get()
            .table
            .get(handle)
            .map(|h| h.store.clone())
            .map_err(|e| spin_kv::Error::Other(e.to_string()))
    })
}

impl spin_kv::HostStore for HostState {
    async fn drop(&mut self, handle: Resource<KvHandle>) -> WResult<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl spin_kv::HostStoreWithStore for HasSelf<HostState> {
    async fn open<T>(accessor: &Accessor<T, Self>, label: String) -> Result<Resource<KvHandle>, spin_kv::Error> {
        accessor.with(|mut access| {
            let state = access.get();
            let store = state.open_kv(&label).map_err(|e| match e {
                crate::state::OpenError::AccessDenied => spin_kv::Error::AccessDenied,
            })?;
            state
                .table
                .push(KvHandle { store })
                .map_err(|_| spin_kv::Error::StoreTableFull)
        })
    }

    async fn get<T>(accessor: &Accessor<T, Self>, handle: Resource<KvHandle>, key: String) -> Result<Option<Vec<u8>>, spin_kv::Error> {
        kv_store(accessor, &handle)?.get(&key).await.map_err(kv_error)
    }

    async fn set<T>(accessor: &Accessor<T, Self>, handle: Resource<KvHandle>, key: String, value: Vec<u8>) -> Result<(), spin_kv::Error> {
        kv_store(accessor, &handle)?.set(&key, value).await.map_err(kv_error)
    }

    async fn delete<T>(accessor: &Accessor<T, Self>, handle: Resource<KvHandle>, key: String) -> Result<(), spin_kv::Error> {
        kv_store(accessor, &handle)?.delete(&key).await.map_err(kv_error)
    }

    async fn exists<T>(accessor: &Accessor<T, Self>, handle: Resource<KvHandle>, key: String) -> Result<bool, spin_kv::Error> {
        kv_store(accessor, &handle)?.exists(&key).await.map_err(kv_error)
    }

    async fn get_keys<T>(
        accessor: &Accessor<T, Self>,
        handle: Resource<KvHandle>,
    ) -> WResult<(StreamReader<String>, FutureReader<Result<(), spin_kv::Error>>)> {
        let keys = match kv_store(accessor, &handle) {
            Ok(store) => store.keys().await.map_err(kv_error),
            Err(e) => Err(e),
        };
        let (keys, result) = match keys {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut access| -> wasmtime::Result<_> {
            let stream = StreamReader::new(&mut access, keys)?;
            let future = FutureReader::new(&mut access, async move { wasmtime::Result::<_>::Ok(result) })?;
            Ok((stream, future))
        })
    }
}

// ---- wasi:keyvalue store and atomics ----

impl wasi_store::Host for HostState {
    fn convert_error(&mut self, error: wasi_store::Error) -> WResult<wasi_store::Error> {
        Ok(error)
    }

    async fn open(&mut self, identifier: String) -> Result<Resource<KvHandle>, wasi_store::Error> {
        let store = self.open_kv(&identifier).map_err(|e| match e {
            crate::state::OpenError::AccessDenied => wasi_store::Error::AccessDenied,
        })?;
        self.table
            .push(KvHandle { store })
            .map_err(|e| wasi_store::Error::Other(e.to_string()))
    }
}

impl HostState {
    fn bucket(&mut self, handle: &Resource<KvHandle>) -> Result<kv::Store, wasi_store::Error> {
        self.table
            .get(handle)
            .map(|h| h.store.clone())
            .map_err(|e| wasi_store::Error::Other(e.to_string()))
    }
}

fn wasi_error(error: kv::KvError) -> wasi_store::Error {
    wasi_store::Error::Other(error.0)
}

impl wasi_store::HostBucket for HostState {
    async fn get(&mut self, handle: Resource<KvHandle>, key: String) -> Result<Option<Vec<u8>>, wasi_store::Error> {
        self.bucket(&handle)?.get(&key).await.map_err(wasi_error)
    }

    async fn set(&mut self, handle: Resource<KvHandle>, key: String, value: Vec<u8>) -> Result<(), wasi_store::Error> {
        self.bucket(&handle)?.set(&key, value).await.map_err(wasi_error)
    }

    async fn delete(&mut self, handle: Resource<KvHandle>, key: String) -> Result<(), wasi_store::Error> {
        self.bucket(&handle)?.delete(&key).await.map_err(wasi_error)
    }

    async fn exists(&mut self, handle: Resource<KvHandle>, key: String) -> Result<bool, wasi_store::Error> {
        self.bucket(&handle)?.exists(&key).await.map_err(wasi_error)
    }

    async fn list_keys(&mut self, handle: Resource<KvHandle>, cursor: Option<String>) -> Result<wasi_store::KeyResponse, wasi_store::Error> {
        if cursor.is_some() {
            return Err(wasi_store::Error::Other("list_keys: cursors are not supported".into()));
        }
        let keys = self.bucket(&handle)?.keys().await.map_err(wasi_error)?;
        Ok(wasi_store::KeyResponse { keys, cursor: None })
    }

    async fn drop(&mut self, handle: Resource<KvHandle>) -> WResult<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl wasi_atomics::Host for HostState {
    fn convert_cas_error(&mut self, error: wasi_atomics::CasError) -> WResult<wasi_atomics::CasError> {
        Ok(error)
    }

    async fn increment(&mut self, handle: Resource<KvHandle>, key: String, delta: i64) -> Result<i64, wasi_store::Error> {
        self.bucket(&handle)?.increment(&key, delta).await.map_err(wasi_error)
    }

    async fn swap(&mut self, cas: Resource<CasHandle>, value: Vec<u8>) -> Result<(), wasi_atomics::CasError> {
        let table_error = |e: wasmtime::component::ResourceTableError| {
            wasi_atomics::CasError::StoreError(wasi_store::Error::Other(e.to_string()))
        };
        let handle = self.table.get_mut(&cas).map_err(table_error)?;
        let swapped = handle
            .cas
            .swap(value)
            .await
            .map_err(|e| wasi_atomics::CasError::StoreError(wasi_error(e)))?;
        if swapped {
            self.table.delete(cas).map_err(table_error)?;
            Ok(())
        } else {
            Err(wasi_atomics::CasError::CasFailed(cas))
        }
    }
}

impl wasi_atomics::HostCas for HostState {
    async fn new(&mut self, bucket: Resource<KvHandle>, key: String) -> Result<Resource<CasHandle>, wasi_store::Error> {
        let cas = self.bucket(&bucket)?.begin_cas(&key).await.map_err(wasi_error)?;
        self.table
            .push(CasHandle { cas })
            .map_err(|e| wasi_store::Error::Other(e.to_string()))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> Result<Option<Vec<u8>>, wasi_store::Error> {
        let handle = self
            .table
            .get_mut(&cas)
            .map_err(|e| wasi_store::Error::Other(e.to_string()))?;
        handle.cas.current().await.map_err(wasi_error)
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> WResult<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

// ---- spin:variables ----

impl spin_vars::Host for HostState {
    fn convert_error(&mut self, error: spin_vars::Error) -> WResult<spin_vars::Error> {
        Ok(error)
    }
}

impl spin_vars::HostWithStore for HasSelf<HostState> {
    async fn get<T>(accessor: &Accessor<T, Self>, name: String) -> Result<String, spin_vars::Error> {
        let variables = accessor.with(|mut access| access.get().component.variables.clone());
        variables.get(&name).map_err(|e| match e {
            crate::variables::LookupError::InvalidName(m) => spin_vars::Error::InvalidName(m),
            crate::variables::LookupError::Undefined(m) => spin_vars::Error::Undefined(m),
        })
    }
}

// ---- spin:mysql ----

impl spin_mysql::Host for HostState {
    fn convert_error(&mut self, error: spin_mysql::Error) -> WResult<spin_mysql::Error> {
        Ok(error)
    }
}

impl spin_mysql::HostConnection for HostState {
    async fn drop(&mut self, handle: Resource<mysql::Connection>) -> WResult<()> {
        let connection = self.table.delete(handle)?;
        connection.close();
        Ok(())
    }
}

fn mysql_connection<T>(
    accessor: &Accessor<T, HasSelf<HostState>>,
    handle: &Resource<mysql::Connection>,
) -> Result<mysql::Connection, spin_mysql::Error> {
    accessor.with(|mut access| {
        let state = access.get();
        state
            .table
            .get(handle)
            .map(mysql::Connection::share)
            .map_err(|_| spin_mysql::Error::ConnectionFailed("no connection found".into()))
    })
}

impl spin_mysql::HostConnectionWithStore for HasSelf<HostState> {
    async fn open<T>(accessor: &Accessor<T, Self>, address: String) -> Result<Resource<mysql::Connection>, spin_mysql::Error> {
        let allowed = accessor.with(|mut access| access.get().component.allowed_hosts.clone());
        let connection = mysql::Connection::open(&allowed, &address).await?;
        accessor.with(|mut access| {
            access
                .get()
                .table
                .push(connection)
                .map_err(|_| spin_mysql::Error::ConnectionFailed("too many connections".into()))
        })
    }

    async fn execute<T>(
        accessor: &Accessor<T, Self>,
        handle: Resource<mysql::Connection>,
        statement: String,
        params: Vec<spin_mysql::ParameterValue>,
    ) -> Result<(), spin_mysql::Error> {
        mysql_connection(accessor, &handle)?.execute(statement, params).await
    }

    async fn query<T>(
        accessor: &Accessor<T, Self>,
        handle: Resource<mysql::Connection>,
        statement: String,
        params: Vec<spin_mysql::ParameterValue>,
    ) -> Result<
        (
            Vec<spin_mysql::Column>,
            StreamReader<spin_mysql::Row>,
            FutureReader<Result<(), spin_mysql::Error>>,
        ),
        spin_mysql::Error,
    > {
        let connection = mysql_connection(accessor, &handle)?;
        let (columns, rows, done) = connection.query(statement, params).await?;
        accessor
            .with(|mut access| -> wasmtime::Result<_> {
                let stream = StreamReader::new(&mut access, mysql::RowProducer::new(rows))?;
                let future = FutureReader::new(&mut access, async move {
                    done.await
                        .map_err(|_| wasmtime::format_err!("the query task ended without a result"))
                })?;
                Ok((columns, stream, future))
            })
            .map_err(|e| spin_mysql::Error::Other(e.to_string()))
    }
}
