//! `policy test`: declarative test files run through the engine.

use crate::cli::Exit;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Test files or directories holding `*.test.yaml` (default: `tests/`).
    paths: Vec<PathBuf>,
}

pub fn run(args: TestArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("policy test is not written yet ({:?})", args.paths)
}
