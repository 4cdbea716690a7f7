//! Payment plugin: charges the winner of an auction, at most once per auction.
//!
//! Handles `AuctionEnded` (`auction_id`, `winning_bidder_id`, `winning_price`; ids may be JSON
//! strings or numbers) and publishes `PaymentProcessed`:
//!
//! ```json
//! {"auction_id": "7", "bidder_id": "42", "amount": 120.5, "status": "succeeded"}
//! {"auction_id": "8", "bidder_id": "42", "amount": 0, "status": "failed", "reason": "..."}
//! ```
//!
//! `PaymentProcessed` is keyed (`partitionkey`) by the bidder, the key notification's state
//! depends on.
//!
//! A payment fails when the price is not positive or exceeds the config value `max_amount`
//! (default 10000). Each processed auction is remembered under the key-value key
//! `charged:<auction_id>`; a duplicate `AuctionEnded` is logged and acknowledged without a
//! second payment. Data that is not JSON, lacks a field or has an empty id is rejected.

use evhost_sdk::prelude::*;

/// The largest amount charged when the config value `max_amount` is not set.
pub const DEFAULT_MAX_AMOUNT: f64 = 10_000.0;

/// The data of an `AuctionEnded` event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuctionEnded {
    /// The auction; a JSON string or number.
    #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
    pub auction_id: String,
    /// Who won and pays; a JSON string or number.
    #[serde(deserialize_with = "evhost_sdk::de::string_or_number")]
    pub winning_bidder_id: String,
    /// What the winner pays.
    pub winning_price: f64,
}

/// Whether a payment went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The winner was charged.
    Succeeded,
    /// The winner was not charged; `reason` says why.
    Failed,
}

/// The data of a `PaymentProcessed` event, also kept under `charged:<auction_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    /// The auction paid for.
    pub auction_id: String,
    /// The bidder charged.
    pub bidder_id: String,
    /// The amount charged (or that would have been).
    pub amount: f64,
    /// `succeeded` or `failed`.
    pub status: Status,
    /// Why the payment failed; absent on success.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// Parses and validates the data of an `AuctionEnded` event.
///
/// # Errors
///
/// A reject error when the data is not JSON, lacks a field, or has an empty id.
pub fn parse_auction_ended(event: &Event) -> Result<AuctionEnded> {
    let ended: AuctionEnded = event.data_json()?;
    if ended.auction_id.trim().is_empty() {
        return Err(Error::reject(format!(
            "event {}: empty auction_id",
            event.id()
        )));
    }
    if ended.winning_bidder_id.trim().is_empty() {
        return Err(Error::reject(format!(
            "event {}: empty winning_bidder_id",
            event.id()
        )));
    }
    Ok(ended)
}

/// Decides the outcome of charging `ended.winning_price` with a limit of `max_amount`.
pub fn decide(ended: &AuctionEnded, max_amount: f64) -> PaymentProcessed {
    let price = ended.winning_price;
    let reason = if price <= 0.0 {
        Some(format!("winning price {price} is not positive"))
    } else if price > max_amount {
        Some(format!(
            "winning price {price} exceeds the maximum amount {max_amount}"
        ))
    } else {
        None
    };
    PaymentProcessed {
        auction_id: ended.auction_id.clone(),
        bidder_id: ended.winning_bidder_id.clone(),
        amount: price,
        status: if reason.is_none() {
            Status::Succeeded
        } else {
            Status::Failed
        },
        reason,
    }
}

/// The key-value key remembering that `auction_id` was processed.
pub fn charged_key(auction_id: &str) -> String {
    format!("charged:{auction_id}")
}

/// The effective maximum amount from the config value `max_amount`, if set.
///
/// # Errors
///
/// A retry error when the value is not a positive number: the operator fixes the config, then
/// the event is retried.
pub fn max_amount(configured: Option<&str>) -> Result<f64> {
    let Some(text) = configured else {
        return Ok(DEFAULT_MAX_AMOUNT);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(Error::retry(format!(
            "config max_amount = {text:?} is not a positive number"
        ))),
    }
}

/// The payment plugin.
pub struct Payment;

impl Plugin for Payment {
    fn describe() -> PluginInfo {
        PluginInfo::new("payment", env!("CARGO_PKG_VERSION")).subscribe("AuctionEnded")
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<()> {
        if event.event_type() != "AuctionEnded" {
            log::debug(format!(
                "ignoring {} event {}",
                event.event_type(),
                event.id()
            ));
            return Ok(());
        }
        let ended = parse_auction_ended(&event)?;
        let key = charged_key(&ended.auction_id);
        if kv::exists(&key)? {
            log::info(format!(
                "auction {} already processed; ignoring duplicate AuctionEnded {}",
                ended.auction_id,
                event.id()
            ));
            return Ok(());
        }

        let max_amount = max_amount(config::try_get("max_amount")?.as_deref())?;
        let payment = decide(&ended, max_amount);
        match &payment.reason {
            None => log::info(format!(
                "charged {} to bidder {} for auction {}",
                payment.amount, payment.bidder_id, payment.auction_id
            )),
            Some(reason) => log::info(format!(
                "payment for auction {} by bidder {} failed: {reason}",
                payment.auction_id, payment.bidder_id
            )),
        }
        // Keyed by the bidder: notification keeps its state per bidder.
        let id = publish_keyed("PaymentProcessed", &payment.bidder_id, &payment)?;
        kv::set_json(&key, &payment)?;
        log::debug(format!(
            "published PaymentProcessed {id} for auction {}",
            payment.auction_id
        ));
        Ok(())
    }
}

evhost_sdk::export_plugin!(Payment);

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(data: &str) -> Result<AuctionEnded> {
        parse_auction_ended(&Event::new("e-1", "AuctionEnded", data))
    }

    /// String and numeric ids are both accepted, as strings.
    #[test]
    fn ids_may_be_strings_or_numbers() {
        let parsed =
            ended(r#"{"auction_id": 7, "winning_bidder_id": "b-42", "winning_price": 120.5}"#);
        assert_eq!(
            parsed,
            Ok(AuctionEnded {
                auction_id: "7".into(),
                winning_bidder_id: "b-42".into(),
                winning_price: 120.5
            })
        );
        let parsed = ended(r#"{"auction_id": "a-1", "winning_bidder_id": 42, "winning_price": 3}"#);
        assert_eq!(parsed.map(|e| e.winning_bidder_id), Ok("42".to_owned()));
    }

    /// Not JSON, a missing field, a wrong type or an empty id: reject.
    #[test]
    fn bad_data_is_rejected() {
        for data in [
            "not json",
            r#"{"auction_id": 7, "winning_price": 1}"#,
            r#"{"auction_id": 7, "winning_bidder_id": 1}"#,
            r#"{"auction_id": true, "winning_bidder_id": 1, "winning_price": 1}"#,
            r#"{"auction_id": null, "winning_bidder_id": 1, "winning_price": 1}"#,
            r#"{"auction_id": 7, "winning_bidder_id": 1, "winning_price": "a lot"}"#,
            r#"{"auction_id": " ", "winning_bidder_id": 1, "winning_price": 1}"#,
            r#"{"auction_id": 7, "winning_bidder_id": "", "winning_price": 1}"#,
            "[]",
        ] {
            let err = ended(data).expect_err(data);
            assert!(err.is_reject(), "{data}: {err:?}");
        }
    }

    /// A price in (0, max] succeeds; anything else fails with a reason.
    #[test]
    fn decide_checks_the_price() {
        let auction = |price: f64| AuctionEnded {
            auction_id: "7".into(),
            winning_bidder_id: "42".into(),
            winning_price: price,
        };
        let ok = decide(&auction(100.0), 100.0);
        assert_eq!(
            ok,
            PaymentProcessed {
                auction_id: "7".into(),
                bidder_id: "42".into(),
                amount: 100.0,
                status: Status::Succeeded,
                reason: None
            }
        );

        for price in [0.0, -5.0] {
            let failed = decide(&auction(price), 100.0);
            assert_eq!(failed.status, Status::Failed);
            assert!(
                failed
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("not positive")),
                "{failed:?}"
            );
        }
        let too_much = decide(&auction(100.01), 100.0);
        assert_eq!(too_much.status, Status::Failed);
        assert_eq!(
            too_much.reason.as_deref(),
            Some("winning price 100.01 exceeds the maximum amount 100")
        );
    }

    /// The published JSON has `status` in lowercase and `reason` only on failure.
    #[test]
    fn payment_json_shape() {
        let auction = AuctionEnded {
            auction_id: "7".into(),
            winning_bidder_id: "42".into(),
            winning_price: 5.0,
        };
        let ok = serde_json::to_value(decide(&auction, 10.0)).expect("serializes");
        assert_eq!(
            ok,
            serde_json::json!({"auction_id": "7", "bidder_id": "42", "amount": 5.0, "status": "succeeded"})
        );
        let failed = serde_json::to_value(decide(&auction, 1.0)).expect("serializes");
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            failed["reason"],
            "winning price 5 exceeds the maximum amount 1"
        );
    }

    /// `max_amount` defaults to 10000 and must be a positive number when set.
    #[test]
    fn max_amount_config() {
        assert_eq!(max_amount(None), Ok(DEFAULT_MAX_AMOUNT));
        assert_eq!(max_amount(Some(" 250.5 ")), Ok(250.5));
        for bad in ["", "lots", "-1", "0", "NaN", "inf"] {
            assert!(
                max_amount(Some(bad)).is_err_and(|err| err.is_retry()),
                "{bad}"
            );
        }
    }

    /// Each auction has its own idempotency key.
    #[test]
    fn charged_key_names_the_auction() {
        assert_eq!(charged_key("7"), "charged:7");
    }
}
