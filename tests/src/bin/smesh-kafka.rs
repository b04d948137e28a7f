//! `smesh-kafka`: a throwaway single-node Apache Kafka broker for
//! development and benchmarks, the same one the test suite uses.
//!
//! ```text
//! cargo run -p smesh-tests --bin smesh-kafka -- [PORT]
//! ```
//!
//! Fetches the broker if needed, starts it on 127.0.0.1:PORT (default 9092),
//! prints the bootstrap address, and runs until Ctrl-C or until its standard
//! input closes; then the broker and its data are removed.

use std::io::Read;
use std::process::ExitCode;

use smesh_tests::kafka::KafkaBroker;

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 9092,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("smesh-kafka: usage: smesh-kafka [PORT]");
            return ExitCode::from(64);
        }
    };
    let broker = match KafkaBroker::start_with_port(Some(port)) {
        Ok(broker) => broker,
        Err(err) => {
            eprintln!("smesh-kafka: {err}");
            return ExitCode::from(69);
        }
    };
    println!("{}", broker.bootstrap());
    eprintln!(
        "smesh-kafka: broker ready at {}; Ctrl-C or close stdin to stop it",
        broker.bootstrap()
    );
    // Ctrl-C ends the process; the broker's watchdog then removes it. Closing
    // stdin ends it cleanly through Drop.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(broker);
    ExitCode::SUCCESS
}
