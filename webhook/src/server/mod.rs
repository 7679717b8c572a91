//! `agyn-admission serve`: the admission webhook.
//!
//! The TLS port answers AdmissionReviews ([`routes`]) with the same
//! [`crate::admission::review_with`] that `check` runs; the plain port serves
//! metrics and probes. The policy set and the certificate are watched
//! ([`watch`]) and swapped in whole when their files change.

pub(crate) mod admission_review;
mod connections;
mod metrics;
mod modules;
mod routes;
mod tls;
pub(crate) mod watch;

use crate::cli::EngineArgs;
use crate::config::{Source, duration, parse_size};
use crate::engine::{Engine, MAX_CONCURRENT_INSTANCES};
use anyhow::Context;
use arc_swap::ArcSwapOption;
use connections::{Limits, Listener};
use metrics::Port;
use routes::Shared;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch as signal_watch};

/// HTTP/2 streams one connection may have open at once. The API server's
/// client opens another connection past the server's limit.
const MAX_STREAMS: u32 = 128;

/// Connections the metrics and probes port takes: kubelet probes and a
/// scraper or two need a handful.
const MAX_METRICS_CONNECTIONS: usize = 64;

/// File descriptors kept for everything but connections: the listeners,
/// the watched files, the cache, the runtime's own.
const RESERVED_FDS: u64 = 64;

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

    /// Reviews in progress at once; more requests wait their turn (within
    /// their budget, then their policies' failure policies answer). Bounds
    /// memory under overload.
    #[arg(long, env = "AGYN_MAX_CONCURRENT_REVIEWS", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CONCURRENT_INSTANCES as i64))]
    max_concurrent_reviews: u32,

    /// Budget of a review when the request carries no ?timeout= (the API
    /// server's default webhook timeout).
    #[arg(long, env = "AGYN_DEFAULT_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    default_timeout: Duration,

    /// Connections the webhook port holds at once; new ones past it are
    /// closed. Kept below the process's file descriptor limit (raised to
    /// its hard limit at start), so that the metrics and probes port
    /// always has room.
    #[arg(long, env = "AGYN_MAX_CONNECTIONS", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,

    /// How long a TLS handshake, and a request's body, may take to arrive.
    #[arg(long, env = "AGYN_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    read_timeout: Duration,

    /// A connection with no request in progress for this long is closed
    /// (HTTP/2 with a GOAWAY, which the API server's client takes in
    /// stride); an HTTP/1.1 request's headers must arrive within it.
    #[arg(long, env = "AGYN_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    idle_timeout: Duration,

    /// After SIGTERM or SIGINT, how long /readyz answers 503 while requests
    /// are still served, so that the Service stops sending new ones first.
    #[arg(long, env = "AGYN_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "5s", value_parser = duration::parse)]
    shutdown_delay: Duration,

    /// Then, how long requests in flight may take to finish (connections
    /// are closed gracefully: HTTP/1.1 after its current response, HTTP/2
    /// with a GOAWAY) before the server exits.
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
    // First of all: a SIGTERM that arrives while the policies compile must
    // stop the server cleanly, not kill it.
    let stop_signal = StopSignal::install()?;
    let certificate = Arc::new(tls::CertificateFiles::load(
        &args.tls_cert_file,
        &args.tls_private_key_file,
    )?);
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(certificate.server_config()?));
    let metrics = Arc::new(metrics::Metrics::new());
    let shared = Arc::new(Shared {
        set: ArcSwapOption::empty(),
        metrics: metrics.clone(),
        dry_run: args.dry_run,
        max_request_size: args.max_request_size,
        default_timeout: args.default_timeout,
        read_timeout: args.read_timeout,
        reviews: Arc::new(Semaphore::new(args.max_concurrent_reviews as usize)),
        draining: AtomicBool::new(false),
        modules: std::sync::OnceLock::new(),
    });
    let max_connections = connection_budget(args.max_connections as usize);

    // Listen first, so that probes answer while the policies compile.
    let listen = |address: SocketAddr| -> anyhow::Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("listening on {address}"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    let webhook = listen(args.listen)?;
    let metrics_port = listen(args.metrics_listen)?;
    tracing::info!(
        webhook = %webhook.local_addr()?,
        metrics = %metrics_port.local_addr()?,
        dry_run = args.dry_run,
        max_connections,
        "listening"
    );
    let limits = |max_connections| Limits {
        max_connections,
        handshake_timeout: args.read_timeout,
        idle_timeout: args.idle_timeout,
        max_streams: MAX_STREAMS,
    };
    let (stop, stopped) = signal_watch::channel(false);
    // The accept loops and the probes get a thread of their own: policies
    // run on this runtime's workers, and a busy worker must not keep the
    // kubelet's probe or a new connection waiting.
    let front = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the accept runtime")?;
    let front_handle = front.handle().clone();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || front.block_on(std::future::pending::<()>()))
        .context("starting the accept thread")?;
    let webhook = front_handle.spawn(connections::serve(
        Listener {
            tcp: webhook,
            tls: Some(tls),
            port: Port::Webhook,
            limits: limits(max_connections),
        },
        routes::webhook(shared.clone()),
        metrics.clone(),
        tokio::runtime::Handle::current(),
        stopped.clone(),
    ));
    let probes = front_handle.spawn(connections::serve(
        Listener {
            tcp: metrics_port,
            tls: None,
            port: Port::Metrics,
            limits: limits(MAX_METRICS_CONNECTIONS),
        },
        routes::metrics(shared.clone()),
        metrics.clone(),
        front_handle.clone(),
        stopped,
    ));

    let engine = Arc::new(args.engine.engine()?);
    let source = args.engine.source();
    let modules = Arc::new(modules::Modules::new(args.engine.registry()?));
    let set = {
        let (engine, source, modules) = (engine.clone(), source.clone(), modules.clone());
        tokio::task::spawn_blocking(move || modules.load(&source, &engine)).await?
    }?;
    tracing::info!(
        policies = set.policies.len(),
        unavailable = set.unavailable.len(),
        "policy set loaded"
    );
    // Before the set: /readyz must not answer 200 between the two.
    shared.modules.get_or_init(|| modules.clone());
    shared.install(set);
    release_compiler_memory();
    let reload: Arc<dyn Fn() + Send + Sync> = {
        let (shared, engine, source, modules) = (
            shared.clone(),
            engine.clone(),
            source.clone(),
            modules.clone(),
        );
        Arc::new(move || reload(&shared, &engine, &source, &modules))
    };
    tokio::spawn(
        modules
            .clone()
            .retry(shared.clone(), metrics.clone(), reload.clone()),
    );

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
                let reload = reload.clone();
                move || reload()
            })
            .context("watching the policy set file")?,
        ),
        Source::Builtin => None,
    };

    stop_signal.received().await;
    tracing::info!(
        delay = ?args.shutdown_delay,
        grace = ?args.shutdown_grace,
        "shutting down: /readyz answers 503; still serving until the delay ends"
    );
    shared.draining.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.shutdown_delay).await;
    tracing::info!("closing connections once their requests are answered");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(args.shutdown_grace, async {
        let _ = tokio::join!(webhook, probes);
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still in flight at the end of the grace period");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The webhook port's connection limit, within the file descriptors the
/// process may open: the soft limit is raised to the hard one (as Go's
/// runtime does), and the limit lowered, with a warning, if even that
/// leaves no room for the metrics port and the process's own files.
fn connection_budget(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    let available = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    let room = available.saturating_sub(RESERVED_FDS + MAX_METRICS_CONNECTIONS as u64);
    if (wanted as u64) <= room {
        return wanted;
    }
    let allowed = room.max(1) as usize;
    tracing::warn!(
        wanted,
        allowed,
        fd_limit = available,
        "--max-connections is above what the file descriptor limit leaves room for; lowered"
    );
    allowed
}

/// The message a panic carried, for the log and the policies' failure.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Text from a request, made safe for a log line: control characters
/// (a newline, an ESC) are written as escapes, so a container name cannot
/// end the line and forge another, or drive a terminal.
pub(crate) struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Loads the policy set again (its file changed, or a module arrived);
/// swaps it in only if it is valid.
fn reload(shared: &Shared, engine: &Engine, source: &Source, modules: &modules::Modules) {
    modules.reloaded(|| match modules.load(source, engine) {
        Ok(set) => {
            // Logged once in effect: a reader of the log (an operator, or a
            // test) may rely on requests after it meeting the new set.
            let policies = set.policies.len();
            let unavailable = set.unavailable.len();
            shared.install(set);
            release_compiler_memory();
            shared.metrics.reload(true);
            tracing::info!(policies, unavailable, "policy set reloaded");
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "refusing the changed policy set; the previous one keeps serving"
            );
            shared.metrics.reload(false);
        }
    })
}

/// SIGTERM (the kubelet) or SIGINT (a terminal), listened for from the
/// start.
struct StopSignal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignal {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Gives back to the system what compiling the policies took and glibc
/// can return: a server that compiled at start (an empty cache) stayed at
/// 160 MiB of RSS; with this, 88 (a warm cache: 23).
fn release_compiler_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
