//! Policy modules from a real OCI registry: Debian's `docker-registry`
//! (the CNCF Distribution registry 2.8) on 127.0.0.1, plain, with TLS and
//! with htpasswd auth, driven through the binary (`policy push`, `policy
//! pull`, `check`, `serve`). Signatures are made with `openssl` in
//! cosign's format (real cosign signatures are checked in the unit tests).
//!
//! Skipped, with a message, where `docker-registry` is not installed,
//! unless AGYN_REQUIRE_REGISTRY is set (as `.ci/run` sets it).

mod common;
mod webhook_harness;

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use webhook_harness::{BIN, Pki, Server, create};

/// A policy component the build makes: one policy, `drop-capabilities`.
const MODULE: &str = env!("AGYN_DROP_CAPABILITIES_WASM");
/// Another, for a second repository.
const OTHER_MODULE: &str = env!("AGYN_RUN_AS_NON_ROOT_WASM");
/// A third: a module's digest is its content's, so the same file pushed
/// twice is the same module (signed once, signed everywhere).
const THIRD_MODULE: &str = env!("AGYN_SERVICE_ACCOUNT_TOKEN_WASM");

/// `s3cret-pass`, hashed with bcrypt as htpasswd files hold it.
const HTPASSWD: &str = "agyn:$2b$04$8WipGWLYVIZf/wkhZYmrge13/48K5ZPhoEwPz3bJGFCcH7Vwocipi\n";

fn registry_binary() -> Option<&'static str> {
    let installed = Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Some("docker-registry");
    }
    if std::env::var_os("AGYN_REQUIRE_REGISTRY").is_some() {
        panic!("docker-registry is not installed, and AGYN_REQUIRE_REGISTRY is set");
    }
    eprintln!(
        "skipping: docker-registry (Debian's CNCF Distribution registry) is not installed; \
         `apt-get install docker-registry` runs these tests"
    );
    None
}

/// How a registry is reached.
enum Access<'a> {
    Plain,
    /// TLS with `dir`/tls.crt and tls.key, and htpasswd auth.
    TlsWithAuth(&'a Path),
}

/// `docker-registry serve` on 127.0.0.1:`port`, storing under `root`,
/// until dropped.
struct Registry {
    child: Child,
    address: String,
}

impl Registry {
    fn start(root: &Path, port: u16, access: Access) -> Registry {
        let config = root.with_extension(format!("{port}.yml"));
        let mut yaml = format!(
            "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        );
        if let Access::TlsWithAuth(dir) = access {
            std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
            yaml += &format!(
                "  tls: {{certificate: {}, key: {}}}\nauth: {{htpasswd: {{realm: agyn, path: {}}}}}\n",
                dir.join("tls.crt").display(),
                dir.join("tls.key").display(),
                dir.join("htpasswd").display()
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while TcpStream::connect(&address).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry { child, address }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with `args`, its own cache directory `cache`.
fn run(cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("HOME", cache) // no ~/.docker/config.json of the machine's
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Pushes `file` and returns the pinned reference `policy push` prints.
fn push(cache: &Path, file: &str, reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["policy", "push", file, reference];
    args.extend(extra);
    let pinned = stdout(&run(cache, &args)).trim().to_string();
    assert!(
        pinned.starts_with(&format!("oci://{reference}@sha256:")),
        "{pinned}"
    );
    pinned
}

fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').unwrap().1
}

/// A pod that adds a capability and asks for a writable root filesystem.
fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i:1",
            "securityContext": {"readOnlyRootFilesystem": false,
                                "capabilities": {"add": ["NET_ADMIN"]}}}]}
    })
}

/// `check -o json` of [`pod`] with the policy set `yaml`: its one result.
fn check(cache: &Path, set_dir: &Path, yaml: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let set = set_dir.join("set.yaml");
    std::fs::write(&set, yaml).unwrap();
    let manifest = set_dir.join("pod.json");
    std::fs::write(&manifest, pod().to_string()).unwrap();
    let mut args = vec![
        "check",
        "-o",
        "json",
        "--policies",
        set.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = run(cache, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Nothing on stdout when the set is refused (exit 2).
    let results: Value = match out.stdout.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}")),
    };
    (out.status.code(), results[0].clone(), stderr)
}

/// Every violation and warning of a result, as `policy: message`.
fn messages(result: &Value) -> Vec<String> {
    ["violations", "warnings"]
        .iter()
        .flat_map(|k| result[k].as_array().cloned().unwrap_or_default())
        .map(|v| {
            format!(
                "{}: {}",
                v["policy"].as_str().unwrap(),
                v["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every message of `policy`, joined.
fn message_of(messages: &[String], policy: &str) -> String {
    let prefix = format!("{policy}: ");
    let found: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.strip_prefix(&prefix))
        .collect();
    assert!(!found.is_empty(), "no message of {policy}: {messages:#?}");
    found.join("; ")
}

#[test]
fn push_then_check_by_digest_then_offline() {
    if registry_binary().is_none() {
        return;
    }
    let dir = common::temp_dir("registry-offline");
    let port = free_port();
    let registry = Registry::start(&dir.join("storage"), port, Access::Plain);
    let reference = format!("{}/agyn/drop-capabilities:1.0", registry.address);
    let pinned = push(&dir.join("author"), MODULE, &reference, &[]);
    // The same file pushes to the same digest: nothing in the artifact
    // depends on time.
    let again = push(&dir.join("author"), MODULE, &reference, &[]);
    assert_eq!(pinned, again);

    // `policy pull` by tag prints the same digest and the same bytes.
    let pulled = dir.join("pulled.wasm");
    let out = stdout(&run(
        &dir.join("puller"),
        &["policy", "pull", &reference, "-o", pulled.to_str().unwrap()],
    ));
    assert_eq!(out.trim(), pinned);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(MODULE).unwrap()
    );

    let set = format!(
        "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n\
         - name: capabilities\n  policy: drop-capabilities\n  module: oci://{}/agyn/drop-capabilities@{}\n\
         - name: readonly-root-filesystem\n",
        registry.address,
        digest_of(&pinned)
    );
    let ci = dir.join("ci-cache");
    let (code, result, stderr) = check(&ci, &dir, &set, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let judged = messages(&result);
    assert!(
        message_of(&judged, "capabilities").contains("NET_ADMIN"),
        "{judged:?}"
    );
    message_of(&judged, "readonly-root-filesystem");

    // The set's `sha256` is the same pin as the reference's digest.
    let both = set.replace(
        "  module:",
        &format!("  sha256: {}\n  module:", &digest_of(&pinned)[7..]),
    );
    assert_eq!(check(&ci, &dir, &both, &[]).0, Some(1));
    let differing = set.replace(
        "  module:",
        &format!("  sha256: {}\n  module:", "0".repeat(64)),
    );
    let (code, _, stderr) = check(&ci, &dir, &differing, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("they are one pin"), "{stderr}");
    // A tag alone is refused unless the set lets it float.
    let floating = set.replace(&format!("@{}", digest_of(&pinned)), ":1.0");
    let (code, _, stderr) = check(&ci, &dir, &floating, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("allowFloatingTags"), "{stderr}");
    let floating = floating.replace(
        "  policy: drop-capabilities\n",
        "  policy: drop-capabilities\n  allowFloatingTags: true\n",
    );
    let (code, result, stderr) = check(&dir.join("floating-cache"), &dir, &floating, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(message_of(&messages(&result), "capabilities").contains("NET_ADMIN"));
    assert!(
        stderr.contains(digest_of(&pinned)),
        "the resolved digest is logged: {stderr}"
    );

    // The registry gone: what was pulled once loads from the cache.
    drop(registry);
    let (code, result, stderr) = check(&ci, &dir, &set, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(message_of(&messages(&result), "capabilities").contains("NET_ADMIN"));
    // A floating tag uses the digest it last resolved to, and says so.
    let (code, result, stderr) = check(&dir.join("floating-cache"), &dir, &floating, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(message_of(&messages(&result), "capabilities").contains("NET_ADMIN"));
    assert!(stderr.contains("last resolved to"), "{stderr}");
    // Not in this cache: the policy fails (closed, by default) naming its
    // module, and the rest of the set judges.
    let (code, result, _) = check(&dir.join("empty-cache"), &dir, &set, &[]);
    assert_eq!(code, Some(1));
    let judged = messages(&result);
    let failed = message_of(&judged, "capabilities");
    assert!(
        failed.contains("its module is unavailable: oci://")
            && failed.contains("Connection refused"),
        "{failed}"
    );
    message_of(&judged, "readonly-root-filesystem");
}

/// `openssl` makes a P-256 key pair in `dir`: (private, public) paths.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let ok = |c: &mut Command| assert!(c.status().unwrap().success());
    ok(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&private));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    (private, public)
}

/// Signs `digest` as `cosign sign --key` does, with openssl, and pushes
/// the signature under the `sha256-<hex>.sig` tag of `repository`.
async fn sign(dir: &Path, key: &Path, registry: &str, repository: &str, digest: &str) {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": format!("{registry}/{repository}")},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string();
    let payload_file = dir.join("payload.json");
    std::fs::write(&payload_file, &payload).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&payload_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let signature = base64::engine::general_purpose::STANDARD.encode(&out.stdout);
    let config = b"{}".to_vec();
    let blob = |bytes: &[u8]| format!("sha256:{}", sha256_hex(bytes));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": blob(payload.as_bytes()), "size": payload.len(),
                    "annotations": {"dev.cosignproject.cosign/signature": signature}}]
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    upload(
        registry,
        repository,
        &tag,
        &manifest,
        &[config, payload.into_bytes()],
    )
    .await;
}

/// Pushes `blobs` and `manifest` under `tag` with the registry API, as any
/// client would: this is not the code under test.
async fn upload(registry: &str, repository: &str, tag: &str, manifest: &Value, blobs: &[Vec<u8>]) {
    let client = reqwest::Client::new();
    for bytes in blobs {
        let start = client
            .post(format!("http://{registry}/v2/{repository}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let location = match location.starts_with("http") {
            true => location,
            false => format!("http://{registry}{location}"),
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!(
                "{location}{separator}digest=sha256:{}",
                sha256_hex(bytes)
            ))
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "{}", done.text().await.unwrap());
    }
    let put = client
        .put(format!("http://{registry}/v2/{repository}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_policy_and_the_rest_serve() {
    if registry_binary().is_none() {
        return;
    }
    let dir = common::temp_dir("registry-refusals");
    let storage = dir.join("storage");
    let registry = Registry::start(&storage, free_port(), Access::Plain);
    let address = registry.address.clone();
    let author = dir.join("author");
    let signed = push(&author, MODULE, &format!("{address}/agyn/signed:1"), &[]);
    let unsigned = push(
        &author,
        THIRD_MODULE,
        &format!("{address}/agyn/unsigned:1"),
        &[],
    );
    let corrupt = push(
        &author,
        OTHER_MODULE,
        &format!("{address}/agyn/corrupt:1"),
        &[],
    );
    let (signer, signer_pub) = key_pair(&dir, "signer");
    let (_, stranger_pub) = key_pair(&dir, "stranger");
    sign(&dir, &signer, &address, "agyn/signed", digest_of(&signed)).await;

    // Kubewarden's media types, pushed by plain registry API calls.
    let module = std::fs::read(MODULE).unwrap();
    let config = b"{}".to_vec();
    let kubewarden = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.wasm.content.layer.v1+wasm",
                    "digest": format!("sha256:{}", sha256_hex(&module)), "size": module.len()}]
    });
    upload(
        &address,
        "agyn/kubewarden",
        "v1",
        &kubewarden,
        &[config, module],
    )
    .await;
    let kubewarden_digest = format!("sha256:{}", sha256_hex(kubewarden.to_string().as_bytes()));

    // The blob of the `corrupt` module, damaged in the registry's storage.
    let layer = sha256_hex(&std::fs::read(OTHER_MODULE).unwrap());
    let blob = storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{layer}/data",
        &layer[..2]
    ));
    let mut damaged = std::fs::read(&blob).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&blob, damaged).unwrap();

    let entry = |name: &str, policy: &str, module: String, extra: &str| {
        format!(
            "- name: {name}\n  policy: {policy}\n  failurePolicy: Ignore\n  module: {module}\n{extra}"
        )
    };
    let key = |path: &Path| format!("  verify: {{key: {}}}\n", path.display());
    let missing = format!("sha256:{}", "0".repeat(64));
    let set = [
        "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n".to_string(),
        entry(
            "signed",
            "drop-capabilities",
            signed.clone(),
            &key(&signer_pub),
        ),
        entry(
            "kubewarden",
            "drop-capabilities",
            format!("oci://{address}/agyn/kubewarden@{kubewarden_digest}"),
            "",
        ),
        entry(
            "wrong-digest",
            "drop-capabilities",
            format!("oci://{address}/agyn/signed@{missing}"),
            "",
        ),
        entry(
            "missing-tag",
            "drop-capabilities",
            format!("oci://{address}/agyn/signed:nope"),
            "  allowFloatingTags: true\n",
        ),
        entry("corrupt", "run-as-non-root", corrupt.clone(), ""),
        entry(
            "unsigned",
            "drop-capabilities",
            unsigned.clone(),
            &key(&signer_pub),
        ),
        entry(
            "wrongly-signed",
            "drop-capabilities",
            signed.clone(),
            &key(&stranger_pub),
        ),
        "- name: readonly-root-filesystem\n".to_string(),
    ]
    .concat();
    let (code, result, stderr) = check(&dir.join("cache"), &dir, &set, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let judged = messages(&result);
    // Judged: the signed module, the other convention, the built-in.
    assert!(
        message_of(&judged, "signed").contains("NET_ADMIN"),
        "{judged:#?}"
    );
    assert!(
        message_of(&judged, "kubewarden").contains("NET_ADMIN"),
        "{judged:#?}"
    );
    message_of(&judged, "readonly-root-filesystem");
    // Each failure: its own policy, its module, why.
    let failed = |policy: &str, why: &str| {
        let message = message_of(&judged, policy);
        assert!(
            message.contains("its module is unavailable: oci://") && message.contains(why),
            "{policy}: wanted {why:?} in {message}"
        );
    };
    failed("wrong-digest", "not found");
    failed("missing-tag", "not found");
    failed("corrupt", "does not match its digest");
    failed("unsigned", "the module is not signed");
    failed("wrongly-signed", "does not match the key");

    // `policy pull` refuses the same way, and verifies a signature.
    let pull = |key: &Path| {
        let key = key.to_str().unwrap();
        run(
            &dir.join("pull"),
            &["policy", "pull", &signed[6..], "--verify-key", key],
        )
    };
    let out = pull(&stranger_pub);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the key"));
    assert_eq!(stdout(&pull(&signer_pub)).trim(), signed);
}

#[test]
fn tls_and_credentials() {
    if registry_binary().is_none() {
        return;
    }
    let dir = common::temp_dir("registry-tls");
    let pki = Pki::new();
    pki.issue(&dir, "registry");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let registry = Registry::start(&dir.join("storage"), free_port(), Access::TlsWithAuth(&dir));
    let reference = format!("{}/agyn/drop-capabilities:1", registry.address);
    let config = |user: &str, password: &str| {
        let path = dir.join(format!("{user}-{password}.json"));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &path,
            json!({"auths": {&registry.address: {"auth": auth}}}).to_string(),
        )
        .unwrap();
        path
    };
    let good = config("agyn", "s3cret-pass");
    let bad = config("agyn", "wrong");
    let ca_arg = ["--registry-ca", ca.to_str().unwrap()];
    let pinned = push(
        &dir.join("author"),
        MODULE,
        &reference,
        &[
            ca_arg[0],
            ca_arg[1],
            "--registry-config",
            good.to_str().unwrap(),
        ],
    );

    let pull = |extra: &[&str]| {
        let mut args = vec!["policy", "pull", &pinned[6..]];
        args.extend(extra);
        run(&dir.join("puller"), &args)
    };
    let refused = |out: Output, why: &str| {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "wanted {why:?} in {stderr}");
    };
    // The registry's certificate is not trusted without the CA bundle.
    refused(
        pull(&["--registry-config", good.to_str().unwrap()]),
        "certificate",
    );
    refused(pull(&ca_arg), "refused the credentials");
    refused(
        pull(&[
            ca_arg[0],
            ca_arg[1],
            "--registry-config",
            bad.to_str().unwrap(),
        ]),
        "refused the credentials",
    );
    let out = pull(&[
        ca_arg[0],
        ca_arg[1],
        "--registry-config",
        good.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&out).trim(), pinned);
}

/// A port that accepts connections and never answers, until dropped.
struct Silent {
    listener: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    port: u16,
}

impl Silent {
    fn start(port: u16) -> Silent {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                for stream in &mut held {
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.read(&mut [0; 4096]);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Silent {
            listener: Some(thread),
            stop,
            port,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.listener.take() {
            thread.join().unwrap();
        }
        let _ = self.port;
    }
}

/// A registry down at start: the five built-in policies serve within a
/// second, the registry policy fails by its failure policy, `/readyz`
/// says which, and the module is pulled once the registry is back, with
/// no restart.
async fn unreachable_at_start(silent: bool) {
    let dir = common::temp_dir("registry-serve");
    let storage = dir.join("storage");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let pinned = {
        let _registry = Registry::start(&storage, port, Access::Plain);
        push(
            &dir.join("author"),
            MODULE,
            &format!("{address}/agyn/drop-capabilities:1"),
            &[],
        )
    };
    let _silent = silent.then(|| Silent::start(port));
    // The built-in component compiled into this cache beforehand, as a
    // restarted pod has it: the start measured is the webhook's, not
    // Cranelift's.
    let cache = dir.join("cache");
    stdout(&run(&cache, &["rules"]));
    let set = format!(
        "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n\
         - name: run-as-non-root\n- name: readonly-root-filesystem\n\
         - name: service-account-token\n- name: workload-isolation\n\
         - name: pod-security\n  settings: {{level: restricted}}\n\
         - name: capabilities\n  policy: drop-capabilities\n  module: {pinned}\n"
    );
    let started = Instant::now();
    let server = Server::start(
        Some(&set),
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--registry-timeout",
            "2s",
        ],
    );
    let request = create("default", pod());
    let response = server.review("/validate", &request).await;
    let serving = started.elapsed();
    eprintln!("first review answered {serving:?} after the server was started");
    assert!(serving < Duration::from_secs(1), "{serving:?}");
    let message = response["status"]["message"].as_str().unwrap().to_string();
    assert_eq!(response["allowed"], false);
    assert!(message.contains("readonly-root-filesystem"), "{message}");
    assert!(message.contains("pod-security"), "{message}");
    assert!(
        message.contains("capabilities") && message.contains("its module is unavailable"),
        "{message}"
    );
    // What the module would say, were it there.
    let judged_by_module = "[capabilities] container";
    assert!(!message.contains(judged_by_module), "{message}");

    // Ready once the first pull has been tried, naming what is missing.
    let readyz = format!("http://{}/readyz", server.metrics);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let response = reqwest::get(&readyz).await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        if status == 200 {
            break body;
        }
        assert_eq!(body, "pulling policy modules");
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("capabilities (oci://"), "{body}");
    assert!(body.contains("cannot be pulled"), "{body}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("agyn_admission_policies_unavailable 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agyn_admission_policy_module_pulls_total{module="),
        "{metrics}"
    );

    // The registry back on the same port: the sixth policy serves.
    drop(_silent);
    let _registry = Registry::start(&storage, port, Access::Plain);
    let back = Instant::now();
    loop {
        let response = server.review("/validate", &request).await;
        let message = response["status"]["message"].as_str().unwrap().to_string();
        if message.contains(judged_by_module) {
            assert!(!message.contains("unavailable"), "{message}");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "never pulled: {message}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the module served {:?} after the registry came back",
        back.elapsed()
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("agyn_admission_policies_unavailable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("digest=\"{}\"", digest_of(&pinned))),
        "{metrics}"
    );
    assert_eq!(
        reqwest::get(&readyz).await.unwrap().text().await.unwrap(),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_registry_port_costs_only_its_policy() {
    if registry_binary().is_some() {
        unreachable_at_start(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_costs_only_its_policy() {
    if registry_binary().is_some() {
        unreachable_at_start(true).await;
    }
}

/// Docker's own config.json, broken, costs a command that pulls nothing
/// only a warning; named with --registry-config, it is an error.
#[test]
fn a_broken_default_docker_config_is_only_a_warning() {
    let home = common::temp_dir("registry-docker-config");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    let broken = home.join(".docker/config.json");
    std::fs::write(&broken, "{broken").unwrap();
    let manifest = home.join("pod.json");
    std::fs::write(&manifest, pod().to_string()).unwrap();
    // The tests' shared cache: the built-in policies compiled once.
    let check = |extra: &[&Path]| {
        Command::new(BIN)
            .args(["check", "--cache-dir"])
            .arg(common::cache_dir())
            .args(extra)
            .arg(&manifest)
            .env("HOME", &home)
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    };
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ignoring the registry credentials"),
        "{stderr}"
    );
    let out = check(&[Path::new("--registry-config"), &broken]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Docker config.json"));
}
