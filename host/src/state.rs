//! Per-instance host state: what one component instance may reach (its stores,
//! variables and outbound hosts) and the WASI contexts wasmtime needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::{WasiHttpCtxView, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::kv;
use crate::outbound::OutboundHooks;
use crate::output::ComponentOutput;
use crate::variables::ComponentVariables;

/// Everything fixed about a component once the app has started.
pub struct ComponentRuntime {
    pub id: String,
    pub allowed_hosts: AllowedHosts,
    /// Labels the component lists in `key_value_stores`, with their backends.
    pub kv_stores: BTreeMap<String, kv::Store>,
    pub variables: Arc<ComponentVariables>,
    pub environment: Vec<(String, String)>,
    pub output: ComponentOutput,
    pub memory_limit: usize,
}

/// Failure to open a store label. Every label a component lists has a backend
/// (checked at start-up), so the only case left is a label it did not list.
#[derive(Debug)]
pub enum OpenError {
    AccessDenied,
}

/// The data of one wasmtime `Store`, i.e. one component instance, shared by
/// every request that instance serves.
pub struct HostState {
    pub instance_id: u64,
    pub component: Arc<ComponentRuntime>,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
}

impl HostState {
    pub fn new(instance_id: u64, component: Arc<ComponentRuntime>, hooks: OutboundHooks) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(component.output.stdout())
            .stderr(component.output.stderr())
            .envs(&component.environment);
        let limits = StoreLimitsBuilder::new()
            .memory_size(component.memory_limit)
            .instances(64)
            .build();
        Self {
            instance_id,
            table: ResourceTable::new(),
            limits,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks,
            component,
        }
    }

    /// Opens a store the component declared. Any other label is access denied, as in Spin.
    pub fn open_kv(&self, label: &str) -> Result<kv::Store, OpenError> {
        match self.component.kv_stores.get(label) {
            Some(store) => Ok(store.clone()),
            None => Err(OpenError::AccessDenied),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}
