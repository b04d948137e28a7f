//! A small filesystem that fills up, for tests of a full disk.
//!
//! A `tmpfs` of a chosen size, mounted in a mount namespace of its own:
//! `unshare --user --map-root-user --mount` needs no privileges, so the
//! same test runs on a laptop and in CI, and the mount disappears with the
//! namespace (nothing to clean up in the host's mount table, even after a
//! crashed test). A process started through [`SmallFs::enter`] sees the
//! mount; the test reads and writes the files from outside through
//! `/proc/<pid>/root` ([`SmallFs::outside`]).
//!
//! Where user namespaces are refused but the test runs as root, the tmpfs
//! is mounted directly and unmounted on drop. If neither works the test
//! fails with the reason: a full-disk test is never skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A mounted tmpfs of a few MiB.
#[derive(Debug)]
pub struct SmallFs {
    /// The mount point (the same path inside and outside).
    dir: PathBuf,
    /// How it was mounted.
    how: Mounted,
}

#[derive(Debug)]
enum Mounted {
    /// In a namespace held by this process (`sleep`), until it is killed.
    Namespace(Child),
    /// Directly in the host's mount table (as root), until unmounted.
    Host,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` at `dir` (created if missing).
    pub fn mount(dir: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let size = bytes.to_string();
        let script =
            "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && echo mounted && exec sleep 3600";
        let namespace = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", script, "sh", &size])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut why = String::new();
        match namespace {
            Ok(mut child) => {
                let mut line = String::new();
                if let Some(out) = child.stdout.take() {
                    let _ = BufReader::new(out).read_line(&mut line);
                }
                if line.trim() == "mounted" {
                    return Self {
                        dir: dir.to_path_buf(),
                        how: Mounted::Namespace(child),
                    };
                }
                let _ = child.kill();
                let output = child.wait_with_output().expect("wait for unshare");
                why = format!(
                    "unshare --user --map-root-user --mount: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Err(err) => why.push_str(&format!("cannot run unshare: {err}")),
        }
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if is_root {
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .status()
                .expect("run mount");
            if status.success() {
                return Self {
                    dir: dir.to_path_buf(),
                    how: Mounted::Host,
                };
            }
            why.push_str(&format!("; mount -t tmpfs as root: {status}"));
        }
        panic!(
            "cannot make a small filesystem for the full-disk test ({why}). \
             It needs user namespaces (unshare --user) or root."
        );
    }

    /// The mount point, as processes started through [`SmallFs::enter`] see it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The command prefix that runs a program where the mount is visible,
    /// in `cwd` (for [`crate::nodes::NodeSpec::wrapped`]).
    pub fn enter(&self, cwd: &Path) -> Vec<String> {
        match &self.how {
            Mounted::Namespace(holder) => vec![
                "nsenter".into(),
                "--target".into(),
                holder.id().to_string(),
                "--user".into(),
                "--mount".into(),
                "--preserve-credentials".into(),
                format!("--wd={}", cwd.display()),
            ],
            Mounted::Host => Vec::new(),
        }
    }

    /// Where the test reaches `path` (a path under the mount) from outside.
    pub fn outside(&self, path: &Path) -> PathBuf {
        match &self.how {
            Mounted::Namespace(holder) => {
                let relative = path.strip_prefix("/").unwrap_or(path);
                Path::new(&format!("/proc/{}/root", holder.id())).join(relative)
            }
            Mounted::Host => path.to_path_buf(),
        }
    }

    /// Fills what is left of the filesystem with a file named `name`, so the
    /// next write fails with ENOSPC. Returns how many bytes it took.
    pub fn fill(&self, name: &str) -> u64 {
        let path = self.outside(&self.dir.join(name));
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![b'f'; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
        written
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        match &mut self.how {
            Mounted::Namespace(holder) => {
                // The namespace, and the mount in it, go with its last process.
                let _ = holder.kill();
                let _ = holder.wait();
            }
            Mounted::Host => {
                let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
            }
        }
    }
}
