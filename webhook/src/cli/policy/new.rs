//! `policy new`: a policy crate that builds, tests and runs as created,
//! offline, anywhere. The SDK is on no registry, so the binary carries its
//! source and writes it beside the crate (`agyn-policy-sdk/`), unless
//! `--sdk` points at one; the lock file pins the versions the webhook is
//! built with, which a machine that built agyn-admission has in its cache.

use crate::admission::kinds;
use crate::cli::Exit;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The policy's name (lower-case words joined by `-`): also the crate
    /// and folder name.
    name: String,

    /// The kind the policy judges: one k8s-openapi types (`Pod`,
    /// `Service`, `Ingress`, `ClusterRole`, …), or `group/Kind` for a
    /// custom resource (`example.com/Widget`).
    #[arg(long, default_value = "Pod")]
    kind: String,

    /// Where to create the crate (default: `./NAME`).
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,

    /// Use the SDK at this path instead of writing a copy beside the crate.
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The SDK's source, as the binary was built with it.
const SDK_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/sdk.Cargo.toml")),
    (
        "README.md",
        include_str!("../../../../policy-sdk/README.md"),
    ),
    (
        "wit/policy.wit",
        include_str!("../../../../policy-sdk/wit/policy.wit"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../policy-sdk/src/lib.rs"),
    ),
    (
        "src/containers.rs",
        include_str!("../../../../policy-sdk/src/containers.rs"),
    ),
    (
        "src/evaluate.rs",
        include_str!("../../../../policy-sdk/src/evaluate.rs"),
    ),
    (
        "src/labels.rs",
        include_str!("../../../../policy-sdk/src/labels.rs"),
    ),
    (
        "src/metadata.rs",
        include_str!("../../../../policy-sdk/src/metadata.rs"),
    ),
    (
        "src/object.rs",
        include_str!("../../../../policy-sdk/src/object.rs"),
    ),
    (
        "src/outcome.rs",
        include_str!("../../../../policy-sdk/src/outcome.rs"),
    ),
    (
        "src/request.rs",
        include_str!("../../../../policy-sdk/src/request.rs"),
    ),
    (
        "src/testing.rs",
        include_str!("../../../../policy-sdk/src/testing.rs"),
    ),
    (
        "src/wasm.rs",
        include_str!("../../../../policy-sdk/src/wasm.rs"),
    ),
];

const LOCK_FILE: &str = include_str!("../../../../Cargo.lock");

pub fn run(args: NewArgs) -> anyhow::Result<Exit> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "{name:?} is not a policy name: lower-case letters, digits and `-`, starting with a letter"
        );
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match &args.sdk {
        Some(path) => std::path::absolute(path)?.display().to_string(),
        None => "agyn-policy-sdk".to_string(),
    };
    let kind = Kind::parse(&args.kind)?;
    let ty = type_name(name);
    let manifest = format!(
        "apiVersion: {}\nkind: {}\nmetadata:\n  name: example\n",
        kind.api_version, kind.kind
    );
    let indented: String = manifest
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    let (testing_use, request) = match kind.typed {
        true => (
            "use agyn_policy_sdk::testing::{create, object, run, settings};",
            format!("create::<{}>(\"default\")", kind.object),
        ),
        false => (
            "use agyn_policy_sdk::testing::{object, run, settings};",
            "Request::default()".to_string(),
        ),
    };
    let fill = |template: &str| {
        template
            .replace("@NAME@", name)
            .replace("@TYPE@", &ty)
            .replace("@KIND@", &kind.kind)
            .replace("@OBJECT@", &kind.object)
            .replace("@USE@\n", &kind.use_line)
            .replace("@RULES@\n", &kind.rules)
            .replace("@TESTING_USE@", testing_use)
            .replace("@REQUEST@", &request)
            .replace("@MANIFEST@", &manifest)
            .replace("@MANIFEST_INDENTED@\n", &indented)
            .replace("@SDK@", &sdk)
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("template/Cargo.toml.in")),
        ),
        (
            "src/lib.rs".into(),
            fill(include_str!("template/lib.rs.in")),
        ),
        (
            format!("tests/{name}.test.yaml").into(),
            fill(include_str!("template/test.yaml.in")),
        ),
        ("Cargo.lock".into(), LOCK_FILE.to_string()),
        (".gitignore".into(), "/target\n/*.wasm\n".to_string()),
    ];
    if args.sdk.is_none() {
        for (path, text) in SDK_FILES {
            files.push((Path::new("agyn-policy-sdk").join(path), text.to_string()));
        }
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {} (policy {name}, judging {})",
        dir.display(),
        kind.kind
    );
    println!(
        "next: cd {} && cargo test && agyn-admission policy build && agyn-admission policy test",
        dir.display()
    );
    Ok(Exit::Admitted)
}

/// What the template needs to know of the kind.
struct Kind {
    kind: String,
    api_version: String,
    /// The Rust type of the object: k8s-openapi's, or `DynamicObject`.
    object: String,
    /// k8s-openapi types it (else a custom resource).
    typed: bool,
    use_line: String,
    /// `const RULES` for a custom resource (a typed object brings its own).
    rules: String,
}

impl Kind {
    fn parse(spec: &str) -> anyhow::Result<Kind> {
        let (group, kind) = spec.rsplit_once('/').map_or(("", spec), |(g, k)| (g, k));
        if kind.is_empty() || !kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            bail!(
                "{spec:?} is not a kind: `Service`, or `example.com/Widget` for a custom resource"
            );
        }
        if let (true, Some(rust_type)) = (group.is_empty(), kinds::rust_type(kind)) {
            let (group, version, _) = kinds::by_name(kind).expect("a typed kind is known");
            let rust_type = rust_type.replace(' ', "");
            let object = rust_type.rsplit("::").next().unwrap_or(kind).to_string();
            return Ok(Kind {
                kind: kind.to_string(),
                api_version: api_version(group, version),
                use_line: format!("use agyn_policy_sdk::{rust_type};\n"),
                object,
                typed: true,
                rules: String::new(),
            });
        }
        if group.is_empty() {
            bail!(
                "{kind:?} is not a kind k8s-openapi types: give a custom resource's group too, as `example.com/{kind}`"
            );
        }
        let resource = kinds::resource_of(group, "v1", kind).resource;
        Ok(Kind {
            kind: kind.to_string(),
            api_version: format!("{group}/v1"),
            object: "DynamicObject".into(),
            typed: false,
            use_line: "use agyn_policy_sdk::{DynamicObject, Operation, Rule};\n".into(),
            rules: format!(
                "    // A custom resource brings no rules of its own: these say which\n    \
                 // requests reach the policy (its plural, as in the CRD).\n    \
                 const RULES: &'static [Rule] = &[Rule {{\n        \
                 api_groups: &[\"{group}\"],\n        \
                 api_versions: &[\"*\"],\n        \
                 resources: &[\"{resource}\"],\n        \
                 operations: &[Operation::Create, Operation::Update],\n    \
                 }}];\n"
            ),
        })
    }
}

fn api_version(group: &str, version: &str) -> String {
    match group {
        "" => version.to_string(),
        group => format!("{group}/{version}"),
    }
}

/// `require-owner` -> `RequireOwner`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}
