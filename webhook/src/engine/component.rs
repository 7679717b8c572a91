use super::epoch::Ticker;
use super::{Engine, EvalError, HostState, Limits, LoadError, MAX_MEMORY_LIMIT};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit",
        world: "policy",
    });
}

use bindings::PolicyPre;
pub use bindings::agyn::policy::types::{Call, Evaluation, Verdict};

/// A compiled, linked policy component, ready to instantiate. Cheap to
/// clone; one per component, shared by every evaluation.
#[derive(Clone)]
pub struct PolicyComponent {
    pre: PolicyPre<HostState>,
    engine: wasmtime::Engine,
    /// Deadlines need the epoch to advance for as long as the component
    /// can run, even after the `Engine` that loaded it is gone.
    _ticker: Arc<Ticker>,
    policies: Vec<String>,
    sha256: String,
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
        sha256: String,
    ) -> Result<Self, LoadError> {
        let pre = engine
            .linker
            .instantiate_pre(component)
            .and_then(PolicyPre::new)
            .map_err(LoadError::Link)?;
        let mut this = PolicyComponent {
            pre,
            engine: engine.wasmtime.clone(),
            _ticker: engine.ticker.clone(),
            policies: Vec::new(),
            sha256,
        };
        this.policies = this
            .call(Limits::default(), |policy, store| {
                policy.call_policies(store)
            })
            .map_err(LoadError::Policies)?;
        Ok(this)
    }

    /// The names of the policies the component carries.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// The sha256 of the component's bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Asks the component whether `settings` suit `policy`.
    pub fn validate_settings(&self, policy: &str, settings: &str) -> Result<(), EvalError> {
        self.call(Limits::default(), |p, store| {
            p.call_validate_settings(store, policy, settings)
        })?
        .map_err(EvalError::Policy)
    }

    /// One `evaluate` call in a fresh instance. The verdicts are checked to
    /// match the calls one to one; the mutated object is returned as the
    /// component gave it, for the caller to check against the original.
    pub fn evaluate(
        &self,
        request: &str,
        object: &str,
        calls: &[Call],
        limits: Limits,
    ) -> Result<Evaluation, EvalError> {
        let evaluation = self.call(limits, |p, store| {
            p.call_evaluate(store, request, object, calls)
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
        f: impl FnOnce(&bindings::Policy, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        let memory = limits.memory.min(MAX_MEMORY_LIMIT);
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi: None,
                table: ResourceTable::new(),
                limits: MemoryCap { bytes: memory },
            },
        );
        store.limiter(|state| &mut state.limits);
        let ticks = limits.deadline.as_nanos() / super::EPOCH_TICK.as_nanos();
        // One more tick than the division: the current tick may be about to end.
        store.set_epoch_deadline(ticks as u64 + 1);
        store.epoch_deadline_trap();
        let policy = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, Stage::Instantiate, limits.deadline, memory))?;
        f(&policy, &mut store).map_err(|e| classify(e, Stage::Call, limits.deadline, memory))
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
) -> EvalError {
    if error.downcast_ref::<MemoryExceeded>().is_some() {
        return EvalError::Memory(memory);
    }
    match (error.downcast_ref::<Trap>(), stage) {
        (Some(Trap::Interrupt), _) => EvalError::Deadline(deadline),
        (Some(_), _) => EvalError::Trap(format!("{error:#}")),
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
