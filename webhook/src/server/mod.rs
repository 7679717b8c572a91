//! `agyn-admission serve`: the admission webhook.
//!
//! The TLS port answers AdmissionReviews ([`routes`]) with the same
//! [`crate::admission::review_with`] that `check` runs; the plain port serves
//! metrics and probes. The policy set and the certificate are watched
//! ([`watch`]) and swapped in whole when their files change.

mod admission_review;
mod duration;
mod metrics;
mod routes;
mod tls;
mod watch;

use crate::cli::EngineArgs;
use crate::config::{PolicySet, Source, parse_size};
use crate::engine::{Engine, MAX_CONCURRENT_INSTANCES};
use anyhow::Context;
use arc_swap::ArcSwapOption;
use routes::Shared;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
ENDPOINTS
  Webhook port (HTTPS):
    POST /validate           every matching policy (ValidatingWebhookConfiguration)
    POST /mutate             every matching enforcing policy that mutates
                             (MutatingWebhookConfiguration)
    POST /validate/{policy}  one policy of the set
    POST /mutate/{policy}
    GET  /healthz /readyz    probes (readyz: the policy set is loaded)
  Metrics port (HTTP):
    GET  /metrics            Prometheus / OpenMetrics text
    GET  /healthz /readyz

  The API server's ?timeout= bounds each review: a policy still running
  near it is stopped and its failure policy decides.

RELOADING
  The certificate, its key and the policy set file are watched. A new
  certificate serves new connections; open ones keep theirs. A valid new
  policy set replaces the old one atomically; an invalid one is logged and
  refused, and the old one keeps serving.

EXAMPLE
  agyn-admission serve \\
    --tls-cert-file /tls/tls.crt --tls-private-key-file /tls/tls.key \\
    --policies /etc/agyn-admission/policies.yaml --metrics-listen 127.0.0.1:9090")]
pub struct ServeArgs {
    /// PEM certificate (chain) the API server is shown; its CA goes in the
    /// webhook configuration's caBundle. Reloaded when the file changes.
    #[arg(long, env = "AGYN_TLS_CERT_FILE", value_name = "FILE")]
    tls_cert_file: PathBuf,

    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AGYN_TLS_PRIVATE_KEY_FILE", value_name = "FILE")]
    tls_private_key_file: PathBuf,

    /// Address and port of the HTTPS webhook.
    #[arg(
        long,
        env = "AGYN_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:8443"
    )]
    listen: SocketAddr,

    /// Address and port of the plain-HTTP metrics and probes; 127.0.0.1:PORT
    /// keeps them off the pod network.
    #[arg(
        long,
        env = "AGYN_METRICS_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,

    #[command(flatten)]
    engine: EngineArgs,

    /// Deny nothing and patch nothing: what would be denied is returned as
    /// warnings and audit annotations and logged. For rolling out on a live
    /// cluster.
    #[arg(long, env = "AGYN_DRY_RUN")]
    dry_run: bool,

    /// Largest AdmissionReview accepted; larger ones get HTTP 413.
    #[arg(long, env = "AGYN_MAX_REQUEST_SIZE", value_name = "SIZE", default_value = "8Mi", value_parser = parse_size)]
    max_request_size: usize,

    /// Reviews in progress at once; more requests wait their turn. Bounds
    /// memory under overload.
    #[arg(long, env = "AGYN_MAX_CONCURRENT_REVIEWS", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CONCURRENT_INSTANCES as i64))]
    max_concurrent_reviews: u32,

    /// Budget of a review when the request carries no ?timeout= (the API
    /// server's default webhook timeout).
    #[arg(long, env = "AGYN_DEFAULT_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    default_timeout: Duration,

    /// After SIGTERM or SIGINT, how long requests in flight may take to
    /// finish before the server exits.
    #[arg(long, env = "AGYN_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "25s", value_parser = duration::parse)]
    shutdown_grace: Duration,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let certificate = Arc::new(tls::CertificateFiles::load(
        &args.tls_cert_file,
        &args.tls_private_key_file,
    )?);
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(certificate.server_config()?));
    let shared = Arc::new(Shared {
        set: ArcSwapOption::empty(),
        metrics: metrics::Metrics::new(),
        dry_run: args.dry_run,
        max_request_size: args.max_request_size,
        default_timeout: args.default_timeout,
        reviews: Semaphore::new(args.max_concurrent_reviews as usize),
        draining: AtomicBool::new(false),
    });

    // Listen first, so that probes answer while the policies compile.
    let webhook_listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    webhook_listener.set_nonblocking(true)?;
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("listening on {}", args.metrics_listen))?;
    tracing::info!(
        webhook = %webhook_listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        dry_run = args.dry_run,
        "listening"
    );
    let handle = axum_server::Handle::new();
    let webhook = axum_server::from_tcp_rustls(webhook_listener, tls)?
        .handle(handle.clone())
        .serve(routes::webhook(shared.clone()).into_make_service());
    let stop = Arc::new(tokio::sync::Notify::new());
    let metrics_stop = stop.clone();
    let metrics = axum::serve(metrics_listener, routes::metrics(shared.clone()))
        .with_graceful_shutdown(async move { metrics_stop.notified().await })
        .into_future();
    let mut servers = tokio::spawn(async move { tokio::try_join!(webhook, metrics) });

    let engine = Arc::new(args.engine.engine()?);
    let source = args.engine.source();
    let set = {
        let (engine, source) = (engine.clone(), source.clone());
        tokio::task::spawn_blocking(move || PolicySet::load(&source, &engine)).await?
    }?;
    tracing::info!(policies = set.policies.len(), "policy set loaded; ready");
    shared.install(set);

    let _certificate_watch = watch::watch(&certificate.paths(), "tls", {
        let certificate = certificate.clone();
        move || match certificate.reload() {
            Ok(()) => tracing::info!("certificate reloaded"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "keeping the certificate in use: the new files are not a valid pair (yet)"
            ),
        }
    })
    .context("watching the certificate files")?;
    let _policy_watch = match &source {
        Source::File(path) => Some(
            watch::watch(&[path.as_path()], "policies", {
                let (shared, engine, source) = (shared.clone(), engine.clone(), source.clone());
                move || reload(&shared, &engine, &source)
            })
            .context("watching the policy set file")?,
        ),
        Source::Builtin => None,
    };

    tokio::select! {
        signal = shutdown_signal() => signal?,
        stopped = &mut servers => {
            stopped??;
            anyhow::bail!("the servers stopped on their own");
        }
    }
    tracing::info!(
        grace = ?args.shutdown_grace,
        "shutting down: finishing requests in flight"
    );
    shared.draining.store(true, Ordering::Relaxed);
    handle.graceful_shutdown(Some(args.shutdown_grace));
    stop.notify_one();
    servers.await??;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the changed policy set; swaps it in only if it is valid.
fn reload(shared: &Shared, engine: &Engine, source: &Source) {
    match PolicySet::load(source, engine) {
        Ok(set) => {
            // Logged once in effect: a reader of the log (an operator, or a
            // test) may rely on requests after it meeting the new set.
            let policies = set.policies.len();
            shared.install(set);
            shared.metrics.reload(true);
            tracing::info!(policies, "policy set reloaded");
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "refusing the changed policy set; the previous one keeps serving"
            );
            shared.metrics.reload(false);
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
