//! The [`Plugin`] trait and the [`export_plugin!`](crate::export_plugin) macro.

use std::marker::PhantomData;

use crate::bindings::evhost::plugin::types;
use crate::bindings::exports::evhost::plugin::handler::Guest;
use crate::{Delivery, Event, PluginInfo, Result};

/// An evhost event handler. Implement it on a unit struct and export it with
/// [`export_plugin!`](crate::export_plugin).
///
/// The host keeps one instance of the plugin and calls [`handle`](Plugin::handle) for one
/// event at a time; state in `thread_local!`s survives between calls but is lost when the
/// instance is replaced (after a trap or a reload). Durable state belongs in [`kv`](crate::kv).
///
/// See the [crate documentation](crate) for a complete plugin.
pub trait Plugin {
    /// Name, version and subscriptions. Called once when the plugin is loaded.
    fn describe() -> PluginInfo;

    /// Handles one event.
    ///
    /// # Errors
    ///
    /// A *retry* error leaves the event pending so that it is delivered again; a *reject*
    /// error marks it as permanently failed. Either way, whatever the handler published or
    /// journaled is discarded.
    fn handle(event: Event, delivery: Delivery) -> Result<()>;
}

/// Adapts a [`Plugin`] to the trait that `wit-bindgen` generates for the `handler` export.
/// Used by [`export_plugin!`](crate::export_plugin); not meant to be named by plugins.
pub struct Export<P>(PhantomData<P>);

impl<P: Plugin> Guest for Export<P> {
    fn describe() -> types::PluginInfo {
        P::describe().into()
    }

    fn handle(
        event: types::Event,
        delivery: types::Delivery,
    ) -> std::result::Result<(), types::HandleError> {
        P::handle(Event::from(event), Delivery::from(delivery)).map_err(Into::into)
    }
}

/// Exports a type implementing [`Plugin`] as the component's `evhost:plugin/handler`.
///
/// Use it once per plugin crate, at the top level of `lib.rs`.
///
/// ```rust,standalone_crate
/// use evhost_sdk::prelude::*;
///
/// struct Echo;
///
/// impl Plugin for Echo {
///     fn describe() -> PluginInfo {
///         PluginInfo::new("echo", "1.0.0").subscribe("Ping")
///     }
///
///     fn handle(event: Event, _delivery: Delivery) -> Result<()> {
///         publish_raw("Pong", event.data(), event.content_type())?;
///         Ok(())
///     }
/// }
///
/// evhost_sdk::export_plugin!(Echo);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            type __EvhostPluginExport = $crate::__private::Export<$plugin>;
            $crate::bindings::export! { __EvhostPluginExport with_types_in $crate::bindings }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    struct Picky;

    impl Plugin for Picky {
        fn describe() -> PluginInfo {
            PluginInfo::new("picky", "0.1.0")
                .subscribe("A")
                .subscribe_all(["B*", "C"])
        }

        fn handle(event: Event, delivery: Delivery) -> Result<()> {
            match (event.event_type(), delivery.attempt()) {
                ("A", _) => Ok(()),
                ("B", 1) => {
                    Err(Error::retry("first attempt").after(std::time::Duration::from_secs(2)))
                }
                ("B", _) => Ok(()),
                _ => Err(Error::reject("unexpected type")),
            }
        }
    }

    /// The adapter hands over describe's info and maps handler errors to the WIT variant.
    #[test]
    fn adapter_maps_info_and_outcomes() {
        let info = <Export<Picky> as Guest>::describe();
        assert_eq!(info.name, "picky");
        assert_eq!(info.version, "0.1.0");
        assert_eq!(info.subscriptions, ["A", "B*", "C"]);

        let call = |event_type: &str, attempt: u32| {
            let event = Event::new("e", event_type, "{}").as_wit().clone();
            let delivery = Delivery::new(format!("events:{event_type}"), "1-0", attempt, "picky")
                .as_wit()
                .clone();
            <Export<Picky> as Guest>::handle(event, delivery)
        };
        assert!(call("A", 1).is_ok());
        assert!(call("B", 2).is_ok());
        match call("B", 1) {
            Err(types::HandleError::Retry(later)) => {
                assert_eq!(later.reason, "first attempt");
                assert_eq!(later.delay_ms, Some(2000));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(
            matches!(call("Z", 1), Err(types::HandleError::Reject(reason)) if reason == "unexpected type")
        );
    }
}
