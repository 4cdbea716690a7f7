//! Compile tiers. A Python or JavaScript component carries its interpreter (10–20 MB of
//! Wasm), and Cranelift takes seconds to optimise it: longer than a plugin author wants to
//! wait after each save, and longer than a retry window. Such a component, when it is not in
//! the compile cache, is first compiled by Winch, wasmtime's baseline compiler (a single pass,
//! several times faster to compile; slower code), serves at once, and is recompiled by
//! Cranelift on a thread of its own; the optimised version then replaces it through the
//! plugin's deployment, as a hot swap would, and goes into the compile cache, so that the
//! next start loads it in milliseconds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::PluginVersion;

/// Components smaller than this compile with full optimisation at once: a Rust or C plugin
/// of a few hundred kilobytes takes tens of milliseconds.
pub const QUICK_TIER_MIN_BYTES: usize = 1024 * 1024;

/// How a version's code was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompileTier {
    /// Winch: compiled fast, runs slower; replaced by the optimised code once it is ready.
    Quick,
    /// Cranelift with full optimisation.
    Optimized,
}

impl CompileTier {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CompileTier::Quick => "quick",
            CompileTier::Optimized => "optimized",
        }
    }
}

/// How components that are not in the compile cache are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompilePolicy {
    /// Always with full optimisation before the first event.
    Optimized,
    /// Components of at least `quick_min_bytes` first compile quickly and are optimised in
    /// the background; smaller ones compile optimised at once.
    Tiered {
        /// The smallest component that starts on the quick tier.
        quick_min_bytes: usize,
    },
}

impl Default for CompilePolicy {
    fn default() -> Self {
        CompilePolicy::Tiered {
            quick_min_bytes: QUICK_TIER_MIN_BYTES,
        }
    }
}

impl CompilePolicy {
    /// The tier a component of `len` bytes starts on, when the cache does not hold it.
    pub(super) fn first_tier(self, len: usize) -> CompileTier {
        match self {
            CompilePolicy::Tiered { quick_min_bytes } if len >= quick_min_bytes => {
                CompileTier::Quick
            }
            _ => CompileTier::Optimized,
        }
    }
}

/// The optimised recompile a quick-tier version waits for: its component bytes, kept until
/// [`PluginEngine::optimize`](super::PluginEngine::optimize) has compiled them again.
#[derive(Debug)]
pub struct PendingOptimization {
    /// The version serving meanwhile.
    pub(super) quick: Arc<PluginVersion>,
    /// Its component.
    pub(super) bytes: Arc<[u8]>,
}

impl PendingOptimization {
    /// The quick-tier version to replace.
    pub fn quick(&self) -> &Arc<PluginVersion> {
        &self.quick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_large_components_start_quick() {
        let tiered = CompilePolicy::default();
        assert_eq!(tiered.first_tier(200 * 1024), CompileTier::Optimized);
        assert_eq!(tiered.first_tier(QUICK_TIER_MIN_BYTES), CompileTier::Quick);
        assert_eq!(
            CompilePolicy::Optimized.first_tier(20 * 1024 * 1024),
            CompileTier::Optimized
        );
    }
}
