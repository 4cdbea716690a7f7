//! Logging through the host (`wasi:logging`).
//!
//! Every message carries a *context* string that helps group messages; it is empty unless the
//! plugin sets one with [`set_context`].
//!
//! ```
//! use evhost_sdk::log;
//!
//! fn charged(auction_id: &str, amount: f64) {
//!     log::set_context("payment");
//!     log::info(format!("charged {amount} for auction {auction_id}"));
//! }
//! ```

use std::cell::RefCell;

use crate::bindings::wasi::logging::logging;
pub use crate::bindings::wasi::logging::logging::Level;

thread_local! {
    /// The context sent with every message.
    static CONTEXT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Sets the context string sent with every following message.
pub fn set_context(context: impl Into<String>) {
    CONTEXT.with(|cell| *cell.borrow_mut() = context.into());
}

/// Logs `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    CONTEXT.with(|cell| logging::log(level, &cell.borrow(), message.as_ref()));
}

/// Logs at trace level: the flow of control, values of variables.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Logs at debug level: of interest to someone debugging the plugin.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Logs at info level: of interest to someone monitoring the plugin.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Logs at warn level: a hazardous situation.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Logs at error level: a serious error.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
