//! Notification plugin: tells bidders what happened, by (simulated) email.
//!
//! - `BidderRegistered` (`bidder_id`, `name`, `email`): remembers the bidder under the
//!   key-value key `bidder:<bidder_id>` (`{"name", "email"}`) and publishes a welcome.
//! - `PaymentProcessed` (`auction_id`, `bidder_id`, `amount`, `status`, `reason`): tells the
//!   bidder whether the payment succeeded, at the email remembered for them, or to the bidder
//!   id when none is known.
//!
//! Both publish `NotificationSent`: `{"recipient", "channel": "email", "message"}`.

use evhost_sdk::prelude::*;

/// The data of a `BidderRegistered` event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BidderRegistered {
    /// The new bidder; a JSON string or number.
    #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
    pub bidder_id: String,
    /// Display name, used in the greeting.
    pub name: String,
    /// Where notifications go.
    pub email: String,
}

/// What is remembered about a bidder, under `bidder:<bidder_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bidder {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// The data of a `PaymentProcessed` event (as the payment plugin publishes it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentProcessed {
    /// The auction paid for; a JSON string or number.
    #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
    pub auction_id: String,
    /// The bidder charged; a JSON string or number.
    #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
    pub bidder_id: String,
    /// The amount charged.
    pub amount: f64,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Why the payment failed.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The data of a `NotificationSent` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationSent {
    /// An email address, or the bidder id when no address is known.
    pub recipient: String,
    /// How the message is delivered: `email`.
    pub channel: String,
    /// The text sent.
    pub message: String,
}

/// The key-value key holding what is known about `bidder_id`.
pub fn bidder_key(bidder_id: &str) -> String {
    format!("bidder:{bidder_id}")
}

/// Parses and validates a `BidderRegistered` event.
///
/// # Errors
///
/// A reject error when the data is not JSON, lacks a field, or has an empty id, name or email,
/// or an email without `@`.
pub fn parse_registration(event: &Event) -> Result<BidderRegistered> {
    let registered: BidderRegistered = event.data_json()?;
    let problem = if registered.bidder_id.trim().is_empty() {
        Some("empty bidder_id")
    } else if registered.name.trim().is_empty() {
        Some("empty name")
    } else if !registered.email.contains('@') {
        Some("email is not an address")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::reject(format!("event {}: {problem}", event.id()))),
        None => Ok(registered),
    }
}

/// The welcome notification for a new bidder.
pub fn welcome(registered: &BidderRegistered) -> NotificationSent {
    NotificationSent {
        recipient: registered.email.clone(),
        channel: "email".into(),
        message: format!("Welcome, {}!", registered.name.trim()),
    }
}

/// Parses and validates a `PaymentProcessed` event.
///
/// # Errors
///
/// A reject error when the data is not JSON, lacks a field, or has an empty bidder id.
pub fn parse_payment(event: &Event) -> Result<PaymentProcessed> {
    let payment: PaymentProcessed = event.data_json()?;
    if payment.bidder_id.trim().is_empty() {
        return Err(Error::reject(format!(
            "event {}: empty bidder_id",
            event.id()
        )));
    }
    Ok(payment)
}

/// The notification about `payment`, sent to `bidder` if known, else to the bidder id.
pub fn payment_notice(payment: &PaymentProcessed, bidder: Option<&Bidder>) -> NotificationSent {
    let greeting = bidder.map_or_else(String::new, |bidder| format!("Hi {}, ", bidder.name));
    let message = if payment.status == "succeeded" {
        format!(
            "{greeting}your payment of {:.2} for auction {} succeeded.",
            payment.amount, payment.auction_id
        )
    } else {
        let reason = payment.reason.as_deref().unwrap_or("no reason given");
        format!(
            "{greeting}your payment for auction {} failed: {reason}.",
            payment.auction_id
        )
    };
    NotificationSent {
        recipient: bidder.map_or_else(|| payment.bidder_id.clone(), |bidder| bidder.email.clone()),
        channel: "email".into(),
        message: capitalize(message),
    }
}

/// Upper-cases the first letter (`your payment...` → `Your payment...`).
fn capitalize(text: String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_lowercase() => first.to_uppercase().chain(chars).collect(),
        _ => text,
    }
}

/// The notification plugin.
pub struct Notification;

impl Plugin for Notification {
    fn describe() -> PluginInfo {
        PluginInfo::new("notification", env!("CARGO_PKG_VERSION"))
            .subscribe("BidderRegistered")
            .subscribe("PaymentProcessed")
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<()> {
        let notice = match event.event_type() {
            "BidderRegistered" => {
                let registered = parse_registration(&event)?;
                let bidder = Bidder {
                    name: registered.name.clone(),
                    email: registered.email.clone(),
                };
                kv::set_json(bidder_key(&registered.bidder_id), &bidder)?;
                log::info(format!("registered bidder {}", registered.bidder_id));
                welcome(&registered)
            }
            "PaymentProcessed" => {
                let payment = parse_payment(&event)?;
                // A corrupt record is no reason to withhold the notice: fall back to the id.
                let bidder = match kv::get_json::<Bidder>(bidder_key(&payment.bidder_id)) {
                    Ok(bidder) => bidder,
                    Err(err) if err.is_reject() => {
                        log::warn(err.message());
                        None
                    }
                    Err(err) => return Err(err),
                };
                if bidder.is_none() {
                    log::info(format!(
                        "no email known for bidder {}; notifying the id",
                        payment.bidder_id
                    ));
                }
                payment_notice(&payment, bidder.as_ref())
            }
            other => {
                log::debug(format!("ignoring {other} event {}", event.id()));
                return Ok(());
            }
        };
        publish("NotificationSent", &notice)?;
        log::info(format!(
            "notified {} about {} {}",
            notice.recipient,
            event.event_type(),
            event.id()
        ));
        Ok(())
    }
}

evhost_sdk::export_plugin!(Notification);

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(data: &str) -> Result<BidderRegistered> {
        parse_registration(&Event::new("e-1", "BidderRegistered", data))
    }

    fn payment(data: &str) -> Result<PaymentProcessed> {
        parse_payment(&Event::new("e-2", "PaymentProcessed", data))
    }

    /// A registration is welcomed by name at the given address.
    #[test]
    fn welcome_message() {
        let registered =
            registration(r#"{"bidder_id": 42, "name": "Ada", "email": "ada@example.com"}"#)
                .expect("valid registration");
        assert_eq!(registered.bidder_id, "42");
        assert_eq!(
            welcome(&registered),
            NotificationSent {
                recipient: "ada@example.com".into(),
                channel: "email".into(),
                message: "Welcome, Ada!".into()
            }
        );
        assert_eq!(bidder_key(&registered.bidder_id), "bidder:42");
    }

    /// Malformed registrations are rejected.
    #[test]
    fn bad_registrations_are_rejected() {
        for data in [
            "{",
            r#"{"bidder_id": 1, "name": "Ada"}"#,
            r#"{"bidder_id": "", "name": "Ada", "email": "a@b"}"#,
            r#"{"bidder_id": 1, "name": " ", "email": "a@b"}"#,
            r#"{"bidder_id": 1, "name": "Ada", "email": "nowhere"}"#,
            r#"{"bidder_id": [1], "name": "Ada", "email": "a@b"}"#,
        ] {
            assert!(registration(data).expect_err(data).is_reject(), "{data}");
        }
    }

    /// A known bidder gets a personal message at their email; the amount has two decimals.
    #[test]
    fn succeeded_payment_to_known_bidder() {
        let paid = payment(
            r#"{"auction_id": 7, "bidder_id": "42", "amount": 120.5, "status": "succeeded"}"#,
        )
        .expect("valid payment");
        let bidder = Bidder {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        };
        let notice = payment_notice(&paid, Some(&bidder));
        assert_eq!(notice.recipient, "ada@example.com");
        assert_eq!(notice.channel, "email");
        assert_eq!(
            notice.message,
            "Hi Ada, your payment of 120.50 for auction 7 succeeded."
        );
    }

    /// An unknown bidder is notified by id; a failure gives the reason.
    #[test]
    fn failed_payment_to_unknown_bidder() {
        let failed = payment(
            r#"{"auction_id": "a-8", "bidder_id": 42, "amount": 0, "status": "failed", "reason": "winning price 0 is not positive"}"#,
        )
        .expect("valid payment");
        let notice = payment_notice(&failed, None);
        assert_eq!(notice.recipient, "42");
        assert_eq!(
            notice.message,
            "Your payment for auction a-8 failed: winning price 0 is not positive."
        );

        let no_reason =
            payment(r#"{"auction_id": 1, "bidder_id": 2, "amount": 3, "status": "failed"}"#)
                .expect("valid payment");
        assert_eq!(
            payment_notice(&no_reason, None).message,
            "Your payment for auction 1 failed: no reason given."
        );
    }

    /// Malformed payments are rejected.
    #[test]
    fn bad_payments_are_rejected() {
        for data in [
            "null",
            r#"{"auction_id": 1, "amount": 3, "status": "failed"}"#,
            r#"{"auction_id": 1, "bidder_id": " ", "amount": 3, "status": "failed"}"#,
        ] {
            assert!(payment(data).expect_err(data).is_reject(), "{data}");
        }
    }

    /// The published JSON has exactly recipient, channel and message.
    #[test]
    fn notification_json_shape() {
        let notice = NotificationSent {
            recipient: "r".into(),
            channel: "email".into(),
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&notice).expect("serializes"),
            serde_json::json!({"recipient": "r", "channel": "email", "message": "m"})
        );
    }
}
