//! The Wasm engine: compiles plugin components, links host capabilities, checks the world and
//! loads plugin versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Strategy};

use super::bindings::{Plugin, PluginPre};
use super::compile_cache::CompileCache;
use super::instance::{CallError, PluginVersion};
use super::settings::{PluginSettings, SettingsError};
use super::state::{HostServices, PluginState};
use super::subscription::{InvalidSubscription, Subscription};
use super::tier::{CompilePolicy, CompileTier, PendingOptimization};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a plugin file could not be loaded. The previous version (if any) keeps running.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The plugin file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The sidecar settings are invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The bytes are not a valid WebAssembly component.
    #[error("{origin} is not a valid WebAssembly component: {reason}")]
    NotAComponent {
        /// Where the bytes came from.
        origin: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component does not fit the `evhost:plugin/plugin` world.
    #[error("{origin} does not implement the evhost:plugin/plugin@0.1.0 world: {reason}")]
    WrongWorld {
        /// Where the bytes came from.
        origin: String,
        /// The first mismatch found.
        reason: String,
    },
    /// Instantiating the component failed (e.g. its start function trapped).
    #[error("{origin} could not be instantiated: {reason}")]
    Instantiate {
        /// Where the bytes came from.
        origin: String,
        /// The error.
        reason: String,
    },
    /// `describe()` trapped or timed out.
    #[error("describe() of {origin} failed: {source}")]
    Describe {
        /// Where the bytes came from.
        origin: String,
        /// The failure.
        source: CallError,
    },
    /// `describe()` returned unusable information.
    #[error("describe() of {origin} returned {reason}")]
    InvalidInfo {
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The engine could not be configured.
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),
}

/// Advances the engines' epochs every [`EPOCH_TICK`] on a thread of its own until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engines: Vec<Engine>) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("evhost-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|err| LoadError::Engine(format!("cannot start the epoch thread: {err}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The wasmtime engine of one compile tier (epoch interruption on), with the host
/// capabilities and WASI linked once for every plugin it compiles.
struct Compiler {
    engine: Engine,
    linker: Linker<PluginState>,
}

impl Compiler {
    fn new(tier: CompileTier) -> Result<Self, LoadError> {
        let engine_error = |err: wasmtime::Error| LoadError::Engine(format!("{err:#}"));
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if tier == CompileTier::Quick {
            config.strategy(Strategy::Winch);
        }
        let engine = Engine::new(&config).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        Plugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        Ok(Compiler { engine, linker })
    }

    /// Links `component` and checks it against the world.
    fn pre(
        &self,
        component: &Component,
        origin: &str,
    ) -> Result<PluginPre<PluginState>, LoadError> {
        let wrong_world = |err: wasmtime::Error| LoadError::WrongWorld {
            origin: origin.to_string(),
            reason: format!("{err:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(wrong_world)?;
        PluginPre::new(instance_pre).map_err(wrong_world)
    }
}

/// Compiles and loads plugins. One per host; cheap to share behind an `Arc`.
pub struct PluginEngine {
    /// Cranelift with full optimisation: what serves for good.
    optimized: Compiler,
    /// Winch, for a large component's first load ([`CompilePolicy`]); `None` where wasmtime
    /// has no Winch backend.
    quick: Option<Compiler>,
    /// Which components start on the quick tier.
    policy: CompilePolicy,
    /// Broker, metrics and activity feed handed to every instance.
    services: Arc<HostServices>,
    /// Where optimised components are cached, keyed by content and engine configuration.
    cache: Option<CompileCache>,
    /// Drives call deadlines.
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

/// Reads a plugin file and its sidecar `<name>.toml` (`None` when there is none).
///
/// # Errors
///
/// [`LoadError::Read`] naming the file that could not be read.
pub async fn read_plugin_files(path: &Path) -> Result<(Vec<u8>, Option<String>), LoadError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let sidecar = PluginSettings::sidecar_path(path);
    let text = match tokio::fs::read_to_string(&sidecar).await {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LoadError::Read {
                path: sidecar.display().to_string(),
                source,
            });
        }
    };
    Ok((bytes, text))
}

/// Hex SHA-256 of plugin bytes: the identity of a plugin version.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Plugin names become consumer group and key names: keep them plain.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("plugin name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "plugin name {name:?} may only contain ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl PluginEngine {
    /// Creates the engine, links the host capabilities and starts the epoch ticker; large
    /// components start on the quick tier ([`CompilePolicy::default`]).
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the configuration or linking fails.
    pub fn new(services: Arc<HostServices>, cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        Self::with_policy(services, cache_dir, CompilePolicy::default())
    }

    /// [`PluginEngine::new`] with the compile `policy` of components not in the cache.
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the configuration or linking fails.
    pub fn with_policy(
        services: Arc<HostServices>,
        cache_dir: Option<PathBuf>,
        policy: CompilePolicy,
    ) -> Result<Self, LoadError> {
        let optimized = Compiler::new(CompileTier::Optimized)?;
        let quick = match Compiler::new(CompileTier::Quick) {
            Ok(quick) => Some(quick),
            Err(err) => {
                tracing::debug!(error = %err, "no quick compile tier: every component compiles optimised");
                None
            }
        };
        let mut engines = vec![optimized.engine.clone()];
        engines.extend(quick.as_ref().map(|quick| quick.engine.clone()));
        let ticker = EpochTicker::start(engines)?;
        let cache = cache_dir.map(|dir| CompileCache::new(dir, &optimized.engine));
        Ok(PluginEngine {
            optimized,
            quick,
            policy,
            services,
            cache,
            _ticker: ticker,
        })
    }

    /// The compile cache, if the engine has one.
    pub fn compile_cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// The services shared with every instance.
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// Loads the plugin file at `path` with its sidecar settings.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the file and the exact reason.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<PluginVersion>, LoadError> {
        let (bytes, sidecar) = read_plugin_files(path).await?;
        let settings = match sidecar {
            Some(text) => PluginSettings::parse(&text, &PluginSettings::sidecar_path(path))?,
            None => PluginSettings::default(),
        };
        self.load_bytes(path.display().to_string(), bytes, settings)
            .await
    }

    /// Compiles `bytes` (off the async runtime) by the engine's policy, type-checks them
    /// against the world and calls `describe()`. A version on the quick tier stays on it.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming `origin` and the exact reason.
    pub async fn load_bytes(
        &self,
        origin: String,
        bytes: Vec<u8>,
        settings: PluginSettings,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        let (version, _) = self.load(origin, bytes, settings, self.policy).await?;
        Ok(version)
    }

    /// [`PluginEngine::load_bytes`] with full optimisation whatever the size: for a rollout's
    /// candidate, whose handler times are judged against the live version's.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming `origin` and the exact reason.
    pub async fn load_optimized(
        &self,
        origin: String,
        bytes: Vec<u8>,
        settings: PluginSettings,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        let (version, _) = self
            .load(origin, bytes, settings, CompilePolicy::Optimized)
            .await?;
        Ok(version)
    }

    /// [`PluginEngine::load_bytes`], and for a version on the quick tier what
    /// [`PluginEngine::optimize`] needs to replace it.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming `origin` and the exact reason.
    pub async fn load_tiered(
        &self,
        origin: String,
        bytes: Vec<u8>,
        settings: PluginSettings,
    ) -> Result<(Arc<PluginVersion>, Option<PendingOptimization>), LoadError> {
        self.load(origin, bytes, settings, self.policy).await
    }

    /// Compiles a quick-tier version's component again with full optimisation, on a thread
    /// of its own (stopping the host does not wait for it), and caches it: the returned
    /// version is the same plugin, with the same settings, ready to replace it.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the version's origin; the quick version goes on serving.
    pub async fn optimize(
        &self,
        pending: PendingOptimization,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        let PendingOptimization { quick, bytes } = pending;
        let engine = self.optimized.engine.clone();
        let cache = self.cache.clone();
        let key = quick.sha256.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("evhost-optimize".into())
            .spawn(move || {
                let _ = sender.send(compile_optimized(&engine, cache.as_ref(), &key, &bytes));
            })
            .map_err(|err| LoadError::Engine(format!("cannot start a compile thread: {err}")))?;
        let component = receiver
            .await
            .map_err(|_| LoadError::Engine("the compile thread ended without an answer".into()))?
            .map_err(|err| LoadError::NotAComponent {
                origin: quick.origin.clone(),
                reason: format!("{err:#}"),
            })?;
        self.services
            .metrics
            .record_compile(CompileTier::Optimized.as_str());
        let pre = self.optimized.pre(&component, &quick.origin)?;
        Ok(Arc::new(
            quick.recompiled(pre, self.optimized.engine.clone()),
        ))
    }

    /// Whether the compile cache holds the optimised code of the component `sha256`.
    fn cached(&self, sha256: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains(sha256))
    }

    async fn load(
        &self,
        origin: String,
        bytes: Vec<u8>,
        settings: PluginSettings,
        policy: CompilePolicy,
    ) -> Result<(Arc<PluginVersion>, Option<PendingOptimization>), LoadError> {
        if let Some(reason) = super::file_kind::not_a_component(&bytes) {
            return Err(LoadError::NotAComponent { origin, reason });
        }
        let sha256 = sha256_hex(&bytes);
        let bytes: Arc<[u8]> = bytes.into();
        let cached = self.cached(&sha256);
        let quick = match &self.quick {
            Some(quick) if !cached && policy.first_tier(bytes.len()) == CompileTier::Quick => {
                Some(quick)
            }
            _ => None,
        };
        let (compiler, tier) = match quick {
            Some(quick) => (quick, CompileTier::Quick),
            None => (&self.optimized, CompileTier::Optimized),
        };
        let engine = compiler.engine.clone();
        let cache = self.cache.clone();
        let compile_origin = origin.clone();
        let key = sha256.clone();
        let source = bytes.clone();
        let compiled = tokio::task::spawn_blocking(move || match tier {
            CompileTier::Quick => Component::new(&engine, &source),
            CompileTier::Optimized => compile_optimized(&engine, cache.as_ref(), &key, &source),
        })
        .await
        .map_err(|err| LoadError::Engine(format!("compile task failed: {err}")))?;
        let component = match compiled {
            Ok(component) => component,
            // Winch lacks a few instructions (some SIMD): such a component compiles optimised.
            Err(err) if tier == CompileTier::Quick => {
                tracing::debug!(origin = %origin, error = %format!("{err:#}"), "the quick tier cannot compile this component; compiling it optimised");
                return Box::pin(self.load(
                    origin,
                    bytes.to_vec(),
                    settings,
                    CompilePolicy::Optimized,
                ))
                .await;
            }
            Err(err) => {
                return Err(LoadError::NotAComponent {
                    origin: compile_origin,
                    reason: format!("{err:#}"),
                });
            }
        };
        self.services
            .metrics
            .record_compile(if cached && tier == CompileTier::Optimized {
                "cached"
            } else {
                tier.as_str()
            });
        let pre = compiler.pre(&component, &origin)?;
        let describe_timeout = settings.describe_timeout;
        let mut version = PluginVersion::new(
            pre,
            compiler.engine.clone(),
            self.services.clone(),
            origin.clone(),
            sha256,
            settings,
            tier,
        );
        let mut instance = version
            .instantiate()
            .await
            .map_err(|err| LoadError::Instantiate {
                origin: origin.clone(),
                reason: format!("{err:#}"),
            })?;
        let info = instance
            .describe(describe_timeout)
            .await
            .map_err(|source| LoadError::Describe {
                origin: origin.clone(),
                source,
            })?;
        let invalid = |reason: String| LoadError::InvalidInfo {
            origin: origin.clone(),
            reason,
        };
        validate_name(&info.name).map_err(&invalid)?;
        if info.subscriptions.is_empty() {
            return Err(invalid("no subscriptions".into()));
        }
        let subscriptions = info
            .subscriptions
            .iter()
            .map(|text| Subscription::parse(text))
            .collect::<Result<Vec<_>, InvalidSubscription>>()
            .map_err(|err| invalid(err.to_string()))?;
        version.set_info(info.name, info.version, subscriptions);
        let version = Arc::new(version);
        let pending = (tier == CompileTier::Quick).then(|| PendingOptimization {
            quick: version.clone(),
            bytes,
        });
        Ok((version, pending))
    }
}

/// Compiles with full optimisation, through the cache when there is one.
fn compile_optimized(
    engine: &Engine,
    cache: Option<&CompileCache>,
    sha256: &str,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    match cache {
        Some(cache) => cache.load_or_compile(engine, sha256, bytes),
        None => Component::new(engine, bytes),
    }
}
