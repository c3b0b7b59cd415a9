//! `fedq node check`: the node's settings verified end to end before (or while) it runs, each
//! check saying what to fix when it fails. Nothing is changed: no heartbeat is sent, nothing is
//! declared at the broker, no firewall rule is touched.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::keys::{OrgKey, PublicKey};

/// How long each remote check may take unless `fedq node check --timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub what: &'static str,
    /// What was found, or what to fix.
    pub outcome: Result<String, String>,
}

impl Check {
    fn new(what: &'static str, outcome: Result<String, String>) -> Self {
        Self { what, outcome }
    }
}

/// Runs every check of `config`, in the order a node needs them, each remote one given `timeout`.
pub async fn run(config: &NodeConfig, timeout: Duration) -> Vec<Check> {
    let key = key(config);
    let mut checks = vec![Check::new(
        "organization key",
        key.as_ref().map(|(_, text)| text.clone()).map_err(Clone::clone),
    )];
    let public = key.ok().map(|(public, _)| public);
    checks.push(Check::new("server", timed(timeout, server(config, public.as_ref())).await));
    checks.push(Check::new("broker", broker(config, timeout).await));
    checks.push(Check::new("docker", timed(timeout, docker()).await));
    checks.push(Check::new("br_netfilter", bridge_netfilter()));
    checks.push(Check::new(
        "firewall tools",
        if config.network.firewall {
            timed(timeout, firewall_tools()).await
        } else {
            Ok("[network] firewall = false: containers are not isolated from the host's ports".into())
        },
    ));
    checks.push(Check::new("run disks", timed(timeout, run_disks(config)).await));
    checks.push(Check::new("images", timed(timeout, images(config)).await));
    checks.push(Check::new("data sources", data(config)));
    checks
}

async fn timed(
    timeout: Duration,
    check: impl Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(timeout, check).await.unwrap_or_else(|_| {
        Err(format!(
            "no answer within {} s; if the host is only slow, try again with a longer --timeout",
            timeout.as_secs()
        ))
    })
}

fn key(config: &NodeConfig) -> Result<(PublicKey, String), String> {
    let path = &config.node.key_file;
    let key = OrgKey::load(path).map_err(|e| {
        format!("{e}; copy the organization's private key file there (mode 0600), or create one with `fedq keys generate --out {}`", path.display())
    })?;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {mode:o}); `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok((key.public().clone(), format!("{} ({})", path.display(), key.id())))
}

async fn server(config: &NodeConfig, public: Option<&PublicKey>) -> Result<String, String> {
    let url = &config.server.url;
    let client = crate::client::Client::for_node(url, &config.server.tls, config.server.api_key.clone())
        .map_err(|e| format!("{e}"))?;
    let org = config.node.organization;
    let shown = client.get(&format!("/organizations/{org}")).await.map_err(|e| match e.status() {
        Some(401) => format!(
            "{url} refused [server] api_key: the node is revoked or the key is wrong; enroll the node again"
        ),
        _ => format!("{e}"),
    })?;
    let name = shown["name"].as_str().unwrap_or_default();
    let published = shown["public_key"].as_str().and_then(|k| k.parse::<PublicKey>().ok());
    match (published, public) {
        (None, Some(public)) => Err(format!(
            "{name} has no published key: partners cannot seal to this node. As an administrator of {name}: \
             `fedq keys publish --key {}` (key {})",
            config.node.key_file.display(),
            public.id()
        )),
        (Some(published), Some(public)) if published.id() != public.id() => Err(format!(
            "{name}'s published key is {} but [node] key_file holds {}: put the organization's current private key there",
            published.id(),
            public.id()
        )),
        _ => Ok(format!(
            "{url} over {}, organization {name}",
            if url.starts_with("https") { "TLS" } else { "plain HTTP" }
        )),
    }
}

async fn broker(config: &NodeConfig, timeout: Duration) -> Result<String, String> {
    let endpoints = crate::broker::endpoints::Endpoints::new(
        &config.broker.url,
        &config.broker.cluster_hosts,
        &config.broker.tls,
        "broker.url",
    )
    .map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    // Each step has its own deadline, so that a slow broker is told apart from a slow queue.
    let (connection, address) = tokio::time::timeout(timeout, endpoints.connect())
        .await
        .map_err(|_| {
            format!(
                "{} accepted no AMQP connection within {} s: is the broker up, reachable from here and not \
                 overloaded? (`--timeout` waits longer)",
                endpoints.addresses().join(", "),
                timeout.as_secs()
            )
        })?
        .map_err(|e| {
            format!("{e}; check [broker] url (its user and password come from the enrollment) and [broker.tls] ca_file")
        })?;
    let queue = crate::broker::org_queue(config.node.organization);
    let left = timeout.saturating_sub(started.elapsed());
    let waiting = tokio::time::timeout(left, crate::broker::waiting_messages(&connection, &queue)).await;
    // A broker that does not answer the close either is not waited on: the process ends anyway.
    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "check done".into())).await;
    let waiting = waiting
        .map_err(|_| {
            format!(
                "{address} let {} in but did not say within {} s how many messages {queue} holds: the broker is \
                 busy or the queue has no leader (`rabbitmq-queues quorum_status {queue}`)",
                config.broker.username,
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("{queue} cannot be read with this user ({e}): is the node revoked?"))?;
    Ok(format!("{address} as {}, {waiting} message(s) waiting", config.broker.username))
}

async fn docker() -> Result<String, String> {
    let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
    let version = docker
        .version()
        .await
        .map_err(|e| format!("{e}; is the Docker engine running (`systemctl start docker`)?"))?;
    Ok(format!("engine {}", version.version.unwrap_or_default()))
}

fn bridge_netfilter() -> Result<String, String> {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok("bridged traffic goes through iptables".into()),
        other => Err(format!(
            "{path} is {}: containers' traffic would bypass the firewall; `modprobe br_netfilter && sysctl -w \
             net.bridge.bridge-nf-call-iptables=1` (and in /etc/modules-load.d, /etc/sysctl.d to keep it)",
            other.map(|v| v.trim().to_owned()).unwrap_or_else(|e| e.to_string())
        )),
    }
}

async fn firewall_tools() -> Result<String, String> {
    for tool in ["iptables", "ip6tables"] {
        let out = tokio::process::Command::new(tool).args(["-w", "-n", "-L", "INPUT"]).output().await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "`{tool} -L` failed ({}): run the node as root (it needs CAP_NET_ADMIN)",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => return Err(format!("{tool}: {e}; `apt-get install iptables`")),
        }
    }
    Ok("iptables and ip6tables usable".into())
}

/// Each run's volume is a disk of its own (`containers/run_disk.rs`): the tools that make one
/// must be there, and the state directory must have room for at least one.
async fn run_disks(config: &NodeConfig) -> Result<String, String> {
    for (tool, args) in [("fallocate", "--version"), ("mkfs.ext4", "-V"), ("losetup", "--version")] {
        match tokio::process::Command::new(tool).arg(args).output().await {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!("`{tool} {args}` failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
            }
            Err(e) => return Err(format!("{tool}: {e}; `apt-get install util-linux e2fsprogs`")),
        }
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control: load the loop module (`modprobe loop`)".into());
    }
    let (mib, reserve) = (config.limits.run_volume_mib, config.limits.state_reserve_mib);
    let state_dir = config.node.state_dir.display();
    let free = crate::containers::run_disk::free_mib(&config.node.state_dir)
        .await
        .map_err(|e| format!("{state_dir}: {e}"))?;
    if free < mib.saturating_add(reserve) {
        return Err(format!(
            "{free} MiB free under {state_dir}, less than one run's volume and the reserve kept for the node's \
             records (limits.run_volume_mib = {mib}, limits.state_reserve_mib = {reserve}): free space or lower them"
        ));
    }
    let fit = usize::try_from((free - reserve) / mib).unwrap_or(usize::MAX).min(config.limits.max_run_disks);
    Ok(format!(
        "{mib} MiB per run; {free} MiB free under {state_dir}, {reserve} MiB kept free: room for {fit} runs \
         (limits.max_run_disks = {})",
        config.limits.max_run_disks
    ))
}

async fn images(config: &NodeConfig) -> Result<String, String> {
    let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
    let rules = &config.policy.images;
    if rules.is_empty() {
        return Err(
            "[policy] allows no image: this node refuses every task; add [[policy.images]] rules".into()
        );
    }
    let mut missing = Vec::new();
    for rule in rules.iter().filter(|r| r.digest != "*") {
        match docker.inspect_image(&rule.digest).await {
            Ok(image) => {
                let tags = image.repo_tags.unwrap_or_default();
                if !tags
                    .iter()
                    .any(|t| crate::policy::glob(&rule.name, crate::policy::parse_reference(t).name))
                {
                    missing
                        .push(format!("{} {} is here but not tagged {}", rule.name, rule.digest, rule.name));
                }
            }
            Err(_) => missing.push(format!("{} {}", rule.name, rule.digest)),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "pinned but not on this machine: {}; `docker load` the organization's copy of each (check its id with \
             `docker image inspect --format '{{{{.Id}}}}' IMAGE`)",
            missing.join("; ")
        ));
    }
    let loose = rules.iter().filter(|r| r.digest == "*").count();
    Ok(format!(
        "{} pinned image(s) present{}",
        rules.len() - loose,
        if loose > 0 { format!(", {loose} rule(s) accept any digest") } else { String::new() }
    ))
}

fn data(config: &NodeConfig) -> Result<String, String> {
    let missing: Vec<String> = config
        .data
        .iter()
        .filter(|(_, path)| !path.exists())
        .map(|(label, path)| format!("{label} = {}", path.display()))
        .collect();
    if missing.is_empty() {
        Ok(format!("{} source(s) present", config.data.len()))
    } else {
        Err(format!("not found: {}; fix the paths in [data]", missing.join(", ")))
    }
}
