//! `smesh-console audit` as a judge: runs the real binary on a topic and
//! hands back its exit code and JSON report (see README, "Audit").

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::nodes;

/// Runs `smesh-console audit` on `topic` with `extra` flags, with a
/// `--timeout` of 60 s and a `--connect-timeout` of 20 s unless `extra`
/// sets them.
pub async fn audit(kafka: &str, topic: &str, extra: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(nodes::binary("smesh-console"));
    command
        .args(["audit", "--kafka-brokers", kafka, "--topic", topic])
        .args(extra)
        .kill_on_drop(true);
    for (flag, value) in [("--timeout", "60s"), ("--connect-timeout", "20s")] {
        if !extra.contains(&flag) {
            command.args([flag, value]);
        }
    }
    tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("the audit ends within 90s")
        .expect("run smesh-console audit")
}

/// `audit --json`: the exit code and the document.
pub async fn audit_json(kafka: &str, topic: &str, extra: &[&str]) -> (i32, Value) {
    let mut flags = vec!["--json"];
    flags.extend_from_slice(extra);
    let output = audit(kafka, topic, &flags).await;
    let code = output.status.code().expect("exit code");
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "audit --json printed no JSON ({err}); exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, json)
}

/// One identity's row of a report, by client id (the first incarnation found).
pub fn identity<'a>(report: &'a Value, client: &str) -> &'a Value {
    report["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .find(|row| row["client"] == client)
        .unwrap_or_else(|| panic!("{client} in {report:#}"))
}
