//! The metrics of compiling plugin components: how each load got its code.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{Labels, Metrics, labels};

/// `evhost_component_compiles_total{result}`.
#[derive(Debug, Clone, Default)]
pub(super) struct CompileMetrics {
    compiles: Family<Labels, Counter>,
}

impl CompileMetrics {
    /// Registers the family in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CompileMetrics::default();
        registry.register(
            "component_compiles",
            "Plugin components given code, by result: cached (loaded from the compile cache), quick (compiled by Winch for a first load), optimized (compiled by Cranelift, at once or in the background)",
            metrics.compiles.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts a component given code: `cached`, `quick` or `optimized`.
    pub fn record_compile(&self, result: &str) {
        self.compiles
            .compiles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }
}
