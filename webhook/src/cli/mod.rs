//! The command line: `check` (the CI dry run) and the shared options.

mod audit;
mod check;
mod fallback;
mod fast_yaml;
mod manifests;
mod policy;
mod report;
mod rules;

pub use check::judge_text;

use crate::engine::{Engine, EngineOptions};
use crate::registry::{Registry, RegistryOptions};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Policy-as-code admission for Kubernetes: policies compiled to
/// WebAssembly, enforced by a webhook and predicted in CI by `check`.
#[derive(Debug, Parser)]
#[command(name = "agyn-admission", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr: `text` for people, `json` (one object per
    /// line) for log pipelines. Levels: RUST_LOG (default: info for
    /// `serve`, warn otherwise).
    #[arg(long, global = true, env = "AGYN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Judge manifests offline, as the webhook would admit them (a dry run for CI).
    Check(check::CheckArgs),
    /// Run the admission webhook: AdmissionReviews over HTTPS from the API server.
    Serve(crate::server::ServeArgs),
    /// Print the webhook rules a policy set needs (for the Validating and
    /// Mutating webhook configurations).
    Rules(rules::RulesArgs),
    /// Print the API server's own admission policies that enforce a policy
    /// set while the webhook is down (ValidatingAdmissionPolicies, and
    /// MutatingAdmissionPolicies with --mutations).
    Fallback(fallback::FallbackArgs),
    /// Judge what a cluster already stores, writing one policy report per
    /// object (Open Reports or wgpolicyk8s); --dry-run only prints.
    Audit(audit::AuditArgs),
    /// Write, build, test and inspect policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// How `rules` and `fallback` print what they make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DataFormat {
    Yaml,
    Json,
}

/// What the chart's webhooks never judge, so neither do `fallback`'s
/// policies nor `audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct UnjudgedArgs {
    /// The webhook's own namespace: never judged.
    #[arg(long, value_name = "NAMESPACE", default_value = "agyn-system")]
    webhook_namespace: String,

    /// Another namespace never judged (repeatable), as the chart's
    /// webhook.excludedNamespaces. kube-system never is.
    #[arg(long, value_name = "NAMESPACE")]
    exclude_namespace: Vec<String>,

    /// A namespace label by which a namespace opts out, as KEY=VALUE (the
    /// chart's optOutLabel, with value `disabled`); `""` for none.
    #[arg(
        long,
        value_name = "KEY=VALUE",
        default_value = "agyn.io/admission=disabled"
    )]
    opt_out_label: String,
}

impl UnjudgedArgs {
    /// The webhook's namespace, then the excluded ones.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let mut namespaces = vec![self.webhook_namespace.clone()];
        namespaces.extend(self.exclude_namespace.iter().cloned());
        namespaces
    }

    pub(crate) fn opt_out_label(&self) -> anyhow::Result<Option<(String, String)>> {
        match self.opt_out_label.as_str() {
            "" => Ok(None),
            label => match label.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    Ok(Some((key.to_string(), value.to_string())))
                }
                _ => anyhow::bail!("--opt-out-label {label:?}: expected KEY=VALUE"),
            },
        }
    }
}

/// Options every command that runs policies shares.
#[derive(Debug, clap::Args)]
pub(crate) struct EngineArgs {
    /// The policy set file (YAML). Default: the built-in Agyn set, with
    /// mutation on, as the Helm chart deploys it.
    #[arg(long, env = "AGYN_POLICIES", value_name = "FILE")]
    policies: Option<PathBuf>,

    #[command(flatten)]
    cache: CacheArgs,

    #[command(flatten)]
    registry: RegistryArgs,
}

/// How `oci://` modules are pulled.
#[derive(Debug, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Registry credentials: a Docker config.json (the format of a
    /// kubernetes.io/dockerconfigjson pull secret). Default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, if there.
    #[arg(long, env = "AGYN_REGISTRY_CONFIG", value_name = "FILE")]
    registry_config: Option<PathBuf>,

    /// PEM certificates to trust for registries, besides the system's.
    #[arg(long, env = "AGYN_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,

    /// A registry (HOST or HOST:PORT) to reach in plain HTTP. Repeatable.
    /// Registries on loopback addresses are tried in HTTPS, then in plain
    /// HTTP, without it.
    #[arg(
        long = "insecure-registry",
        env = "AGYN_INSECURE_REGISTRIES",
        value_name = "HOST",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,

    /// The longest one pull of a module may take.
    #[arg(long, env = "AGYN_REGISTRY_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = crate::config::duration::parse)]
    registry_timeout: std::time::Duration,
}

impl RegistryArgs {
    /// A registry client; pulled modules are kept under `cache` (the
    /// compiled-policy cache directory), if any.
    pub(crate) fn registry(&self, cache: Option<PathBuf>) -> anyhow::Result<Registry> {
        let docker_config = self.registry_config.clone().or_else(|| {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
            Some(dir.join("config.json")).filter(|p| p.is_file())
        });
        Registry::new(&RegistryOptions {
            docker_config,
            docker_config_is_default: self.registry_config.is_none(),
            ca_bundle: self.registry_ca.clone(),
            insecure: self.insecure_registries.clone(),
            timeout: self.registry_timeout,
            store_dir: cache.map(|dir| dir.join("modules")),
        })
        .map_err(anyhow::Error::msg)
    }
}

/// Where compiled policies are kept: every command that compiles them.
#[derive(Debug, clap::Args)]
pub(crate) struct CacheArgs {
    /// Where compiled policies are kept between runs, so the next start
    /// skips compilation. Default: $XDG_CACHE_HOME/agyn-admission or
    /// ~/.cache/agyn-admission.
    #[arg(long, env = "AGYN_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile the policies on every start; write nothing to disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl EngineArgs {
    pub(crate) fn engine(&self) -> anyhow::Result<Engine> {
        self.cache.engine()
    }

    /// The registry the set's `oci://` modules come from.
    pub(crate) fn registry(&self) -> anyhow::Result<Registry> {
        self.registry.registry(self.cache.cache_root())
    }

    pub(crate) fn source(&self) -> crate::config::Source {
        match &self.policies {
            Some(path) => crate::config::Source::File(path.clone()),
            None => crate::config::Source::Builtin,
        }
    }
}

impl CacheArgs {
    pub(crate) fn engine(&self) -> anyhow::Result<Engine> {
        Engine::new(&EngineOptions {
            cache_dir: self.cache_root(),
        })
    }

    /// The cache directory in use, if any.
    pub(crate) fn cache_root(&self) -> Option<PathBuf> {
        match self.no_cache {
            true => None,
            false => self.cache_dir.clone().or_else(default_cache_dir),
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("agyn-admission"))
}

/// How a command ends, for scripts and CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything admitted.
    Admitted = 0,
    /// At least one object denied.
    Denied = 1,
    /// Bad usage or input: nothing was judged.
    Error = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Error
            } else {
                Exit::Admitted
            }
            .into();
        }
    };
    let level = match cli.command {
        Command::Serve(_) | Command::Audit(_) => "info",
        Command::Check(_) | Command::Policy(_) | Command::Rules(_) | Command::Fallback(_) => "warn",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // rustls warns for every handshake whose SNI is an IP address, which
    // clients dialling https://10.0.0.1 send: a line per connection that a
    // client controls. Its errors still show; RUST_LOG=rustls=... decides.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls")) {
        filter = filter.add_directive("rustls=error".parse().expect("a valid directive"));
    }
    // Lines are written by a thread of their own, in batches: writing each
    // audit event on the request's thread cost a syscall per request.
    // Nothing is dropped: a full queue makes the request wait.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("logs")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let logs = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let exit = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Rules(args) => rules::run(args),
        Command::Fallback(args) => fallback::run(args),
        Command::Audit(args) => audit::run(args),
        // A server ends only on a signal, or on an error reported below.
        Command::Serve(args) => crate::server::run(args).map(|()| Exit::Admitted),
    };
    match exit {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            Exit::Error.into()
        }
    }
}

/// The error and its causes, as `{:#}` joins them, but each message once:
/// an error that quotes its cause in its own message (the policy set's
/// "cannot read FILE: CAUSE") would otherwise print the cause twice.
fn causes(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
