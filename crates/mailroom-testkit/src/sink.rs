//! A private `smtp-sink` (from Postfix) that dumps every received message into a temporary folder.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SmtpSink {
    pub port: u16,
    dump_dir: tempfile::TempDir,
    child: Child,
}

/// One message as smtp-sink received it.
#[derive(Debug, Clone)]
pub struct DumpedMessage {
    /// The message as sent by the client (smtp-sink's own X- and Received headers removed).
    pub raw: Vec<u8>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: Option<String>,
}

impl SmtpSink {
    /// Starts a sink on a free port; `options` are extra smtp-sink flags such as `["-r", "RCPT"]`.
    pub fn start(options: &[&str]) -> Result<Self> {
        Self::start_on(crate::free_port(), options, None)
    }

    /// Starts a sink that keeps nothing (for benchmarks: no disk writes in the peer).
    pub fn start_without_dumps(options: &[&str]) -> Result<Self> {
        let port = crate::free_port();
        let child = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody"])
            .args(options)
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting smtp-sink (is postfix installed?)")?;
        let sink = Self {
            port,
            dump_dir: tempfile::tempdir()?,
            child,
        };
        crate::wait_for_port(port, Duration::from_secs(10))?;
        Ok(sink)
    }

    /// Starts a sink on a given port, optionally reusing an earlier sink's dump folder.
    pub fn start_on(
        port: u16,
        options: &[&str],
        dump_dir: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        let dump_dir = match dump_dir {
            Some(dir) => dir,
            None => tempfile::tempdir()?,
        };
        // smtp-sink drops privileges to `nobody` when run as root; let it write the dumps.
        std::fs::set_permissions(
            dump_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )?;
        let template = format!("{}/m.", dump_dir.path().display());
        let mut command = Command::new("/usr/sbin/smtp-sink");
        command
            .args(["-u", "nobody", "-d", &template])
            .args(options)
            .arg(format!("127.0.0.1:{port}"))
            .arg("256");
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting smtp-sink (is postfix installed?)")?;
        let sink = Self {
            port,
            dump_dir,
            child,
        };
        crate::wait_for_port(port, Duration::from_secs(10))?;
        Ok(sink)
    }

    /// Stops this sink and starts another on the same port with other options, keeping the dumps.
    pub fn restart_with(mut self, options: &[&str]) -> Result<Self> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let dump_dir = std::mem::replace(&mut self.dump_dir, tempfile::tempdir()?);
        drop(self);
        Self::start_on(port, options, Some(dump_dir))
    }

    pub fn dump_dir(&self) -> PathBuf {
        self.dump_dir.path().to_path_buf()
    }

    /// Every message received so far.
    pub fn messages(&self) -> Result<Vec<DumpedMessage>> {
        let mut messages = Vec::new();
        for entry in std::fs::read_dir(self.dump_dir.path())? {
            let path = entry?.path();
            // smtp-sink deletes the dump of a transaction that was cut off (the client killed
            // mid-message) — possibly between listing the folder and reading the file.
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error.into()),
            };
            messages.push(parse_dump(&bytes));
        }
        Ok(messages)
    }
}

fn parse_dump(bytes: &[u8]) -> DumpedMessage {
    let text = String::from_utf8_lossy(bytes);
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut offset = 0;
    let mut in_received = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(value) = trimmed.strip_prefix("X-Mail-Args: ") {
            mail_from = value
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches(['<', '>'])
                .to_owned();
        } else if let Some(value) = trimmed.strip_prefix("X-Rcpt-Args: ") {
            rcpt_to.push(
                value
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_matches(['<', '>'])
                    .to_owned(),
            );
        } else if trimmed.starts_with("X-Client-") || trimmed.starts_with("X-Helo-Args") {
        } else if trimmed.starts_with("Received: ") {
            in_received = true;
        } else if in_received && line.starts_with(['\t', ' ']) {
        } else {
            break;
        }
        offset += line.len();
    }
    let raw = bytes[offset..].to_vec();
    let message_id = mail_parser::MessageParser::default()
        .parse(&raw)
        .and_then(|m| m.message_id().map(|id| format!("<{id}>")));
    DumpedMessage {
        raw,
        mail_from,
        rcpt_to,
        message_id,
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
