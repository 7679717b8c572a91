//! The Python example policy (docs/examples/python-policy) end to end: built
//! by its build.sh with componentize-py, judged by `check` with the
//! example's policy set, then served with the webhook's default concurrency
//! all in use at once.
//!
//! Without componentize-py (no python3 with venv, no PyPI), the test says so
//! and passes, unless AGYN_REQUIRE_PYTHON_POLICY=1 (as CI sets it).

mod common;
mod webhook_harness;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use webhook_harness::{BIN, Server, create};

/// The example's objects, by file, with what its policy set answers:
/// `None` admits, `Some(message)` denies with exactly that message.
const OBJECTS: [(&str, Option<&str>); 4] = [
    (
        "service-loadbalancer.yaml",
        Some(
            r#"[service-type] spec.type must be one of ClusterIP, ExternalName (is "LoadBalancer")"#,
        ),
    ),
    (
        "pod-latest-debug.yaml",
        Some(
            r#"[no-latest-tag] ephemeral container "debug": image must name a version or a digest (is "alpine:latest")"#,
        ),
    ),
    ("service-clusterip.yaml", None),
    ("pod-pinned.yaml", None),
];

/// `serve`'s default --max-concurrent-reviews: every review slot busy.
const CONCURRENT: usize = 64;
const ROUNDS: usize = 4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> PathBuf {
    root().join("docs/examples/python-policy")
}

fn object(file: &str) -> Value {
    common::yaml(&std::fs::read_to_string(example().join("objects").join(file)).unwrap())
}

#[tokio::test]
async fn the_python_example_is_built_checked_and_served() {
    let started = Instant::now();
    let dir = common::temp_dir("python-policy");
    if !build(&dir) {
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    let built = started.elapsed();
    // One cache for `check` and `serve`: the 18 MB component is compiled
    // to native code once (about 30 s on 2 cores), by `check`.
    let cache = dir.join("cache");
    check(&dir, &cache);
    let checked = started.elapsed();
    serve(&dir, &cache).await;
    println!(
        "python policy: built in {:.1?}, checked (compiling) in {:.1?}, served in {:.1?}",
        built,
        checked - built,
        started.elapsed() - checked
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds the component into `dir`/policies.wasm, beside a copy of the
/// example's policy set (which names `policies.wasm`). False, after saying
/// why, when componentize-py cannot be installed and that is allowed.
fn build(dir: &Path) -> bool {
    let required = std::env::var("AGYN_REQUIRE_PYTHON_POLICY").is_ok_and(|v| v == "1");
    let tool = Command::new(root().join("scripts/componentize-py.sh"))
        .output()
        .unwrap();
    if !tool.status.success() {
        let why = String::from_utf8_lossy(&tool.stderr);
        assert!(
            !required,
            "AGYN_REQUIRE_PYTHON_POLICY=1, but componentize-py cannot be installed: {why}"
        );
        println!(
            "SKIPPED the Python policy test: componentize-py cannot be installed \
             (set AGYN_REQUIRE_PYTHON_POLICY=1 to fail instead): {why}"
        );
        return false;
    }
    // From here on, componentize-py is there: a failure is the example's.
    let out = Command::new(example().join("build.sh"))
        .arg(dir.join("policies.wasm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(
        example().join("policy-set.yaml"),
        dir.join("policy-set.yaml"),
    )
    .unwrap();
    true
}

/// `check` with the example's policy set over its objects, as its README
/// shows it.
fn check(dir: &Path, cache: &Path) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--cache-dir")
        .arg(cache)
        .arg("--policies")
        .arg(dir.join("policy-set.yaml"))
        .args(["-o", "json"])
        .arg(example().join("objects"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "two are denied: {stderr}");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(results.len(), OBJECTS.len(), "{results:#?}");
    for (file, denial) in OBJECTS {
        let result = results
            .iter()
            .find(|r| {
                r["source"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("{file}#1"))
            })
            .unwrap_or_else(|| panic!("{file} missing: {results:#?}"));
        let violations: Vec<String> = result["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "[{}] {}",
                    v["policy"].as_str().unwrap(),
                    v["message"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(result["allowed"], denial.is_none(), "{file}: {result}");
        assert_eq!(
            violations,
            Vec::from_iter(denial.map(String::from)),
            "{file}"
        );
    }
}

/// `serve` with the example's policy set, all its review slots in use:
/// every answer is the policy's verdict, none a failure to instantiate.
async fn serve(dir: &Path, cache: &Path) {
    let server = Server::start(
        None,
        &[
            "--policies",
            dir.join("policy-set.yaml").to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--max-concurrent-reviews",
            &CONCURRENT.to_string(),
        ],
    );
    let requests: Vec<(Value, Option<&str>)> = OBJECTS
        .iter()
        .map(|(file, denial)| (create("default", object(file)), *denial))
        .collect();
    // One client, as the API server keeps its connections to a webhook.
    let client = server.client();
    let mut all = Vec::new();
    for round in 1..=ROUNDS {
        let start = Instant::now();
        let answers = futures_util::future::join_all((0..CONCURRENT).map(|i| {
            let (request, denial) = &requests[i % requests.len()];
            let (client, server) = (&client, &server);
            async move {
                let sent = Instant::now();
                let response = server
                    .review_with(client, "/validate?timeout=10s", request)
                    .await;
                (response, *denial, sent.elapsed())
            }
        }))
        .await;
        let wall = start.elapsed();
        let mut latencies = Vec::new();
        for (response, denial, latency) in answers {
            match denial {
                None => assert_eq!(response["allowed"], true, "{response}"),
                Some(message) => {
                    assert_eq!(response["allowed"], false, "{response}");
                    assert_eq!(response["status"]["message"], message, "{response}");
                }
            }
            latencies.push(latency);
        }
        println!(
            "python policy: round {round}, {CONCURRENT} concurrent reviews in {wall:.0?}: {}",
            distribution(&mut latencies)
        );
        all.extend(latencies);
    }
    println!(
        "python policy: all {} reviews: {}",
        all.len(),
        distribution(&mut all)
    );
    // The server's side of it: how long the engine call took, which the
    // policies' 500ms deadline bounds.
    let metrics = server.metrics_text().await;
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    for policy in ["no-latest-tag", "service-type"] {
        let series = |suffix| {
            format!("agyn_admission_policy_duration_seconds_{suffix}{{policy=\"{policy}\"}}")
        };
        let (sum, count) = (sample(&series("sum")), sample(&series("count")));
        println!(
            "python policy: {policy}: {count} engine calls, {:.0} ms on average",
            sum / count * 1e3
        );
    }
}

/// Latency percentiles, for people reading the test's output.
fn distribution(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.0?}, p50 {:.0?}, p90 {:.0?}, p99 {:.0?}, max {:.0?}",
        at(0.0),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}
