//! Host firewall rules that leave the algorithm network nothing but the endpoint.
//!
//! Docker's internal network has no route out, but the host itself is on it, as the gateway:
//! a container can reach every host port bound to all interfaces (the broker, the database…)
//! at the gateway address, TCP or UDP, and IPv6 link-local addresses reach services bound to
//! `[::]`. The node adds its own chain to the host's `INPUT`: from the network's bridge (the
//! interface the network really has, read from Docker, never assumed), only TCP to the
//! endpoint's address and port is accepted; everything else from the bridge is dropped, and all
//! IPv6 from it is dropped. A second chain drops everything forwarded from or to the bridge
//! (hooked in `DOCKER-USER`, which Docker keeps first in `FORWARD`, or in `FORWARD` itself):
//! containers reach nothing routed, whatever Docker's own rules become, and not each other
//! (also Docker's `enable_icc=false`, which needs `br_netfilter`, checked at start).
//!
//! Rules can vanish under a running node (a firewall reload, an administrator's flush), and a
//! rule put above the node's jump (`iptables -I INPUT 1 -i <bridge> -j ACCEPT`) takes the
//! verdict before it, although `iptables -C` still finds the jump: the node checks with
//! [`Firewall::verify`] every few seconds that each jump is there and that nothing above it can
//! accept the bridge's traffic ([`shadows`]), starts no container while that is not so, and
//! installs the rules again, its jumps first.

use std::net::Ipv4Addr;

use tokio::process::Command;

/// The rules of one node's algorithm network.
#[derive(Debug, Clone)]
pub struct Firewall {
    chain: String,
    forward_chain: String,
    bridge: String,
    gateway: Ipv4Addr,
    port: u16,
}

/// The tools, in the order rules are installed.
const TOOLS: [&str; 2] = ["iptables", "ip6tables"];

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
        Self {
            chain: format!("FEDQ-{tag}"),
            forward_chain: format!("FEDQ-{tag}-F"),
            bridge: bridge.to_owned(),
            gateway,
            port,
        }
    }

    /// The bridge interface the rules are hung on.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Each chain with the rules it must hold, for `tool`.
    fn chains(&self, tool: &str) -> [(&str, Vec<Vec<String>>); 2] {
        let mut input = Vec::new();
        if tool == "iptables" {
            input.push(
                ["-p", "tcp", "-d", &format!("{}/32", self.gateway), "--dport", &self.port.to_string()]
                    .iter()
                    .chain(&["-j", "ACCEPT"])
                    .map(|a| a.to_string())
                    .collect(),
            );
        }
        input.push(vec!["-j".into(), "DROP".into()]);
        [(self.chain.as_str(), input), (self.forward_chain.as_str(), vec![vec!["-j".into(), "DROP".into()]])]
    }

    /// The rules that send the bridge's traffic into the chains: `(chain, rule)`.
    async fn jumps(&self, tool: &str) -> Vec<(&'static str, Vec<String>)> {
        // Docker puts `DOCKER-USER` first in `FORWARD` and never flushes it; without Docker's
        // chain, `FORWARD` itself.
        let forward = if run(tool, &["-S", "DOCKER-USER"]).await.is_ok() { "DOCKER-USER" } else { "FORWARD" };
        let jump = |direction: &str, chain: &str| {
            vec![direction.to_owned(), self.bridge.clone(), "-j".to_owned(), chain.to_owned()]
        };
        vec![
            ("INPUT", jump("-i", &self.chain)),
            (forward, jump("-i", &self.forward_chain)),
            (forward, jump("-o", &self.forward_chain)),
        ]
    }

    /// Installs (or re-installs) the rules. Idempotent.
    pub async fn install(&self) -> Result<(), FirewallError> {
        check_bridge_netfilter()?;
        check_interface(&self.bridge)?;
        for tool in TOOLS {
            if tool == "ip6tables" && !has_tool(tool).await {
                continue;
            }
            for (chain, rules) in self.chains(tool) {
                // Create or empty the chain, then fill it.
                if run(tool, &["-N", chain]).await.is_err() {
                    run(tool, &["-F", chain]).await?;
                }
                for rule in rules {
                    let args: Vec<&str> =
                        ["-A", chain].into_iter().chain(rule.iter().map(String::as_str)).collect();
                    run(tool, &args).await?;
                }
            }
            for (chain, rule) in self.jumps(tool).await {
                if self.jump_in_place(tool, chain, &rule).await.is_ok() {
                    continue;
                }
                let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                while run(tool, &[&["-D", chain], &rule[..]].concat()).await.is_ok() {}
                run(tool, &[&["-I", chain, "1"], &rule[..]].concat()).await?;
            }
        }
        Ok(())
    }

    /// Whether `rule` is in `chain` with nothing above it that could take a verdict on the
    /// bridge's traffic first.
    async fn jump_in_place(&self, tool: &str, chain: &str, rule: &[String]) -> Result<(), FirewallError> {
        let listed = output(tool, &["-S", chain]).await?;
        let ours = format!("-A {chain} {}", rule.join(" "));
        let mut above: Vec<&str> = Vec::new();
        for line in listed.lines().filter(|l| l.starts_with("-A ")) {
            if line == ours {
                return match above.iter().find(|l| shadows(l, &self.bridge, chain == "INPUT")) {
                    None => Ok(()),
                    Some(l) => Err(FirewallError {
                        command: format!("{tool} -S {chain}"),
                        detail: format!("`{l}` comes before the node's `{ours}` and can accept its traffic"),
                    }),
                };
            }
            above.push(line);
        }
        Err(FirewallError { command: format!("{tool} -S {chain}"), detail: format!("`{ours}` is missing") })
    }

    /// Whether every rule is in place, and nothing else in the node's chains: `Err` names the
    /// first one missing.
    pub async fn verify(&self) -> Result<(), FirewallError> {
        check_interface(&self.bridge)?;
        for tool in TOOLS {
            if tool == "ip6tables" && !has_tool(tool).await {
                continue;
            }
            for (chain, rules) in self.chains(tool) {
                for rule in &rules {
                    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                    run(tool, &[&["-C", chain], &rule[..]].concat()).await?;
                }
                let listed = output(tool, &["-S", chain]).await?;
                let present = listed.lines().filter(|l| l.starts_with("-A ")).count();
                if present != rules.len() {
                    return Err(FirewallError {
                        command: format!("{tool} -S {chain}"),
                        detail: format!("{present} rules where {} belong", rules.len()),
                    });
                }
            }
            for (chain, rule) in self.jumps(tool).await {
                self.jump_in_place(tool, chain, &rule).await?;
            }
        }
        Ok(())
    }

    /// Removes the rules. Idempotent.
    pub async fn remove(&self) {
        for tool in TOOLS {
            for forward in ["INPUT", "FORWARD", "DOCKER-USER"] {
                for (direction, chain) in
                    [("-i", &self.chain), ("-i", &self.forward_chain), ("-o", &self.forward_chain)]
                {
                    let jump = [forward, direction, self.bridge.as_str(), "-j", chain.as_str()];
                    while run(tool, &[&["-D"], &jump[..]].concat()).await.is_ok() {}
                }
            }
            for chain in [&self.chain, &self.forward_chain] {
                let _ = run(tool, &["-F", chain]).await;
                let _ = run(tool, &["-X", chain]).await;
            }
        }
    }
}

/// Whether `line`, a rule of `iptables -S` listed above the node's jump for `bridge`, could take
/// a verdict on the bridge's traffic before the jump does. Harmless: a jump to another node's
/// chain (its rules only drop), a rule that only drops, rejects or logs, and, in `INPUT`, a rule
/// for another interface named literally. Anything else (an ACCEPT, a jump to someone else's
/// chain, a negation, an interface pattern that covers the bridge) could, so it counts.
fn shadows(line: &str, bridge: &str, input: bool) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().skip(2).collect();
    let target = tokens.windows(2).find(|w| w[0] == "-j" || w[0] == "-g").map(|w| w[1]);
    match target {
        None | Some("DROP" | "REJECT" | "LOG") => return false,
        Some(t) if t.starts_with("FEDQ-") => return false,
        Some(_) => {}
    }
    if !input || tokens.contains(&"!") {
        return true;
    }
    match tokens.windows(2).find(|w| w[0] == "-i").map(|w| w[1]) {
        Some(interface) => match interface.strip_suffix('+') {
            Some(prefix) => bridge.starts_with(prefix),
            None => interface == bridge,
        },
        None => true,
    }
}

/// The bridge must exist: rules on an interface that does not exist match nothing.
fn check_interface(bridge: &str) -> Result<(), FirewallError> {
    if std::path::Path::new("/sys/class/net").join(bridge).exists() {
        Ok(())
    } else {
        Err(FirewallError {
            command: format!("ls /sys/class/net/{bridge}"),
            detail: format!("the algorithm network's bridge {bridge} does not exist"),
        })
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
    output(tool, args).await.map(drop)
}

/// Runs `tool -w args`; its standard output.
async fn output(tool: &str, args: &[&str]) -> Result<String, FirewallError> {
    // `-w`: wait for the xtables lock rather than fail while Docker changes its own rules.
    let output = Command::new(tool).arg("-w").args(args).output().await.map_err(|e| FirewallError {
        command: format!("{tool} {}", args.join(" ")),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(FirewallError {
            command: format!("{tool} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::shadows;

    #[test]
    fn a_rule_above_the_jump_shadows_it_when_it_could_accept_the_bridges_traffic() {
        let b = "br-0123456789ab";
        for (line, input, expected) in [
            ("-A INPUT -i br-0123456789ab -j ACCEPT", true, true),
            ("-A INPUT -j ACCEPT", true, true),
            ("-A INPUT -p tcp --dport 22 -j ACCEPT", true, true),
            ("-A INPUT -i br-+ -j ACCEPT", true, true),
            ("-A INPUT ! -i lo -j ACCEPT", true, true),
            ("-A INPUT -i br-0123456789ab -j f2b-sshd", true, true),
            ("-A INPUT -i lo -j ACCEPT", true, false),
            ("-A INPUT -i br-ffffffffffff -j ACCEPT", true, false),
            ("-A INPUT -i br-ffffffffffff -j FEDQ-other", true, false),
            ("-A INPUT -j DROP", true, false),
            ("-A INPUT -i br-0123456789ab -j LOG --log-prefix x", true, false),
            ("-A INPUT -i br-0123456789ab", true, false),
            ("-A DOCKER-USER -i br-ffffffffffff -j FEDQ-other-F", false, false),
            ("-A DOCKER-USER -i eth0 -j ACCEPT", false, true),
            ("-A DOCKER-USER -j RETURN", false, true),
        ] {
            assert_eq!(shadows(line, b, input), expected, "{line}");
        }
    }
}
