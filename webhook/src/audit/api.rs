//! Calls to the Kubernetes API that a passing fault must not fail: retried
//! with backoff, each failure counted.

use super::metrics::Metrics;
use std::future::Future;
use std::time::Duration;

/// Tries of one call before its error is reported.
const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const LONGEST_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `call` until it succeeds, fails for good, or has been tried
/// [`TRIES`] times, waiting twice as long after each failure.
pub async fn retry<T, F, Fut>(
    metrics: &Metrics,
    verb: &'static str,
    what: &str,
    mut call: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tried = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                metrics.api_error(verb);
                if tried >= TRIES || !transient(&e) {
                    return Err(e);
                }
                tracing::warn!(%what, error = %e, tried, "API call failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LONGEST_BACKOFF);
                tried += 1;
            }
        }
    }
}

/// Whether trying again may help: the server overloaded or restarting,
/// or the connection lost.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether the API answered that the object or resource is not there.
pub fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Whether a write failed because its namespace is being deleted (or is
/// gone): a namespace deleted during a scan, whose objects go with it.
pub fn namespace_gone(e: &kube::Error) -> bool {
    let kube::Error::Api(status) = e else {
        return false;
    };
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    match status.code {
        403 => causes.iter().any(|c| c.reason == "NamespaceTerminating"),
        404 => status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "namespaces"),
        _ => false,
    }
}
