//! Plugins in C: the example `plugins/invoice` and a project made by `evhost new --lang c`,
//! each built by its own `build.sh` (clang, wasi-libc, `evhost bindgen c`, `evhost
//! componentize`) and run by `evhost run` on a real redis-server.
//!
//! A missing C toolchain fails the tests with the packages to install; they never skip.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{KEYS, RedisServer, RunningHost, evhost, stdout_of, wait_until, xrange_len};

/// Runs `<project>/build.sh OUTPUT` with this build's `evhost` binary.
fn build_c_project(project: &Path, output: &Path) {
    let script = project.join("build.sh");
    let result = Command::new("bash")
        .arg(&script)
        .arg(output)
        .env("EVHOST", env!("CARGO_BIN_EXE_evhost"))
        .output()
        .unwrap_or_else(|err| panic!("cannot run bash {}: {err}", script.display()));
    assert!(
        result.status.success() && output.is_file(),
        "building the C plugin {} failed ({}); it needs clang-19, lld-19, wasi-libc and \
         libclang-rt-19-dev-wasm32 (Debian 12).\nstdout:\n{}\nstderr:\n{}",
        project.display(),
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Stream entries as XRANGE returns them: id and field/value pairs.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The entries of `stream`, as the `data` field of each (oldest first).
fn data_of(server: &RedisServer, stream: &str) -> Vec<serde_json::Value> {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let entries: Entries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let (_, data) = fields
                .into_iter()
                .find(|(name, _)| name == "data")
                .expect("a data field");
            serde_json::from_slice(&data).expect("JSON data")
        })
        .collect()
}

/// The value of `key` in `plugin`'s key-value store.
fn kv_get(server: &RedisServer, plugin: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    redis::cmd("GET")
        .arg(KEYS.kv_key(plugin, key))
        .query(&mut conn)
        .expect("GET")
}

/// Appends a `PaymentProcessed` event with exactly these data bytes (no JSON check on the way,
/// unlike `evhost publish`).
fn publish(server: &RedisServer, id: &str, data: &str) {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let _: String = redis::cmd("XADD")
        .arg(KEYS.event_stream("PaymentProcessed"))
        .arg("*")
        .arg(&[("id", id), ("source", "c-plugin-test"), ("data", data)])
        .query(&mut conn)
        .expect("XADD");
}

/// Succeeded payments get consecutive invoice numbers with the configured prefix; a repeated
/// payment and a failed one get none; data that is not a usable JSON object is dead-lettered.
#[test]
fn c_invoice_plugin_numbers_invoices_and_rejects_bad_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let component = plugins.join("invoice.wasm");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/invoice");
    build_c_project(&example, &component);
    std::fs::write(
        plugins.join("invoice.toml"),
        "[config]\nprefix = \"ACME-\"\n",
    )
    .expect("write the sidecar");

    let check = evhost()
        .args(["plugins", "check", "--json"])
        .arg(&component)
        .output()
        .expect("run evhost plugins check");
    let checked: serde_json::Value =
        serde_json::from_str(&stdout_of(&check)).expect("JSON of plugins check");
    assert_eq!(checked["name"], "invoice", "{checked}");
    assert_eq!(checked["subscriptions"][0], "PaymentProcessed", "{checked}");

    let server = RedisServer::start();
    let _host = RunningHost::start(&server, &plugins);
    let events = [
        r#"{"auction_id":"a1","bidder_id":"b\"1","amount":120.5,"status":"succeeded"}"#,
        r#"{"auction_id":"a2","bidder_id":"b2","amount":0,"status":"failed","reason":"x"}"#,
        r#"{"auction_id":"a1","bidder_id":"b1","amount":120.5,"status":"succeeded"}"#,
        r#"{"auction_id":"a3","bidder_id":"b3","amount":12}"#,
        r#"{"auction_id":"a4","bidder_id":"b4","amount":7,"status":"succeeded""#,
        r#" {"auction_id":"\u00e9t\u00e9","bidder_id":"b5","amount":3e2,"status":"succeeded","x":[{"y":[1,null]}]} "#,
        r#"{"auction_id":"a6","bidder_id":"b6","amount":"6","status":"succeeded"}"#,
    ];
    for (index, data) in events.iter().enumerate() {
        publish(&server, &format!("e{index}"), data);
    }

    wait_until("three dead letters", Duration::from_secs(30), || {
        xrange_len(&server, &KEYS.dead_letters("invoice")) == 3
    });
    wait_until("two invoices", Duration::from_secs(30), || {
        xrange_len(&server, &KEYS.event_stream("InvoiceIssued")) >= 2
    });
    let invoices = data_of(&server, &KEYS.event_stream("InvoiceIssued"));
    assert_eq!(
        invoices,
        [
            serde_json::json!({"invoice": "ACME-000001", "auction_id": "a1", "bidder_id": "b\"1", "amount": 120.5}),
            serde_json::json!({"invoice": "ACME-000002", "auction_id": "été", "bidder_id": "b5", "amount": 3e2}),
        ]
    );
    assert_eq!(
        kv_get(&server, "invoice", "invoice-seq").as_deref(),
        Some("2")
    );
    assert_eq!(
        kv_get(&server, "invoice", "invoice:a1").as_deref(),
        Some("ACME-000001")
    );
    assert_eq!(
        kv_get(&server, "invoice", "invoice:a2"),
        None,
        "no invoice for a failed payment"
    );

    let letters = evhost()
        .args([
            "dlq",
            "list",
            "--plugin",
            "invoice",
            "--json",
            "--redis",
            &server.url(),
        ])
        .output()
        .expect("run evhost dlq list");
    let letters: serde_json::Value =
        serde_json::from_str(&stdout_of(&letters)).expect("JSON dead letters");
    let mut errors: Vec<&str> = letters
        .as_array()
        .expect("array")
        .iter()
        .map(|letter| letter["error"].as_str().expect("error text"))
        .collect();
    errors.sort_unstable();
    assert_eq!(
        errors,
        [
            "data is not a JSON object",
            "field `amount` must be a number",
            "field `status` is missing",
        ]
    );
}

/// `evhost new --lang c` makes a project that builds with its `build.sh`, loads into `evhost
/// run` unchanged and answers its test event.
#[test]
fn c_scaffold_builds_loads_and_handles_its_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("hello-c");
    let created = evhost()
        .args(["new", "hello-c", "--lang", "c", "--dir"])
        .arg(&project)
        .output()
        .expect("run evhost new");
    stdout_of(&created);
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    build_c_project(&project, &plugins.join("hello-c.wasm"));

    let server = RedisServer::start();
    let _host = RunningHost::start(&server, &plugins);
    let event = std::fs::read_to_string(project.join("event.json")).expect("event.json");
    let published = evhost()
        .args(["publish", "Ping", event.trim(), "--redis", &server.url()])
        .output()
        .expect("run evhost publish");
    stdout_of(&published);
    wait_until("the Pong", Duration::from_secs(30), || {
        xrange_len(&server, &KEYS.event_stream("Pong")) == 1
    });
    let sent: serde_json::Value = serde_json::from_str(&event).expect("event.json is JSON");
    assert_eq!(
        data_of(&server, &KEYS.event_stream("Pong")),
        [serde_json::json!({"from": "hello-c", "message": sent["message"], "count": 1})]
    );
    assert_eq!(kv_get(&server, "hello-c", "pings").as_deref(), Some("1"));
}

/// `evhost componentize` on a file that is not a core module of the world exits 1 with the
/// reason and leaves no output behind; `evhost bindgen` without a language is a usage error.
#[test]
fn componentize_and_bindgen_report_bad_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a module").expect("write junk");
    let out = dir.path().join("out.wasm");
    let result = evhost()
        .arg("componentize")
        .arg(&junk)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run evhost componentize");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot componentize"), "{stderr}");
    assert!(!out.exists());

    let result = evhost()
        .arg("bindgen")
        .output()
        .expect("run evhost bindgen");
    assert_eq!(result.status.code(), Some(2));
}

/// The C example's JSON reader, compiled natively with AddressSanitizer and UBSan, passes its
/// known-document checks and reads 400,000 mutated documents without a memory error.
#[test]
fn c_json_reader_is_memory_safe_on_mutated_input() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/invoice");
    let work = tempfile::tempdir().expect("temp dir");
    let binary = work.path().join("json_test");
    let compiled = Command::new("cc")
        .args([
            "-std=c11",
            "-g",
            "-O1",
            "-Wall",
            "-Wextra",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ])
        .arg("-I")
        .arg(&dir)
        .arg(dir.join("test/json_test.c"))
        .arg(dir.join("json.c"))
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("cannot run cc (gcc or clang with AddressSanitizer, e.g. Debian's gcc)");
    assert!(compiled.status.success(), "cc failed: {compiled:?}");
    let run = Command::new(&binary).output().expect("run json_test");
    assert!(
        run.status.success(),
        "json_test failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("all checks passed"));
}
