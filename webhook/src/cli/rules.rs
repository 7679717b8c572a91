//! `agyn-admission rules`: the rules the Validating and Mutating webhook
//! configurations need for a policy set, from its policies' metadata and
//! matches, in the form `webhooks[].rules` takes. The chart's defaults are
//! these rules for the built-in set (its tests compare them).

use super::{EngineArgs, Exit};
use crate::admission::kinds::{self, WorkloadKind};
use crate::config::{Mode, PolicySet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// `yaml` or `json`.
    #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

/// One rule of a webhook configuration.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct WebhookRule {
    api_groups: Vec<String>,
    api_versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
    scope: &'static str,
}

/// Group, version, resource and operation: the unit rules are merged from.
type Request = (String, String, String, String);

pub fn run(args: RulesArgs) -> anyhow::Result<Exit> {
    let engine = args.engine.engine()?;
    let set = PolicySet::load(&args.engine.source(), &engine)?;
    let rules = serde_json::json!({
        "validating": merge(requests(&set, false)),
        "mutating": merge(requests(&set, true)),
    });
    match args.output {
        Format::Json => println!("{rules:#}"),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&rules)?),
    }
    Ok(Exit::Admitted)
}

/// Every request some policy of the set judges (validating) or may change
/// (mutating: enforcing policies with mutation on).
fn requests(set: &PolicySet, mutating: bool) -> BTreeSet<Request> {
    let mut out = BTreeSet::new();
    for policy in &set.policies {
        let mutates = policy.mutate
            && policy.mode == Mode::Enforce
            && set.metadata(policy).is_some_and(|m| m.mutating);
        if mutating && !mutates {
            continue;
        }
        let kinds_allowed = |kind: &str| policy.matching.names_kind(kind);
        for rule in &policy.rules {
            for operation in policy.matching.operations() {
                let operation = operation.as_str();
                if !rule.covers_operation(operation) {
                    continue;
                }
                for group in &rule.api_groups {
                    for version in &rule.api_versions {
                        for resource in &rule.resources {
                            // A Pod's spec is immutable once created: the
                            // host never mutates a Pod on UPDATE.
                            if mutating
                                && group.is_empty()
                                && resource == "pods"
                                && operation == "UPDATE"
                            {
                                continue;
                            }
                            let kind = kind_of(group, resource);
                            if kind.is_none_or(kinds_allowed) {
                                out.insert((
                                    group.clone(),
                                    version.clone(),
                                    resource.clone(),
                                    operation.to_string(),
                                ));
                            }
                        }
                    }
                }
                if !rule.names_pods() {
                    continue;
                }
                // The pod convenience: workload templates, and ephemeral
                // containers (validated only: they come by UPDATE).
                for kind in WorkloadKind::all().filter(|k| *k != WorkloadKind::Pod) {
                    if !kinds_allowed(kind.kind()) {
                        continue;
                    }
                    let (group, version, known) =
                        kinds::by_name(kind.kind()).expect("workload kinds are typed");
                    out.insert((
                        group.into(),
                        version.into(),
                        known.resource.into(),
                        operation.into(),
                    ));
                }
                if !mutating && operation == "UPDATE" && kinds_allowed("Pod") {
                    out.insert((
                        "".into(),
                        "v1".into(),
                        "pods/ephemeralcontainers".into(),
                        "UPDATE".into(),
                    ));
                }
            }
        }
    }
    out
}

/// The kind of a resource, when k8s-openapi types it (`None` for custom
/// resources and wildcards, which a set's kinds cannot narrow here).
fn kind_of(group: &str, resource: &str) -> Option<&'static str> {
    kinds::kind_of_resource(group, resource.split('/').next().unwrap_or(resource))
}

/// Rules in the chart's shape: one per group, version and operations, with
/// the resources sorted.
fn merge(requests: BTreeSet<Request>) -> Vec<WebhookRule> {
    let mut by_resource: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, version, resource, operation) in requests {
        by_resource
            .entry((group, version, resource))
            .or_default()
            .insert(operation);
    }
    let mut grouped: BTreeMap<(String, String, Vec<String>, &'static str), Vec<String>> =
        BTreeMap::new();
    for ((group, version, resource), operations) in by_resource {
        let scope = scope(&group, &resource);
        grouped
            .entry((group, version, operations.into_iter().collect(), scope))
            .or_default()
            .push(resource);
    }
    grouped
        .into_iter()
        .map(
            |((group, version, operations, scope), resources)| WebhookRule {
                api_groups: vec![group],
                api_versions: vec![version],
                operations,
                resources,
                scope,
            },
        )
        .collect()
}

fn scope(group: &str, resource: &str) -> &'static str {
    let base = resource.split('/').next().unwrap_or(resource);
    match kinds::kind_of_resource(group, base).and_then(kinds::by_name) {
        Some((_, _, known)) if known.namespaced => "Namespaced",
        Some(_) => "Cluster",
        None => "*",
    }
}
