use super::epoch::Ticker;
use super::metadata::{ComponentMetadata, PolicyMetadata, Rule};
use super::{Engine, EvalError, HostState, Limits, LoadError, MAX_MEMORY_LIMIT};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};

/// The world of `policy-sdk/wit`: any object, metadata, panic messages.
pub(super) mod current {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit",
        world: "policy",
    });
}

/// The first world, pods only: components built for it keep loading.
mod first {
    wasmtime::component::bindgen!({
        path: "wit/policy-0.1.0",
        world: "policy",
    });
}

pub use current::agyn::policy::types::{Call, Evaluation, Verdict};

/// The world a component implements.
#[derive(Clone)]
enum World {
    Current(current::PolicyPre<HostState>),
    First(first::PolicyPre<HostState>),
}

/// An instance of either world, for one call.
enum Instance {
    Current(current::Policy),
    First(first::Policy),
}

/// A compiled, linked policy component, ready to instantiate. Cheap to
/// clone; one per component, shared by every evaluation.
#[derive(Clone)]
pub struct PolicyComponent {
    world: World,
    engine: wasmtime::Engine,
    /// Deadlines need the epoch to advance for as long as the component
    /// can run, even after the `Engine` that loaded it is gone.
    _ticker: Arc<Ticker>,
    policies: Vec<String>,
    metadata: Arc<[PolicyMetadata]>,
    imports: Arc<[String]>,
    sha256: String,
    size: usize,
}

impl fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("policies", &self.policies)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl PolicyComponent {
    pub(super) fn new(
        engine: &Engine,
        component: &wasmtime::component::Component,
        bytes: &[u8],
        sha256: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let pre = engine
            .linker
            .instantiate_pre(component)
            .map_err(LoadError::Link)?;
        // The current world first: a component of the first world lacks
        // its `evaluate` signature, and the reverse.
        let world = match current::PolicyPre::new(pre.clone()) {
            Ok(pre) => World::Current(pre),
            Err(current) => World::First(first::PolicyPre::new(pre).map_err(|first| {
                LoadError::Link(wasmtime::format_err!(
                    "{current:#} (and not agyn:policy@0.1.0 either: {first:#})"
                ))
            })?),
        };
        let imports = component
            .component_type()
            .imports(&engine.wasmtime)
            .map(|(name, _)| name.to_string())
            .collect();
        let declared = ComponentMetadata::read(bytes).map_err(LoadError::Metadata)?;
        let mut this = PolicyComponent {
            world,
            engine: engine.wasmtime.clone(),
            _ticker: engine.ticker.clone(),
            policies: Vec::new(),
            metadata: Arc::new([]),
            imports,
            sha256,
            size: bytes.len(),
        };
        this.policies = this
            .call(limits, |instance, store| match instance {
                Instance::Current(p) => p.call_policies(store),
                Instance::First(p) => p.call_policies(store),
            })
            .map_err(LoadError::Policies)?;
        this.metadata = match declared {
            Some(declared) => {
                for policy in &this.policies {
                    if !declared.policies.iter().any(|m| &m.name == policy) {
                        return Err(LoadError::Metadata(format!(
                            "its metadata says nothing of its policy {policy:?}"
                        )));
                    }
                }
                declared.policies.into()
            }
            None => this
                .policies
                .iter()
                .map(|name| PolicyMetadata {
                    name: name.clone(),
                    description: String::new(),
                    rules: vec![Rule::pods()],
                    mutating: true,
                    settings_schema: None,
                    category: String::new(),
                    severity: Default::default(),
                })
                .collect(),
        };
        Ok(this)
    }

    /// The names of the policies the component carries.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// What the component says of `policy`: one of [`Self::policies`].
    pub fn metadata(&self, policy: &str) -> Option<&PolicyMetadata> {
        self.metadata.iter().find(|m| m.name == policy)
    }

    /// The world the component implements, as `package@version`.
    pub fn world(&self) -> &'static str {
        match self.world {
            World::Current(_) => "agyn:policy@0.2.0",
            World::First(_) => "agyn:policy@0.1.0",
        }
    }

    /// The interfaces it imports (WASI's, the host's).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The sha256 of the component's bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Asks the component whether `settings` suit `policy`, under the
    /// policy's own limits.
    pub fn validate_settings(
        &self,
        policy: &str,
        settings: &str,
        limits: Limits,
    ) -> Result<(), EvalError> {
        self.call(limits, |instance, store| match instance {
            Instance::Current(p) => p.call_validate_settings(store, policy, settings),
            Instance::First(p) => p.call_validate_settings(store, policy, settings),
        })?
        .map_err(EvalError::Policy)
    }

    /// One `evaluate` call in a fresh instance. The verdicts are checked to
    /// match the calls one to one; the mutated object is returned as the
    /// component gave it, for the caller to check against the original. A
    /// component of the first world is not given the old object.
    pub fn evaluate(
        &self,
        request: &str,
        object: &str,
        old_object: Option<&str>,
        calls: &[Call],
        limits: Limits,
    ) -> Result<Evaluation, EvalError> {
        let evaluation = self.call(limits, |instance, store| match instance {
            Instance::Current(p) => p.call_evaluate(store, request, object, old_object, calls),
            Instance::First(p) => {
                let calls: Vec<first::agyn::policy::types::Call> = calls
                    .iter()
                    .map(|c| first::agyn::policy::types::Call {
                        policy: c.policy.clone(),
                        settings: c.settings.clone(),
                        mutate: c.mutate,
                    })
                    .collect();
                let e = p.call_evaluate(store, request, object, &calls)?;
                Ok(Evaluation {
                    verdicts: e
                        .verdicts
                        .into_iter()
                        .map(|v| {
                            v.map(|v| Verdict {
                                violations: v.violations,
                                warnings: v.warnings,
                                mutated: v.mutated,
                            })
                        })
                        .collect(),
                    mutated_object: e.mutated_object,
                })
            }
        })?;
        if evaluation.verdicts.len() != calls.len() {
            return Err(EvalError::Malformed(format!(
                "{} verdicts for {} policies",
                evaluation.verdicts.len(),
                calls.len()
            )));
        }
        Ok(evaluation)
    }

    /// Instantiates the component in a new store with `limits` and runs `f`,
    /// turning every way the guest can fail into an [`EvalError`].
    fn call<R>(
        &self,
        limits: Limits,
        f: impl FnOnce(&Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        let memory = limits.memory.min(MAX_MEMORY_LIMIT);
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi: None,
                table: ResourceTable::new(),
                limits: MemoryCap { bytes: memory },
                panic: None,
            },
        );
        store.limiter(|state| &mut state.limits);
        let ticks = limits.deadline.as_nanos() / super::EPOCH_TICK.as_nanos();
        // One more tick than the division: the current tick may be about to end.
        store.set_epoch_deadline(ticks as u64 + 1);
        store.epoch_deadline_trap();
        let instance = match &self.world {
            World::Current(pre) => pre.instantiate(&mut store).map(Instance::Current),
            World::First(pre) => pre.instantiate(&mut store).map(Instance::First),
        }
        .map_err(|e| classify(e, Stage::Instantiate, limits.deadline, memory, None))?;
        f(&instance, &mut store).map_err(|e| {
            let panic = store.data_mut().panic.take();
            classify(e, Stage::Call, limits.deadline, memory, panic)
        })
    }
}

/// Where a wasmtime error arose: errors that are not the guest's traps
/// mean different things before and during the call.
enum Stage {
    Instantiate,
    Call,
}

fn classify(
    error: wasmtime::Error,
    stage: Stage,
    deadline: std::time::Duration,
    memory: usize,
    panic: Option<String>,
) -> EvalError {
    if error.downcast_ref::<MemoryExceeded>().is_some() {
        return EvalError::Memory(memory);
    }
    match (error.downcast_ref::<Trap>(), stage) {
        (Some(Trap::Interrupt), _) => EvalError::Deadline(deadline),
        // The panic's own message says more than the abort it ended in.
        (Some(_), _) if panic.is_some() => EvalError::Trap(panic.unwrap_or_default()),
        // The trap alone: wasm frames without names help no one.
        (Some(trap), _) => EvalError::Trap(trap.to_string()),
        // The pool is out of slots, or a start function failed.
        (None, Stage::Instantiate) => EvalError::Instantiate(format!("{error:#}")),
        // Lifting the guest's results failed: a string out of bounds or
        // not UTF-8, a bad discriminant. The guest's answer is garbage.
        (None, Stage::Call) => EvalError::Malformed(format!("{error:#}")),
    }
}

/// Caps the linear memory of one evaluation. Growing past the cap traps
/// with [`MemoryExceeded`] instead of failing the allocation, so a memory
/// bomb is reported as such rather than as a generic abort.
pub(super) struct MemoryCap {
    bytes: usize,
}

#[derive(Debug)]
struct MemoryExceeded;

impl fmt::Display for MemoryExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory limit exceeded")
    }
}

impl std::error::Error for MemoryExceeded {}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            return Err(wasmtime::Error::new(MemoryExceeded));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a policy needs a few hundred.
        Ok(desired <= 100_000)
    }
}
