//! Algorithm containers through the Docker API (bollard): the node's internal network and its
//! firewall, per-run volumes on disks of their own (`run_disk`), and hardened containers with
//! limits.

mod firewall;
pub(crate) mod run_disk;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, Mount, MountType,
    NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use sha2::Digest as _;

pub use firewall::{Firewall, FirewallError};
pub use run_disk::DiskError;

use crate::config::{Limits, NodeConfig};
use crate::ids::{JobId, OrgId, RunId, TaskId};
use crate::policy::LocalImage;
use crate::time::Timestamp;

/// Where the run volume is mounted in every container of the run.
pub const RUN_DIR: &str = "/fedq/run";
/// Where data sources are mounted, one entry per label.
pub const DATA_DIR: &str = "/data";
/// The most of a container's output Docker keeps on disk, MiB.
pub const MAX_LOG_MIB: u64 = 4;
/// How long an exit by a SIGKILL the node did not send waits for Docker's `oom` event.
const OOM_EVENT_WAIT_SECS: u64 = 30;

/// Labels on everything the node creates, so that it (and `fedq node gc`) can find it.
pub mod label {
    /// The node's name.
    pub const NODE: &str = "org.fedq.node";
    /// The organization.
    pub const ORGANIZATION: &str = "org.fedq.organization";
    /// The task.
    pub const TASK: &str = "org.fedq.task";
    /// The job.
    pub const JOB: &str = "org.fedq.job";
    /// The run.
    pub const RUN: &str = "org.fedq.run";
    /// When a run volume may be removed if no run-finished message came (ms since the epoch).
    pub const EXPIRES: &str = "org.fedq.expires-at";
}

/// A Docker call failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The Docker engine refused or is unreachable.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// The firewall could not be set up.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The network is not as expected.
    #[error("the algorithm network {0}")]
    Network(String),
    /// Host-side preparation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A run's disk could not be made, attached or released.
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// The node's sandbox: Docker, its internal network, and the rules around it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    docker: Docker,
    node: String,
    org: OrgId,
    network: String,
    gateway: Ipv4Addr,
    firewall: Option<Firewall>,
    /// Whether the firewall's rules were in place when last checked; no container starts
    /// while they are not.
    firewall_intact: tokio::sync::watch::Sender<bool>,
    limits: Limits,
    endpoint_port: u16,
    /// Held while a run's disk and volume are made or removed: two jobs of one run starting at
    /// once must not both make its file, nor one remove the volume the other is about to use.
    run_disks: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// What a job's container needs.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The job.
    pub job: JobId,
    /// Its task.
    pub task: TaskId,
    /// Its run.
    pub run: RunId,
    /// The image id to run (already checked against policy).
    pub image_id: String,
    /// The job's endpoint token.
    pub token: String,
    /// The run's volume.
    pub volume: String,
    /// The data sources (label and host path) the policy grants this image and requester: only
    /// these are mounted.
    pub data: Vec<(String, std::path::PathBuf)>,
    /// The node's `policy.min_cell_count`, as the job started.
    pub min_cell_count: usize,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code.
    pub code: i64,
    /// Whether the kernel killed it at its memory limit.
    pub oom_killed: bool,
}

/// A stable short tag for host-wide names (bridge interface, firewall chain).
fn tag(node: &str) -> String {
    hex::encode(&sha2::Sha256::digest(node.as_bytes())[..5])
}

impl Sandbox {
    /// Connects to Docker and sets up the node's network and firewall.
    pub async fn setup(config: &NodeConfig) -> Result<Self, ContainerError> {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let node = config.node.name.clone();
        let network = format!("fedq-{node}");
        let bridge = format!("fq-{}", tag(&node));
        // Without a configured subnet, the one Docker chose the first time is kept in the state
        // directory and asked for again, so that a restart does not move the endpoint to the
        // next free range (containers, rules and logs refer to its address).
        let kept = config.node.state_dir.join(KEPT_SUBNET_FILE);
        let remembered = match &config.network.subnet {
            Some(_) => None,
            None => {
                std::fs::read_to_string(&kept).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
            }
        };
        let wanted = match (&config.network.subnet, &remembered) {
            (Some(subnet), _) => Some(Wanted::Configured(subnet)),
            (None, Some(subnet)) => Some(Wanted::Remembered(subnet)),
            (None, None) => None,
        };
        let (gateway, bridge, subnet) = ensure_network(&docker, &network, &bridge, &node, wanted).await?;
        if config.network.subnet.is_none()
            && let Some(subnet) = subnet
            && remembered.as_deref() != Some(subnet.as_str())
            && let Err(e) = crate::files::write_atomic(&kept, subnet.as_bytes(), 0o644)
        {
            tracing::warn!(error = %e, path = %kept.display(), "could not keep the algorithm network's subnet");
        }
        let firewall = if config.network.firewall {
            let firewall = Firewall::new(&tag(&node), &bridge, gateway, config.network.endpoint_port);
            firewall.install().await?;
            Some(firewall)
        } else {
            None
        };
        Ok(Self {
            docker,
            node,
            org: config.node.organization,
            network,
            gateway,
            firewall,
            firewall_intact: tokio::sync::watch::Sender::new(true),
            limits: config.limits.clone(),
            endpoint_port: config.network.endpoint_port,
            run_disks: std::sync::Arc::default(),
        })
    }

    /// Only the Docker connection, for `fedq node gc`.
    pub async fn connect_for_gc(config: &NodeConfig) -> Result<Self, ContainerError> {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        Ok(Self {
            docker,
            node: config.node.name.clone(),
            org: config.node.organization,
            network: format!("fedq-{}", config.node.name),
            gateway: Ipv4Addr::UNSPECIFIED,
            firewall: None,
            firewall_intact: tokio::sync::watch::Sender::new(true),
            limits: config.limits.clone(),
            endpoint_port: config.network.endpoint_port,
            run_disks: std::sync::Arc::default(),
        })
    }

    /// The gateway address of the algorithm network: where the endpoint listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The name of the algorithm network.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Checks the firewall's rules; when they are not in place, closes the gate of
    /// [`Sandbox::start`] and installs them again (opening it once they are back). Returns
    /// whether they were in place.
    pub async fn check_firewall(&self) -> bool {
        let Some(firewall) = &self.firewall else { return true };
        match firewall.verify().await {
            Ok(()) => {
                self.firewall_intact.send_if_modified(|intact| !std::mem::replace(intact, true));
                true
            }
            Err(e) => {
                self.firewall_intact.send_replace(false);
                tracing::error!(
                    error = %e,
                    bridge = firewall.bridge(),
                    "the firewall of the algorithm network is not in place: no container starts until it is; installing it again"
                );
                match firewall.install().await {
                    Ok(()) => {
                        tracing::warn!(
                            bridge = firewall.bridge(),
                            "the firewall of the algorithm network is installed again"
                        );
                        self.firewall_intact.send_replace(true);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "installing the firewall failed; retrying at the next check")
                    }
                }
                false
            }
        }
    }

    /// Whether the firewall was in place at its last check.
    pub fn firewall_intact(&self) -> bool {
        *self.firewall_intact.borrow()
    }

    /// Removes the firewall rules, and the network if this node created it (when no container
    /// is attached any more). A network an administrator created beforehand stays: removed, the
    /// next start would create one on another subnet, with another endpoint address.
    pub async fn teardown(&self) {
        if let Some(firewall) = &self.firewall {
            firewall.remove().await;
        }
        let ours = match self.docker.inspect_network(&self.network, None).await {
            Ok(network) => network.labels.unwrap_or_default().get(label::NODE) == Some(&self.node),
            Err(_) => false,
        };
        if !ours {
            tracing::debug!(network = %self.network, "the algorithm network was created by an administrator; it stays");
            return;
        }
        if let Err(e) = self.docker.remove_network(&self.network).await {
            tracing::debug!(error = %e, "the algorithm network stays");
        }
    }

    /// The local image `reference`, if Docker has it. Never pulls.
    pub async fn image(&self, reference: &str) -> Result<Option<LocalImage>, ContainerError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(LocalImage {
                id: image.id.unwrap_or_default(),
                tags: image.repo_tags.unwrap_or_default(),
                digests: image.repo_digests.unwrap_or_default(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The name of the volume of `run` at this node.
    pub fn volume_name(&self, run: RunId) -> String {
        format!("fedq-{}-run-{run}", self.node)
    }

    /// The name of the container of `job`.
    pub fn container_name(&self, job: JobId) -> String {
        format!("fedq-{}-{job}", self.node)
    }

    /// Creates the run's volume over the run's own disk (`run_disk`): the file `image` of
    /// `limits.mib` MiB (made only within `limits`), its root owned by `owner`, made and
    /// attached if need be. An existing volume
    /// is kept if it mounts the device now backed by `image`; one over another device (made
    /// before a reboot, or by an older node as a bind of a directory) is replaced when no
    /// container uses it. The expiry label is set at creation (labels cannot change; the expiry
    /// that counts is the latest job's, kept by the node's own records, and Docker's label is the
    /// floor `gc` uses).
    pub async fn ensure_run_volume(
        &self,
        run: RunId,
        image: &Path,
        limits: run_disk::DiskLimits,
        owner: (u32, u32),
        expires_at: Timestamp,
    ) -> Result<String, ContainerError> {
        let name = self.volume_name(run);
        let _making = self.run_disks.lock().await;
        let device = run_disk::attach(image, limits, owner).await?;
        let device = device.display().to_string();
        if let Ok(existing) = self.docker.inspect_volume(&name).await {
            if existing.options.get("device") == Some(&device) {
                return Ok(name);
            }
            let removed = self
                .docker
                .remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await;
            if let Err(e) = removed {
                tracing::warn!(volume = name, error = %e, "a run volume over another device, in use: kept");
                return Ok(name);
            }
        }
        let labels = HashMap::from([
            (label::NODE.to_owned(), self.node.clone()),
            (label::ORGANIZATION.to_owned(), self.org.to_string()),
            (label::RUN.to_owned(), run.to_string()),
            (label::EXPIRES.to_owned(), expires_at.as_millis().to_string()),
        ]);
        let options = HashMap::from([
            ("type".to_owned(), "ext4".to_owned()),
            ("device".to_owned(), device),
            ("o".to_owned(), "nodev,nosuid".to_owned()),
        ]);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                driver: Some("local".into()),
                driver_opts: Some(options),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        Ok(name)
    }

    /// Removes the run's volume and detaches its disk `image`. Returns whether the volume
    /// existed.
    pub async fn remove_run_volume(&self, run: RunId, image: &Path) -> Result<bool, ContainerError> {
        let _removing = self.run_disks.lock().await;
        let existed = match self
            .docker
            .remove_volume(&self.volume_name(run), None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(e) => return Err(e.into()),
        };
        run_disk::detach(image).await;
        Ok(existed)
    }

    /// Creates and starts the job's container, hardened and limited. A container of the same
    /// job left by a previous run of the node is removed first.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<String, ContainerError> {
        // No container starts on a network whose firewall is gone: wait for the check that
        // puts it back.
        let mut intact = self.firewall_intact.subscribe();
        if !*intact.borrow() {
            tracing::warn!(job = %spec.job, "waiting for the firewall of the algorithm network before starting");
            let _ = intact.wait_for(|ok| *ok).await;
        }
        let name = self.container_name(spec.job);
        self.remove(&name).await;
        let limits = &self.limits;
        let memory = i64::try_from(limits.memory_mib * 1024 * 1024).unwrap_or(i64::MAX);
        let mut mounts = vec![Mount {
            target: Some(RUN_DIR.into()),
            source: Some(spec.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        }];
        for (label, path) in &spec.data {
            mounts.push(Mount {
                target: Some(format!("{DATA_DIR}/{label}")),
                source: Some(path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let labels = HashMap::from([
            (label::NODE.to_owned(), self.node.clone()),
            (label::ORGANIZATION.to_owned(), self.org.to_string()),
            (label::TASK.to_owned(), spec.task.to_string()),
            (label::JOB.to_owned(), spec.job.to_string()),
            (label::RUN.to_owned(), spec.run.to_string()),
        ]);
        let host = HostConfig {
            network_mode: Some(self.network.clone()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), tmpfs_options(limits))])),
            memory: Some(memory),
            // Equal to memory: no swap, so the limit is a real limit.
            memory_swap: Some(memory),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            pids_limit: Some(limits.pids),
            mounts: Some(mounts),
            ipc_mode: Some("private".into()),
            // Docker keeps at most this much of a container's output on the host's disk, so an
            // algorithm that writes without end cannot fill it; the node keeps the last MiB.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), format!("{}m", MAX_LOG_MIB)),
                    ("max-file".to_owned(), "1".to_owned()),
                ])),
            }),
            sysctls: Some(HashMap::from([("net.ipv6.conf.all.disable_ipv6".to_owned(), "1".to_owned())])),
            // Docker's resolver in the container forwards names it does not know to these
            // servers, from the container's network: the gateway, whose firewall drops them, so
            // that no name query leaves (without this, the host's own resolvers).
            dns: Some(vec![self.gateway.to_string()]),
            ..Default::default()
        };
        let endpoint = format!("http://{}:{}", self.gateway, self.endpoint_port);
        let body = ContainerCreateBody {
            image: Some(spec.image_id.clone()),
            user: Some(limits.user.clone()),
            env: Some(vec![
                format!("FEDQ_ENDPOINT={endpoint}"),
                format!("FEDQ_TOKEN={}", spec.token),
                format!("FEDQ_RUN_DIR={RUN_DIR}"),
                format!("FEDQ_DATA_DIR={DATA_DIR}"),
                format!("FEDQ_MIN_CELL_COUNT={}", spec.min_cell_count),
            ]),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker.create_container(Some(options), body).await?;
        self.docker.start_container(&name, None).await?;
        Ok(name)
    }

    /// Waits for the container to stop and says how it ended.
    pub async fn wait(&self, name: &str) -> Result<Exit, ContainerError> {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut waits = self.docker.wait_container(name, Some(options));
        // A non-zero exit arrives as an error; either way the inspection below is the truth.
        let _ = waits.next().await;
        let state = self.docker.inspect_container(name, None).await?.state.unwrap_or_default();
        let code = state.exit_code.unwrap_or(-1);
        Ok(Exit { code, oom_killed: state.oom_killed.unwrap_or(false) })
    }

    /// Whether Docker reported an `oom` event for the container. Its `OOMKilled` flag is not
    /// reliable: the exit, handled after the out-of-memory notice, can reset it. The event is
    /// emitted either way, before or after the exit, so the daemon's event log is asked for it,
    /// waiting up to [`OOM_EVENT_WAIT_SECS`] for a late one: on a machine loaded by a fork
    /// bomb and a full test suite it was seen to come more than ten seconds after the exit.
    /// Asked only about an exit by a SIGKILL the node did not send, and only until the event
    /// comes.
    pub async fn oom_event(&self, name: &str) -> bool {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        // The container's whole life lies within the job's wall-clock limit.
        let since = now.saturating_sub(self.limits.timeout_secs + 60);
        let filters = HashMap::from([("container", vec![name]), ("event", vec!["oom"])]);
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .until(&(now + OOM_EVENT_WAIT_SECS).to_string())
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(options));
        while let Some(event) = events.next().await {
            if event.is_ok() {
                return true;
            }
        }
        false
    }

    /// Kills the container (it may already have stopped).
    pub async fn kill(&self, name: &str) {
        let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
        if let Err(e) = self.docker.kill_container(name, Some(options)).await {
            tracing::debug!(container = name, error = %e, "kill");
        }
    }

    /// The container's output (stdout and stderr), its last `max` bytes.
    pub async fn logs(&self, name: &str, max: usize) -> Vec<u8> {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut out = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk.into_bytes());
            if out.len() > 2 * max {
                out.drain(..out.len() - max);
            }
        }
        if out.len() > max {
            out.drain(..out.len() - max);
        }
        out
    }

    /// Removes a container, ignoring one that is gone.
    pub async fn remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(name, Some(options)).await;
    }

    /// Containers of this node, with their job label and whether they are running.
    pub async fn containers(&self) -> Result<Vec<(String, Option<String>, bool)>, ContainerError> {
        let filters = HashMap::from([("label", vec![format!("{}={}", label::NODE, self.node)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_default();
                let job = c.labels.and_then(|l| l.get(label::JOB).cloned());
                let running = c.state.is_some_and(|s| s.to_string() == "running");
                (name.trim_start_matches('/').to_owned(), job, running)
            })
            .collect())
    }

    /// Run volumes of this node: name, run, expiry label.
    pub async fn volumes(&self) -> Result<Vec<(String, Option<RunId>, Option<Timestamp>)>, ContainerError> {
        let filters = HashMap::from([("label", vec![format!("{}={}", label::NODE, self.node)])]);
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let list = self.docker.list_volumes(Some(options)).await?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let run = v.labels.get(label::RUN).and_then(|r| r.parse().ok());
                let expires =
                    v.labels.get(label::EXPIRES).and_then(|e| e.parse().ok()).map(Timestamp::from_millis);
                (v.name, run, expires)
            })
            .collect())
    }
}

/// Where the subnet Docker chose for the algorithm network is kept, in the state directory.
const KEPT_SUBNET_FILE: &str = "network-subnet";

/// The subnet asked for: the administrator's, which must be had, or the one kept from a
/// previous start, given up for Docker's choice when it is taken by now.
#[derive(Debug, Clone, Copy)]
enum Wanted<'a> {
    Configured(&'a str),
    Remembered(&'a str),
}

/// Creates the node's internal network if it does not exist; returns its gateway address, its
/// bridge interface and its subnet, as Docker has them (a network created by an administrator
/// beforehand has Docker's own bridge name, `br-` and the start of its id).
async fn ensure_network(
    docker: &Docker,
    network: &str,
    bridge: &str,
    node: &str,
    wanted: Option<Wanted<'_>>,
) -> Result<(Ipv4Addr, String, Option<String>), ContainerError> {
    if docker.inspect_network(network, None).await.is_err() {
        let options = HashMap::from([
            // No traffic between containers on this network.
            ("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned()),
            ("com.docker.network.bridge.name".to_owned(), bridge.to_owned()),
        ]);
        let request = |ipam| NetworkCreateRequest {
            name: network.to_owned(),
            driver: Some("bridge".into()),
            // No route out of the host.
            internal: Some(true),
            ipam,
            options: Some(options.clone()),
            labels: Some(HashMap::from([(label::NODE.to_owned(), node.to_owned())])),
            ..Default::default()
        };
        let subnet = match wanted {
            Some(Wanted::Configured(s) | Wanted::Remembered(s)) => Some(s),
            None => None,
        };
        let mut created = docker.create_network(request(subnet.map(ipam_for).transpose()?)).await;
        if let (Err(e), Some(Wanted::Remembered(s))) = (&created, wanted) {
            // Another network took the range while the node was stopped: take a new one.
            tracing::warn!(error = %e, subnet = s, "the algorithm network's previous subnet is not free; Docker picks another");
            created = docker.create_network(request(None)).await;
        }
        if let Err(e) = created {
            // Another start of the same node may have created it a moment ago.
            if docker.inspect_network(network, None).await.is_err() {
                return Err(e.into());
            }
        }
    }
    let inspect = docker.inspect_network(network, None).await?;
    let options = inspect.options.unwrap_or_default();
    let bridge = match options.get("com.docker.network.bridge.name") {
        Some(name) => name.clone(),
        None => {
            format!("br-{}", inspect.id.as_deref().unwrap_or_default().chars().take(12).collect::<String>())
        }
    };
    if options.get("com.docker.network.bridge.enable_icc").map(String::as_str) != Some("false")
        || inspect.internal != Some(true)
    {
        return Err(ContainerError::Network(format!(
            "{network} exists but is not internal with inter-container traffic disabled; remove it"
        )));
    }
    let config = inspect.ipam.and_then(|i| i.config).unwrap_or_default();
    let (gateway, subnet) = config
        .into_iter()
        .find_map(|c| Some((c.gateway?.parse::<Ipv4Addr>().ok()?, c.subnet)))
        .ok_or_else(|| {
            ContainerError::Network(format!(
                "{network} has no IPv4 gateway; remove it (`docker network rm {network}`) and start the node again"
            ))
        })?;
    Ok((gateway, bridge, subnet))
}

/// The address management of a network on `subnet`, with its first address as gateway, named
/// explicitly: without one, Docker records none, and the endpoint would have no address.
fn ipam_for(subnet: &str) -> Result<Ipam, ContainerError> {
    let gateway = first_host(subnet).ok_or_else(|| {
        ContainerError::Network(format!(
            "[network] subnet = {subnet:?} is not an IPv4 network with room for hosts (e.g. \"10.213.7.0/28\")"
        ))
    })?;
    Ok(Ipam {
        config: Some(vec![IpamConfig {
            subnet: Some(subnet.to_owned()),
            gateway: Some(gateway.to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    })
}

/// The first host address of an IPv4 network in CIDR notation (`10.213.7.0/28` → `10.213.7.1`).
fn first_host(cidr: &str) -> Option<Ipv4Addr> {
    let (address, prefix) = cidr.trim().split_once('/')?;
    let (address, prefix): (Ipv4Addr, u32) = (address.parse().ok()?, prefix.parse().ok()?);
    if prefix > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some(Ipv4Addr::from((u32::from(address) & mask) + 1))
}

/// The options of the container's `/tmp`. When the image has a `/tmp` of its own, the runtime
/// gives the tmpfs that directory's mode (0755 root's, as `COPY … /tmp/` makes it), whatever
/// `mode=` says: owning the tmpfs is what keeps it writable for the container's user.
fn tmpfs_options(limits: &Limits) -> String {
    let mut options = format!("rw,noexec,nosuid,nodev,size={}m,mode=1777", limits.tmpfs_mib);
    if let Some((uid, gid)) = limits.uid_gid() {
        options.push_str(&format!(",uid={uid},gid={gid}"));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::first_host;

    #[test]
    fn a_subnet_gets_its_first_host_as_gateway() {
        assert_eq!(first_host("10.213.7.0/28"), Some("10.213.7.1".parse().unwrap()));
        assert_eq!(first_host("10.213.7.5/28"), Some("10.213.7.1".parse().unwrap()));
        assert_eq!(first_host("172.30.0.0/16"), Some("172.30.0.1".parse().unwrap()));
        for bad in ["10.213.7.0", "10.213.7.0/31", "fe80::/64", "10.213.7.0/x", ""] {
            assert_eq!(first_host(bad), None, "{bad}");
        }
    }
}
