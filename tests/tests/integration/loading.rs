//! Loading that nothing holds up: plugin files load each on their own, a `describe()` that
//! hangs fails alone after its deadline, the admin endpoint answers while plugins load, and a
//! file stuck loading never delays another plugin's hot swap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use evhost::admin::{self, AdminToken};
use evhost::admin_client::AdminClient;
use evhost::host::{FileState, Host, PluginStatus};
use evhost::plugin::{PluginSettings, sha256_hex};
use evhost_tests::guests::{PROBE, PROBE_V2};
use evhost_tests::{RedisServer, fast_options, journal, publish, redis_broker, wait_for};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `<name>.toml` with the config `extra` (and the name) and `<name>.wasm`.
fn plugin_file(dir: &Path, name: &str, bytes: &[u8], extra: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("[config]\nname = \"{name}\"\n{extra}"),
    )
    .expect("write sidecar");
    std::fs::write(dir.join(format!("{name}.wasm")), bytes).expect("write plugin");
}

fn status_of(host: &Host, dir: &Path, name: &str) -> Option<PluginStatus> {
    let file = dir.join(format!("{name}.wasm")).display().to_string();
    host.plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
}

const HANGING: &str = "hang_in_describe = \"true\"\n";
const CALM: &str = "subscriptions = \"ProbeCalm\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_describe_fails_alone_and_holds_up_neither_the_admin_endpoint_nor_a_swap() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let dir = tempfile::tempdir().expect("plugin dir");
    plugin_file(dir.path(), "hanger", PROBE, HANGING);
    plugin_file(dir.path(), "calm", PROBE, CALM);
    let mut options = fast_options("loading-host");
    options.cache_dir = Some(cache.path().to_path_buf());
    let host = Host::new(broker.clone(), options).expect("start the Wasm engine");
    // Both components compiled once, so that what follows waits on describe(), not Cranelift.
    for bytes in [PROBE, PROBE_V2] {
        host.engine()
            .load_bytes("warm-up".into(), bytes.to_vec(), PluginSettings::default())
            .await
            .expect("warm the compile cache");
    }
    let cancel = CancellationToken::new();
    let bound = admin::serve(
        host.clone(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        AdminToken::default(),
        cancel.clone(),
    )
    .await
    .expect("bind the admin endpoint");
    let admin = AdminClient::new(&format!("http://{bound}"), None);

    let loading = {
        let host = host.clone();
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { host.add_dir(&dir).await })
    };
    // While the hanger hangs (its describe deadline is 2 s), the endpoint is up and says so.
    wait_for(
        "/readyz to name the file still loading",
        TIMEOUT,
        || async {
            admin
                .get_text("/readyz")
                .await
                .is_err_and(|err| err.to_string().contains("hanger.wasm"))
        },
    )
    .await;
    assert!(!loading.is_finished(), "the hanger is still loading");
    assert_eq!(admin.get_text("/healthz").await.expect("healthz"), "ok\n");
    let loaded = loading.await.expect("join").expect("read the directory");
    assert_eq!(loaded, 1, "calm loaded, the hanger did not");
    let hanger = status_of(&host, dir.path(), "hanger").expect("hanger status");
    assert_eq!(hanger.state, FileState::Failed);
    let error = hanger.error.unwrap_or_default();
    assert!(
        error.contains("describe()") && error.contains("2s"),
        "{error}"
    );

    let _watcher = host.watch_dir(dir.path()).expect("watch");
    let running = {
        let host = host.clone();
        tokio::spawn(async move { host.run(std::future::pending()).await })
    };
    assert!(host.wait_ready(Duration::from_secs(10)).await, "ready");
    // A second hanging file is loading while calm is swapped to version 2: the swap does not
    // wait for it.
    plugin_file(dir.path(), "hanger2", PROBE, HANGING);
    wait_for("hanger2 to be loading", TIMEOUT, || async {
        status_of(&host, dir.path(), "hanger2").is_some_and(|s| s.state == FileState::Loading)
    })
    .await;
    std::fs::write(dir.path().join("calm.wasm"), PROBE_V2).expect("swap calm");
    let v2 = sha256_hex(PROBE_V2);
    wait_for("calm to run version 2", TIMEOUT, || async {
        status_of(&host, dir.path(), "calm").is_some_and(|s| s.sha256.as_deref() == Some(&v2))
    })
    .await;
    assert_eq!(
        status_of(&host, dir.path(), "hanger2").map(|s| s.state),
        Some(FileState::Loading),
        "calm was swapped while hanger2 was still in describe()"
    );
    let event = publish(broker.as_ref(), "ProbeCalm", json!({})).await;
    wait_for("calm to handle an event", TIMEOUT, || async {
        journal(broker.as_ref(), "calm")
            .await
            .iter()
            .any(|record| record.get("event_id") == Some(&event.id))
    })
    .await;
    host.stop();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("host stops")
        .expect("host task");
    cancel.cancel();
}
