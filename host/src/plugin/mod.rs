//! Plugins: the Wasm engine, loaded versions, instances and the host capabilities they import.

pub mod bindings;
pub mod budget;
pub mod capabilities;
pub mod compile_cache;
pub mod engine;
mod file_kind;
pub mod instance;
pub mod output;
pub mod overlay;
pub mod settings;
pub mod state;
pub mod subscription;
pub mod tier;

pub use budget::{CallBudget, CallLimits};
pub use engine::{LoadError, PluginEngine, sha256_hex};
pub use instance::{CallError, DeliveryInfo, Outcome, PluginInstance, PluginVersion};
pub use overlay::BatchOverlay;
pub use settings::PluginSettings;
pub use state::{CallEffects, Effects, HostServices, PendingPublish, PluginState};
pub use subscription::Subscription;
pub use tier::{CompilePolicy, CompileTier, PendingOptimization};
