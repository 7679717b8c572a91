//! The wasmtime host: compiles policy components once, then runs each
//! evaluation in a fresh instance under a deadline and a memory cap.
//!
//! [`Engine`] owns the one `wasmtime::Engine` of the process (pooling
//! allocator, epoch interruption) and the WASI linker. [`Engine::load`]
//! turns component bytes into a [`PolicyComponent`], compiled or read from
//! the [`cache`], pre-instantiated; [`PolicyComponent::evaluate`] is one
//! `evaluate` call of the `agyn:policy` world. No failure of a component
//! (trap, deadline, memory, garbage) escapes as anything but an
//! [`EvalError`].

mod cache;
mod component;
mod epoch;
pub mod metadata;

pub use component::{Call, Evaluation, PolicyComponent, Verdict};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The built-in component, carrying the Agyn policies and `pod-security`.
pub const BUILTIN_COMPONENT: &[u8] = include_bytes!(env!("AGYN_BUILTIN_POLICIES_WASM"));

/// The sha256 of [`BUILTIN_COMPONENT`], which tells a set's built-in
/// policies from components of its own.
pub fn builtin_sha256() -> &'static str {
    static SHA256: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA256.get_or_init(|| cache::sha256_hex(BUILTIN_COMPONENT))
}

/// How often the epoch advances: the granularity of every deadline.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The largest memory any policy may be given; per-policy caps sit below it.
pub const MAX_MEMORY_LIMIT: usize = 1 << 30;

/// Instances that may exist at once. Each evaluation holds one for a few
/// microseconds; the server bounds its concurrency below this.
pub const MAX_CONCURRENT_INSTANCES: u32 = 256;

/// What one component instance may hold. A Rust component has one to four
/// core instances and one memory; a Python one (componentize-py) 14 core
/// instances, 38 with `--stub-wasi`. The pool holds this much for every one of
/// [`MAX_CONCURRENT_INSTANCES`], so no mix of loaded components can exhaust
/// it below that concurrency; a component needing more is refused at load.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 64;

/// The budget of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub deadline: Duration,
    pub memory: usize,
}

impl Default for Limits {
    /// A pod through a policy takes tens of microseconds; these leave two
    /// orders of magnitude of room while keeping a hung policy from holding
    /// a request for long.
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory: 64 << 20,
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("sha256 mismatch: expected {expected}, the module is {actual}")]
    Sha256Mismatch { expected: String, actual: String },
    #[error("not a WebAssembly file{0}")]
    NotWasm(String),
    #[error(
        "a core WebAssembly module, not a component: build it for wasm32-wasip2, or with `agyn-admission policy build`"
    )]
    CoreModule,
    #[error("not a valid policy component: {0:#}")]
    Compile(wasmtime::Error),
    #[error("the component does not implement the agyn:policy world: {0:#}")]
    Link(wasmtime::Error),
    #[error("listing its policies failed: it {0}")]
    Policies(EvalError),
    #[error("{0}")]
    Metadata(String),
}

/// Why a policy produced no verdict. Each reads after "the policy failed:
/// it ...". The first five are the engine's; the rest are the host's
/// reasons for not running the policy to the end.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("exceeded its deadline of {0:?}")]
    Deadline(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned a malformed verdict: {0}")]
    Malformed(String),
    /// No instance could be made (the pool is exhausted, a start function
    /// failed).
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The policy itself reported that it could not judge (bad settings,
    /// an object it cannot read).
    #[error("reported an error: {0}")]
    Policy(String),
    /// The object is one the host cannot read (a number out of range,
    /// nesting too deep, no pod template where one must be).
    #[error("was not run: the object cannot be read: {0}")]
    Unreadable(String),
    /// No review slot came free within the request's budget.
    #[error("was not run: the webhook had no capacity left within the request's budget")]
    Overloaded,
    /// The policy kept missing its deadline: it runs one evaluation at a
    /// time until one ends in time, and this one was not it.
    #[error(
        "was not run: it missed its deadline {0} times in a row, and runs one review at a time until it meets it again"
    )]
    CircuitOpen(u32),
    /// Its module could not be pulled, verified or loaded.
    #[error("was not run: its module is unavailable: {0}")]
    Unavailable(String),
    /// A bug on the host side, caught before it could drop the request.
    #[error("was not run to the end: internal error: {0}")]
    Internal(String),
}

/// Where and whether compiled components are kept between runs.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Directory for precompiled artifacts; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
}

/// The process-wide WebAssembly engine.
pub struct Engine {
    wasmtime: wasmtime::Engine,
    linker: Linker<HostState>,
    cache: Option<cache::Cache>,
    ticker: Arc<epoch::Ticker>,
    /// The built-in component once loaded: a policy set's reload then
    /// neither hashes nor reads it again.
    builtin: Mutex<Option<PolicyComponent>>,
}

impl Engine {
    pub fn new(options: &EngineOptions) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_core_instances(MAX_CONCURRENT_INSTANCES * MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_memories(MAX_CONCURRENT_INSTANCES * MAX_MEMORIES_PER_COMPONENT)
            .total_tables(MAX_CONCURRENT_INSTANCES * MAX_TABLES_PER_COMPONENT)
            .max_memory_size(MAX_MEMORY_LIMIT)
            // Keeping the first pages mapped between instances removes the
            // page faults that otherwise dominate a short call.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            // On Linux 6.7 and later, reset only the pages an instance
            // dirtied instead of the whole resident prefix.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&config)?;
        let mut linker = Linker::new(&wasmtime);
        // Rust's std makes every wasip2 component import WASI; the context
        // grants nothing (no files, sockets, environment or arguments).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        component::current::agyn::policy::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state: &mut HostState| state,
        )?;
        let cache = options
            .cache_dir
            .as_ref()
            .map(|dir| cache::Cache::new(dir, &wasmtime));
        let ticker = Arc::new(epoch::Ticker::start(wasmtime.clone(), EPOCH_TICK));
        Ok(Engine {
            wasmtime,
            linker,
            cache,
            ticker,
            builtin: Mutex::new(None),
        })
    }

    /// The component compiled into the binary, loaded on first use.
    pub fn builtin(&self, sha256: Option<&str>) -> Result<PolicyComponent, LoadError> {
        let mut builtin = self.builtin.lock().unwrap_or_else(|e| e.into_inner());
        let component = match &*builtin {
            Some(component) => component.clone(),
            None => builtin
                .insert(self.load(BUILTIN_COMPONENT, None, Limits::default())?)
                .clone(),
        };
        match sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(component.sha256()) => {
                Err(LoadError::Sha256Mismatch {
                    expected: expected.to_string(),
                    actual: component.sha256().to_string(),
                })
            }
            _ => Ok(component),
        }
    }

    /// Compiles (or reads from the cache) and links a policy component,
    /// refusing it if `sha256` is given and does not match. Listing its
    /// policies runs under `limits`: those of the policy that loads it.
    pub fn load(
        &self,
        bytes: &[u8],
        sha256: Option<&str>,
        limits: Limits,
    ) -> Result<PolicyComponent, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
            return Err(LoadError::NotWasm(if start.trim().is_empty() {
                String::new()
            } else {
                format!(" (it starts with {start:?})")
            }));
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(LoadError::CoreModule);
        }
        let digest = cache::sha256_hex(bytes);
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::Sha256Mismatch {
                expected: expected.to_string(),
                actual: digest,
            });
        }
        let compiled = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.wasmtime, bytes, &digest),
            None => wasmtime::component::Component::new(&self.wasmtime, bytes),
        }
        .map_err(LoadError::Compile)?;
        PolicyComponent::new(self, &compiled, bytes, digest, limits)
    }
}

/// What every store carries: WASI with nothing granted, and the limits.
pub(crate) struct HostState {
    /// Made on the component's first WASI call, which most never make: a
    /// context costs a random seed and a dozen allocations, 3% of a
    /// one-policy evaluation in a profile.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limits: component::MemoryCap,
    /// What the guest said as it panicked, for the trap that follows.
    panic: Option<String>,
}

impl component::current::agyn::policy::host::Host for HostState {
    fn report_panic(&mut self, message: String) {
        // Bounded: the message reaches logs and answers.
        let mut message = message;
        if message.len() > 1024 {
            let mut end = 1024;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.panic = Some(message);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}
