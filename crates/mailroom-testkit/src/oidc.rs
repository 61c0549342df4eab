//! A real OpenID Connect provider: the npm `oidc-provider` (installed by `.ci/run` into
//! `crates/mailroom-testkit/oidc/node_modules`) run by Node on a loopback port, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `oidc-provider`.
pub struct OidcProvider {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts a provider with `config`: `{"clients": [<oidc-provider client metadata>…],
    /// "access_token_ttl": <seconds>}`. Users log in with any account name and password through
    /// the development login and consent forms.
    pub fn start(config: &serde_json::Value) -> anyhow::Result<Self> {
        Self::start_on(crate::free_port(), config)
    }

    /// Starts on a port chosen beforehand (a peer that calls the provider, such as Dovecot
    /// introspecting tokens, may need to be configured first).
    pub fn start_on(port: u16, config: &serde_json::Value) -> anyhow::Result<Self> {
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
        anyhow::ensure!(
            folder.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci` in {} (.ci/run does)",
            folder.display()
        );
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec(config)?)?;
        let child = Command::new("node")
            .current_dir(&folder)
            .arg("server.mjs")
            .arg(port.to_string())
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut provider = Self {
            port,
            child,
            _dir: dir,
        };
        if let Err(error) = crate::wait_for_port(port, Duration::from_secs(20)) {
            let _ = provider.child.kill();
            return Err(error);
        }
        Ok(provider)
    }

    /// Stops and starts the provider on the same port with the same configuration: it keeps
    /// nothing, so every grant and token it issued is gone — as when consent is revoked.
    pub fn restart(&mut self, config: &serde_json::Value) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = Self::start_on(self.port, config)?;
        *self = fresh;
        Ok(())
    }

    /// The issuer, `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
