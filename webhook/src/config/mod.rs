//! The policy set: the file format ([`file`]), loading it into components
//! and checked settings ([`PolicySet::load`]), and deciding which policies
//! an object meets ([`Match`]).

pub mod duration;
pub mod file;
mod quantity;

pub use file::{FailurePolicy, Mode, Operation};
pub use quantity::parse_size;

use crate::admission::Breaker;
use crate::engine::metadata::Rule;
use crate::engine::{Engine, EvalError, Limits, PolicyComponent};
use crate::registry::{ModuleRef, Pulled, Registry, SCHEME, VerifyKey};
use agyn_policy_sdk::selector_matches;
use file::{PolicyEntry, PolicySetFile};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

/// The built-in Agyn policy set, as `policies/agyn-policy-set.yaml` in the
/// repository: the built-in policies, enforced, with mutation.
pub const BUILTIN_POLICY_SET: &str = include_str!("../../../policies/agyn-policy-set.yaml");

/// Namespaces no policy set can subject to policies: a webhook outage or a
/// bad policy must never stop the cluster's own components.
pub const ALWAYS_EXEMPT_NAMESPACES: &[&str] = &["kube-system"];

/// The longest the API server waits for a webhook: no policy's deadline,
/// and no request's budget, can usefully be longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: line {line}: policy {name:?}: {message}")]
    Policy {
        origin: String,
        line: usize,
        name: String,
        message: String,
    },
}

/// Where a policy set comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// [`BUILTIN_POLICY_SET`].
    Builtin,
    File(PathBuf),
}

impl Source {
    /// How messages name the set: its file, or the built-in set.
    pub fn origin(&self) -> String {
        match self {
            Source::Builtin => "built-in policy set".into(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

/// Where a set's `oci://` modules come from.
pub trait ModuleSource {
    /// The module's bytes and manifest digest, or why they cannot be had
    /// (now: a later attempt may succeed).
    fn module(&self, module: &ModuleRef, key: Option<&VerifyKey>) -> Result<Pulled, String>;
}

/// Pulls what is not stored, waiting for the registry: for commands.
impl ModuleSource for Registry {
    fn module(&self, module: &ModuleRef, key: Option<&VerifyKey>) -> Result<Pulled, String> {
        self.fetch(module, key)
    }
}

/// For sets that name no registry module: tests, benchmarks, the fuzzer.
pub struct NoRegistry;

impl ModuleSource for NoRegistry {
    fn module(&self, module: &ModuleRef, _: Option<&VerifyKey>) -> Result<Pulled, String> {
        Err(format!("{module}: this command reads no registry"))
    }
}

/// A loaded policy set: every component compiled, every setting accepted,
/// but for policies whose module could not be had.
#[derive(Debug)]
pub struct PolicySet {
    pub exempt_namespaces: Vec<String>,
    pub exempt_usernames: Vec<String>,
    pub policies: Vec<Policy>,
    pub components: Vec<PolicyComponent>,
    /// Policies of the set whose `oci://` module could not be pulled,
    /// verified or loaded: each fails every request its match lets
    /// through, and its failure policy answers, while the rest serve.
    pub unavailable: Vec<Unavailable>,
    /// The policies whose module came from a registry, and at what digest.
    pub registry_modules: Vec<RegistryModule>,
}

#[derive(Debug)]
pub struct RegistryModule {
    pub policy: String,
    /// As the set names it.
    pub module: String,
    /// The manifest digest loaded (a floating tag's resolution).
    pub digest: String,
}

/// A policy whose module is not there. Its rules are the module's, so
/// they are unknown: it judges every request the webhook is sent that its
/// `match` lets through (a set names `match.kinds` to narrow that).
#[derive(Debug)]
pub struct Unavailable {
    pub name: String,
    /// The module as the set names it.
    pub module: String,
    pub mode: Mode,
    pub mutate: bool,
    pub failure_policy: FailurePolicy,
    pub matching: Match,
    /// What to pull for another try; `None` when the module was had and
    /// refused for what it is (no pull changes that).
    pub pull: Option<(ModuleRef, Option<VerifyKey>)>,
    /// Why, as the last attempt said: kept current by whoever retries.
    reason: Mutex<String>,
}

impl Unavailable {
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_reason(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// What a request it would judge meets instead of a verdict.
    pub fn error(&self) -> EvalError {
        EvalError::Unavailable(format!("{}: {}", self.module, self.reason()))
    }
}

/// One policy of the set, ready to run.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    /// Index into [`PolicySet::components`].
    pub component: usize,
    /// The policy's name inside its component.
    pub inner: String,
    /// Settings as JSON, accepted by the policy at load.
    pub settings: String,
    pub mode: Mode,
    pub mutate: bool,
    pub failure_policy: FailurePolicy,
    pub limits: Limits,
    /// The requests the policy judges, from its component's metadata.
    pub rules: Vec<Rule>,
    pub matching: Match,
    /// Whether the policy keeps missing its deadline. Kept with the loaded
    /// set: a reload starts every policy afresh.
    pub breaker: Breaker,
}

impl PolicySet {
    /// The longest any review of this set may run its policies.
    pub fn longest_deadline(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.limits.deadline)
            .max()
            .unwrap_or_default()
    }

    /// Whether some policy keeps missing its deadline (see [`Breaker`]).
    pub fn any_circuit_open(&self) -> bool {
        self.policies.iter().any(|p| p.breaker.is_open())
    }

    /// The description, category and severity a policy's component gives.
    pub fn metadata(&self, policy: &Policy) -> Option<&crate::engine::metadata::PolicyMetadata> {
        self.components[policy.component].metadata(&policy.inner)
    }

    /// Reads, checks and compiles a policy set that names no registry
    /// module: [`PolicySet::load_with`] for sets that may.
    pub fn load(source: &Source, engine: &Engine) -> Result<PolicySet, ConfigError> {
        Self::load_with(source, engine, &NoRegistry)
    }

    /// Reads, checks and compiles a policy set, taking `oci://` modules
    /// from `modules`. Any error names the file, the line where it can,
    /// and the policy; a module that cannot be had is not an error but an
    /// [`Unavailable`] policy.
    pub fn load_with(
        source: &Source,
        engine: &Engine,
        modules: &dyn ModuleSource,
    ) -> Result<PolicySet, ConfigError> {
        match source {
            Source::Builtin => Self::from_text(BUILTIN_POLICY_SET, source, engine, modules),
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_text(&text, source, engine, modules)
            }
        }
    }

    /// Checks and compiles a policy set's text; `source` names it in
    /// errors, and its folder is where relative module paths start.
    pub fn from_text(
        text: &str,
        source: &Source,
        engine: &Engine,
        modules: &dyn ModuleSource,
    ) -> Result<PolicySet, ConfigError> {
        let origin = source.origin();
        let base = match source {
            Source::Builtin => None,
            Source::File(path) => path.parent().map(Path::to_path_buf),
        };
        let file: PolicySetFile = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Loader {
            origin,
            base,
            engine,
            modules,
            verify: None,
            components: Vec::new(),
            by_module: HashMap::new(),
            unavailable: Vec::new(),
            registry_modules: Vec::new(),
            digests: HashMap::new(),
        }
        .load(file)
    }

    /// One policy of a loaded component as a set of its own, as a set file
    /// with this one entry would load it: enforced, failing closed, with
    /// the default limits and exemptions, judging every request its rules
    /// cover. `settings` is JSON (empty: none). The error is the policy's
    /// refusal of its settings, or the component's lack of the policy.
    /// `policy test` builds one per test, around a component it loads once.
    pub fn single(
        component: PolicyComponent,
        policy: &str,
        settings: String,
        mutate: bool,
    ) -> Result<PolicySet, String> {
        let Some(metadata) = component.metadata(policy) else {
            return Err(format!(
                "the module has no policy {policy:?} (it has: {})",
                component.policies().join(", ")
            ));
        };
        let limits = Limits::default();
        component
            .validate_settings(policy, &settings, limits)
            // The position is in JSON made from the caller's YAML.
            .map_err(|e| strip_json_position(&refusal(e)).to_string())?;
        let rules = metadata.rules.clone();
        let policy = Policy {
            name: policy.to_string(),
            component: 0,
            inner: policy.to_string(),
            settings,
            mode: Mode::Enforce,
            mutate,
            failure_policy: FailurePolicy::Fail,
            limits,
            matching: Match::new(file::MatchFile::default(), &rules)?,
            rules,
            breaker: Breaker::default(),
        };
        Ok(PolicySet {
            exempt_namespaces: ALWAYS_EXEMPT_NAMESPACES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            exempt_usernames: Vec::new(),
            policies: vec![policy],
            components: vec![component],
            unavailable: Vec::new(),
            registry_modules: Vec::new(),
        })
    }
}

struct Loader<'a> {
    origin: String,
    base: Option<PathBuf>,
    engine: &'a Engine,
    modules: &'a dyn ModuleSource,
    /// The set-wide key for `oci://` modules.
    verify: Option<VerifyKey>,
    components: Vec<PolicyComponent>,
    /// Module reference -> index in `components` (or why it cannot be
    /// had), so a module named by several policies is had once.
    by_module: HashMap<String, Result<usize, (String, bool)>>,
    unavailable: Vec<Unavailable>,
    registry_modules: Vec<RegistryModule>,
    /// Component index -> the manifest digest it was pulled at.
    digests: HashMap<usize, String>,
}

impl Loader<'_> {
    fn load(mut self, file: PolicySetFile) -> Result<PolicySet, ConfigError> {
        if let Some(verify) = &file.verify {
            self.verify = Some(self.key(verify).map_err(|message| ConfigError::Parse {
                origin: self.origin.clone(),
                message,
            })?);
        }
        let mut policies: Vec<Policy> = Vec::new();
        for entry in file.policies {
            let line = entry.name.referenced.line() as usize;
            let name = entry.name.value.clone();
            let origin = self.origin.clone();
            // An error may start with `line N: ` to point at a line within
            // the policy's entry; else it points at the entry's name.
            let error = |message: String| {
                let within = message.strip_prefix("line ").and_then(|rest| {
                    let (n, message) = rest.split_once(": ")?;
                    Some((n.parse().ok()?, message.to_string()))
                });
                let (line, message) = within.unwrap_or((line, message));
                ConfigError::Policy {
                    origin,
                    line,
                    name: name.clone(),
                    message,
                }
            };
            if policies.iter().any(|p| p.name == name)
                || self.unavailable.iter().any(|u| u.name == name)
            {
                return Err(error("the name is used twice in this set".into()));
            }
            if let Some(policy) = self.policy(entry).map_err(error)? {
                policies.push(policy);
            }
        }
        let mut exempt_namespaces = file.exemptions.namespaces;
        for ns in ALWAYS_EXEMPT_NAMESPACES {
            if !exempt_namespaces.iter().any(|n| n == ns) {
                exempt_namespaces.push(ns.to_string());
            }
        }
        Ok(PolicySet {
            exempt_namespaces,
            exempt_usernames: file.exemptions.usernames,
            policies,
            components: self.components,
            unavailable: self.unavailable,
            registry_modules: self.registry_modules,
        })
    }

    /// The policy, ready; `None` if its `oci://` module cannot be had, or
    /// was had and refused (then it is one of `self.unavailable`). An
    /// error is the set's: the whole set is refused.
    fn policy(&mut self, entry: PolicyEntry) -> Result<Option<Policy>, String> {
        let defaults = Limits::default();
        let limits = Limits {
            deadline: entry.timeout.map_or(defaults.deadline, |t| t.0),
            memory: entry.memory_limit.map_or(defaults.memory, |m| m.0),
        };
        let Some(module) = entry
            .module
            .as_ref()
            .filter(|m| m.value.starts_with(SCHEME))
        else {
            if entry.allow_floating_tags || entry.verify.is_some() {
                return Err("`allowFloatingTags` and `verify` apply to oci:// modules only".into());
            }
            let module = entry.module.as_ref().map(|m| m.value.clone());
            let component = self.component(module.as_deref(), entry.sha256.as_deref(), limits)?;
            return self.ready(entry, component, limits).map(Some);
        };
        let at_module = |e: String| format!("line {}: {e}", module.referenced.line());
        let reference = ModuleRef::parse(
            &module.value,
            entry.sha256.as_deref(),
            entry.allow_floating_tags,
        )
        .map_err(at_module)?;
        let key = match &entry.verify {
            Some(verify) => Some(self.key(verify)?),
            None => self.verify.clone(),
        };
        let written = module.value.clone();
        let unavailable = |entry: &PolicyEntry, pull: bool, reason: String| Unavailable {
            name: entry.name.value.clone(),
            module: written.clone(),
            mode: entry.mode,
            mutate: entry.mutate,
            failure_policy: entry.failure_policy,
            matching: Match::unchecked(entry.matching.clone()),
            pull: pull.then(|| (reference.clone(), key.clone())),
            reason: Mutex::new(reason),
        };
        let component = match self.oci_component(&reference, key.as_ref(), limits) {
            Ok(component) => component,
            Err((reason, pull)) => {
                tracing::warn!(
                    policy = %entry.name.value,
                    module = %written,
                    reason = %reason,
                    "the policy's module is unavailable: its failure policy answers for it"
                );
                let unavailable = unavailable(&entry, pull, reason);
                self.unavailable.push(unavailable);
                return Ok(None);
            }
        };
        let name = entry.name.value.clone();
        let refused = unavailable(&entry, false, String::new());
        match self.ready(entry, component, limits) {
            Ok(policy) => {
                self.registry_modules.push(RegistryModule {
                    policy: name,
                    module: written,
                    digest: self.digests[&component].clone(),
                });
                Ok(Some(policy))
            }
            Err(message) => {
                // A module is the registry's to change (a floating tag):
                // what it refuses costs this policy, not the whole set.
                let message = match message.split_once(": ") {
                    Some((line, rest)) if line.starts_with("line ") => rest.to_string(),
                    _ => message,
                };
                let reason = format!(
                    "the module ({}) was pulled, but {message}",
                    self.digests[&component]
                );
                tracing::warn!(policy = %name, reason = %reason, "the policy's module is refused");
                refused.set_reason(reason);
                self.unavailable.push(refused);
                Ok(None)
            }
        }
    }

    /// The checks of a policy on its loaded component.
    fn ready(
        &mut self,
        entry: PolicyEntry,
        component: usize,
        limits: Limits,
    ) -> Result<Policy, String> {
        let inner = entry.policy.unwrap_or_else(|| entry.name.value.clone());
        let loaded = &self.components[component];
        if !loaded.policies().contains(&inner) {
            return Err(format!(
                "its module has no policy {inner:?} (it has: {})",
                loaded.policies().join(", ")
            ));
        }
        let metadata = loaded
            .metadata(&inner)
            .expect("a component has metadata for each of its policies");
        let settings = entry
            .settings
            .as_ref()
            .map_or_else(String::new, |s| s.value.to_string());
        loaded
            .validate_settings(&inner, &settings, limits)
            .map_err(|e| {
                let message = refusal(e);
                match &entry.settings {
                    // The policy read JSON the loader wrote: a position in
                    // it means nothing to the author; the YAML line does.
                    Some(s) => format!(
                        "line {}: settings: {}",
                        s.referenced.line(),
                        strip_json_position(&message)
                    ),
                    None => message,
                }
            })?;
        if metadata.rules.is_empty() {
            tracing::warn!(
                policy = %entry.name.value,
                "the policy declares no rules in its metadata: it judges nothing"
            );
        }
        if metadata.mutating && !entry.mutate && entry.mode == Mode::Enforce {
            tracing::warn!(
                policy = %entry.name.value,
                "the policy mutates, but the policy set leaves `mutate: true` out: \
                 objects it would fix are denied instead"
            );
        }
        Ok(Policy {
            name: entry.name.value,
            component,
            inner,
            settings,
            mode: entry.mode,
            mutate: entry.mutate,
            failure_policy: entry.failure_policy,
            limits,
            matching: Match::new(entry.matching, &metadata.rules)?,
            rules: metadata.rules.clone(),
            breaker: Breaker::default(),
        })
    }

    fn component(
        &mut self,
        module: Option<&str>,
        sha256: Option<&str>,
        limits: Limits,
    ) -> Result<usize, String> {
        let module = module.unwrap_or("builtin");
        let key = format!("{module}\0{}", sha256.unwrap_or_default());
        if let Some(Ok(index)) = self.by_module.get(&key) {
            return Ok(*index);
        }
        let component = match module {
            "builtin" => self.engine.builtin(sha256),
            path => {
                let path = match &self.base {
                    Some(base) => base.join(path),
                    None => PathBuf::from(path),
                };
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read module {}: {e}", path.display()))?;
                self.engine.load(&bytes, sha256, limits)
            }
        }
        .map_err(|e| format!("module {module}: {e}"))?;
        self.components.push(component);
        self.by_module.insert(key, Ok(self.components.len() - 1));
        Ok(self.components.len() - 1)
    }

    /// An `oci://` module, had from the set's module source and compiled;
    /// else why not, and whether another pull may help.
    fn oci_component(
        &mut self,
        module: &ModuleRef,
        key: Option<&VerifyKey>,
        limits: Limits,
    ) -> Result<usize, (String, bool)> {
        // Keyed by the key itself: two keys may come from the same place.
        let id = format!(
            "{module}\0{}",
            key.map(VerifyKey::fingerprint).unwrap_or_default()
        );
        if let Some(known) = self.by_module.get(&id) {
            return known.clone();
        }
        let loaded = self
            .modules
            .module(module, key)
            .map_err(|e| (e, true))
            .and_then(|pulled| {
                self.engine
                    .load(&pulled.module, None, limits)
                    .map_err(|e| {
                        (
                            format!("the module ({}) was pulled, but {e}", pulled.digest),
                            false,
                        )
                    })
                    .map(|component| {
                        tracing::info!(module = %module, digest = %pulled.digest, "module loaded");
                        (component, pulled.digest)
                    })
            })
            .map(|(component, digest)| {
                self.components.push(component);
                self.digests.insert(self.components.len() - 1, digest);
                self.components.len() - 1
            });
        self.by_module.insert(id, loaded.clone());
        loaded
    }

    /// A key as `verify.key` gives it: PEM, or a file of PEM relative to
    /// the set's folder.
    fn key(&self, verify: &file::Verify) -> Result<VerifyKey, String> {
        let at = |e: String| format!("line {}: verify: {e}", verify.key.referenced.line());
        let text = &verify.key.value;
        if text.trim_start().starts_with("-----BEGIN") {
            return VerifyKey::from_pem(text, "given in the policy set".into()).map_err(at);
        }
        let path = match &self.base {
            Some(base) => base.join(text),
            None => PathBuf::from(text),
        };
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| at(format!("cannot read the key {}: {e}", path.display())))?;
        VerifyKey::from_pem(&pem, path.display().to_string()).map_err(at)
    }
}

/// Why a policy did not accept its settings: its own message, or why it
/// could not say.
fn refusal(error: EvalError) -> String {
    match error {
        EvalError::Policy(message) => message,
        other => format!("checking its settings failed: it {other}"),
    }
}

/// Rules as a reader names them: `pods (and workload pod templates),
/// apps/deployments`.
fn describe(rules: &[Rule]) -> String {
    let mut names: Vec<String> = Vec::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let name = match group.as_str() {
                    "" => resource.clone(),
                    group => format!("{group}/{resource}"),
                };
                let name = if rule.names_pods() && resource == "pods" {
                    format!("{name} (and the pod templates of workloads)")
                } else {
                    name
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    match names.is_empty() {
        true => "nothing".into(),
        false => names.join(", "),
    }
}

/// Removes serde_json's ` at line L column C`, which points into JSON the
/// loader made from the YAML.
fn strip_json_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// Which objects a policy judges, of those its rules cover.
#[derive(Debug)]
pub struct Match {
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
    label_selector: Option<LabelSelector>,
    /// Kind names; empty: every kind the policy's rules cover.
    kinds: Vec<String>,
    operations: Vec<Operation>,
}

impl Match {
    /// The set's match as written, every kind named taken: for a policy
    /// whose rules are unknown (its module is unavailable), or once
    /// [`Match::new`] has checked the kinds.
    fn unchecked(file: file::MatchFile) -> Self {
        Match {
            namespaces: file.namespaces,
            exclude_namespaces: file.exclude_namespaces,
            label_selector: file.label_selector,
            kinds: file.kinds.into_iter().map(|k| k.value).collect(),
            operations: if file.operations.is_empty() {
                vec![Operation::Create, Operation::Update]
            } else {
                file.operations
            },
        }
    }

    /// The set's match for a policy with `rules`: a kind the policy can
    /// never judge is refused (a typo, or the wrong policy).
    fn new(file: file::MatchFile, rules: &[Rule]) -> Result<Self, String> {
        for kind in &file.kinds {
            if !crate::admission::can_judge(rules, &kind.value) {
                return Err(format!(
                    "line {}: the policy never judges the kind {:?}: its rules cover {}",
                    kind.referenced.line(),
                    kind.value,
                    describe(rules)
                ));
            }
        }
        Ok(Match::unchecked(file))
    }

    /// Whether the match lets the policy judge objects of `kind` (an empty
    /// list of kinds lets every kind through).
    pub fn names_kind(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }

    /// The operations the match lets through.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The namespaces judged (empty: every one not excluded).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn exclude_namespaces(&self) -> &[String] {
        &self.exclude_namespaces
    }

    /// The selector on the pod's labels (a workload's template labels).
    pub fn label_selector(&self) -> Option<&LabelSelector> {
        self.label_selector.as_ref()
    }

    /// Whether a policy with this match may judge an object whose labels
    /// are unknown: everything but the label selector. Namespaces restrict
    /// namespaced objects only: a cluster-scoped object (`namespace` is
    /// `None`) has none to match, as with a webhook's namespaceSelector.
    pub fn may_match(&self, kind: &str, operation: Operation, namespace: Option<&str>) -> bool {
        self.names_kind(kind)
            && self.operations.contains(&operation)
            && namespace.is_none_or(|namespace| {
                (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
                    && !self.exclude_namespaces.iter().any(|n| n == namespace)
            })
    }

    /// Whether a policy with this match judges an object.
    ///
    /// `labels` is called only when the policy has a label selector: most
    /// have none, and reading the labels costs a copy.
    pub fn matches<'a>(
        &self,
        kind: &str,
        operation: Operation,
        namespace: Option<&str>,
        labels: impl FnOnce() -> Option<&'a BTreeMap<String, String>>,
    ) -> bool {
        self.may_match(kind, operation, namespace)
            && self
                .label_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, labels()))
    }
}
