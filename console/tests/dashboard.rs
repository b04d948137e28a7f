//! The dashboard as an operator sees it: a fixed mesh, driven by key events
//! exactly as typed, rendered into a `TestBackend` and compared with insta
//! snapshots (`tests/snapshots/`). Plain asserts beside them check what the
//! keys did, so a test can fail for more than a changed screen.
//!
//! Update the snapshots after a deliberate change with
//! `INSTA_UPDATE=always cargo test -p smesh-console --test dashboard`, then
//! read every changed `.snap` file before committing it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::widgets::Widget;
use smesh_console::app::{Action, App};
use smesh_console::remote::RemoteEvent;
use smesh_console::state::{Connection, Mesh};
use smesh_console::ui::{CLIENTS, ClientSort, HEALTH_CHECKS};
use smesh_console::view::{SortKey, View};
use smesh_proto::admin::{
    ClientView, HealthCheckReport, HealthCheckRow, HeartbeatSample, KafkaStatus, MasterInfo, Rates,
    SidecarInfo, Stats, Status, Tier, Totals,
};
use smesh_proto::mesh::{Backlog, ClientCounters, ClientInfo, PeerStatus, RttStats};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
const DAY: i64 = 24 * 60 * MINUTE;
/// The screen's clock: every age on screen is measured from here.
const NOW: i64 = 1_750_000_000 * SECOND;
const MASTER_A: usize = 0;
const MASTER_B: usize = 1;
const LOG_PATH: &str = "/var/log/smesh/console.log";

// ---------------------------------------------------------------------------
// Fixture: master-a with 3 sidecars and 5 clients, master-b unreachable
// ---------------------------------------------------------------------------

fn rtt(last_us: u64, avg_us: u64, p99_us: u64) -> Option<RttStats> {
    Some(RttStats {
        last_us,
        avg_us,
        p99_us,
        recent_us: Vec::new(),
    })
}

fn totals() -> Totals {
    Totals {
        events_in: 1_254_300,
        published: 1_254_180,
        failed: 3,
        duplicates: 117,
        bytes_in: 412_000_000,
        batches_in: 25_100,
        producer_replacements: 0,
    }
}

fn master_a_status() -> Status {
    let sidecar = |id: &str,
                   address: &str,
                   status: PeerStatus,
                   connected_ago: Option<i64>,
                   heartbeat_ago: i64| {
        SidecarInfo {
            id: id.to_string(),
            address: address.to_string(),
            version: "0.1.0".to_string(),
            status: status as i32,
            connected: connected_ago.is_some(),
            connected_since_unix_nanos: connected_ago.map_or(0, |ago| NOW - ago),
            last_heartbeat_unix_nanos: NOW - heartbeat_ago,
            certificate_not_after_unix_nanos: NOW + 80 * DAY,
            ..SidecarInfo::default()
        }
    };
    let sidecars = vec![
        SidecarInfo {
            rtt: rtt(850, 910, 1_400),
            events_forwarded: 812_400,
            clients: 2,
            ..sidecar(
                "edge-1",
                "10.0.1.1:9020",
                PeerStatus::Up,
                Some(125 * MINUTE),
                SECOND,
            )
        },
        SidecarInfo {
            rtt: rtt(1_200, 1_150, 3_900),
            events_forwarded: 441_780,
            clients: 3,
            ..sidecar(
                "edge-2",
                "10.0.1.2:9020",
                PeerStatus::Up,
                Some(47 * MINUTE),
                2 * SECOND,
            )
        },
        SidecarInfo {
            rtt: rtt(0, 2_100, 8_800),
            events_forwarded: 12_345,
            clients: 0,
            ..sidecar(
                "edge-3",
                "10.0.1.3:9020",
                PeerStatus::Down,
                None,
                3 * MINUTE,
            )
        },
    ];
    let client =
        |sidecar: &str, id: &str, port: u16, status: PeerStatus, sent: u64, in_flight: u64| {
            ClientView {
                sidecar_id: sidecar.to_string(),
                info: Some(ClientInfo {
                    client_id: id.to_string(),
                    address: format!("10.0.2.{}:{port}", port % 100),
                    first_seen_unix_nanos: NOW - 120 * MINUTE,
                    last_seen_unix_nanos: NOW - SECOND,
                    status: status as i32,
                    events_forwarded: sent,
                    batches_forwarded: sent / 50,
                    rtt: rtt(640, 700, 1_100),
                    backlog: Some(Backlog::default()),
                    counters: Some(ClientCounters {
                        events_sent: sent,
                        events_acked: sent.saturating_sub(in_flight),
                        ..ClientCounters::default()
                    }),
                    version: "0.1.0".to_string(),
                    in_flight,
                    certificate_not_after_unix_nanos: NOW + 200 * DAY,
                }),
            }
        };
    let with = |mut view: ClientView, change: &dyn Fn(&mut ClientInfo)| {
        if let Some(info) = view.info.as_mut() {
            change(info);
        }
        view
    };
    let clients = vec![
        client("edge-1", "sensor-1", 50_412, PeerStatus::Up, 401_200, 12),
        client("edge-1", "sensor-2", 50_418, PeerStatus::Up, 411_200, 0),
        with(
            client("edge-2", "sensor-3", 50_433, PeerStatus::Up, 150_000, 250),
            &|info| {
                info.rtt = rtt(1_900, 1_700, 4_200);
                info.backlog = Some(Backlog {
                    rows: 1_234,
                    bytes: 3_565_158, // 3.4 MiB
                    oldest_unix_nanos: NOW - 5 * MINUTE,
                });
            },
        ),
        client("edge-2", "sensor-4", 50_440, PeerStatus::Up, 140_000, 8),
        with(
            client(
                "edge-2",
                "sensor-5",
                50_447,
                PeerStatus::Degraded,
                151_780,
                500,
            ),
            &|info| {
                info.rtt = rtt(48_000, 21_000, 52_000);
                info.last_seen_unix_nanos = NOW - 9 * SECOND;
                // Renew soon: the console shows it in yellow.
                info.certificate_not_after_unix_nanos = NOW + 5 * DAY;
                info.backlog = Some(Backlog {
                    rows: 12,
                    bytes: 6_144,
                    oldest_unix_nanos: NOW - 20 * SECOND,
                });
            },
        ),
    ];
    Status {
        master: Some(MasterInfo {
            id: "master-a".to_string(),
            version: "0.1.0".to_string(),
            address: "10.0.0.1:9010".to_string(),
            started_unix_nanos: NOW - 125 * MINUTE,
            uptime_ms: 125 * 60 * 1000,
            certificate_not_after_unix_nanos: NOW + 80 * DAY,
            kafka: Some(KafkaStatus {
                ready: true,
                brokers: "kafka-1:9092,kafka-2:9092".to_string(),
                topic: "smesh.events".to_string(),
                detail: "2 brokers".to_string(),
                since_unix_nanos: NOW - 125 * MINUTE,
            }),
            totals: Some(totals()),
            rates: Some(Rates::default()),
        }),
        sidecars_total: u32::try_from(sidecars.len()).unwrap_or(u32::MAX),
        clients_total: u32::try_from(clients.len()).unwrap_or(u32::MAX),
        sidecars,
        clients,
        ..Status::default()
    }
}

/// A minute of stats, one a second: a wavy published rate ending at 1,185/s.
fn stats_events() -> Vec<RemoteEvent> {
    (0..60u32)
        .map(|i| {
            let published_per_s =
                900.0 + 300.0 * f64::from(i % 20) / 20.0 + if i % 7 == 0 { 150.0 } else { 0.0 };
            RemoteEvent::Stats {
                master: MASTER_A,
                stats: Stats {
                    at_unix_nanos: NOW - i64::from(59 - i) * SECOND,
                    totals: Some(totals()),
                    rates: Some(Rates {
                        events_in_per_s: published_per_s + 2.0,
                        published_per_s,
                        failed_per_s: 0.0,
                        duplicates_per_s: 0.1,
                    }),
                    kafka_ready: true,
                },
            }
        })
        .collect()
}

/// A fixed pseudo-random number for `n` (a step of an LCG), so the
/// sparklines look like measurements and stay the same on every run.
fn noise(n: u64) -> u64 {
    n.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        >> 33
}

/// Forty heartbeats per peer, each with its own deterministic wobble.
fn heartbeat_events() -> Vec<RemoteEvent> {
    let peers: [(Tier, &str, &str, u64); 8] = [
        (Tier::Sidecar, "edge-1", "master-a", 850),
        (Tier::Sidecar, "edge-2", "master-a", 1_200),
        (Tier::Sidecar, "edge-3", "master-a", 2_100),
        (Tier::Client, "sensor-1", "edge-1", 640),
        (Tier::Client, "sensor-2", "edge-1", 700),
        (Tier::Client, "sensor-3", "edge-2", 1_900),
        (Tier::Client, "sensor-4", "edge-2", 650),
        (Tier::Client, "sensor-5", "edge-2", 21_000),
    ];
    let mut events = Vec::new();
    for (seed, (tier, peer, checker, base)) in (0u64..).zip(peers) {
        // edge-3 went down: its samples stopped after twenty.
        let samples = if peer == "edge-3" { 20 } else { 40 };
        for i in 0..samples {
            let wobble = noise(seed * 1_000 + i) % 13;
            let spike = if peer == "sensor-5" && i % 9 == 4 {
                2
            } else {
                1
            };
            events.push(RemoteEvent::Heartbeat {
                master: MASTER_A,
                sample: HeartbeatSample {
                    at_unix_nanos: NOW - i64::try_from(samples - i).unwrap_or(0) * SECOND,
                    checker_id: checker.to_string(),
                    tier: tier as i32,
                    peer_id: peer.to_string(),
                    rtt_us: (base + base * wobble / 20) * spike,
                },
            });
        }
    }
    events
}

fn check_row(
    tier: Tier,
    peer: &str,
    checker: &str,
    address: &str,
    status: PeerStatus,
    rtt_us: u64,
    detail: &str,
) -> HealthCheckRow {
    HealthCheckRow {
        at_unix_nanos: NOW - 28 * SECOND,
        checker_id: checker.to_string(),
        tier: tier as i32,
        peer_id: peer.to_string(),
        address: address.to_string(),
        status: status as i32,
        rtt_us,
        detail: detail.to_string(),
    }
}

/// The answer to `h` on edge-2: one row.
fn single_check_done() -> RemoteEvent {
    RemoteEvent::CheckDone {
        master: MASTER_A,
        result: Ok(HealthCheckReport {
            check_id: 6,
            master_id: "master-a".to_string(),
            started_unix_nanos: NOW - 31 * SECOND,
            finished_unix_nanos: NOW - 30 * SECOND,
            rows: vec![check_row(
                Tier::Sidecar,
                "edge-2",
                "master-a",
                "10.0.1.2:9020",
                PeerStatus::Up,
                1_250,
                "",
            )],
        }),
    }
}

/// The answer to `H`: Kafka, every sidecar and every client.
fn full_check_done() -> RemoteEvent {
    use PeerStatus::{Degraded, Down, Up};
    let rows = vec![
        check_row(
            Tier::Kafka,
            "kafka",
            "master-a",
            "kafka-1:9092,kafka-2:9092",
            Up,
            2_100,
            "2 brokers, topic smesh.events",
        ),
        check_row(
            Tier::Sidecar,
            "edge-1",
            "master-a",
            "10.0.1.1:9020",
            Up,
            900,
            "",
        ),
        check_row(
            Tier::Sidecar,
            "edge-2",
            "master-a",
            "10.0.1.2:9020",
            Up,
            1_300,
            "",
        ),
        check_row(
            Tier::Sidecar,
            "edge-3",
            "master-a",
            "10.0.1.3:9020",
            Down,
            0,
            "not connected for 3m",
        ),
        check_row(
            Tier::Client,
            "sensor-1",
            "edge-1",
            "10.0.2.12:50412",
            Up,
            700,
            "",
        ),
        check_row(
            Tier::Client,
            "sensor-2",
            "edge-1",
            "10.0.2.18:50418",
            Up,
            720,
            "",
        ),
        check_row(
            Tier::Client,
            "sensor-3",
            "edge-2",
            "10.0.2.33:50433",
            Up,
            2_000,
            "1,234 events spooled",
        ),
        check_row(
            Tier::Client,
            "sensor-4",
            "edge-2",
            "10.0.2.40:50440",
            Up,
            680,
            "",
        ),
        check_row(
            Tier::Client,
            "sensor-5",
            "edge-2",
            "10.0.2.47:50447",
            Degraded,
            52_000,
            "answered after 52 ms",
        ),
    ];
    RemoteEvent::CheckDone {
        master: MASTER_A,
        result: Ok(HealthCheckReport {
            check_id: 7,
            master_id: "master-a".to_string(),
            started_unix_nanos: NOW - 30 * SECOND,
            finished_unix_nanos: NOW - 28 * SECOND,
            rows,
        }),
    }
}

/// The dashboard after a minute of watching: master-a connected and
/// streaming, master-b refusing connections for the fifth time.
fn fixture() -> App {
    let mesh = Mesh::new(vec![
        "10.0.0.1:9011".to_string(),
        "10.0.0.2:9011".to_string(),
    ]);
    let mut app = App::new(mesh, NOW, LOG_PATH.to_string());
    app.on_remote(RemoteEvent::Connection {
        master: MASTER_A,
        connection: Connection::Connected,
    });
    app.on_remote(RemoteEvent::Status {
        master: MASTER_A,
        status: Box::new(master_a_status()),
    });
    app.on_remote(RemoteEvent::Connection {
        master: MASTER_B,
        connection: Connection::Connecting {
            attempt: 5,
            error: Some(
                "cannot reach 10.0.0.2:9011: transport error: tcp connect error: Connection refused (os error 111)"
                    .to_string(),
            ),
        },
    });
    for event in stats_events().into_iter().chain(heartbeat_events()) {
        app.on_remote(event);
    }
    app
}

// ---------------------------------------------------------------------------
// Driving and drawing
// ---------------------------------------------------------------------------

fn press(app: &mut App, code: KeyCode) -> Action {
    app.on_key(KeyEvent::from(code))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(press(app, KeyCode::Char(c)), Action::None);
    }
}

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    terminal
}

fn screen(app: &App) -> Terminal<TestBackend> {
    draw(app, 120, 32)
}

/// The clients' ids in the order the Clients view shows them.
fn client_ids(app: &App) -> Vec<String> {
    app.rows(&CLIENTS).into_iter().map(|c| c.id).collect()
}

/// Where `text` starts on screen.
fn find(buffer: &Buffer, text: &str) -> Option<(u16, u16)> {
    let area = buffer.area;
    for y in area.top()..area.bottom() {
        let line: String = (area.left()..area.right())
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        if let Some(at) = line.find(text) {
            let x = u16::try_from(line[..at].chars().count()).ok()?;
            return Some((x, y));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

#[test]
fn every_view_by_its_number_key() {
    let mut app = fixture();
    let views = [
        ('1', View::Overview, "view_1_overview"),
        ('2', View::Sidecars, "view_2_sidecars"),
        ('3', View::Clients, "view_3_clients"),
        ('4', View::Heartbeats, "view_4_heartbeats"),
        ('5', View::Backlog, "view_5_backlog"),
        ('6', View::Health, "view_6_health_before_any_check"),
    ];
    for (key, view, name) in views {
        assert_eq!(press(&mut app, KeyCode::Char(key)), Action::None);
        assert_eq!(app.view, view);
        assert_eq!(app.selected, 0, "a new view starts at its first row");
        insta::assert_snapshot!(name, screen(&app).backend());
    }
}

#[test]
fn clients_a_master_has_beyond_what_the_console_fetched_are_counted_in_the_title() {
    let mut app = fixture();
    let mut status = master_a_status();
    status.clients_total = u32::try_from(status.clients.len()).unwrap() + 5_000;
    app.on_remote(RemoteEvent::Status {
        master: MASTER_A,
        status: Box::new(status),
    });
    press(&mut app, KeyCode::Char('3'));
    let terminal = screen(&app);
    assert!(
        find(terminal.backend().buffer(), "· 5000 more not shown").is_some(),
        "{}",
        terminal.backend()
    );
    // The shown ones are listed as before.
    assert_eq!(client_ids(&app), client_ids(&fixture()));
}

#[test]
fn tab_and_shift_tab_reach_the_same_screens_as_number_keys() {
    let by_number = |index: usize| {
        let mut app = fixture();
        let key = char::from(b'1' + u8::try_from(index).unwrap());
        press(&mut app, KeyCode::Char(key));
        screen(&app).backend().buffer().clone()
    };
    let mut app = fixture();
    for step in 1..=View::ALL.len() {
        press(&mut app, KeyCode::Tab);
        let index = step % View::ALL.len();
        assert_eq!(app.view, View::ALL[index]);
        assert_eq!(
            screen(&app).backend().buffer(),
            &by_number(index),
            "Tab ×{step}"
        );
    }
    for step in 1..=View::ALL.len() {
        press(&mut app, KeyCode::BackTab);
        let index = (View::ALL.len() - step) % View::ALL.len();
        assert_eq!(app.view, View::ALL[index]);
        assert_eq!(
            screen(&app).backend().buffer(),
            &by_number(index),
            "Shift-Tab ×{step}"
        );
    }
}

#[test]
fn status_words_are_coloured() {
    let mut app = fixture();
    let title = screen(&app).backend().buffer().clone();
    let (x, y) = find(&title, "● connected").unwrap();
    assert_eq!(title[(x, y)].fg, Color::Green);
    let (x, y) = find(&title, "◌ connecting (attempt 5): Connection refused").unwrap();
    assert_eq!(
        title[(x, y)].fg,
        Color::Red,
        "five failed attempts in a row"
    );

    press(&mut app, KeyCode::Char('2'));
    let sidecars = screen(&app).backend().buffer().clone();
    let (x, y) = find(&sidecars, "down").unwrap();
    assert_eq!(sidecars[(x, y)].fg, Color::Red);
    let (x, y) = find(&sidecars, "up  ").unwrap();
    assert_eq!(sidecars[(x, y)].fg, Color::Green);

    press(&mut app, KeyCode::Char('3'));
    let clients = screen(&app).backend().buffer().clone();
    let (x, y) = find(&clients, "degraded").unwrap();
    assert_eq!(clients[(x, y)].fg, Color::Yellow);
}

// ---------------------------------------------------------------------------
// Sort, filter, selection
// ---------------------------------------------------------------------------

#[test]
fn clients_sorted_by_backlog_then_reversed() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.sorted_by(&CLIENTS), Some(ClientSort::Id));
    let mut presses = 0;
    while app.sorted_by(&CLIENTS) != Some(ClientSort::Backlog) {
        press(&mut app, KeyCode::Char('s'));
        presses += 1;
        assert!(
            presses <= ClientSort::CYCLE.len(),
            "`s` never reached the backlog column"
        );
    }
    assert_eq!(app.message.as_deref(), Some("sorted by backlog"));
    assert_eq!(
        client_ids(&app),
        ["sensor-3", "sensor-5", "sensor-1", "sensor-2", "sensor-4"],
        "largest backlog first"
    );

    press(&mut app, KeyCode::Char('r'));
    assert!(app.reverse);
    assert_eq!(
        client_ids(&app),
        ["sensor-4", "sensor-2", "sensor-1", "sensor-5", "sensor-3"]
    );
    insta::assert_snapshot!("clients_sorted_by_backlog_reversed", screen(&app).backend());
}

#[test]
fn filter_keeps_the_matching_clients() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.rows(&CLIENTS).len(), 5);

    press(&mut app, KeyCode::Char('/'));
    assert!(app.editing_filter);
    type_text(&mut app, "edge-2");
    insta::assert_snapshot!("clients_filter_being_typed", screen(&app).backend());

    press(&mut app, KeyCode::Enter);
    assert!(!app.editing_filter);
    assert_eq!(app.filter, "edge-2");
    let rows = app.rows(&CLIENTS);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|c| c.sidecar == "edge-2"));
    insta::assert_snapshot!("clients_filtered_by_edge_2", screen(&app).backend());

    // Keys typed while filtering are text, not commands.
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "q");
    assert_eq!(app.filter, "edge-2q");
    assert_eq!(app.rows(&CLIENTS).len(), 0);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.rows(&CLIENTS).len(), 3);

    press(&mut app, KeyCode::Esc);
    assert!(app.filter.is_empty());
    assert_eq!(app.rows(&CLIENTS).len(), 5);
}

#[test]
fn selection_stays_on_the_rows() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('2'));
    for _ in 0..10 {
        press(&mut app, KeyCode::Char('j'));
    }
    assert_eq!(
        app.selected, 2,
        "three sidecars: the selection stops at the last"
    );
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected, 1);
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(app.selected, 0);
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected, 0);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.selected, 2);
    assert_eq!(app.selected_peer().as_deref(), Some("edge-3"));
    let buffer = screen(&app).backend().buffer().clone();
    assert!(
        find(&buffer, "▶ edge-3").is_some(),
        "the selected row is marked"
    );
    assert!(find(&buffer, "▶ edge-1").is_none());
}

// ---------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------

#[test]
fn health_check_of_one_peer_then_of_all() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(
        press(&mut app, KeyCode::Char('h')),
        Action::HealthCheck(Some("edge-2".to_string()))
    );
    assert_eq!(
        press(&mut app, KeyCode::Char('H')),
        Action::HealthCheck(None)
    );
    assert_eq!(app.checks_running, 2);

    press(&mut app, KeyCode::Char('6'));
    insta::assert_snapshot!("health_two_checks_running", screen(&app).backend());

    app.on_remote(single_check_done());
    assert_eq!(app.checks_running, 1);
    app.on_remote(full_check_done());
    assert_eq!(app.checks_running, 0);
    assert_eq!(app.view, View::Health);
    assert_eq!(
        app.rows(&HEALTH_CHECKS).len(),
        9,
        "only the latest check of each master shows"
    );
    assert_eq!(
        app.message.as_deref(),
        Some("health check via master-a: 9 peers, 2 not up")
    );
    insta::assert_snapshot!("health_after_full_check", screen(&app).backend());

    // The overview sums the last check up too.
    press(&mut app, KeyCode::Char('1'));
    let overview = screen(&app).backend().buffer().clone();
    assert!(
        find(
            &overview,
            "check #7 via master-a, 28s ago: 9 peers, 2 not up"
        )
        .is_some()
    );
}

#[test]
fn a_failed_health_check_says_why() {
    let mut app = fixture();
    assert_eq!(
        press(&mut app, KeyCode::Char('H')),
        Action::HealthCheck(None)
    );
    app.on_remote(RemoteEvent::CheckDone {
        master: MASTER_B,
        result: Err("cannot reach 10.0.0.2:9011: Connection refused".to_string()),
    });
    assert_eq!(app.view, View::Health);
    let buffer = screen(&app).backend().buffer().clone();
    assert!(
        find(
            &buffer,
            "check via 10.0.0.2:9011 failed: cannot reach 10.0.0.2:9011: Connection refused"
        )
        .is_some()
    );
}

#[test]
fn h_outside_a_peer_list_asks_for_a_selection() {
    let mut app = fixture();
    assert_eq!(press(&mut app, KeyCode::Char('h')), Action::None);
    assert_eq!(app.checks_running, 0);
    let buffer = screen(&app).backend().buffer().clone();
    assert!(
        find(
            &buffer,
            "select a sidecar or client to check it (H checks all)"
        )
        .is_some()
    );
}

// ---------------------------------------------------------------------------
// Help, quitting
// ---------------------------------------------------------------------------

#[test]
fn help_overlay_lists_the_keys_and_the_log_file() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('2'));
    assert_eq!(press(&mut app, KeyCode::Char('?')), Action::None);
    assert!(app.show_help);
    insta::assert_snapshot!("help_overlay", screen(&app).backend());
    assert!(find(screen(&app).backend().buffer(), LOG_PATH).is_some());

    // Any key closes the help without acting.
    assert_eq!(press(&mut app, KeyCode::Char('j')), Action::None);
    assert!(!app.show_help);
    assert_eq!(app.selected, 0);
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = fixture();
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);

    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.on_key(ctrl_c), Action::Quit);

    // Ctrl-C quits even while typing a filter (where `q` is just a letter).
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
    assert_eq!(app.on_key(ctrl_c), Action::Quit);

    // `q` quits from the help too.
    let mut app = fixture();
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
}

// ---------------------------------------------------------------------------
// Small terminals, empty and extreme data
// ---------------------------------------------------------------------------

#[test]
fn tiny_terminal() {
    let app = fixture();
    insta::assert_snapshot!("tiny_30x8_overview", draw(&app, 30, 8).backend());
}

#[test]
fn an_80_column_terminal_drops_columns_from_the_right() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('3'));
    let terminal = draw(&app, 80, 12);
    insta::assert_snapshot!("clients_80x12", terminal.backend());
    let buffer = terminal.backend().buffer();
    assert!(find(buffer, "sensor-5").is_some(), "ids stay");
    assert!(find(buffer, "degraded").is_some(), "statuses stay");
}

/// Every view, then the help over the filter prompt, at sizes from nothing
/// to wide.
fn render_everywhere(app: &App) {
    const WIDTHS: [u16; 12] = [0, 1, 2, 3, 5, 10, 20, 30, 45, 80, 120, 250];
    const HEIGHTS: [u16; 10] = [0, 1, 2, 3, 4, 5, 7, 10, 32, 60];
    let mut app = app.clone();
    app.selected = usize::MAX;
    for width in WIDTHS {
        for height in HEIGHTS {
            let area = Rect::new(0, 0, width, height);
            for (view, overlays) in View::ALL
                .iter()
                .flat_map(|view| [(*view, false), (*view, true)])
            {
                app.view = view;
                app.show_help = overlays;
                app.editing_filter = overlays;
                let mut buffer = Buffer::empty(area);
                (&app).render(area, &mut buffer);
            }
        }
    }
}

#[test]
fn never_panics_at_any_size() {
    render_everywhere(&fixture());
    let mut app = fixture();
    app.filter = "edge-2".to_string();
    render_everywhere(&app);
}

#[test]
fn an_empty_mesh_says_what_it_waits_for() {
    let mut app = App::new(
        Mesh::new(vec!["127.0.0.1:9011".to_string()]),
        NOW,
        LOG_PATH.to_string(),
    );
    render_everywhere(&app);
    insta::assert_snapshot!("empty_overview", draw(&app, 100, 14).backend());
    press(&mut app, KeyCode::Char('5'));
    let buffer = screen(&app).backend().buffer().clone();
    assert!(find(&buffer, "no client has spooled events").is_some());
    press(&mut app, KeyCode::Char('6'));
    let buffer = screen(&app).backend().buffer().clone();
    assert!(
        find(
            &buffer,
            "press H to check every peer, h to check the selected one"
        )
        .is_some()
    );

    render_everywhere(&App::new(Mesh::default(), 0, String::new()));
}

#[test]
fn extreme_values_are_cut_not_fatal() {
    let long_id = format!("sidecar-{}", "x".repeat(300));
    let huge = |status: PeerStatus, connected: bool| SidecarInfo {
        id: format!("{long_id}-{}", status as i32),
        address: format!("[{}]:65535", "ffff:".repeat(40)),
        version: "9".repeat(100),
        status: status as i32,
        connected,
        connected_since_unix_nanos: i64::MIN,
        last_heartbeat_unix_nanos: i64::MAX,
        rtt: rtt(u64::MAX, u64::MAX, u64::MAX),
        events_forwarded: u64::MAX,
        clients: u32::MAX,
        certificate_not_after_unix_nanos: i64::MAX,
    };
    let status = Status {
        master: Some(MasterInfo {
            id: format!("master-{}", "m".repeat(200)),
            uptime_ms: u64::MAX,
            kafka: Some(KafkaStatus {
                ready: false,
                brokers: "b".repeat(500),
                detail: "Local: All broker connections are down ".repeat(10),
                ..KafkaStatus::default()
            }),
            totals: Some(Totals {
                events_in: u64::MAX,
                published: u64::MAX,
                failed: u64::MAX,
                duplicates: u64::MAX,
                ..Totals::default()
            }),
            ..MasterInfo::default()
        }),
        sidecars: vec![
            huge(PeerStatus::Up, true),
            huge(PeerStatus::Unspecified, false),
        ],
        clients: vec![ClientView {
            sidecar_id: long_id.clone(),
            info: Some(ClientInfo {
                client_id: format!("client-{}", "c".repeat(300)),
                status: 42,
                last_seen_unix_nanos: i64::MAX,
                events_forwarded: u64::MAX,
                in_flight: u64::MAX,
                rtt: rtt(u64::MAX, 1, 0),
                backlog: Some(Backlog {
                    rows: u64::MAX,
                    bytes: u64::MAX,
                    oldest_unix_nanos: 1,
                }),
                ..ClientInfo::default()
            }),
        }],
        ..Status::default()
    };
    let mut app = App::new(Mesh::new(vec!["a".repeat(400)]), i64::MAX, "/".repeat(500));
    app.on_remote(RemoteEvent::Connection {
        master: 0,
        connection: Connection::Connecting {
            attempt: u32::MAX,
            error: Some("e: ".repeat(300)),
        },
    });
    app.on_remote(RemoteEvent::Status {
        master: 0,
        status: Box::new(status),
    });
    for rate in [f64::MAX, f64::NAN, -1.0, f64::INFINITY] {
        app.on_remote(RemoteEvent::Stats {
            master: 0,
            stats: Stats {
                rates: Some(Rates {
                    events_in_per_s: rate,
                    published_per_s: rate,
                    ..Rates::default()
                }),
                ..Stats::default()
            },
        });
    }
    // Samples stay below u64::MAX / 120: `Mesh::heartbeat_rows` sums them.
    for rtt_us in [0, u64::MAX / 200, 1, u64::MAX / 200] {
        app.on_remote(RemoteEvent::Heartbeat {
            master: 0,
            sample: HeartbeatSample {
                at_unix_nanos: i64::MIN,
                checker_id: "k".repeat(300),
                tier: 99,
                peer_id: long_id.clone(),
                rtt_us,
            },
        });
    }
    app.message = Some("m".repeat(1_000));
    render_everywhere(&app);
    app.message = None;
    press(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!("extreme_values_sidecars", screen(&app).backend());
}
