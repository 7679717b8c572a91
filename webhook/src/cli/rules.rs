//! `agyn-admission rules`: the rules the Validating and Mutating webhook
//! configurations need for a policy set, from its policies' metadata and
//! matches, in the form `webhooks[].rules` takes. The chart's defaults are
//! these rules for the built-in set (its tests compare them).

use super::{DataFormat, EngineArgs, Exit};
use crate::admission::registration::{self, Request, merge};
use crate::config::PolicySet;
use std::collections::BTreeSet;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// `yaml` or `json`.
    #[arg(short, long, value_enum, default_value_t = DataFormat::Yaml)]
    output: DataFormat,
}

pub fn run(args: RulesArgs) -> anyhow::Result<Exit> {
    let engine = args.engine.engine()?;
    let registry = args.engine.registry()?;
    let set = PolicySet::load_with(&args.engine.source(), &engine, &registry)?;
    // A module's rules are in its metadata: without it, they are unknown.
    if let Some(policy) = set.unavailable.first() {
        anyhow::bail!(
            "policy {:?}: its module is unavailable, so the requests it judges are unknown: {}",
            policy.name,
            policy.error()
        );
    }
    let rules = serde_json::json!({
        "validating": merge(requests(&set, false)),
        "mutating": merge(requests(&set, true)),
    });
    match args.output {
        DataFormat::Json => println!("{rules:#}"),
        DataFormat::Yaml => print!("{}", serde_saphyr::to_string(&rules)?),
    }
    Ok(Exit::Admitted)
}

/// Every request some policy of the set judges (validating) or may change
/// (mutating).
fn requests(set: &PolicySet, mutating: bool) -> BTreeSet<Request> {
    set.policies
        .iter()
        .filter(|p| !mutating || registration::mutates(set, p))
        .flat_map(|p| registration::requests(p, mutating))
        .collect()
}
