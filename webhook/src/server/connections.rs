//! Serving a router on a listener with a bound on everything a client
//! controls: how many connections it holds, how long a TLS handshake, a
//! request's headers and an idle connection may take, how many HTTP/2
//! streams it opens. A client that stalls loses its own connection, never
//! anyone else's review. (Bodies are bounded by the handler, which knows
//! each request's budget.)
//!
//! Accept loops run on a runtime of their own ([`super::serve`]): policies
//! run on the webhook's workers, and must never keep a probe or a new
//! connection waiting.

use super::metrics::{Limit, Metrics, Port};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The limits of one port.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A TLS handshake must end within this.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress is closed after this: an
    /// idle one, and one whose request's headers do not arrive.
    pub idle_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub max_streams: u32,
}

/// How long a connection told to close (idle, or shutting down) may take
/// to finish what it is doing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A bound socket and how to serve it.
pub struct Listener {
    /// Non-blocking; registered with the runtime that accepts on it.
    pub tcp: std::net::TcpListener,
    /// `None`: plain HTTP/1.1 (the metrics and probes port).
    pub tls: Option<TlsAcceptor>,
    pub port: Port,
    pub limits: Limits,
}

/// Accepts connections until `shutdown` turns true, then waits for the
/// open ones to finish (each is told to close gracefully). Connections are
/// served on `workers`.
pub async fn serve(
    listener: Listener,
    router: Router,
    metrics: Arc<Metrics>,
    workers: Handle,
    mut shutdown: watch::Receiver<bool>,
) {
    let Listener {
        tcp,
        tls,
        port,
        limits,
    } = listener;
    // Registered here, with the accepting runtime's I/O driver: readiness
    // on this socket is then delivered even while every worker of the
    // webhook's runtime is busy with a policy.
    let listener = match TcpListener::from_std(tcp) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%port, error = %e, "cannot listen");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let failing = Throttle::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        // The connection is served on `workers`, and its socket moves to
        // their I/O driver with it.
        let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: the connections
                // limit is meant to keep this from happening. Back off
                // instead of spinning on an error that repeats.
                if failing.ready() {
                    tracing::error!(%port, error = %e, "cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.limit(port, Limit::MaxConnections);
            continue;
        };
        // Admission answers are one small write each: with Nagle's
        // algorithm on, the API server's HTTP/2 client met delayed ACKs
        // and 40 ms tails.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            port,
            limits,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        let (tls, router) = (tls.clone(), router.clone());
        workers.spawn(async move {
            let _slot = slot;
            match TcpStream::from_std(stream) {
                Ok(stream) => connection.run(stream, tls, router).await,
                Err(e) => tracing::debug!(%port, error = %e, "cannot register a connection"),
            }
        });
    }
    // Refuse new connections outright rather than leave them queued.
    drop(listener);
    // Every slot back means every connection has ended.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

struct Connection {
    port: Port,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
        let _open = self.metrics.connection_opened(self.port);
        let Some(tls) = tls else {
            return self.http(stream, false, router).await;
        };
        match tokio::time::timeout(self.limits.handshake_timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.http(stream, h2, router).await
            }
            Ok(Err(e)) => tracing::debug!(port = %self.port, error = %e, "TLS handshake failed"),
            Err(_) => self.metrics.limit(self.port, Limit::HandshakeTimeout),
        }
    }

    /// Serves HTTP/2 or HTTP/1.1, as TLS negotiated (plain ports: 1.1),
    /// until the client leaves, the connection idles, or the server stops.
    async fn http<IO>(self, io: IO, h2: bool, router: Router)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // No hyper header timer: resetting it for every request put the
        // p99 of a pod review under load at 14 ms instead of 9 (the load
        // test). The idle clock below bounds headers as well: until they
        // are in, no request is in progress.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(self.limits.max_streams);
        let builder = if h2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let busy = activity.begin();
                let router = router.clone();
                async move {
                    let response = answer(router, request).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
        let mut closing: Option<Instant> = None;
        let mut shutdown = self.shutdown.clone();
        loop {
            let idle = activity.idle(self.limits.idle_timeout);
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(port = %self.port, %error, "connection ended with an error");
                    }
                    return;
                }
                () = idle, if closing.is_none() => {
                    self.metrics.limit(self.port, Limit::IdleTimeout);
                    // HTTP/1.1 has no request in progress to finish (at most
                    // headers that never ended); HTTP/2 says GOAWAY, so the
                    // API server moves to a new connection cleanly.
                    if !h2 {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
                _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
                () = sleep_until(closing), if closing.is_some() => return,
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The router's answer; a panic anywhere in it becomes a 500 for this
/// request alone instead of unwinding through the connection (and every
/// other stream an HTTP/2 connection carries).
async fn answer(router: Router, request: Request<Incoming>) -> Response<Body> {
    let request = request.map(Body::new);
    match AssertUnwindSafe(router.oneshot(request))
        .catch_unwind()
        .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(panic) => {
            let message = super::panic_message(&*panic);
            tracing::error!(panic = %message, "a request handler panicked");
            let mut response = Response::new(Body::from("internal error\n"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// Requests in progress on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    since: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once no request has been in progress for `timeout`. Bytes
    /// that complete no request (HTTP/2 pings, headers dribbled a byte at
    /// a time) do not count as activity.
    async fn idle(&self, timeout: Duration) {
        loop {
            let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && since.elapsed() >= timeout {
                return;
            }
            let wake = if busy {
                Instant::now() + timeout
            } else {
                since + timeout
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request in progress; its end restarts the idle clock.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most one log line a second for an error that repeats.
#[derive(Default)]
struct Throttle {
    last: AtomicU64,
}

impl Throttle {
    fn ready(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last.swap(now, Ordering::Relaxed) != now
    }
}
