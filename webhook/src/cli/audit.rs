//! `agyn-admission audit`: the policy set over what a cluster already
//! stores, written as reports (or printed, with `--dry-run`).

use super::manifests::Origin;
use super::report::{self, CheckResult, Format};
use super::{EngineArgs, Exit, UnjudgedArgs};
use crate::admission::Violation;
use crate::audit::metrics::{Metrics, ReportAction};
use crate::audit::{self, Audit, Judged, Options, Output, ReportApi, Reports, Results};
use crate::config::{ALWAYS_EXEMPT_NAMESPACES, PolicySet};
use anyhow::Context;
use axum::Router;
use axum::routing::get;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The kubeconfig to use. Default: $KUBECONFIG, ~/.kube/config, or
    /// the pod's own service account when run in a cluster.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current one).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    #[command(flatten)]
    unjudged: UnjudgedArgs,

    /// Audit only this namespace (repeatable), as the chart's webhooks
    /// judge only the platform's namespaces when told to. Cluster-scoped
    /// objects are then not audited.
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE")]
    namespaces: Vec<String>,

    /// The reports' API.
    #[arg(long, value_enum, default_value_t = ReportApi::Openreports)]
    report_api: ReportApi,

    /// Which results reports keep.
    #[arg(long, value_enum, default_value_t = Results::All)]
    results: Results,

    /// Objects per list request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,

    /// Report writes and deletions in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// Write nothing: print what the policies say of each object, as
    /// `check` prints it (an object with a failing result is denied).
    #[arg(long, conflicts_with = "watch")]
    dry_run: bool,

    /// With --dry-run: how to print the results.
    #[arg(short, long, value_enum, default_value_t = Format::Table, requires = "dry_run")]
    output: Format,

    /// After the first scan, keep the reports fresh: judge objects again
    /// as they change, and everything when the policy set file changes.
    #[arg(long)]
    watch: bool,

    /// Serve /metrics, /healthz and /readyz (ready once a full scan is
    /// done) over HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

pub fn run(args: AuditArgs) -> anyhow::Result<Exit> {
    if args.output == Format::Manifests {
        anyhow::bail!(
            "--output manifests: an audit changes no object; use table, json, junit or sarif"
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(audit(args))
}

async fn audit(args: AuditArgs) -> anyhow::Result<Exit> {
    let opt_out_label = args.unjudged.opt_out_label()?;
    let engine = Arc::new(args.engine.engine()?);
    let registry = Arc::new(args.engine.registry()?);
    let source = args.engine.source();
    let set = {
        let (engine, source, registry) = (engine.clone(), source.clone(), registry.clone());
        tokio::task::spawn_blocking(move || PolicySet::load_with(&source, &engine, &*registry))
            .await??
    };
    let client = client(&args).await?;
    let mut excluded: std::collections::BTreeSet<String> = ALWAYS_EXEMPT_NAMESPACES
        .iter()
        .map(|n| n.to_string())
        .collect();
    excluded.extend(args.unjudged.namespaces());
    let options = Options {
        excluded_namespaces: excluded,
        only_namespaces: args.namespaces.iter().cloned().collect(),
        opt_out_label,
        page_size: args.page_size,
        report_api: args.report_api,
        results: args.results,
        concurrency: args.concurrency as usize,
    };
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr, metrics.clone(), ready.clone()).await?;
    }
    let identity = audit::identity(&client).await;
    tracing::info!(username = %identity.username, "auditing as");

    if args.dry_run {
        let results = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let results = results.clone();
            move |judged: Judged| {
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(check_result(judged))
            }
        };
        let output = Output::Judged(Arc::new(Mutex::new(sink)));
        let set = Arc::new(set);
        let mut run = Audit::new(client, set.clone(), identity, options, metrics, output);
        let summary = run.scan().await;
        drop(run);
        let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        report::write(&mut stdout, args.output, false, &results, &set)?;
        stdout.flush()?;
        if !summary.unlisted.is_empty() {
            anyhow::bail!(
                "cannot list {}: the results are incomplete",
                summary.unlisted.join(", ")
            );
        }
        return Ok(match results.iter().all(|r| r.allowed) {
            true => Exit::Admitted,
            false => Exit::Denied,
        });
    }

    let reports = Arc::new(
        Reports::load(
            client.clone(),
            args.report_api,
            args.page_size,
            metrics.clone(),
        )
        .await?,
    );
    tracing::info!(existing = reports.count(), "reports found");
    let output = Output::Reports(reports);
    let mut set = Arc::new(set);
    if !args.watch {
        let mut run = Audit::new(client, set, identity, options, metrics.clone(), output);
        let summary = run.scan().await;
        log_summary(&metrics, &summary);
        return Ok(
            match summary.unlisted.is_empty() && summary.write_errors == 0 {
                true => Exit::Admitted,
                false => Exit::Error,
            },
        );
    }

    let (changed, mut reload) = tokio::sync::watch::channel(());
    let _watch = match &source {
        crate::config::Source::File(path) => Some(
            crate::server::watch::watch(&[path.as_path()], "policies", move || {
                let _ = changed.send(());
            })
            .with_context(|| format!("cannot watch {}", path.display()))?,
        ),
        crate::config::Source::Builtin => None,
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let mut run = Audit::new(
            client.clone(),
            set.clone(),
            identity.clone(),
            options.clone(),
            metrics.clone(),
            output.clone(),
        );
        tokio::select! {
            () = run.watch(&mut reload, &ready) => {}
            () = &mut stop => {
                // Writes in flight are dropped: the next scan writes them.
                tracing::info!("stopping");
                return Ok(Exit::Admitted);
            }
        }
        if reload.has_changed().unwrap_or(false) {
            reload.mark_unchanged();
            let (engine, source, registry) = (engine.clone(), source.clone(), registry.clone());
            match tokio::task::spawn_blocking(move || {
                PolicySet::load_with(&source, &engine, &*registry)
            })
            .await?
            {
                Ok(new) => {
                    tracing::info!("policy set reloaded: scanning again");
                    set = Arc::new(new);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the new policy set is refused; keeping the last")
                }
            }
        }
    }
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn client(args: &AuditArgs) -> anyhow::Result<kube::Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    let mut config = config;
    // Names the audit in the API server's audit log and to API Priority
    // and Fairness.
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!(
            "agyn-admission/",
            env!("CARGO_PKG_VERSION"),
            " (audit)"
        )),
    ));
    Ok(kube::Client::try_from(config)?)
}

fn log_summary(metrics: &Metrics, summary: &audit::Summary) {
    let api_errors = metrics.api_errors();
    tracing::info!(
        objects = summary.objects,
        seconds = summary.took.as_secs_f64(),
        written = metrics.report_count(ReportAction::Written),
        unchanged = metrics.report_count(ReportAction::Unchanged),
        deleted = metrics.report_count(ReportAction::Deleted),
        api_errors,
        write_errors = summary.write_errors,
        unlisted = ?summary.unlisted,
        "audit done"
    );
    if !summary.unlisted.is_empty() {
        eprintln!(
            "error: cannot list {}: their reports are left as they were",
            summary.unlisted.join(", ")
        );
    }
    if summary.write_errors > 0 {
        eprintln!(
            "error: {} report writes or deletions failed",
            summary.write_errors
        );
    }
}

/// An audited object as `check` reports one: the review without
/// mutation, and what the mutating policies would change as violations.
fn check_result(judged: Judged) -> CheckResult {
    let subject = judged.subject;
    let mut result = CheckResult::new(
        Origin::api(subject.url()),
        subject.kind,
        subject.namespace.unwrap_or_default(),
        subject.name,
    );
    result.record(judged.decision, serde_json::Value::Null);
    for r in judged.results.iter().filter(|r| !r.changes.is_empty()) {
        result.violations.push(Violation {
            policy: r.policy.clone(),
            message: audit::changes_message(&r.changes),
        });
        result.allowed = false;
    }
    result.patch = judged.patch;
    result
}

/// /metrics, /healthz and /readyz on `addr`, for as long as the process.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    match ready {
                        true => (axum::http::StatusCode::OK, "ok"),
                        false => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "the first scan is not done",
                        ),
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}
