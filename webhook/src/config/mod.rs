//! The policy set: the file format ([`file`]), loading it into components
//! and checked settings ([`PolicySet::load`]), and deciding which policies
//! an object meets ([`Match`]).

pub mod duration;
pub mod file;
mod quantity;

pub use file::{FailurePolicy, Mode, Operation};
pub use quantity::parse_size;

use crate::admission::Breaker;
use crate::admission::kinds::WorkloadKind;
use crate::engine::{Engine, EvalError, Limits, PolicyComponent};
use agyn_policy_sdk::selector_matches;
use file::{PolicyEntry, PolicySetFile};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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
    fn origin(&self) -> String {
        match self {
            Source::Builtin => "built-in policy set".into(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

/// A loaded policy set: every component compiled, every setting accepted.
#[derive(Debug)]
pub struct PolicySet {
    pub exempt_namespaces: Vec<String>,
    pub exempt_usernames: Vec<String>,
    pub policies: Vec<Policy>,
    pub components: Vec<PolicyComponent>,
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

    /// Reads, checks and compiles a policy set. Any error names the file,
    /// the line where it can, and the policy.
    pub fn load(source: &Source, engine: &Engine) -> Result<PolicySet, ConfigError> {
        match source {
            Source::Builtin => Self::from_text(BUILTIN_POLICY_SET, source, engine),
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_text(&text, source, engine)
            }
        }
    }

    /// Checks and compiles a policy set's text; `source` names it in
    /// errors, and its folder is where relative module paths start.
    pub fn from_text(
        text: &str,
        source: &Source,
        engine: &Engine,
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
            components: Vec::new(),
            by_module: HashMap::new(),
        }
        .load(file)
    }
}

struct Loader<'a> {
    origin: String,
    base: Option<PathBuf>,
    engine: &'a Engine,
    components: Vec<PolicyComponent>,
    /// Module reference -> index in `components`, so a module named by
    /// several policies compiles once.
    by_module: HashMap<String, usize>,
}

impl Loader<'_> {
    fn load(mut self, file: PolicySetFile) -> Result<PolicySet, ConfigError> {
        let mut policies: Vec<Policy> = Vec::new();
        for entry in file.policies {
            let line = entry.name.referenced.line() as usize;
            let name = entry.name.value.clone();
            let origin = self.origin.clone();
            let error = |message: String| ConfigError::Policy {
                origin,
                line,
                name: name.clone(),
                message,
            };
            if policies.iter().any(|p| p.name == name) {
                return Err(error("the name is used twice in this set".into()));
            }
            policies.push(self.policy(entry).map_err(error)?);
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
        })
    }

    fn policy(&mut self, entry: PolicyEntry) -> Result<Policy, String> {
        let component = self.component(entry.module.as_deref(), entry.sha256.as_deref())?;
        let inner = entry.policy.unwrap_or_else(|| entry.name.value.clone());
        let loaded = &self.components[component];
        if !loaded.policies().contains(&inner) {
            return Err(format!(
                "its module has no policy {inner:?} (it has: {})",
                loaded.policies().join(", ")
            ));
        }
        let settings = entry.settings.map_or_else(String::new, |s| s.to_string());
        loaded
            .validate_settings(&inner, &settings)
            .map_err(|e| match e {
                EvalError::Policy(message) => message,
                other => format!("checking its settings failed: it {other}"),
            })?;
        let defaults = Limits::default();
        Ok(Policy {
            name: entry.name.value,
            component,
            inner,
            settings,
            mode: entry.mode,
            mutate: entry.mutate,
            failure_policy: entry.failure_policy,
            limits: Limits {
                deadline: entry.timeout.map_or(defaults.deadline, |t| t.0),
                memory: entry.memory_limit.map_or(defaults.memory, |m| m.0),
            },
            matching: Match::new(entry.matching)?,
            breaker: Breaker::default(),
        })
    }

    fn component(&mut self, module: Option<&str>, sha256: Option<&str>) -> Result<usize, String> {
        let module = module.unwrap_or("builtin");
        let key = format!("{module}\0{}", sha256.unwrap_or_default());
        if let Some(&index) = self.by_module.get(&key) {
            return Ok(index);
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
                self.engine.load(&bytes, sha256)
            }
        }
        .map_err(|e| format!("module {module}: {e}"))?;
        self.components.push(component);
        self.by_module.insert(key, self.components.len() - 1);
        Ok(self.components.len() - 1)
    }
}

/// Which objects a policy judges.
#[derive(Debug)]
pub struct Match {
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
    label_selector: Option<LabelSelector>,
    /// Empty: every supported kind.
    kinds: Vec<WorkloadKind>,
    operations: Vec<Operation>,
}

impl Match {
    fn new(file: file::MatchFile) -> Result<Self, String> {
        let kinds = file
            .kinds
            .iter()
            .map(|k| {
                WorkloadKind::from_kind(&k.value).ok_or_else(|| {
                    format!(
                        "line {}: unknown kind {:?} (known: {})",
                        k.referenced.line(),
                        k.value,
                        WorkloadKind::all()
                            .map(|k| k.kind())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Match {
            namespaces: file.namespaces,
            exclude_namespaces: file.exclude_namespaces,
            label_selector: file.label_selector,
            kinds,
            operations: if file.operations.is_empty() {
                vec![Operation::Create, Operation::Update]
            } else {
                file.operations
            },
        })
    }

    /// Whether a policy with this match may judge an object whose labels
    /// are unknown: everything but the label selector.
    pub fn may_match(&self, kind: WorkloadKind, operation: Operation, namespace: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self.operations.contains(&operation)
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && !self.exclude_namespaces.iter().any(|n| n == namespace)
    }

    /// Whether a policy with this match judges an object.
    ///
    /// `labels` is called only when the policy has a label selector: most
    /// have none, and reading the labels costs a copy.
    pub fn matches<'a>(
        &self,
        kind: WorkloadKind,
        operation: Operation,
        namespace: &str,
        labels: impl Fn() -> Option<&'a BTreeMap<String, String>>,
    ) -> bool {
        self.may_match(kind, operation, namespace)
            && self
                .label_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, labels()))
    }
}
