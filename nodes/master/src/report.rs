//! `healthCheckReport.csv`: one row per peer and health check, appended.
//!
//! The prototype wrote free text (`ID: S123 IP Addr: … receive, RTT: 17.7ms;`);
//! this is the same information as a CSV with a header, so it can be loaded
//! into a spreadsheet or grepped.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use smesh_core::time::rfc3339_millis;
use smesh_proto::admin::{HealthCheckRow, Tier};
use smesh_proto::mesh::PeerStatus;

/// The columns of `healthCheckReport.csv`, written once at the top.
pub const HEADER: [&str; 9] = [
    "time",
    "check_id",
    "checking_node",
    "tier",
    "peer_id",
    "address",
    "status",
    "rtt_ms",
    "detail",
];

/// Lower-case tier name as written in the report and shown by the console.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Master => "master",
        Tier::Sidecar => "sidecar",
        Tier::Client => "client",
        Tier::Kafka => "kafka",
        Tier::Unspecified => "unknown",
    }
}

/// Lower-case status name.
pub fn status_name(status: PeerStatus) -> &'static str {
    match status {
        PeerStatus::Up => "up",
        PeerStatus::Degraded => "degraded",
        PeerStatus::Down => "down",
        PeerStatus::Unspecified => "unknown",
    }
}

/// Appends rows (and the header, if the file is new or empty), then syncs.
/// The file is rotated (to `<name>.1`, replacing the one before) once it
/// holds [`MAX_REPORT_BYTES`].
pub fn append(path: &Path, check_id: u64, rows: &[HealthCheckRow]) -> std::io::Result<()> {
    append_within(path, check_id, rows, MAX_REPORT_BYTES)
}

/// Size at which `healthCheckReport.csv` is rotated: with the one rotated
/// before, the report takes at most twice this.
pub const MAX_REPORT_BYTES: u64 = 16 * 1024 * 1024;

fn append_within(
    path: &Path,
    check_id: u64,
    rows: &[HealthCheckRow],
    max_bytes: u64,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|meta| meta.len() >= max_bytes) {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        std::fs::rename(path, &rotated)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let empty = file.metadata()?.len() == 0;
    let mut writer = csv::Writer::from_writer(file);
    if empty {
        writer.write_record(HEADER)?;
    }
    for row in rows {
        let rtt = if row.rtt_us > 0 {
            format!("{:.3}", row.rtt_us as f64 / 1000.0)
        } else {
            String::new()
        };
        writer.write_record([
            rfc3339_millis(row.at_unix_nanos).as_str(),
            check_id.to_string().as_str(),
            row.checker_id.as_str(),
            tier_name(row.tier()),
            row.peer_id.as_str(),
            row.address.as_str(),
            status_name(row.status()),
            rtt.as_str(),
            row.detail.as_str(),
        ])?;
    }
    let mut file = writer.into_inner().map_err(|err| err.into_error())?;
    file.flush()?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peer: &str, status: PeerStatus, rtt_us: u64) -> HealthCheckRow {
        HealthCheckRow {
            at_unix_nanos: 1_795_000_000_000_000_000,
            checker_id: "master-1".into(),
            tier: Tier::Sidecar as i32,
            peer_id: peer.into(),
            address: "127.0.0.1:4000".into(),
            status: status as i32,
            rtt_us,
            detail: String::new(),
        }
    }

    #[test]
    fn a_full_report_is_rotated_and_the_new_one_starts_with_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("healthCheckReport.csv");
        for check in 1..=3 {
            append_within(&path, check, &[row("S1", PeerStatus::Up, 1)], 150).expect("append");
        }
        let rotated = std::fs::read_to_string(dir.path().join("healthCheckReport.csv.1"))
            .expect("rotated file");
        let current = std::fs::read_to_string(&path).expect("current file");
        assert!(current.starts_with("time,check_id,"), "{current}");
        assert_eq!(current.lines().count(), 2, "header and check 3: {current}");
        assert!(current.contains(",3,master-1,"), "{current}");
        assert!(rotated.contains(",2,master-1,"), "{rotated}");
    }

    #[test]
    fn writes_a_header_once_and_one_row_per_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reports/healthCheckReport.csv");
        append(&path, 1, &[row("S1", PeerStatus::Up, 17_774)]).expect("first append");
        append(&path, 2, &[row("S2", PeerStatus::Down, 0)]).expect("second append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "time,check_id,checking_node,tier,peer_id,address,status,rtt_ms,detail\n\
             2026-11-18T11:06:40.000Z,1,master-1,sidecar,S1,127.0.0.1:4000,up,17.774,\n\
             2026-11-18T11:06:40.000Z,2,master-1,sidecar,S2,127.0.0.1:4000,down,,\n"
        );
    }
}
