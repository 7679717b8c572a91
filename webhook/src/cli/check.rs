//! `agyn-admission check`: the same engine and policy set as the webhook,
//! over manifests, offline.

use super::manifests::{self, Manifest};
use super::report::{self, CheckResult, Format};
use super::{EngineArgs, Exit};
use crate::admission::{self, AdmissionRequest};
use crate::config::PolicySet;
use anyhow::Context;
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifests: files, directories (read recursively for *.yaml, *.yml,
    /// *.json) or `-` for stdin (`helm template . | agyn-admission check -`).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    engine: EngineArgs,

    /// The namespace of objects that name none (as `kubectl apply -n`).
    #[arg(short, long, default_value = "default")]
    namespace: String,

    /// How to print the results.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,

    /// With `-o table`, print each object's JSON Patch.
    #[arg(long)]
    show_patch: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<Exit> {
    let engine = args.engine.engine()?;
    let set = PolicySet::load(&args.engine.source(), &engine)?;
    // Results are printed only once every input has been read and judged:
    // an unreadable file ends the run with no partial report.
    let mut results = Vec::new();
    manifests::for_each(&args.paths, |manifest| {
        let mut result = judge(&set, &args.namespace, manifest)?;
        // Only `-o manifests` prints the objects; keeping thousands of them
        // for nothing would multiply the memory of a large dry run.
        if args.output != Format::Manifests {
            result.object = Value::Null;
        }
        results.push(result);
        Ok(())
    })?;
    let mut stdout = std::io::stdout().lock();
    report::write(&mut stdout, args.output, args.show_patch, &results)?;
    Ok(if results.iter().all(|r| r.allowed) {
        Exit::Admitted
    } else {
        Exit::Denied
    })
}

/// Reads the manifests of one file's text and judges each, as `check`
/// does (its fuzz target, and the regression tests over what fuzzing found).
pub fn judge_text(set: &PolicySet, file: &str, text: &str) -> anyhow::Result<()> {
    let mut manifests = Vec::new();
    manifests::parse(file, text, &mut manifests)?;
    for manifest in manifests {
        judge(set, "default", manifest)?;
    }
    Ok(())
}

/// Reviews a manifest as the API server would present it on CREATE; the
/// review itself skips kinds no policy judges.
fn judge(
    set: &PolicySet,
    default_namespace: &str,
    manifest: Manifest,
) -> anyhow::Result<CheckResult> {
    let Manifest { origin, mut object } = manifest;
    let request = create_request(format!("check-{origin}"), &object, default_namespace)?;
    let mut result = CheckResult::new(
        origin.clone(),
        request.kind.kind.clone(),
        request.namespace.clone().unwrap_or_default(),
        request.name.clone().unwrap_or_default(),
    );
    let decision = admission::review(set, &request).with_context(|| format!("{origin}"))?;
    json_patch::patch(&mut object, &decision.patch)
        .with_context(|| format!("{origin}: the combined patch does not apply"))?;
    result.record(decision, object);
    Ok(result)
}

/// The request the API server would send to create `object`: its kind and
/// resource from its apiVersion and kind, its name, and its namespace, else
/// `default_namespace`; none for a cluster-scoped kind, whatever the
/// manifest says. No user: `check` and `policy test` judge as nobody in
/// particular unless told otherwise.
pub(super) fn create_request(
    uid: String,
    object: &Value,
    default_namespace: &str,
) -> anyhow::Result<AdmissionRequest> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let known = admission::kinds::resource_of(group, version, kind);
    let namespace = known.namespaced.then(|| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_namespace)
            .to_string()
    });
    Ok(AdmissionRequest {
        uid,
        kind: GroupVersionKind::gvk(group, version, kind),
        resource: Some(admission::Resource {
            group: group.to_string(),
            version: version.to_string(),
            resource: known.resource.into_owned(),
        }),
        sub_resource: None,
        name: Some(name),
        namespace,
        operation: Operation::Create,
        user_info: Default::default(),
        object: Some(serde_json::value::to_raw_value(object)?),
        old_object: None,
        dry_run: true,
    })
}
