//! What a user feels: the time of a pod creation through a real API server
//! (tests/apiserver), without the webhook and with it registered for
//! mutation and validation, the API server calling it over its own HTTP/2
//! client. Creations are server-side dry runs of the typical pod: admission
//! runs in full, nothing piles up in etcd.
//!
//! ```sh
//! scripts/apiserver-latency.sh                        # starts an API server
//! AGYN_TEST_KUBECONFIG=... cargo bench --bench apiserver_latency -- --count 1000 --concurrency 8
//! ```
//!
//! `--count` (or `AGYN_BENCH_COUNT`, default 1000) creations per case,
//! made one after another, then by `--concurrency` (`AGYN_BENCH_CONCURRENCY`,
//! default 8) clients at once.

#[path = "../../tests/apiserver/mod.rs"]
mod apiserver;
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/webhook_harness.rs"]
mod webhook_harness;

use apiserver::{Cluster, TestNamespace};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhook_harness::Server;

const POD: &str = include_str!("../../tests/data/typical-pod.yaml");

/// Creations before each measurement: connections (the client's to the
/// API server, the API server's to the webhook) and caches warm up.
const WARM_UP: usize = 100;

struct Options {
    count: usize,
    concurrency: usize,
}

fn options() -> Options {
    let env = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a count"))
        })
    };
    let mut options = Options {
        count: env("AGYN_BENCH_COUNT", 1000),
        concurrency: env("AGYN_BENCH_CONCURRENCY", 8),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            let v = args.next().unwrap_or_default();
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v:?}: not a count"))
        };
        match arg.as_str() {
            "--count" => options.count = value("--count"),
            "--concurrency" => options.concurrency = value("--concurrency"),
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (--count N, --concurrency N)"),
        }
    }
    assert!(
        options.count > 0 && options.concurrency > 0,
        "count and concurrency must be positive"
    );
    options
}

/// One creation, timed; any refusal ends the benchmark (it would time
/// something other than admission).
async fn create(namespace: &TestNamespace, pod: &Pod) -> Duration {
    let start = Instant::now();
    if let Err(e) = namespace.create(pod, true).await {
        panic!("the pod was refused: {e:?}");
    }
    start.elapsed()
}

/// `count` creations by `clients` clients at once, each one after another.
async fn run(namespace: &Arc<TestNamespace>, pod: &Pod, count: usize, clients: usize) -> Latency {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (namespace, pod) = (namespace.clone(), pod.clone());
            // Clients share the count out; the first ones take the rest.
            let share = count / clients + usize::from(client < count % clients);
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(share);
                for _ in 0..share {
                    times.push(create(&namespace, &pod).await);
                }
                times
            })
        })
        .collect();
    let mut times = Vec::with_capacity(count);
    for task in tasks {
        times.extend(task.await.unwrap());
    }
    Latency::new(times)
}

/// Warms up, then times `count` creations one after another and as many
/// by `concurrency` clients at once.
async fn measure(
    namespace: &Arc<TestNamespace>,
    pod: &Pod,
    options: &Options,
) -> (Latency, Latency) {
    run(namespace, pod, WARM_UP, options.concurrency).await;
    let sequential = run(namespace, pod, options.count, 1).await;
    let concurrent = run(namespace, pod, options.count, options.concurrency).await;
    (sequential, concurrent)
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn new(mut times: Vec<Duration>) -> Latency {
        times.sort();
        // The smallest time that `q` of the creations did not exceed.
        let quantile = |q: f64| times[((q * times.len() as f64).ceil() as usize).max(1) - 1];
        Latency {
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: *times.last().unwrap(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// `a - b` in milliseconds, signed.
fn diff(a: Duration, b: Duration) -> String {
    format!("{:+.2}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

/// The server's own account: reviews answered and their total time, per
/// endpoint, and the connections open to it.
struct ServerSide {
    reviews: f64,
    seconds: f64,
    connections: f64,
}

async fn server_side(server: &Server) -> ServerSide {
    let text = server.metrics_text().await;
    let sample = |prefix: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    ServerSide {
        reviews: sample("agyn_admission_request_duration_seconds_count"),
        seconds: sample("agyn_admission_request_duration_seconds_sum"),
        connections: sample(r#"agyn_admission_connections{port="webhook"}"#),
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let version = cluster.client.apiserver_version().await.unwrap();
    let namespace = cluster.namespace("latency").await;
    namespace.service_account("agent-api").await;
    let namespace = Arc::new(namespace);
    let pod: Pod = serde_json::from_value(common::yaml(POD)).unwrap();
    let (count, concurrency) = (options.count, options.concurrency);

    let without = measure(&namespace, &pod, &options).await;

    let server = Server::start(None, &[]);
    // The API server learns of webhook configurations by a watch: how long
    // until a new one is called is worth knowing too.
    let registering = Instant::now();
    let webhooks = namespace
        .register(server.webhook, &server.pki.ca_pem(), "Fail")
        .await;
    let registered = registering.elapsed();
    let before = server_side(&server).await;
    let with = measure(&namespace, &pod, &options).await;
    let after = server_side(&server).await;
    webhooks.remove().await;
    Arc::into_inner(namespace)
        .expect("every client is done")
        .delete()
        .await;

    // Every creation went through both webhooks, or the numbers mean
    // nothing: the warm-up's and both runs', two reviews each.
    let reviews = after.reviews - before.reviews;
    let expected = (2 * (WARM_UP + 2 * count)) as f64;
    assert!(
        reviews >= expected,
        "the webhook answered {reviews} reviews, expected {expected}"
    );
    let per_creation = (after.seconds - before.seconds) / reviews * 2.0;

    println!(
        "\nPod creation (server-side dry run of tests/data/typical-pod.yaml, in a test \
         namespace: every built-in policy but pod-security judges it) through kube-apiserver {}, \
         {count} creations per row, after {WARM_UP} to warm up; times in ms.\n",
        version.git_version
    );
    println!("| webhook | clients | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, (sequential, concurrent)) in [("none", &without), ("mutate + validate", &with)] {
        for (clients, l) in [(1, sequential), (concurrency, concurrent)] {
            println!(
                "| {name} | {clients} | {} | {} | {} |",
                ms(l.p50),
                ms(l.p99),
                ms(l.max)
            );
        }
    }
    for (clients, a, b) in [(1, &with.0, &without.0), (concurrency, &with.1, &without.1)] {
        println!(
            "| difference | {clients} | {} | {} | {} |",
            diff(a.p50, b.p50),
            diff(a.p99, b.p99),
            diff(a.max, b.max)
        );
    }
    println!(
        "\nThe webhook's own time (reading a review to answering it), mutate and validate \
         together: {} ms per creation on average; {reviews} reviews; connections from the \
         API server open at the end: {}. The registration was in effect {} ms after it \
         was created.",
        ms(Duration::from_secs_f64(per_creation)),
        after.connections,
        registered.as_millis()
    );
}
