//! The command line: `check` (the CI dry run) and the shared options.

mod check;
mod manifests;
mod report;

use crate::engine::{Engine, EngineOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Policy-as-code admission for Kubernetes: policies compiled to
/// WebAssembly, enforced by a webhook and predicted in CI by `check`.
#[derive(Debug, Parser)]
#[command(name = "agyn-admission", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Judge manifests offline, as the webhook would admit them (a dry run for CI).
    Check(check::CheckArgs),
}

/// Options every command that runs policies shares.
#[derive(Debug, clap::Args)]
struct EngineArgs {
    /// The policy set file (YAML). Default: the built-in Agyn set, with
    /// mutation on, as the Helm chart deploys it.
    #[arg(long, env = "AGYN_POLICIES", value_name = "FILE")]
    policies: Option<PathBuf>,

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
    fn engine(&self) -> anyhow::Result<Engine> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        Engine::new(&EngineOptions { cache_dir })
    }

    fn source(&self) -> crate::config::Source {
        match &self.policies {
            Some(path) => crate::config::Source::File(path.clone()),
            None => crate::config::Source::Builtin,
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let exit = match cli.command {
        Command::Check(args) => check::run(args),
    };
    match exit {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error.into()
        }
    }
}
