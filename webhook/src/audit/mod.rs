//! `audit`: judging what is already stored in a cluster, and writing what
//! the policies say of it as one report per object.
//!
//! A scan lists each kind the policy set judges ([`kinds`]), owners first,
//! page by page through a kube-runtime watcher (which retries with backoff
//! and starts the listing over when the API server answers 410 Gone);
//! judges every object as the webhook would judge its creation ([`judge`]);
//! and applies each object's report unless its results did not change
//! ([`store`], [`report`]). When a kind has been listed in full, the
//! reports no listing vouched for are removed. In watch mode the same
//! watchers then keep going: an object that changes is judged again, a
//! deleted one loses its report, and a new policy set or a namespace that
//! opts in ([`namespaces`]) starts a full scan.

mod api;
mod judge;
mod kinds;
pub mod metrics;
mod namespaces;
mod report;
mod store;

pub use judge::{AuditResult, Identity, Judged, Status, Subject, changes_message};
pub use kinds::{AuditedKind, audited};
pub use report::{ReportApi, Results};
pub use store::Reports;

use crate::config::PolicySet;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use metrics::Metrics;
use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Errors in a row after which a one-off scan gives up on a kind (its
/// stale reports are then kept: the listing never vouched for anything).
const GIVE_UP_AFTER: u32 = 5;

/// How an audit scans.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespaces never audited: kube-system, the webhook's own, those the
    /// chart excludes.
    pub excluded_namespaces: BTreeSet<String>,
    /// If any, the only namespaces audited; cluster-scoped objects are
    /// then not audited either.
    pub only_namespaces: BTreeSet<String>,
    /// A namespace labelled so is not audited (the chart's opt-out label).
    pub opt_out_label: Option<(String, String)>,
    pub page_size: u32,
    pub report_api: ReportApi,
    pub results: Results,
    /// API calls (report writes and deletions) in flight at once.
    pub concurrency: usize,
}

/// Where judged objects go.
#[derive(Clone)]
pub enum Output {
    /// Written as reports.
    Reports(Arc<Reports>),
    /// Handed to the caller, nothing written: a dry run.
    Judged(Arc<std::sync::Mutex<dyn FnMut(Judged) + Send>>),
}

/// What a full scan did.
#[derive(Debug, Default)]
pub struct Summary {
    pub objects: u64,
    /// Kinds that could not be listed in full.
    pub unlisted: Vec<String>,
    /// Report writes and deletions that failed.
    pub write_errors: u64,
    pub took: Duration,
}

/// The audit's identity, as the API server knows it (a SelfSubjectReview,
/// which any authenticated user may make): a set's exempt usernames apply
/// to the audit only if they name it.
pub async fn identity(client: &Client) -> Identity {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    match reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => {
            let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
            Identity {
                username: user.username.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot learn the audit's own username; judging as nobody");
            Identity::default()
        }
    }
}

/// A revision of the policy set: every setting that can change a verdict.
pub fn revision(set: &PolicySet) -> String {
    let mut text = format!("{:?}\0{:?}\0", set.exempt_namespaces, set.exempt_usernames);
    for p in &set.policies {
        text.push_str(&format!(
            "{}\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{:?}\0{:?}\n",
            p.name,
            set.components[p.component].sha256(),
            p.inner,
            p.settings,
            p.mode,
            p.failure_policy,
            p.mutate,
            p.matching,
            p.limits,
        ));
    }
    report::revision(&text)
}

type Events = Pin<Box<dyn Stream<Item = Vec<Result<Event<DynamicObject>, watcher::Error>>> + Send>>;

/// One scan's work and what it keeps between events: bounded by the
/// number of workloads (their UIDs), never by the objects.
pub struct Audit {
    client: Client,
    set: Arc<PolicySet>,
    revision: String,
    identity: Identity,
    options: Options,
    metrics: Arc<Metrics>,
    output: Output,
    kinds: Vec<AuditedKind>,
    /// Namespaces not audited (excluded or opted out).
    skipped_namespaces: HashSet<String>,
    /// UIDs of the workloads listed: what they control is judged with them.
    owners: HashSet<String>,
    writes: JoinSet<Result<(), kube::Error>>,
    slots: Arc<Semaphore>,
    write_errors: u64,
    objects: u64,
}

impl Audit {
    pub fn new(
        client: Client,
        set: Arc<PolicySet>,
        identity: Identity,
        options: Options,
        metrics: Arc<Metrics>,
        output: Output,
    ) -> Audit {
        let (kinds, notes) = audited(&set);
        for note in notes {
            tracing::warn!("{note}");
        }
        Audit {
            revision: revision(&set),
            slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
            client,
            set,
            identity,
            options,
            metrics,
            output,
            kinds,
            skipped_namespaces: HashSet::new(),
            owners: HashSet::new(),
            writes: JoinSet::new(),
            write_errors: 0,
            objects: 0,
        }
    }

    fn events(&self, kind: &AuditedKind) -> Events {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource);
        let config = watcher::Config::default().page_size(self.options.page_size);
        Box::pin(
            watcher(api, config)
                .default_backoff()
                .ready_chunks(self.options.page_size as usize),
        )
    }

    /// One full scan: every kind listed to the end, its reports written,
    /// the stale ones removed.
    pub async fn scan(&mut self) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        if let Err(e) = self.read_namespaces().await {
            // Without the opt-out labels, any report could be wrong.
            tracing::error!(error = %e, "cannot list namespaces: nothing audited");
            summary.unlisted = self.kinds.iter().map(|k| k.resource.kind.clone()).collect();
            return summary;
        }
        self.owners.clear();
        for kind in self.kinds.clone() {
            let mut events = self.events(&kind);
            if !self.list(&kind, &mut events).await {
                summary.unlisted.push(kind.resource.kind.clone());
            }
        }
        self.sweep_unaudited().await;
        summary.objects = self.objects;
        summary.write_errors = self.write_errors;
        summary.took = started.elapsed();
        self.metrics.scan_done(summary.took, summary.objects);
        summary
    }

    /// Keeps the reports fresh until the policy set changes (`reload`
    /// receives) or a namespace opts in or out: a full scan (then `ready`),
    /// then every change as it happens. Returns when a new full scan is due.
    pub async fn watch(
        &mut self,
        reload: &mut tokio::sync::watch::Receiver<()>,
        ready: &std::sync::atomic::AtomicBool,
    ) {
        let started = Instant::now();
        if let Err(e) = self.read_namespaces().await {
            tracing::error!(error = %e, "cannot list namespaces; trying again");
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        self.owners.clear();
        let mut streams = Vec::new();
        for (i, kind) in self.kinds.clone().iter().enumerate() {
            let mut events = self.events(kind);
            // A kind that cannot be listed now is listed when its watcher
            // gets through: its InitDone sweeps then.
            self.list(kind, &mut events).await;
            streams.push(events.map(move |batch| (i, batch)));
        }
        self.sweep_unaudited().await;
        let took = started.elapsed();
        self.metrics.scan_done(took, self.objects);
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            objects = self.objects,
            seconds = took.as_secs_f64(),
            "scan done; watching for changes"
        );
        let namespaces = self.namespace_events();
        let mut kinds = futures_util::stream::select_all(streams);
        let mut namespaces = std::pin::pin!(namespaces);
        loop {
            tokio::select! {
                Some((i, batch)) = kinds.next() => {
                    let kind = self.kinds[i].clone();
                    self.handle(&kind, batch, true).await;
                }
                Some(namespace) = namespaces.next() => {
                    if self.namespace_changed(namespace).await {
                        return;
                    }
                }
                Ok(()) = reload.changed() => return,
                // Watchers never end; the reload channel closes only
                // when the process ends.
                else => return,
            }
        }
    }

    /// Lists `kind` to its end (its watcher's InitDone), then removes the
    /// reports the listing did not vouch for. False if it gave up.
    async fn list(&mut self, kind: &AuditedKind, events: &mut Events) -> bool {
        let mut errors = 0;
        while let Some(batch) = events.next().await {
            let failed = batch.iter().filter(|e| e.is_err()).count() as u32;
            errors = if failed == 0 { 0 } else { errors + failed };
            if self.handle(kind, batch, false).await {
                return true;
            }
            if errors >= GIVE_UP_AFTER {
                tracing::error!(kind = %kind.resource.kind, "cannot list; its reports are kept as they are");
                return false;
            }
        }
        false
    }

    /// Handles a batch of one kind's events in order; `live`: they are
    /// changes as they happen, not a listing. True if the batch ended a
    /// listing.
    async fn handle(
        &mut self,
        kind: &AuditedKind,
        batch: Vec<Result<Event<DynamicObject>, watcher::Error>>,
        live: bool,
    ) -> bool {
        let mut listed = false;
        let mut applied = Vec::new();
        for event in batch {
            match event {
                Ok(Event::InitApply(object)) => applied.push(object),
                Ok(Event::Apply(object)) => {
                    self.judge(kind, std::mem::take(&mut applied), false).await;
                    self.judge(kind, vec![object], live).await;
                }
                Ok(Event::Init) => {
                    self.judge(kind, std::mem::take(&mut applied), false).await;
                    if let Output::Reports(reports) = &self.output {
                        reports.unvouch(&kind.resource.kind);
                    }
                }
                Ok(Event::InitDone) => {
                    self.judge(kind, std::mem::take(&mut applied), false).await;
                    self.finish_writes().await;
                    if let Output::Reports(reports) = &self.output {
                        let name = kind.resource.kind.as_str();
                        let covered = |ns: Option<&str>| self.covers(ns);
                        let stale = |ns: Option<&str>, k: &str| k == name && covered(ns);
                        if let Err(e) = reports.sweep(stale, self.options.concurrency).await {
                            tracing::warn!(kind = %name, error = %e, "stale reports remain");
                            self.write_errors += 1;
                        }
                    }
                    listed = true;
                }
                Ok(Event::Delete(object)) => {
                    self.judge(kind, std::mem::take(&mut applied), false).await;
                    if let Some(uid) = object.uid() {
                        self.owners.remove(&uid);
                    }
                    let subject = judge::subject(kind, &object);
                    self.forget(&subject);
                }
                Err(e) => {
                    let verb = match e {
                        watcher::Error::InitialListFailed(_) => "list",
                        _ => "watch",
                    };
                    self.metrics.api_error(verb);
                    tracing::warn!(kind = %kind.resource.kind, error = %e, "listing failed; trying again");
                }
            }
        }
        self.judge(kind, applied, false).await;
        listed
    }

    /// Judges objects of `kind` on the blocking pool, every core at work,
    /// and sends each result on. `live`: an object that needs no report
    /// loses the one it has now, rather than at the next listing's end.
    async fn judge(&mut self, kind: &AuditedKind, objects: Vec<DynamicObject>, live: bool) {
        let mut due = Vec::with_capacity(objects.len());
        let mut out_of_scope = Vec::new();
        for object in objects {
            let uid = object.uid().unwrap_or_default();
            let controller = object
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone());
            let owned = controller.is_some_and(|owner| self.owners.contains(&owner));
            if kind.is_workload() && kind.resource.kind != "Pod" {
                self.owners.insert(uid);
            }
            if owned || !self.audits(object.namespace().as_deref()) {
                out_of_scope.push(judge::subject(kind, &object));
            } else {
                due.push(object);
            }
        }
        if live {
            for subject in &out_of_scope {
                self.forget(subject);
            }
        }
        if due.is_empty() {
            return;
        }
        let set = self.set.clone();
        let job_kind = kind.clone();
        let identity = self.identity.clone();
        let judged =
            tokio::task::spawn_blocking(move || judge::judge_all(&set, &job_kind, &identity, due))
                .await
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = (now.as_secs() as i64, now.subsec_nanos());
        for judged in judged {
            if judged.skipped.is_some() {
                if live {
                    self.forget(&judged.subject);
                }
                continue;
            }
            self.objects += 1;
            self.metrics.judged(&judged);
            match &self.output {
                Output::Judged(sink) => {
                    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                    sink(judged);
                }
                Output::Reports(reports) => {
                    let report = report::build(
                        self.options.report_api,
                        self.options.results,
                        &self.revision,
                        &judged,
                        now,
                    );
                    match report {
                        Some(report) => {
                            let reports = reports.clone();
                            self.spawn_write(async move { reports.put(report).await })
                                .await;
                        }
                        None if live => self.forget(&judged.subject),
                        None => {}
                    }
                }
            }
        }
    }

    /// Runs a write once a slot is free, so that at most `concurrency`
    /// calls (and the reports they carry) are in flight.
    async fn spawn_write(
        &mut self,
        write: impl Future<Output = Result<(), kube::Error>> + Send + 'static,
    ) {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        self.writes.spawn(async move {
            let result = write.await;
            drop(slot);
            result
        });
        while let Some(done) = self.writes.try_join_next() {
            self.count_write(done);
        }
    }

    async fn finish_writes(&mut self) {
        while let Some(done) = self.writes.join_next().await {
            self.count_write(done);
        }
    }

    fn count_write(&mut self, done: Result<Result<(), kube::Error>, tokio::task::JoinError>) {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.write_errors += 1;
                tracing::warn!(error = %e, "cannot write a report");
            }
            Err(e) => {
                self.write_errors += 1;
                tracing::error!(error = %e, "a report write panicked");
            }
        }
    }

    /// Removes the report on `subject`, if there is one, without waiting.
    fn forget(&mut self, subject: &Subject) {
        if let Output::Reports(reports) = &self.output {
            let reports = reports.clone();
            let name = report::name(subject);
            let namespace = subject.namespace.clone();
            self.writes
                .spawn(async move { reports.remove(namespace.as_deref(), &name).await });
        }
    }

    /// Removes reports on kinds this set no longer audits.
    async fn sweep_unaudited(&mut self) {
        self.finish_writes().await;
        if let Output::Reports(reports) = &self.output {
            let audited: Vec<String> = self.kinds.iter().map(|k| k.resource.kind.clone()).collect();
            if let Err(e) = reports
                .sweep(
                    |ns, k| !audited.iter().any(|a| a == k) && self.covers(ns),
                    self.options.concurrency,
                )
                .await
            {
                tracing::warn!(error = %e, "stale reports remain");
                self.write_errors += 1;
            }
        }
    }
}
