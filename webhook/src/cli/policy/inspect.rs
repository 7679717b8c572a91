//! `policy inspect`: what a component holds, read from its bytes and by
//! loading it as the webhook would.

use crate::cli::{CacheArgs, Exit};
use crate::engine::Limits;
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The component (`.wasm`).
    file: PathBuf,

    /// `text` for people, `json` for scripts.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,

    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: InspectArgs) -> anyhow::Result<Exit> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let engine = args.cache.engine()?;
    let component = engine
        .load(&bytes, None, Limits::default())
        .with_context(|| format!("{}", args.file.display()))?;
    let wasi = component.imports().iter().any(|i| i.starts_with("wasi:"));
    let policies: Vec<_> = component
        .policies()
        .iter()
        .filter_map(|name| component.metadata(name))
        .collect();
    match args.output {
        Format::Json => println!(
            "{:#}",
            json!({
                "file": args.file,
                "world": component.world(),
                "size": component.size(),
                "sha256": component.sha256(),
                "imports": component.imports(),
                "wasi": wasi,
                "policies": policies,
            })
        ),
        Format::Text => {
            println!("{}", args.file.display());
            println!("  world:   {}", component.world());
            println!("  size:    {} bytes", component.size());
            println!("  sha256:  {}", component.sha256());
            println!(
                "  imports: {}",
                match component.imports() {
                    [] => "none".to_string(),
                    imports => imports.join(", "),
                }
            );
            for policy in policies {
                println!();
                println!("  policy {}", policy.name);
                if !policy.description.is_empty() {
                    println!("    {}", policy.description);
                }
                println!(
                    "    mutating: {}, severity: {}{}",
                    policy.mutating,
                    policy.severity.as_str(),
                    match policy.category.as_str() {
                        "" => String::new(),
                        category => format!(", category: {category}"),
                    }
                );
                for rule in &policy.rules {
                    println!(
                        "    rule: groups [{}] versions [{}] resources [{}] operations [{}]",
                        rule.api_groups
                            .iter()
                            .map(|g| if g.is_empty() { "\"\"" } else { g })
                            .collect::<Vec<_>>()
                            .join(", "),
                        rule.api_versions.join(", "),
                        rule.resources.join(", "),
                        rule.operations.join(", ")
                    );
                }
                if let Some(schema) = &policy.settings_schema {
                    println!("    settings schema: {schema}");
                }
            }
        }
    }
    Ok(Exit::Admitted)
}
