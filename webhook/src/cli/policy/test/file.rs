//! The test file as written (YAML), and its tests made ready to run: every
//! object read, every request built, every module loaded and every policy
//! found. Whatever is wrong here is the file's fault, reported with its
//! line, and no test runs.

use super::Modules;
use crate::admission::AdmissionRequest;
use crate::cli::check::create_request;
use crate::cli::manifests;
use crate::config::Operation;
use crate::engine::PolicyComponent;
use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation as RequestOperation;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::HashSet;
use std::path::Path;

/// A test file: what every test defaults to, and the tests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestFile {
    /// `builtin` or the path of a `.wasm` component, relative to the file.
    #[serde(default)]
    module: Option<Spanned<String>>,
    /// The policy inside the module; default: its only one.
    #[serde(default)]
    policy: Option<Spanned<String>>,
    #[serde(default)]
    settings: Option<Spanned<Value>>,
    /// Default: whether the policy's metadata says it mutates.
    #[serde(default)]
    mutate: Option<bool>,
    tests: Spanned<Vec<Spanned<TestEntry>>>,
}

/// One test as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestEntry {
    name: String,
    #[serde(default)]
    policy: Option<Spanned<String>>,
    /// The object inline, or `file`: a manifest of one object, relative to
    /// the test file.
    #[serde(default)]
    object: Option<Spanned<Value>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
    #[serde(default)]
    operation: Option<Spanned<Operation>>,
    /// The object before an UPDATE, inline or as a file.
    #[serde(default)]
    old_object: Option<Spanned<Value>>,
    #[serde(default)]
    old_file: Option<Spanned<String>>,
    /// Default: the object's, else `default`.
    #[serde(default)]
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Replaces the file's settings.
    #[serde(default)]
    settings: Option<Spanned<Value>>,
    #[serde(default)]
    mutate: Option<bool>,
    expect: Spanned<Expect>,
}

/// What a test expects: a verdict (any of the fields but `error`, each
/// checked only when given) or a failure (`error` alone).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub allowed: Option<bool>,
    /// Each must be among the denial messages.
    #[serde(default)]
    pub messages: Option<Vec<String>>,
    /// The denial messages must be `messages`, in order.
    #[serde(default)]
    pub messages_exactly: bool,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    #[serde(default)]
    pub warnings_exactly: bool,
    /// The JSON Patch from the object submitted to the one admitted.
    #[serde(default)]
    pub patch: Option<json_patch::Patch>,
    /// The object admitted, once patched.
    #[serde(default)]
    pub object: Option<Value>,
    /// Whether the request is one the policy does not judge (a kind its
    /// rules leave out, an exempt namespace).
    #[serde(default)]
    pub skipped: Option<bool>,
    /// The policy gives no verdict: a substring of why.
    #[serde(default)]
    pub error: Option<String>,
}

impl Expect {
    fn check(&self) -> Result<(), &'static str> {
        let verdict = self.allowed.is_some()
            || self.messages.is_some()
            || self.warnings.is_some()
            || self.patch.is_some()
            || self.object.is_some()
            || self.skipped.is_some();
        if self.messages_exactly && self.messages.is_none() {
            return Err("`messagesExactly` needs `messages`: the list the denial must be");
        }
        if self.warnings_exactly && self.warnings.is_none() {
            return Err("`warningsExactly` needs `warnings`: the list the warnings must be");
        }
        match (verdict, &self.error) {
            (true, Some(_)) => Err(
                "`error` expects no verdict: it cannot go with `allowed`, `messages`, `warnings`, `patch`, `object` or `skipped`",
            ),
            (false, None) => Err(
                "`expect` checks nothing: give `allowed`, `messages`, `warnings`, `patch`, `object`, `skipped` or `error`",
            ),
            _ => Ok(()),
        }
    }
}

/// One test, ready to run.
pub struct Case {
    pub name: String,
    /// The line of the test's entry.
    pub line: u64,
    pub component: PolicyComponent,
    pub policy: String,
    /// As JSON; empty: none.
    pub settings: String,
    /// The line of the settings in effect, to point the policy's refusal at.
    pub settings_line: Option<u64>,
    pub mutate: bool,
    pub request: AdmissionRequest,
    /// The object submitted, which the decision's patch applies to.
    pub object: Value,
    pub expect: Expect,
}

/// Reads the tests of the file at `path` (`text`), loading their module
/// through `modules`; `module` (`--module`) overrides the file's.
pub fn read(
    path: &Path,
    text: &str,
    module: Option<&str>,
    modules: &mut Modules,
) -> anyhow::Result<Vec<Case>> {
    let origin = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new(""));
    let file: TestFile = serde_saphyr::from_str(text).with_context(|| origin.clone())?;
    let at = |line: u64, message: String| anyhow::anyhow!("{origin}: line {line}: {message}");

    let component = match (module, &file.module) {
        (Some(module), _) => modules.get(module, Path::new("")).context("--module")?,
        (None, Some(module)) => modules
            .get(&module.value, base)
            .map_err(|e| at(module.referenced.line(), format!("module: {e:#}")))?,
        (None, None) => bail!(
            "{origin}: no module to test: name it with `module:` (a .wasm file relative to \
             this file, or `builtin`) or with --module"
        ),
    };
    if let Some(policy) = &file.policy {
        find_policy(&component, &policy.value).map_err(|e| at(policy.referenced.line(), e))?;
    }
    if file.tests.value.is_empty() {
        return Err(at(file.tests.referenced.line(), "no tests".into()));
    }

    let mut names = HashSet::new();
    let mut cases = Vec::new();
    for entry in file.tests.value {
        let line = entry.referenced.line();
        let test = entry.value;
        // An error about the test, at `line`.
        let within =
            |(line, message): (u64, String)| at(line, format!("test {:?}: {message}", test.name));
        if !names.insert(test.name.clone()) {
            return Err(within((line, "the name is used twice in this file".into())));
        }
        let policy = match test.policy.as_ref().or(file.policy.as_ref()) {
            Some(policy) => find_policy(&component, &policy.value)
                .map_err(|e| at(policy.referenced.line(), e))?,
            None => only_policy(&component).map_err(|e| within((line, e)))?,
        };
        let settings = test.settings.as_ref().or(file.settings.as_ref());
        let mutate = test.mutate.or(file.mutate).unwrap_or_else(|| {
            component
                .metadata(&policy)
                .is_some_and(|metadata| metadata.mutating)
        });
        let object = one_object(base, &test.object, &test.file, "object", "file")
            .map_err(within)?
            .ok_or_else(|| within((line, "no object: give `object` or `file`".into())))?;
        let old = one_object(
            base,
            &test.old_object,
            &test.old_file,
            "oldObject",
            "oldFile",
        )
        .map_err(within)?;
        let operation = test
            .operation
            .as_ref()
            .map_or(Operation::Create, |o| o.value);
        let request =
            request(&origin, line, &test, &object, old.as_ref(), operation).map_err(within)?;
        test.expect
            .value
            .check()
            .map_err(|e| within((test.expect.referenced.line(), e.to_string())))?;
        cases.push(Case {
            name: test.name,
            line,
            component: component.clone(),
            policy,
            settings: settings.map_or_else(String::new, |s| s.value.to_string()),
            settings_line: settings.map(|s| s.referenced.line()),
            mutate,
            request,
            object,
            expect: test.expect.value,
        });
    }
    Ok(cases)
}

fn find_policy(component: &PolicyComponent, policy: &str) -> Result<String, String> {
    match component.policies().iter().any(|p| p == policy) {
        true => Ok(policy.to_string()),
        false => Err(format!(
            "the module has no policy {policy:?} (it has: {})",
            component.policies().join(", ")
        )),
    }
}

fn only_policy(component: &PolicyComponent) -> Result<String, String> {
    match component.policies() {
        [policy] => Ok(policy.clone()),
        policies => Err(format!(
            "which policy? The module has {}: name one with `policy:` ({})",
            policies.len(),
            policies.join(", ")
        )),
    }
}

/// The object of `inline` or `file` (relative to `base`), if either is
/// given; both is an error. An error comes with the line it is about.
fn one_object(
    base: &Path,
    inline: &Option<Spanned<Value>>,
    file: &Option<Spanned<String>>,
    inline_key: &str,
    file_key: &str,
) -> Result<Option<Value>, (u64, String)> {
    match (inline, file) {
        (Some(inline), Some(_)) => Err((
            inline.referenced.line(),
            format!("`{inline_key}` and `{file_key}` are both given: give one"),
        )),
        (None, None) => Ok(None),
        (Some(inline), None) => {
            let well_formed = inline.value.is_object()
                && inline.value.get("apiVersion").is_some_and(Value::is_string)
                && inline.value.get("kind").is_some_and(Value::is_string);
            match well_formed {
                true => Ok(Some(inline.value.clone())),
                false => Err((
                    inline.referenced.line(),
                    format!(
                        "`{inline_key}` is not a Kubernetes object (a mapping with apiVersion and kind)"
                    ),
                )),
            }
        }
        (None, Some(file)) => {
            let line = file.referenced.line();
            let path = base.join(&file.value);
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| (line, format!("`{file_key}`: cannot read {name}: {e}")))?;
            let mut found = Vec::new();
            manifests::parse(&name, &text, &mut found)
                .map_err(|e| (line, format!("`{file_key}`: {e:#}")))?;
            match <[_; 1]>::try_from(found) {
                Ok([manifest]) => Ok(Some(manifest.object)),
                Err(found) => Err((
                    line,
                    format!(
                        "`{file_key}`: {name} holds {} objects: a test takes one",
                        found.len()
                    ),
                )),
            }
        }
    }
}

/// The request the API server would send for the test: `check`'s for the
/// object, with the test's namespace, operation, old object and user. An
/// error comes with the line it is about.
fn request(
    origin: &str,
    line: u64,
    test: &TestEntry,
    object: &Value,
    old: Option<&Value>,
    operation: Operation,
) -> Result<AdmissionRequest, (u64, String)> {
    let namespace = test.namespace.as_ref();
    let mut request = create_request(
        format!("policy-test-{origin}:{line}"),
        object,
        namespace.map_or("default", |n| &n.value),
    )
    .map_err(|e| (line, format!("{e:#}")))?;
    if let Some(namespace) = namespace {
        let at = namespace.referenced.line();
        match &request.namespace {
            None => {
                return Err((
                    at,
                    format!(
                        "a {} is cluster-scoped: it has no namespace",
                        request.kind.kind
                    ),
                ));
            }
            // The API server refuses an object whose namespace is not the
            // request's.
            Some(own) if *own != namespace.value => {
                return Err((
                    at,
                    format!(
                        "the object's metadata.namespace is {own:?}, not {:?}",
                        namespace.value
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let operation_line = test
        .operation
        .as_ref()
        .map_or(line, |o| o.referenced.line());
    match (operation, old) {
        (Operation::Create, None) => {}
        (Operation::Create, Some(_)) => {
            return Err((
                operation_line,
                "an old object is for an UPDATE: give `operation: UPDATE`".into(),
            ));
        }
        (Operation::Update, None) => {
            return Err((
                operation_line,
                "an UPDATE needs the object before it: give `oldObject` or `oldFile`".into(),
            ));
        }
        (Operation::Update, Some(old)) => {
            request.operation = RequestOperation::Update;
            request.old_object =
                Some(serde_json::value::to_raw_value(old).map_err(|e| (line, e.to_string()))?);
        }
    }
    request.user_info = UserInfo {
        username: test.user.clone(),
        groups: (!test.groups.is_empty()).then(|| test.groups.clone()),
        ..UserInfo::default()
    };
    // A test is a submission, not a dry run: a policy that spares dry runs
    // is tested on what it enforces.
    request.dry_run = false;
    Ok(request)
}
