//! `policy test`: declarative test files run through the engine as the
//! webhook runs policies. Each test is an object, how it is submitted
//! (operation, old object, namespace, user) and the policy's settings; and
//! what must come of it (verdict, messages, warnings, patch, object, or a
//! failure). Every file is read, every module loaded and every object
//! found before the first test runs: bad input ends the run with nothing
//! judged.

mod file;
mod run;

use crate::cli::report::xml;
use crate::cli::{CacheArgs, Exit};
use crate::engine::{Engine, Limits, PolicyComponent};
use anyhow::Context;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Test files, or directories searched recursively for `*.test.yaml`
    /// and `*.test.yml` (skipping `target` and hidden directories).
    /// Default: `tests/` if it exists, else the current directory.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// The component every test runs, instead of the one each file names:
    /// a `.wasm` file, or `builtin` for the policies compiled into this
    /// binary.
    #[arg(long, value_name = "FILE")]
    module: Option<String>,

    /// How to print the results.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,

    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A line per test, then what each failed test expected and got.
    Text,
    /// JUnit XML: a test suite per file, a test case per test.
    Junit,
}

/// The components the tests run, each loaded once however many files name
/// it.
pub struct Modules {
    engine: Engine,
    /// By path; `None` is the built-in component.
    loaded: HashMap<Option<PathBuf>, PolicyComponent>,
}

impl Modules {
    /// `builtin`, or the component at `module` relative to `base`.
    fn get(&mut self, module: &str, base: &Path) -> anyhow::Result<PolicyComponent> {
        let path = (module != "builtin").then(|| base.join(module));
        if let Some(component) = self.loaded.get(&path) {
            return Ok(component.clone());
        }
        let component = match &path {
            None => self.engine.builtin(None)?,
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                self.engine
                    .load(&bytes, None, Limits::default())
                    .with_context(|| format!("{}", path.display()))?
            }
        };
        self.loaded.insert(path, component.clone());
        Ok(component)
    }
}

/// A test's name as reports show it, and its differences from what it
/// expected (none: it passed).
struct Outcome {
    file: String,
    name: String,
    line: u64,
    differences: Vec<String>,
}

impl Outcome {
    fn title(&self) -> String {
        format!("{}: {}", self.file, self.name)
    }
}

pub fn run(args: TestArgs) -> anyhow::Result<Exit> {
    let paths = match args.paths.is_empty() {
        false => args.paths.clone(),
        true if Path::new("tests").is_dir() => vec![PathBuf::from("tests")],
        true => vec![PathBuf::from(".")],
    };
    let files = test_files(&paths)?;
    let mut modules = Modules {
        engine: args.cache.engine()?,
        loaded: HashMap::new(),
    };
    let mut suites = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cases = file::read(path, &text, args.module.as_deref(), &mut modules)?;
        suites.push((path.display().to_string(), cases));
    }

    let total = suites.iter().map(|(_, cases)| cases.len()).sum::<usize>();
    let mut out = io::stdout().lock();
    let lines = args.output == Format::Text;
    if lines {
        writeln!(out, "running {total} test{}", plural(total))?;
    }
    let mut outcomes = Vec::with_capacity(total);
    for (file, cases) in &suites {
        for case in cases {
            let outcome = Outcome {
                file: file.clone(),
                name: case.name.clone(),
                line: case.line,
                differences: run::run(case),
            };
            if lines {
                let verdict = match outcome.differences.is_empty() {
                    true => "ok",
                    false => "FAILED",
                };
                writeln!(out, "test {} ... {verdict}", outcome.title())?;
            }
            outcomes.push(outcome);
        }
    }
    match args.output {
        Format::Text => summary(&mut out, &outcomes)?,
        Format::Junit => junit(&mut out, &outcomes)?,
    }
    Ok(match outcomes.iter().all(|o| o.differences.is_empty()) {
        true => Exit::Admitted,
        false => Exit::Denied,
    })
}

/// The test files among `paths`: files as given, directories searched.
fn test_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            search(path, &mut files)?;
            anyhow::ensure!(
                files.len() > before,
                "no test files (*.test.yaml, *.test.yml) under {}",
                path.display()
            );
            files[before..].sort();
        } else if path.exists() {
            files.push(path.clone());
        } else {
            anyhow::bail!("{} does not exist", path.display());
        }
    }
    Ok(files)
}

fn search(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if path.is_dir() {
            // A build's output and version control hold no tests, and
            // searching them from a crate's root would take long.
            if name != "target" && !name.starts_with('.') {
                search(&path, files)?;
            }
        } else if name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
            files.push(path);
        }
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// After the per-test lines, as `cargo test` prints it: each failure's
/// differences, the failed tests again, and the counts.
fn summary(out: &mut impl Write, outcomes: &[Outcome]) -> io::Result<()> {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.differences.is_empty())
        .collect();
    if !failed.is_empty() {
        writeln!(out, "\nfailures:")?;
        for outcome in &failed {
            writeln!(
                out,
                "\n---- {} (line {}) ----",
                outcome.title(),
                outcome.line
            )?;
            for difference in &outcome.differences {
                writeln!(out, "{difference}")?;
            }
        }
        writeln!(out, "\nfailures:")?;
        for outcome in &failed {
            writeln!(out, "    {}", outcome.title())?;
        }
    }
    writeln!(
        out,
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        outcomes.len() - failed.len(),
        failed.len()
    )
}

fn junit(out: &mut impl Write, outcomes: &[Outcome]) -> io::Result<()> {
    let failures = |outcomes: &[Outcome]| {
        outcomes
            .iter()
            .filter(|o| !o.differences.is_empty())
            .count()
    };
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="agyn-admission policy test" tests="{}" failures="{}">"#,
        outcomes.len(),
        failures(outcomes)
    )?;
    for suite in outcomes.chunk_by(|a, b| a.file == b.file) {
        writeln!(
            out,
            r#"<testsuite name="{}" tests="{}" failures="{}">"#,
            xml(&suite[0].file),
            suite.len(),
            failures(suite)
        )?;
        for outcome in suite {
            write!(
                out,
                r#"<testcase classname="{}" name="{}">"#,
                xml(&outcome.file),
                xml(&outcome.name)
            )?;
            if let Some(first) = outcome.differences.first() {
                write!(
                    out,
                    r#"<failure message="{}">{}</failure>"#,
                    xml(first.lines().next().unwrap_or_default()),
                    xml(&outcome.differences.join("\n"))
                )?;
            }
            writeln!(out, "</testcase>")?;
        }
        writeln!(out, "</testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}
