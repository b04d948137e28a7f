//! `smesh-console check`: a scripted health check with the monitoring-plugin
//! convention: exit 0 OK, 1 WARNING (a threshold crossed), 2 CRITICAL (a
//! peer or Kafka down), 3 UNKNOWN (a master cannot be reached); a one-line
//! summary on stdout, or a JSON document with `--json`.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use smesh_core::cli::parse_duration;
use smesh_proto::admin::{HealthCheckReport, Status};

use crate::format;
use crate::remote::{self, AdminDialer, RemoteError};
use crate::state::{PeerState, PeerTier};
use crate::status::MasterSelection;

/// Flags of `smesh-console check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Which masters to ask (`--master`, `--masters-file`).
    #[command(flatten)]
    pub masters: MasterSelection,
    /// WARNING when a peer's round trip is longer (e.g. 50ms).
    #[arg(long, value_parser = parse_duration)]
    pub max_rtt: Option<Duration>,
    /// WARNING when a client holds more spooled events than this.
    #[arg(long)]
    pub max_backlog: Option<u64>,
    /// Check only this sidecar or client.
    #[arg(long)]
    pub peer: Option<String>,
    /// Print a JSON document instead of one line.
    #[arg(long)]
    pub json: bool,
    /// How long each probe (and each master) may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// WARNING when a master's, sidecar's or connected client's certificate
    /// expires within this many days (CRITICAL once expired).
    #[arg(long, default_value_t = 14)]
    pub cert_warn_days: u32,
}

/// Monitoring-plugin states, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Everything answered within the thresholds (exit 0).
    Ok,
    /// Slow, backlogged or degraded, but delivering (exit 1).
    Warning,
    /// A master did not answer: nothing is known (exit 3).
    Unknown,
    /// A sidecar, client or Kafka is down (exit 2).
    Critical,
}

impl Verdict {
    /// The monitoring-plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }

    /// The word the one-line output starts with.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// What one master answered.
#[derive(Debug, Clone)]
pub struct MasterAnswer {
    /// The master's admin address.
    pub address: String,
    /// Its status and its health check, or why it could not be asked.
    pub answer: Result<(Status, HealthCheckReport), RemoteError>,
}

/// One finding that lowers the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// How bad it is.
    pub severity: Verdict,
    /// What was found, naming the peer.
    pub message: String,
}

/// One probed peer, as `check --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// The peer's tier (`"sidecar"`, …).
    pub tier: PeerTier,
    /// The peer's id.
    pub id: String,
    /// Where it was reached.
    pub address: String,
    /// Who probed it.
    pub checker: String,
    /// What the probe found (`"up"`, …).
    pub status: PeerState,
    /// The probe's round trip; `None` when unanswered.
    pub rtt_ms: Option<f64>,
    /// A client's spooled events, when its master reports them.
    pub backlog_rows: Option<u64>,
    /// What the checker added.
    pub detail: String,
}

/// One master's part of the outcome, as `check --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct MasterResult {
    /// Its admin address.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Its id, when it answered.
    pub id: Option<String>,
    /// Why it could not be asked.
    pub error: Option<String>,
    /// Whether it could reach Kafka.
    pub kafka_ready: Option<bool>,
    /// The number of the health check it ran.
    pub check_id: Option<u64>,
    /// Every peer it probed.
    pub peers: Vec<PeerResult>,
}

/// The outcome of `check`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The worst verdict found.
    pub status: Verdict,
    /// Its exit code.
    pub exit_code: u8,
    /// The one line printed without `--json`.
    pub summary: String,
    /// Everything that lowered the verdict.
    pub problems: Vec<Problem>,
    /// What each master answered.
    pub masters: Vec<MasterResult>,
}

/// Thresholds that turn a healthy answer into a WARNING.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    /// `--max-rtt`.
    pub max_rtt: Option<Duration>,
    /// `--max-backlog`.
    pub max_backlog: Option<u64>,
    /// `--cert-warn-days`, as a duration.
    pub cert_warn: Duration,
    /// The clock certificates' expiry is judged by (ns since the epoch).
    pub now_unix_nanos: i64,
}

/// Judges the answers (pure: no I/O).
pub fn judge(answers: &[MasterAnswer], thresholds: Thresholds) -> Outcome {
    let mut problems = Vec::new();
    let mut masters = Vec::new();
    let mut problem = |severity, message: String| problems.push(Problem { severity, message });
    let (mut sidecars, mut clients, mut max_rtt_us) = (0usize, 0usize, 0u64);
    for answer in answers {
        let (status, report) = match &answer.answer {
            Ok(pair) => pair,
            Err(error) => {
                // Refused or unreachable, nothing is known of the mesh: UNKNOWN.
                let message = if error.is_refusal() {
                    format!("master {} {error}", answer.address)
                } else {
                    format!("master {} unreachable: {error}", answer.address)
                };
                problem(Verdict::Unknown, message);
                masters.push(MasterResult {
                    address: answer.address.clone(),
                    reachable: false,
                    id: None,
                    error: Some(error.to_string()),
                    kafka_ready: None,
                    check_id: None,
                    peers: Vec::new(),
                });
                continue;
            }
        };
        let master = status.master.as_ref();
        let master_id = master.map_or_else(|| answer.address.clone(), |m| m.id.clone());
        let kafka_ready = master.and_then(|m| m.kafka.as_ref()).map(|k| k.ready);
        if kafka_ready == Some(false) {
            problem(
                Verdict::Critical,
                format!("master {master_id} cannot reach Kafka"),
            );
        }
        for (name, not_after) in certificates(status) {
            if let Some((severity, message)) =
                certificate_problem(not_after, thresholds.now_unix_nanos, thresholds.cert_warn)
            {
                problem(severity, format!("{name} {message}"));
            }
        }
        let backlog = |client: &str| {
            status
                .clients
                .iter()
                .filter_map(|c| c.info.as_ref())
                .find(|i| i.client_id == client)
                .and_then(|i| i.backlog)
                .map(|b| b.rows)
        };
        let mut peers = Vec::new();
        for row in &report.rows {
            let (tier, state) = (
                PeerTier::from_wire(row.tier),
                PeerState::from_wire(row.status),
            );
            let name = format!("{tier} {}", row.peer_id);
            match state {
                PeerState::Up => {}
                PeerState::Degraded => {
                    problem(Verdict::Warning, format!("{name} degraded {}", row.detail))
                }
                PeerState::Down | PeerState::Unknown => {
                    let detail = if row.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", row.detail)
                    };
                    problem(Verdict::Critical, format!("{name} down{detail}"));
                }
            }
            match tier {
                PeerTier::Sidecar => sidecars += 1,
                PeerTier::Client => clients += 1,
                PeerTier::Master | PeerTier::Kafka | PeerTier::Unknown => {}
            }
            if tier != PeerTier::Kafka {
                max_rtt_us = max_rtt_us.max(row.rtt_us);
                if let Some(limit) = thresholds.max_rtt {
                    if row.rtt_us > 0 && Duration::from_micros(row.rtt_us) > limit {
                        problem(
                            Verdict::Warning,
                            format!(
                                "{name} RTT {} > {}",
                                format::rtt(row.rtt_us),
                                format::rtt(limit.as_micros() as u64)
                            ),
                        );
                    }
                }
            }
            let rows = (tier == PeerTier::Client)
                .then(|| backlog(&row.peer_id))
                .flatten();
            if let (Some(rows), Some(limit)) = (rows, thresholds.max_backlog) {
                if rows > limit {
                    problem(
                        Verdict::Warning,
                        format!("{name} backlog {} rows > {limit}", format::count(rows)),
                    );
                }
            }
            peers.push(PeerResult {
                tier,
                id: row.peer_id.clone(),
                address: row.address.clone(),
                checker: row.checker_id.clone(),
                status: state,
                rtt_ms: (row.rtt_us > 0).then(|| row.rtt_us as f64 / 1000.0),
                backlog_rows: rows,
                detail: row.detail.clone(),
            });
        }
        masters.push(MasterResult {
            address: answer.address.clone(),
            reachable: true,
            id: Some(master_id),
            error: None,
            kafka_ready,
            check_id: Some(report.check_id),
            peers,
        });
    }
    let status = problems
        .iter()
        .map(|p| p.severity)
        .max()
        .unwrap_or(Verdict::Ok);
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    let reachable = masters.iter().filter(|m| m.reachable).count();
    let headline = if problems.is_empty() {
        format!("{} sidecars and {clients} clients up", sidecars)
    } else {
        problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let summary = format!(
        "SMESH {} - {headline} ({reachable}/{} masters answered, {sidecars} sidecars, {clients} clients, max RTT {})",
        status.word(),
        answers.len(),
        format::rtt(max_rtt_us)
    );
    Outcome {
        status,
        exit_code: status.exit_code(),
        summary,
        problems,
        masters,
    }
}

/// The certificates a master's answer tells the expiry of, by who holds
/// them: the master's own, its connected sidecars', their connected
/// clients' (0: no TLS; skipped).
fn certificates(status: &Status) -> Vec<(String, i64)> {
    let master = status.master.iter().map(|m| {
        (
            format!("master {}", m.id),
            m.certificate_not_after_unix_nanos,
        )
    });
    let sidecars = status.sidecars.iter().filter(|s| s.connected).map(|s| {
        (
            format!("sidecar {}", s.id),
            s.certificate_not_after_unix_nanos,
        )
    });
    let clients = status
        .clients
        .iter()
        .filter_map(|c| c.info.as_ref())
        .filter(|i| PeerState::from_wire(i.status) != PeerState::Down)
        .map(|i| {
            (
                format!("client {}", i.client_id),
                i.certificate_not_after_unix_nanos,
            )
        });
    master
        .chain(sidecars)
        .chain(clients)
        .filter(|(_, not_after)| *not_after > 0)
        .collect()
}

/// What to say of a certificate that expires at `not_after`, if anything:
/// CRITICAL once expired (its holder cannot connect again), WARNING within
/// `warn`.
fn certificate_problem(not_after: i64, now: i64, warn: Duration) -> Option<(Verdict, String)> {
    let at = humantime::format_rfc3339_seconds(smesh_core::time::from_unix_nanos(not_after));
    if not_after <= now {
        return Some((Verdict::Critical, format!("certificate expired at {at}")));
    }
    let left = Duration::from_nanos(u64::try_from(not_after - now).unwrap_or(0));
    (left <= warn).then(|| {
        (
            Verdict::Warning,
            format!(
                "certificate expires in {} (at {at})",
                format::duration_secs(left.as_secs())
            ),
        )
    })
}

/// Runs the check through every master at once.
pub async fn run(dialer: &AdminDialer, args: &CheckArgs, addresses: &[String]) -> Outcome {
    let answers = futures::future::join_all(addresses.iter().map(|address| async move {
        let check = remote::health_check(dialer, address, args.peer.clone(), args.timeout);
        let status = remote::status(dialer, address, args.timeout);
        let (check, status) = tokio::join!(check, status);
        MasterAnswer {
            address: address.clone(),
            answer: check.and_then(|report| status.map(|status| (status, report))),
        }
    }))
    .await;
    judge(
        &answers,
        Thresholds {
            max_rtt: args.max_rtt,
            max_backlog: args.max_backlog,
            cert_warn: Duration::from_secs(u64::from(args.cert_warn_days) * 24 * 3600),
            now_unix_nanos: smesh_core::time::now_unix_nanos(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smesh_proto::admin::{
        ClientView, HealthCheckRow, KafkaStatus, MasterInfo, SidecarInfo, Tier,
    };
    use smesh_proto::mesh::{Backlog, ClientInfo, PeerStatus};

    fn row(tier: Tier, peer: &str, status: PeerStatus, rtt_us: u64) -> HealthCheckRow {
        HealthCheckRow {
            tier: tier as i32,
            peer_id: peer.into(),
            checker_id: "M1".into(),
            status: status as i32,
            rtt_us,
            ..HealthCheckRow::default()
        }
    }

    fn answer(rows: Vec<HealthCheckRow>, kafka_ready: bool, backlog: u64) -> MasterAnswer {
        let status = Status {
            master: Some(MasterInfo {
                id: "M1".into(),
                kafka: Some(KafkaStatus {
                    ready: kafka_ready,
                    ..KafkaStatus::default()
                }),
                ..MasterInfo::default()
            }),
            clients: vec![ClientView {
                sidecar_id: "S1".into(),
                info: Some(ClientInfo {
                    client_id: "c1".into(),
                    backlog: Some(Backlog {
                        rows: backlog,
                        ..Backlog::default()
                    }),
                    ..ClientInfo::default()
                }),
            }],
            ..Status::default()
        };
        let report = HealthCheckReport {
            check_id: 7,
            rows,
            ..HealthCheckReport::default()
        };
        MasterAnswer {
            address: "127.0.0.1:9011".into(),
            answer: Ok((status, report)),
        }
    }

    fn healthy() -> Vec<HealthCheckRow> {
        vec![
            row(Tier::Sidecar, "S1", PeerStatus::Up, 400),
            row(Tier::Client, "c1", PeerStatus::Up, 900),
            row(Tier::Kafka, "kafka", PeerStatus::Up, 20_000),
        ]
    }

    #[test]
    fn all_up_is_ok() {
        let outcome = judge(&[answer(healthy(), true, 0)], Thresholds::default());
        assert_eq!((outcome.status, outcome.exit_code), (Verdict::Ok, 0));
        assert_eq!(
            outcome.summary,
            "SMESH OK - 1 sidecars and 1 clients up (1/1 masters answered, 1 sidecars, 1 clients, max RTT 900 µs)"
        );
        assert_eq!(outcome.masters[0].peers.len(), 3);
    }

    #[test]
    fn thresholds_warn() {
        let thresholds = Thresholds {
            max_rtt: Some(Duration::from_micros(500)),
            max_backlog: Some(100),
            ..Thresholds::default()
        };
        let outcome = judge(&[answer(healthy(), true, 250)], thresholds);
        assert_eq!((outcome.status, outcome.exit_code), (Verdict::Warning, 1));
        let messages: Vec<&str> = outcome
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(
            messages,
            vec![
                "client c1 RTT 900 µs > 500 µs",
                "client c1 backlog 250 rows > 100"
            ]
        );
    }

    #[test]
    fn a_down_peer_or_kafka_is_critical_and_beats_unknown() {
        let mut rows = healthy();
        rows[0] = row(Tier::Sidecar, "S1", PeerStatus::Down, 0);
        let unreachable = MasterAnswer {
            address: "10.0.0.9:9011".into(),
            answer: Err(RemoteError::Unreachable("connection refused".into())),
        };
        let outcome = judge(
            &[answer(rows, true, 0), unreachable.clone()],
            Thresholds::default(),
        );
        assert_eq!((outcome.status, outcome.exit_code), (Verdict::Critical, 2));
        assert!(
            outcome
                .summary
                .starts_with("SMESH CRITICAL - sidecar S1 down"),
            "{}",
            outcome.summary
        );
        let kafka = judge(&[answer(healthy(), false, 0)], Thresholds::default());
        assert_eq!(kafka.status, Verdict::Critical);
        let only_unreachable = judge(&[unreachable], Thresholds::default());
        assert_eq!(
            (only_unreachable.status, only_unreachable.exit_code),
            (Verdict::Unknown, 3)
        );
        assert!(!only_unreachable.masters[0].reachable);
    }

    #[test]
    fn a_refused_console_is_unknown_and_says_why() {
        let refused = MasterAnswer {
            address: "127.0.0.1:9011".into(),
            answer: Err(RemoteError::from_status(
                "127.0.0.1:9011",
                &tonic::Status::unauthenticated("the admin API needs credentials: give …"),
            )),
        };
        let outcome = judge(&[refused], Thresholds::default());
        assert_eq!((outcome.status, outcome.exit_code), (Verdict::Unknown, 3));
        assert!(
            outcome.summary.starts_with(
                "SMESH UNKNOWN - master 127.0.0.1:9011 refused the console: UNAUTHENTICATED: the admin API needs credentials"
            ),
            "{}",
            outcome.summary
        );
        assert!(!outcome.masters[0].reachable);
    }

    #[test]
    fn certificates_warn_ahead_and_are_critical_once_expired() {
        const DAY: i64 = 24 * 3600 * 1_000_000_000;
        let now = 1_000 * DAY;
        let thresholds = Thresholds {
            cert_warn: Duration::from_secs(14 * 24 * 3600),
            now_unix_nanos: now,
            ..Thresholds::default()
        };
        let mut answer = answer(healthy(), true, 0);
        let Ok((status, _)) = &mut answer.answer else {
            panic!("an answer");
        };
        if let Some(master) = status.master.as_mut() {
            master.certificate_not_after_unix_nanos = now + 90 * DAY;
        }
        assert_eq!(judge(&[answer.clone()], thresholds).status, Verdict::Ok);

        let Ok((status, _)) = &mut answer.answer else {
            panic!("an answer");
        };
        if let Some(master) = status.master.as_mut() {
            master.certificate_not_after_unix_nanos = now + 3 * DAY + 60_000_000_000;
        }
        status.sidecars.push(SidecarInfo {
            id: "S1".into(),
            connected: true,
            ..SidecarInfo::default()
        });
        let outcome = judge(&[answer.clone()], thresholds);
        assert_eq!((outcome.status, outcome.exit_code), (Verdict::Warning, 1));
        assert!(
            outcome.problems[0]
                .message
                .starts_with("master M1 certificate expires in 3d (at "),
            "{:?}",
            outcome.problems
        );

        let Ok((status, _)) = &mut answer.answer else {
            panic!("an answer");
        };
        if let Some(info) = status.clients[0].info.as_mut() {
            info.certificate_not_after_unix_nanos = now - DAY;
        }
        let outcome = judge(&[answer.clone()], thresholds);
        assert_eq!(outcome.status, Verdict::Critical);
        assert!(
            outcome.problems[0]
                .message
                .starts_with("client c1 certificate expired at "),
            "{:?}",
            outcome.problems
        );
        // A client that is gone holds no connection its certificate matters to.
        let Ok((status, _)) = &mut answer.answer else {
            panic!("an answer");
        };
        if let Some(info) = status.clients[0].info.as_mut() {
            info.status = PeerStatus::Down as i32;
        }
        assert_eq!(judge(&[answer], thresholds).status, Verdict::Warning);
    }
}
