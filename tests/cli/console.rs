//! The web console, driven by a real headless browser (Debian's `chromium`) against `evhost
//! run` on a real redis-server while the saga runs: the overview shows the saga's streams and
//! groups with their counts, the plugins with what they handled, and the hot-swap timeline. A
//! screenshot of the page is saved as a test artifact.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;
use super::{KEYS, RunningHost, evhost, examples_in, stdout_of, xrange_len};

const AUCTIONS: usize = 20;

/// Debian's Chromium, which `.ci/run` installs; a clear failure without it.
fn chromium() -> PathBuf {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {candidate}")])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
        if let Some(path) = found.filter(|path| !path.is_empty()) {
            return PathBuf::from(path);
        }
    }
    panic!(
        "the console tests need a headless Chromium: install Debian's `chromium` (sudo apt-get install chromium); .ci/run installs it"
    );
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`), letting the
/// page's scripts run for a few seconds of virtual time; returns stdout.
fn browse(url: &str, args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("browser profile dir");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1400,1100",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the screenshots go: kept after the test, under the target directory.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[test]
fn the_console_shows_the_sagas_streams_groups_plugins_and_timeline() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = examples_in(dir.path());
    let host = RunningHost::start(&server, &plugins);
    let events = dir.path().join("auctions.jsonl");
    let lines: Vec<String> = (0..AUCTIONS)
        .map(|n| {
            format!(r#"{{"auction_id":"a{n}","winning_bidder_id":"b{n}","winning_price":{n}}}"#)
        })
        .collect();
    std::fs::write(&events, lines.join("\n")).expect("events file");
    stdout_of(
        &evhost()
            .args(["publish", "AuctionEnded", "--file"])
            .arg(&events)
            .args(["--redis", &server.url()])
            .output()
            .expect("evhost publish"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while xrange_len(&server, &KEYS.event_stream("NotificationSent")) < AUCTIONS {
        assert!(Instant::now() < deadline, "the saga did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The page draws what the host reports once the groups have settled.
    let url = format!("{}/", host.admin);
    let mut dom = String::new();
    let settled = [
        r#"data-group="payment" data-of="events:AuctionEnded" data-pending="0" data-lag="0""#,
        r#"data-group="notification" data-of="events:PaymentProcessed" data-pending="0" data-lag="0""#,
        r#"data-group="audit" data-of="events:NotificationSent" data-pending="0" data-lag="0""#,
    ];
    for _ in 0..10 {
        dom = browse(&url, &["--dump-dom".to_string()]);
        if settled.iter().all(|row| dom.contains(row)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for row in settled {
        assert!(dom.contains(row), "{row} in:\n{dom}");
    }
    for stream in ["AuctionEnded", "PaymentProcessed", "NotificationSent"] {
        let row = format!(r#"data-stream="events:{stream}" data-length="{AUCTIONS}""#);
        assert!(dom.contains(&row), "{row} in:\n{dom}");
    }
    for (plugin, handled) in [
        ("payment", AUCTIONS),
        ("notification", AUCTIONS),
        ("audit", 3 * AUCTIONS),
    ] {
        let row =
            format!(r#"data-plugin="{plugin}" data-state="running" data-handled="{handled}""#);
        assert!(dom.contains(&row), "{row} in:\n{dom}");
    }
    for plugin in ["payment", "notification", "audit", "metrics"] {
        let row = format!(r#"data-transition="loaded" data-plugin="{plugin}""#);
        assert!(dom.contains(&row), "{row} in:\n{dom}");
    }
    assert!(dom.contains("updated "), "the page fetched the API: {dom}");

    let screenshot = artifacts().join("overview.png");
    let _ = std::fs::remove_file(&screenshot);
    browse(&url, &[format!("--screenshot={}", screenshot.display())]);
    let size = std::fs::metadata(&screenshot)
        .map(|meta| meta.len())
        .unwrap_or(0);
    assert!(size > 10_000, "a screenshot at {}", screenshot.display());
    eprintln!("console screenshot: {}", screenshot.display());
}
