//! The Pod Security Standards fixtures: pods with PSA's verdict on each at
//! each level and version. Shared by this crate's native test and the
//! webhook's end-to-end test, which runs the same cases through the
//! compiled WASM with `agyn-admission check`.
//!
//! A fixture file is named after the check it covers and holds a list of
//! cases:
//!
//! ```yaml
//! - name: host-network            # unique across all files: the pod's name
//!   base: restricted              # restricted (default), baseline or none
//!   pod: {spec: {hostNetwork: true}}
//!   expect:
//!     baseline: host namespaces (hostNetwork=true)
//!     restricted: host namespaces (hostNetwork=true)
//!     baseline:v1.0: allowed      # any other level:version to assert
//! ```
//!
//! `pod` is merged onto the base pod: objects key by key, lists item by
//! item (so `containers: [{...}]` changes the first container), `null`
//! removes a key. `expect` holds `allowed` or PSA's list of violations,
//! what follows `violates PodSecurity "level:version": ` in its message.

#![allow(dead_code, reason = "each test crate uses part of the support")]

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A pod that passes `restricted`, with an init container and a container.
fn restricted_base() -> Value {
    let container = |name: &str, image: &str| {
        json!({
            "name": name,
            "image": image,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}
            }
        })
    };
    json!({
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "initContainers": [container("init", "busybox")],
            "containers": [container("app", "nginx")]
        }
    })
}

/// A pod that passes `baseline` and sets nothing: fails `restricted`.
fn baseline_base() -> Value {
    json!({
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "nginx"}]
        }
    })
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Base {
    #[default]
    Restricted,
    Baseline,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    base: Base,
    pod: Value,
    expect: BTreeMap<String, String>,
}

/// One case: a Pod manifest and what PSA says of it.
#[derive(Debug)]
pub struct Case {
    /// The check (file) it belongs to.
    pub check: String,
    pub name: String,
    pub pod: Value,
    pub expect: Vec<Expectation>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expectation {
    pub level: String,
    pub version: String,
    /// PSA's violations, or `None` when it admits the pod.
    pub violations: Option<String>,
}

impl Expectation {
    /// The whole denial as the policy words it, or `None`.
    pub fn message(&self) -> Option<String> {
        self.violations.as_ref().map(|v| {
            format!(
                "violates PodSecurity \"{}:{}\": {v}",
                self.level, self.version
            )
        })
    }

    /// How `got` (a denial, or `None` for admitted) differs from this
    /// expectation for `case`, or `None` when it does not.
    pub fn mismatch(&self, case: &Case, got: Option<&str>) -> Option<String> {
        let expected = self.message();
        (got != expected.as_deref()).then(|| {
            format!(
                "{} / {} at {}:{}\n  expected: {}\n  got:      {}",
                case.check,
                case.name,
                self.level,
                self.version,
                expected.as_deref().unwrap_or("allowed"),
                got.unwrap_or("allowed"),
            )
        })
    }
}

/// Fails with every mismatch, if there is any.
pub fn assert_none_differ(failures: &[String], judged: usize) {
    assert!(
        failures.is_empty(),
        "{} of {judged} verdicts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every case of every fixture file in `dir`, in file then list order.
pub fn load(dir: &Path) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let check = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let raw: Vec<RawCase> =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in raw {
            cases.push(case.into_case(&check));
        }
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    let twice: Vec<_> = names.windows(2).filter(|w| w[0] == w[1]).collect();
    assert!(twice.is_empty(), "case names used twice: {twice:?}");
    cases
}

impl RawCase {
    fn into_case(self, check: &str) -> Case {
        let mut pod = match self.base {
            Base::Restricted => restricted_base(),
            Base::Baseline => baseline_base(),
            Base::None => json!({}),
        };
        merge(&mut pod, self.pod);
        let object = pod.as_object_mut().unwrap();
        object.insert("apiVersion".into(), json!("v1"));
        object.insert("kind".into(), json!("Pod"));
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .unwrap();
        metadata.insert("name".into(), json!(self.name));
        metadata.insert("namespace".into(), json!("pss-fixtures"));

        let mut expect: Vec<Expectation> = self
            .expect
            .into_iter()
            .map(|(key, verdict)| {
                let (level, version) = key.split_once(':').unwrap_or((&key, "latest"));
                Expectation {
                    level: level.to_string(),
                    version: version.to_string(),
                    violations: (verdict != "allowed").then_some(verdict),
                }
            })
            .collect();
        expect.sort();
        for level in ["baseline", "restricted"] {
            assert!(
                expect
                    .iter()
                    .any(|e| e.level == level && e.version == "latest"),
                "{check}/{}: no expectation at {level}",
                self.name
            );
        }
        Case {
            check: check.to_string(),
            name: self.name,
            pod,
            expect,
        }
    }
}

/// Merges `patch` into `target`: objects by key, lists by index, `null`
/// removes.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, value) in p {
                if value.is_null() {
                    t.remove(&key);
                } else {
                    merge(t.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (Value::Array(t), Value::Array(p)) => {
            for (i, value) in p.into_iter().enumerate() {
                match t.get_mut(i) {
                    Some(existing) => merge(existing, value),
                    None => t.push(value),
                }
            }
        }
        (target, patch) => *target = patch,
    }
}
