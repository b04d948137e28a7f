//! A real terminal for the dashboard: a detached tmux session whose screen
//! the test reads and whose keyboard it types on.

use std::process::Command;
use std::time::{Duration, Instant};

/// A detached tmux session running one command; killed on drop.
#[derive(Debug)]
pub struct Tmux {
    session: String,
    socket: String,
}

fn tmux(socket: &str) -> Command {
    let mut command = Command::new("tmux");
    command.args(["-L", socket]);
    command
}

impl Tmux {
    /// Starts `command` (run by the shell) in a `width`×`height` terminal.
    pub fn start(command: &str, width: u16, height: u16) -> Self {
        let id = format!("smesh-{}-{}", std::process::id(), smesh_unique());
        let status = tmux(&id)
            .args([
                "new-session",
                "-d",
                "-s",
                &id,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux must be installed (scripts/test installs it)");
        assert!(status.success(), "tmux new-session failed");
        Self {
            session: id.clone(),
            socket: id,
        }
    }

    /// Types keys, in tmux `send-keys` syntax (`H`, `Tab`, `C-c`, …).
    pub fn send(&self, keys: &str) {
        let status = tmux(&self.socket)
            .args(["send-keys", "-t", &self.session, keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys} failed");
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        let output = tmux(&self.socket)
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen satisfies `ready`; fails with the screen shown.
    pub fn wait_for(&self, what: &str, within: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the session (the command) is still running.
    pub fn alive(&self) -> bool {
        tmux(&self.socket)
            .args(["has-session", "-t", &self.session])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux(&self.socket)
            .args(["kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn smesh_unique() -> u32 {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
