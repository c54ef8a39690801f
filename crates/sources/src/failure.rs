//! Why a registry could not be read, typed from the source's own error to the metric:
//! the reason is what an alert is written on (`registry_sync_registry_failures_total
//! {registry, reason}`), the message what the operator reads.

use std::fmt;

/// Why a registry could not be read, in the few words an alert can be written on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The server could not be reached (refused, reset, name not found, TLS failed).
    Unreachable,
    /// The server took too long to answer.
    Timeout,
    /// The credentials were refused or could not be read.
    Credentials,
    /// The credentials were accepted but lack the rights to read.
    Denied,
    /// The server asked us to slow down.
    Throttled,
    /// The server answered with an error, or with something that is not a registry's
    /// answer (a body that does not parse, one too large).
    BadAnswer,
    /// The registry's configuration cannot work (a CA file, a region, a root path).
    Configuration,
    /// registry-sync itself failed: a bug to report.
    Internal,
}

impl FailureReason {
    /// The `reason` label of the failure metrics: short, fixed, never a message.
    pub fn metric_label(self) -> &'static str {
        match self {
            FailureReason::Unreachable => "unreachable",
            FailureReason::Timeout => "timeout",
            FailureReason::Credentials => "credentials",
            FailureReason::Denied => "denied",
            FailureReason::Throttled => "throttled",
            FailureReason::BadAnswer => "bad_answer",
            FailureReason::Configuration => "configuration",
            FailureReason::Internal => "internal",
        }
    }
}

/// A source's error that knows its reason.
pub trait Classified: fmt::Display {
    fn reason(&self) -> FailureReason;
}

/// A registry that could not be read: why, and what to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFailure {
    pub reason: FailureReason,
    pub message: String,
}

impl SourceFailure {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> SourceFailure {
        SourceFailure {
            reason,
            message: message.into(),
        }
    }

    /// The failure a source's typed error describes.
    pub fn of(error: &impl Classified) -> SourceFailure {
        SourceFailure::new(error.reason(), error.to_string())
    }
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_label_in_snake_case() {
        let all = [
            FailureReason::Unreachable,
            FailureReason::Timeout,
            FailureReason::Credentials,
            FailureReason::Denied,
            FailureReason::Throttled,
            FailureReason::BadAnswer,
            FailureReason::Configuration,
            FailureReason::Internal,
        ];
        let labels: std::collections::BTreeSet<&str> = all.iter().map(|r| r.metric_label()).collect();
        assert_eq!(labels.len(), all.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }
}
