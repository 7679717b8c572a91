//! agyn-admission: a Kubernetes admission webhook, and its CI dry run, that
//! evaluate policies compiled to WebAssembly.
//!
//! Data flows one way: a request (an AdmissionReview from the API server,
//! or a manifest read by `check`) goes to [`admission`], which picks the Pod
//! or the pod template out of the object and asks the [`engine`] to run
//! every matching policy of the [`config`] policy set; [`admission`] then
//! combines the verdicts and diffs the mutations into one JSON Patch.
//! [`audit`] feeds the same review with the objects a cluster stores, and
//! writes what it decides as policy reports.

pub mod admission;
pub mod audit;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fallback;
pub mod fuzz;
pub mod registry;
pub mod server;
