//! Admission: from a request to a [`Decision`], shared by the webhook
//! server and the `check` dry run.
//!
//! [`review`] works out which policies judge the request and in what form
//! (`target`: the object, or a workload's pod template as a Pod, cut out by
//! `pod`), runs every matching policy of the set through the engine, and
//! combines the verdicts and the mutations into one [`Decision`] with one
//! JSON Patch.
//! [`unjudged`] is the decision owed when a review cannot be completed:
//! every matching policy's failure policy answers.

mod breaker;
mod decision;
pub mod kinds;
mod pod;
mod readable;
pub mod registration;
mod request;
mod review;
mod target;

pub use breaker::Breaker;
pub use decision::{Decision, PolicyOutcome, PolicyResult, Violation};
pub use request::{AdmissionRequest, Resource};
pub use review::{Options, Phase, review, review_with, unjudged};
pub use target::can_judge;

use kinds::WorkloadKind;
use thiserror::Error;

/// A request that cannot be judged at all (not a policy's verdict).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("the request has no object")]
    NoObject,
    #[error("the object is not a JSON object")]
    NotAnObject,
    #[error("the {} has no pod template at {pointer}", kind.kind())]
    NoTemplate {
        kind: WorkloadKind,
        pointer: &'static str,
    },
    #[error("the request has no namespace")]
    NoNamespace,
    #[error("the object cannot be read: {0}")]
    Unreadable(String),
}
