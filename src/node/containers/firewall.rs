//! Host firewall rules that leave the algorithm network nothing but the endpoint.
//!
//! Docker's internal network has no route out, but the host itself is on it, as the gateway:
//! a container can reach every host port bound to all interfaces (the broker, the database…)
//! at the gateway address, and IPv6 link-local addresses reach services bound to `[::]`. The
//! node adds its own chain to the host's `INPUT`: from the network's bridge, only TCP to the
//! endpoint's address and port is accepted; everything else from the bridge is dropped, and all
//! IPv6 from it is dropped. Traffic between containers is stopped by Docker itself
//! (`enable_icc=false`, which needs `br_netfilter`, checked at start).

use std::net::Ipv4Addr;

use tokio::process::Command;

/// The rules of one node's algorithm network.
#[derive(Debug, Clone)]
pub struct Firewall {
    chain: String,
    bridge: String,
    gateway: Ipv4Addr,
    port: u16,
}

/// A firewall command failed.
#[derive(Debug, thiserror::Error)]
#[error("firewall: `{command}` failed: {detail}")]
pub struct FirewallError {
    command: String,
    detail: String,
}

impl Firewall {
    /// Rules for `bridge` (the network's interface), allowing `gateway:port` only. `tag`
    /// distinguishes nodes on one host (at most 20 characters).
    pub fn new(tag: &str, bridge: &str, gateway: Ipv4Addr, port: u16) -> Self {
        Self { chain: format!("FEDQ-{tag}"), bridge: bridge.to_owned(), gateway, port }
    }

    /// Installs (or re-installs) the rules. Idempotent.
    pub async fn install(&self) -> Result<(), FirewallError> {
        check_bridge_netfilter()?;
        let port = self.port.to_string();
        let gateway = self.gateway.to_string();
        for tool in ["iptables", "ip6tables"] {
            if tool == "ip6tables" && !has_tool(tool).await {
                continue;
            }
            // Create or empty the chain, then fill it.
            if run(tool, &["-N", &self.chain]).await.is_err() {
                run(tool, &["-F", &self.chain]).await?;
            }
            if tool == "iptables" {
                run(
                    tool,
                    &["-A", &self.chain, "-p", "tcp", "-d", &gateway, "--dport", &port, "-j", "ACCEPT"],
                )
                .await?;
            }
            run(tool, &["-A", &self.chain, "-j", "DROP"]).await?;
            let jump = ["INPUT", "-i", self.bridge.as_str(), "-j", self.chain.as_str()];
            if run(tool, &[&["-C"], &jump[..]].concat()).await.is_err() {
                run(tool, &[&["-I"], &jump[..1], &["1"], &jump[1..]].concat()).await?;
            }
        }
        Ok(())
    }

    /// Removes the rules. Idempotent.
    pub async fn remove(&self) {
        for tool in ["iptables", "ip6tables"] {
            let jump = ["INPUT", "-i", self.bridge.as_str(), "-j", self.chain.as_str()];
            while run(tool, &[&["-D"], &jump[..]].concat()).await.is_ok() {}
            let _ = run(tool, &["-F", &self.chain]).await;
            let _ = run(tool, &["-X", &self.chain]).await;
        }
    }
}

async fn has_tool(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().await.is_ok_and(|o| o.status.success())
}

/// Without `br_netfilter`, bridged traffic bypasses iptables and Docker's inter-container rule
/// does nothing: refuse to run rather than pretend.
fn check_bridge_netfilter() -> Result<(), FirewallError> {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        other => Err(FirewallError {
            command: format!("read {path}"),
            detail: format!(
                "bridged traffic is not filtered ({}); load br_netfilter and set it to 1",
                other.map(|v| v.trim().to_owned()).unwrap_or_else(|e| e.to_string())
            ),
        }),
    }
}

async fn run(tool: &str, args: &[&str]) -> Result<(), FirewallError> {
    // `-w`: wait for the xtables lock rather than fail while Docker changes its own rules.
    let output = Command::new(tool).arg("-w").args(args).output().await.map_err(|e| FirewallError {
        command: format!("{tool} {}", args.join(" ")),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError {
            command: format!("{tool} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
