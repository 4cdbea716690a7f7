//! `evhost rollout` and `evhost rollback` against a host started with `evhost run`, as an
//! operator would use them.

use std::process::Output;
use std::time::Duration;

use super::redis_server::RedisServer;
use super::{
    RunningHost, evhost, evhost_at, examples_in, json_lines, plugin_statuses, stdout_of, wait_until,
};

fn admin_command(admin: &str, args: &[&str]) -> Output {
    evhost()
        .args(args)
        .args(["--admin", admin])
        .output()
        .expect("run evhost")
}

fn stderr_of(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_operator_starts_follows_promotes_and_rolls_back_a_rollout() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = examples_in(dir.path());
    // The candidate: the same payment component with a setting of its own.
    let candidate = dir.path().join("payment-next.wasm");
    std::fs::copy(plugins.join("payment.wasm"), &candidate).expect("copy");
    std::fs::write(
        dir.path().join("payment-next.toml"),
        "[limits]\ntimeout_ms = 4000\n",
    )
    .expect("sidecar");
    let host = RunningHost::start_watching(&server.url(), &plugins);
    let admin = host.admin.as_str();

    let started = admin_command(
        admin,
        &[
            "rollout",
            "start",
            "payment",
            "--file",
            candidate.to_str().expect("path"),
            "--mode",
            "canary",
            "--share",
            "50",
        ],
    );
    let said = stdout_of(&started);
    assert!(
        said.contains("rollout of payment started")
            && said.contains("canary candidate for 50% of the keys"),
        "{said}"
    );
    let sidecar =
        std::fs::read_to_string(plugins.join("payment.next.toml")).expect("sidecar written");
    assert!(
        sidecar.contains("timeout_ms = 4000") && sidecar.contains("mode = \"canary\""),
        "{sidecar}"
    );

    // Traffic for both versions.
    for n in 0..20 {
        let data = format!(
            "{{\"auction_id\":\"a{n}\",\"winning_bidder_id\":\"b{n}\",\"winning_price\":{}}}",
            100 + n
        );
        stdout_of(&evhost_at(
            &server.url(),
            &["publish", "AuctionEnded", &data],
        ));
    }
    wait_until("calls of both versions", Duration::from_secs(30), || {
        let lines = json_lines(&stdout_of(&admin_command(
            admin,
            &["rollout", "status", "--json"],
        )));
        lines.first().is_some_and(|line| {
            line["rollout"]["live"]["calls"].as_u64() > Some(0)
                && line["rollout"]["candidate"]["calls"].as_u64() > Some(0)
        })
    });
    let status = json_lines(&stdout_of(&admin_command(
        admin,
        &["rollout", "status", "--json"],
    )));
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["plugin"], "payment");
    assert_eq!(status[0]["rollout"]["mode"], "canary");
    let table = stdout_of(&admin_command(admin, &["rollout", "status", "payment"]));
    assert!(
        table.contains("canary 50%") && table.contains("payment"),
        "{table}"
    );
    let listed = stdout_of(&admin_command(admin, &["plugins"]));
    assert!(listed.contains("candidate"), "{listed}");

    let promoted = stdout_of(&admin_command(admin, &["rollout", "promote", "payment"]));
    assert!(promoted.contains("payment: promoted"), "{promoted}");
    let statuses = plugin_statuses(admin);
    let live = statuses
        .iter()
        .find(|status| status["name"] == "payment" && status["candidate"] == false)
        .expect("payment");
    assert!(live["rollout"].is_null());
    assert_eq!(live["previous_versions"].as_array().map(Vec::len), Some(1));

    let abort = admin_command(admin, &["rollout", "abort", "payment"]);
    assert!(stderr_of(&abort).contains("has no rollout under way"));

    let rolled_back = admin_command(admin, &["rollback", "payment", "--json"]);
    let answer: serde_json::Value =
        serde_json::from_str(&stdout_of(&rolled_back)).expect("JSON answer");
    assert_eq!(answer["transition"]["kind"], "rolled-back");
    assert!(answer["took_ms"].as_f64().is_some(), "{answer}");
    let again = admin_command(admin, &["rollback", "payment"]);
    assert!(stderr_of(&again).contains("no earlier version"));
    let unknown = admin_command(admin, &["rollback", "nobody"]);
    let unknown = stderr_of(&unknown);
    assert!(
        unknown.contains("nobody") && unknown.contains("runs in this host"),
        "{unknown}"
    );

    // The component sent to the host instead of written beside its file.
    let uploaded = admin_command(
        admin,
        &[
            "rollout",
            "start",
            "payment",
            "--file",
            candidate.to_str().expect("path"),
            "--upload",
            "--mode",
            "canary",
            "--share",
            "25",
            "--promote",
            "auto",
            "--window-ms",
            "60000",
        ],
    );
    let said = stdout_of(&uploaded);
    assert!(said.contains("payment: rollout-started"), "{said}");
    let status = json_lines(&stdout_of(&admin_command(
        admin,
        &["rollout", "status", "--json"],
    )));
    assert_eq!(status[0]["rollout"]["candidate_origin"], "upload:payment");
    let plan = &status[0]["rollout"]["plan"];
    assert_eq!(status[0]["rollout"]["mode"], "canary");
    assert_eq!(
        (plan["share_pct"].as_f64(), plan["promote"].as_str()),
        (Some(25.0), Some("auto"))
    );
    assert_eq!(plan["window"].as_u64(), Some(60_000));
    let aborted = stdout_of(&admin_command(admin, &["rollout", "abort", "payment"]));
    assert!(aborted.contains("payment: aborted"), "{aborted}");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").expect("garbage");
    let refused = admin_command(
        admin,
        &[
            "rollout",
            "start",
            "payment",
            "--file",
            garbage.to_str().expect("path"),
            "--upload",
        ],
    );
    let refused = stderr_of(&refused);
    assert!(refused.contains("the candidate does not load"), "{refused}");
    drop(host);
}
