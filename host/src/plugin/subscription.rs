//! Subscriptions: exact event types or glob patterns over event types.

use std::fmt;

/// What a plugin subscribes to: an exact event type or a glob pattern (`*`, `Payment*`).
#[derive(Clone)]
pub struct Subscription {
    /// The text as the plugin gave it.
    text: String,
    /// The compiled pattern, `None` for an exact type.
    pattern: Option<glob::Pattern>,
}

/// A subscription that is neither a valid event type nor a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subscription {text:?}: {reason}")]
pub struct InvalidSubscription {
    /// The subscription as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Subscription {
    /// Parses a subscription. Text containing `*`, `?` or `[` is a glob pattern.
    ///
    /// # Errors
    ///
    /// When the text is empty, contains whitespace, or is an invalid pattern.
    pub fn parse(text: &str) -> Result<Self, InvalidSubscription> {
        let invalid = |reason: String| InvalidSubscription {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "must be a non-empty event type or pattern without spaces".into(),
            ));
        }
        let pattern = if text.contains(['*', '?', '[']) {
            Some(glob::Pattern::new(text).map_err(|err| invalid(err.to_string()))?)
        } else {
            None
        };
        Ok(Subscription {
            text: text.to_string(),
            pattern,
        })
    }

    /// True for glob patterns, false for exact event types.
    pub fn is_pattern(&self) -> bool {
        self.pattern.is_some()
    }

    /// The exact event type, for non-pattern subscriptions.
    pub fn exact_type(&self) -> Option<&str> {
        match self.pattern {
            Some(_) => None,
            None => Some(&self.text),
        }
    }

    /// Whether events of `event_type` match this subscription.
    pub fn matches(&self, event_type: &str) -> bool {
        match &self.pattern {
            Some(pattern) => pattern.matches(event_type),
            None => self.text == event_type,
        }
    }

    /// The subscription as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_and_patterns() {
        let exact = Subscription::parse("AuctionEnded").expect("valid");
        assert!(exact.matches("AuctionEnded") && !exact.matches("AuctionEndedX"));
        assert_eq!(exact.exact_type(), Some("AuctionEnded"));
        let all = Subscription::parse("*").expect("valid");
        assert!(all.matches("AuctionEnded") && all.matches("workflow.started"));
        let payments = Subscription::parse("Payment*").expect("valid");
        assert!(payments.matches("PaymentProcessed") && !payments.matches("AuctionEnded"));
        assert!(Subscription::parse("").is_err());
        assert!(Subscription::parse("a b").is_err());
        assert!(Subscription::parse("[").is_err());
    }
}
