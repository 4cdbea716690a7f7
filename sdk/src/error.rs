//! [`Error`]: why a handler did not succeed, and whether trying again can help.

use std::fmt;
use std::time::Duration;

use crate::bindings::evhost::plugin::types::{HandleError, RetryLater};

/// The result type of handlers and of every SDK helper.
///
/// `Result<()>` is what [`Plugin::handle`](crate::Plugin::handle) returns; `Result<T>` is
/// `Result<T, Error>`.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// What the host should do with an event whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient failure: the event stays pending and is delivered again later.
    Retry,
    /// Permanent failure (bad data): the event can never succeed and is not retried.
    Reject,
}

/// Why a handler (or an SDK helper) failed.
///
/// An error is either a [*retry*](Error::retry) — something transient went wrong, deliver the
/// event again — or a [*reject*](Error::reject) — the event itself is bad and retrying cannot
/// help.
///
/// Any [`std::error::Error`] converts into a *retry* error, so `?` works on most fallible
/// calls, as with `anyhow`. Use [`ResultExt::permanent`] when a failure is the event's fault.
///
/// `Error` deliberately does not implement [`std::error::Error`] itself: that would make the
/// blanket conversion conflict with the identity conversion `From<Error> for Error`.
///
/// ```
/// use evhost_sdk::{Error, ErrorKind};
/// use std::time::Duration;
///
/// let busy = Error::retry("payment provider is busy").after(Duration::from_secs(5));
/// assert_eq!(busy.kind(), ErrorKind::Retry);
/// assert_eq!(busy.delay(), Some(Duration::from_secs(5)));
///
/// let parsed: Result<u32, evhost_sdk::Error> = "12x".parse::<u32>().map_err(Error::from);
/// assert!(parsed.is_err_and(|err| err.is_retry()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    /// Retry or reject: decides whether the host delivers the event again.
    kind: ErrorKind,
    /// Human-readable reason, logged by the host and kept with a rejected event.
    message: String,
    /// Minimum delay before the next attempt; only meaningful for retry errors.
    delay: Option<Duration>,
}

impl Error {
    /// A transient failure: the host delivers the event again later.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retry,
            message: message.into(),
            delay: None,
        }
    }

    /// A permanent failure: the event is bad and is never delivered again.
    pub fn reject(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Reject,
            message: message.into(),
            delay: None,
        }
    }

    /// Asks the host to wait at least `delay` before the next attempt.
    ///
    /// Only retry errors carry a delay; on a reject error this does nothing.
    #[must_use]
    pub fn after(mut self, delay: Duration) -> Self {
        if self.kind == ErrorKind::Retry {
            self.delay = Some(delay);
        }
        self
    }

    /// Turns this error into a reject error with the same message.
    #[must_use]
    pub fn into_reject(self) -> Self {
        Self {
            kind: ErrorKind::Reject,
            message: self.message,
            delay: None,
        }
    }

    /// Prefixes the message with `context`, as in `"charging auction 7: bucket unavailable"`.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Whether this is a retry or a reject error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `true` for a retry error.
    pub fn is_retry(&self) -> bool {
        self.kind == ErrorKind::Retry
    }

    /// `true` for a reject error.
    pub fn is_reject(&self) -> bool {
        self.kind == ErrorKind::Reject
    }

    /// The reason given when the error was made.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The minimum delay before the next attempt, if one was set with [`Error::after`].
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }
}

/// Any standard error becomes a *retry* error whose message is the error and its sources,
/// joined with `": "`.
impl<E> From<E> for Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retry(message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug
            .field("kind", &self.kind)
            .field("message", &self.message);
        if let Some(delay) = self.delay {
            debug.field("delay", &delay);
        }
        debug.finish()
    }
}

impl From<Error> for HandleError {
    fn from(err: Error) -> Self {
        match err.kind {
            ErrorKind::Retry => HandleError::Retry(RetryLater {
                reason: err.message,
                delay_ms: err
                    .delay
                    .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            }),
            ErrorKind::Reject => HandleError::Reject(err.message),
        }
    }
}

/// Extra methods on any `Result` whose error converts into [`Error`].
///
/// ```
/// use evhost_sdk::prelude::*;
///
/// fn quantity(text: &str) -> Result<u32> {
///     // A number that does not parse is the event's fault: retrying cannot fix it.
///     text.parse::<u32>().permanent().context("field `quantity`")
/// }
///
/// let err = quantity("many").unwrap_err();
/// assert!(err.is_reject());
/// assert_eq!(err.message(), "field `quantity`: invalid digit found in string");
/// ```
pub trait ResultExt<T>: sealed::Sealed {
    /// Turns any error into a *reject* (permanent) error.
    ///
    /// # Errors
    ///
    /// Returns the original error, converted and marked as reject.
    fn permanent(self) -> Result<T>;

    /// Prefixes the error message with `context`, keeping the error's kind.
    ///
    /// # Errors
    ///
    /// Returns the original error, converted, with the prefixed message.
    fn context(self, context: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn permanent(self) -> Result<T> {
        self.map_err(|err| err.into().into_reject())
    }

    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|err| err.into().context(context))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<T, E> Sealed for Result<T, E> {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard error, with its source chain, becomes a retry error.
    #[test]
    fn std_errors_become_retry_errors_with_their_sources() {
        let io = std::io::Error::other("inner");
        let err = Error::from(io);
        assert!(err.is_retry());
        assert_eq!(err.message(), "inner");

        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Error::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(err.to_string(), "outer: disk on fire");
    }

    /// `?` converts standard errors inside a function returning the SDK's `Result`.
    #[test]
    fn question_mark_converts() {
        fn parse(text: &str) -> Result<i64> {
            Ok(text.parse::<i64>()?)
        }
        let err = parse("x").expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::Retry);
        assert_eq!(parse("42"), Ok(42));
    }

    /// A delay only sticks to retry errors, and survives the conversion to the WIT variant.
    #[test]
    fn delay_applies_to_retry_only() {
        let retry = Error::retry("busy").after(Duration::from_millis(1500));
        assert_eq!(retry.delay(), Some(Duration::from_millis(1500)));
        match HandleError::from(retry) {
            HandleError::Retry(later) => {
                assert_eq!(later.reason, "busy");
                assert_eq!(later.delay_ms, Some(1500));
            }
            HandleError::Reject(reason) => panic!("expected retry, got reject {reason}"),
        }

        let reject = Error::reject("bad").after(Duration::from_secs(1));
        assert_eq!(reject.delay(), None);
        assert!(
            matches!(HandleError::from(reject), HandleError::Reject(reason) if reason == "bad")
        );
    }

    /// `permanent()` turns retry errors and standard errors into reject errors.
    #[test]
    fn permanent_rejects() {
        let from_std: Result<u8> = "300".parse::<u8>().permanent();
        assert!(from_std.expect_err("must fail").is_reject());

        let from_sdk: Result<()> = Err(Error::retry("x").after(Duration::from_secs(1))).permanent();
        let err = from_sdk.expect_err("must fail");
        assert!(err.is_reject());
        assert_eq!(err.delay(), None);
        assert_eq!(err.message(), "x");
    }

    /// `context()` keeps the kind and prefixes the message.
    #[test]
    fn context_prefixes() {
        let err: Result<()> = Err(Error::reject("no such field")).context("event 7");
        let err = err.expect_err("must fail");
        assert!(err.is_reject());
        assert_eq!(err.to_string(), "event 7: no such field");
        assert_eq!(
            format!("{err:?}"),
            r#"Error { kind: Reject, message: "event 7: no such field" }"#
        );
    }
}
