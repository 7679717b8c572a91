//! The `agyn-admission` binary: parse the command line, run the command.

use std::process::ExitCode;

fn main() -> ExitCode {
    agyn_admission::cli::main()
}
