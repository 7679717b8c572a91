//! The API server's side of the webhook, for the server tests: a test CA
//! (what a caBundle holds), the `serve` binary started on loopback, and a
//! client that trusts only that CA and speaks AdmissionReview v1.
#![allow(dead_code)] // each test crate uses its own part

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");

/// A certificate authority, and the serving certificates it signs.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "agyn-admission test CA");
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// Issues a certificate for 127.0.0.1 into `dir`/tls.crt and tls.key,
    /// each replaced by a rename as a Kubernetes volume does, and returns
    /// the certificate (DER) to compare with what a client is shown.
    pub fn issue(&self, dir: &Path, name: &str) -> Vec<u8> {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        replace(&dir.join("tls.key"), key.serialize_pem().as_bytes());
        replace(&dir.join("tls.crt"), cert.pem().as_bytes());
        cert.der().to_vec()
    }
}

/// Writes a file whole and renames it into place: readers never see half.
pub fn replace(path: &Path, contents: &[u8]) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// `agyn-admission serve`, running until dropped.
pub struct Server {
    child: Child,
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
    /// Holds the certificate, its key and the policy set file, if any.
    pub dir: PathBuf,
    pub pki: Pki,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    /// Starts the server with the built-in policy set, or with `policy_set`
    /// (YAML, written to `dir`/policies.yaml), and waits until it is ready.
    pub fn start(policy_set: Option<&str>, extra: &[&str]) -> Server {
        let dir = crate::common::temp_dir("serve");
        let pki = Pki::new();
        pki.issue(&dir, "agyn-admission");
        let mut command = Command::new(BIN);
        // JSON logs (a later --log-format in `extra` overrides it), no
        // shutdown delay unless `extra` asks for one, and the tests' shared
        // cache unless `extra` names another (clap refuses a flag twice).
        command
            .args(["--log-format", "json", "serve", "--tls-cert-file"])
            .arg(dir.join("tls.crt"))
            .arg("--tls-private-key-file")
            .arg(dir.join("tls.key"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--shutdown-delay") {
                &[][..]
            } else {
                &["--shutdown-delay", "0s"][..]
            })
            .args(if extra.contains(&"--cache-dir") {
                vec![]
            } else {
                vec![
                    "--cache-dir".into(),
                    crate::common::cache_dir().into_os_string(),
                ]
            })
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(yaml) = policy_set {
            std::fs::write(dir.join("policies.yaml"), yaml).unwrap();
            command.arg("--policies").arg(dir.join("policies.yaml"));
        }
        let mut child = command.spawn().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                sink.lock().unwrap().push(event);
            }
        });
        let mut server = Server {
            child,
            webhook: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            dir,
            pki,
            logs,
        };
        let listening = server.wait_for_log(Duration::from_secs(30), |e| {
            e["message"] == "listening" || text_line(e).contains(" listening ")
        });
        server.webhook = field(&listening, "webhook").parse().unwrap();
        server.metrics = field(&listening, "metrics").parse().unwrap();
        server.wait_for_log(Duration::from_secs(60), |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("policy set loaded"))
                || text_line(e).contains("policy set loaded")
        });
        server
    }

    /// The first log event (JSON) that `matches`, waiting up to `timeout`.
    pub fn wait_for_log(&mut self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(event) = self.logs.lock().unwrap().iter().find(|e| matches(e)) {
                return event.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited ({status}): {:#?}", self.logs());
            }
            assert!(
                start.elapsed() < timeout,
                "no such log event in {timeout:?}: {:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// A client as the API server is one: it trusts the caBundle only.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.webhook)
    }

    /// POSTs a body; returns the status and the body, parsed as JSON if it
    /// is JSON.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with(&self.client(), path, body).await
    }

    /// [`Server::post`] over `client`'s connections: concurrent requests
    /// then share them, as the API server's do.
    pub async fn post_with(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Sends one AdmissionReview and returns its response, checking the
    /// envelope as the API server does.
    pub async fn review(&self, path: &str, request: &Value) -> Value {
        self.review_with(&self.client(), path, request).await
    }

    /// [`Server::review`] over `client`'s connections.
    pub async fn review_with(
        &self,
        client: &reqwest::Client,
        path: &str,
        request: &Value,
    ) -> Value {
        let (status, body) = self
            .post_with(client, path, review(request).to_string())
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        let response = body["response"].clone();
        assert_eq!(response["uid"], request["uid"], "the uid is echoed");
        response
    }

    /// Admission as the API server runs it: the mutating webhook, its patch
    /// applied, then the validating webhook on the patched object.
    pub async fn admit(&self, request: &Value) -> Admission {
        let mutation = self.review("/mutate?timeout=10s", request).await;
        let mut object = request["object"].clone();
        if let Some(patch) = mutation["patch"].as_str() {
            assert_eq!(mutation["patchType"], "JSONPatch");
            let patch: json_patch::Patch = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .unwrap(),
            )
            .unwrap();
            json_patch::patch(&mut object, &patch).unwrap();
        }
        let mut patched = request.clone();
        patched["object"] = object.clone();
        let validation = self.review("/validate?timeout=10s", &patched).await;
        Admission {
            mutation,
            object,
            validation,
        }
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// A line the server wrote in `--log-format text` ("" for JSON events).
pub fn text_line(event: &Value) -> &str {
    event["raw"].as_str().unwrap_or_default()
}

/// A field of a log event, JSON or text (`name=value`).
fn field(event: &Value, name: &str) -> String {
    if let Some(value) = event[name].as_str() {
        return value.to_string();
    }
    let prefix = format!("{name}=");
    text_line(event)
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {event}"))
        .to_string()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Admission {
    pub mutation: Value,
    /// The object after the patch, as it would be stored.
    pub object: Value,
    pub validation: Value,
}

/// An AdmissionReview v1 around a request.
pub fn review(request: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// A CREATE request as JSON, as the API server sends it.
pub fn create(namespace: &str, object: Value) -> Value {
    serde_json::to_value(crate::common::create(namespace, object)).unwrap()
}
