//! `agyn-admission policy`: the policy author's toolchain. `new` makes a
//! crate, `build` compiles it to a component with its metadata, `test`
//! runs declarative tests through the engine as the webhook runs policies,
//! `inspect` says what a component holds, and `push` and `pull` move it to
//! and from an OCI registry.

mod build;
mod inspect;
mod new;
mod profile;
mod registry;
mod test;

use super::Exit;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy crate that builds, tests and runs as created.
    New(new::NewArgs),
    /// Build a policy crate into a component, metadata embedded, checked to load.
    Build(build::BuildArgs),
    /// Run declarative test files (objects, settings, operation, user;
    /// expected verdict, messages, warnings, patch) through the engine.
    Test(test::TestArgs),
    /// Show what a component holds: policies, metadata, world, imports,
    /// size, sha256.
    Inspect(inspect::InspectArgs),
    /// Push a component to an OCI registry; print the digest to pin.
    Push(registry::PushArgs),
    /// Pull a module from an OCI registry into the cache (and a file);
    /// print its digest.
    Pull(registry::PullArgs),
}

pub fn run(command: PolicyCommand) -> anyhow::Result<Exit> {
    match command {
        PolicyCommand::New(args) => new::run(args),
        PolicyCommand::Build(args) => build::run(args),
        PolicyCommand::Test(args) => test::run(args),
        PolicyCommand::Inspect(args) => inspect::run(args),
        PolicyCommand::Push(args) => registry::push(args),
        PolicyCommand::Pull(args) => registry::pull(args),
    }
}
