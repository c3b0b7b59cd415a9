//! The newcomer's path of docs/node.md with the command line only, for three registries: the
//! federation by root (organizations, administrators, a collaboration, a researcher at the
//! first), then per registry its key generated and published, an enrollment token, `fedq node
//! enroll` with the partners' pins and the node started from the settings as written; the
//! researcher logged in, trusting the partners' fingerprints. Used against a test server and
//! against the compose deployment; every command is counted.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::node::NodeGuard;

pub const PASSWORD: &str = "a-long-password-789";
pub const NAMES: [&str; 3] = ["registry-a", "registry-b", "registry-c"];

/// Three registries with their nodes running, and the researcher ada at the first.
pub struct Registries {
    /// ada's home (session, trusted keys).
    pub researcher: PathBuf,
    /// registry-a's key file, which ada seals with.
    pub key: PathBuf,
    /// root's home.
    pub root: PathBuf,
    /// The registries' ids, in the order of [`NAMES`].
    pub ids: Vec<String>,
    /// The nodes, stopped and cleaned up when dropped.
    pub nodes: Vec<NodeGuard>,
    /// Commands to set the federation up (root's), and to enroll and start each node.
    pub federation_commands: usize,
    pub node_commands: Vec<usize>,
    /// Every command run.
    pub commands: usize,
}

struct Counter<'a> {
    server: &'a str,
    ca: Option<&'a str>,
    count: Cell<usize>,
}

impl Counter<'_> {
    fn run(&self, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
        self.count.set(self.count.get() + 1);
        super::fedq_ok(home, args, stdin)
    }

    fn login(&self, home: &Path, user: &str, password: &str) {
        let mut args = vec!["login", "--server", self.server, "--user", user, "--password-stdin"];
        if let Some(ca) = self.ca {
            args.extend(["--ca-file", ca]);
        }
        self.run(home, &args, Some(password));
    }
}

/// Sets the three registries up against `server` (verified against `ca`, if given) as root with
/// `root_password`, in directories under `work`; registry i holds `counts[i]` patients.
pub fn three_registries(
    server: &str,
    ca: Option<&Path>,
    root_password: &str,
    work: &Path,
    counts: [usize; 3],
) -> Registries {
    let ca = ca.map(|p| p.to_str().unwrap().to_owned());
    let cli = Counter { server, ca: ca.as_deref(), count: Cell::new(0) };
    let home = |name: &str| {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let root = home("root");
    cli.login(&root, "root", root_password);
    for name in NAMES {
        cli.run(&root, &["admin", "org", "create", name], None);
        let admin = format!("admin-{name}");
        cli.run(
            &root,
            &["admin", "user", "create", &admin, "--role", "org_admin", "--org", name],
            Some(PASSWORD),
        );
    }
    let collab =
        ["admin", "collab", "create", "registries", "--org", NAMES[0], "--org", NAMES[1], "--org", NAMES[2]];
    cli.run(&root, &collab, None);
    // The researcher is created by her registry's administrator: root creates only that one.
    cli.login(&home(NAMES[0]), &format!("admin-{}", NAMES[0]), PASSWORD);
    cli.run(
        &home(NAMES[0]),
        &["admin", "user", "create", "ada", "--role", "researcher", "--org", NAMES[0]],
        Some(PASSWORD),
    );
    let federation_commands = cli.count.get();
    let orgs: serde_json::Value =
        serde_json::from_str(&cli.run(&root, &["admin", "--json", "org", "list"], None)).unwrap();
    let id_of = |name: &str| {
        orgs.as_array().unwrap().iter().find(|o| o["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ids: Vec<String> = NAMES.iter().map(|n| id_of(n)).collect();

    // Each registry's administrator: the key first, its fingerprint to the partners.
    let homes: Vec<PathBuf> = NAMES.iter().map(|n| home(n)).collect();
    let mut fingerprints = Vec::new();
    for (name, h) in NAMES.iter().zip(&homes) {
        cli.login(h, &format!("admin-{name}"), PASSWORD);
        let key = h.join("org.key");
        let out = cli.run(h, &["keys", "generate", "--out", key.to_str().unwrap()], None);
        fingerprints
            .push(out.lines().find_map(|l| l.strip_prefix("fingerprint:")).unwrap().trim().to_owned());
        cli.run(h, &["keys", "publish", "--key", key.to_str().unwrap()], None);
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let (mut nodes, mut node_commands) = (Vec::new(), Vec::new());
    for (i, (name, h)) in NAMES.iter().zip(&homes).enumerate() {
        let before = cli.count.get();
        let node = format!("nb-{suffix}-{i}");
        let token = cli.run(h, &["admin", "enrollment", "create", name, &node], None);
        let data = h.join("patients.csv");
        std::fs::write(&data, format!("id\n{}", "p\n".repeat(counts[i]))).unwrap();
        let (config, key, state, unit) =
            (h.join("node.toml"), h.join("org.key"), h.join("state"), h.join("fedq-node.service"));
        let data_arg = format!("patients={}", data.display());
        let mut args = vec![
            "node",
            "enroll",
            "--server",
            server,
            "--token",
            token.trim(),
            "--config",
            config.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--data",
            &data_arg,
            "--allow",
            "fedq/secure-sum:0.1.0",
            "--requester",
            &ids[0],
            "--unit",
            unit.to_str().unwrap(),
        ];
        if let Some(ca) = cli.ca {
            args.extend(["--ca-file", ca]);
        }
        let pins: Vec<String> =
            (0..3).filter(|j| *j != i).map(|j| format!("{}={}", ids[j], fingerprints[j])).collect();
        for pin in &pins {
            args.extend(["--pin", pin.as_str()]);
        }
        cli.run(h, &args, None);
        // The suite's other tests load the broker and the disk: a remote check may be slow here.
        cli.run(h, &["node", "check", "--config", config.to_str().unwrap(), "--timeout", "90"], None);
        // `systemctl enable --now fedq-node`, here a process of the test.
        cli.count.set(cli.count.get() + 1);
        let mut guard = NodeGuard { name: node, process: None };
        guard.process = Some(
            Command::new(env!("CARGO_BIN_EXE_fedq"))
                .args(["node", "--config", config.to_str().unwrap()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(h.join("node.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        nodes.push(guard);
        node_commands.push(cli.count.get() - before);
    }

    let researcher = home("ada");
    cli.login(&researcher, "ada", PASSWORD);
    for j in 1..3 {
        cli.run(&researcher, &["keys", "trust", &ids[j], &fingerprints[j]], None);
    }
    Registries {
        researcher,
        key: homes[0].join("org.key"),
        root,
        ids,
        nodes,
        federation_commands,
        node_commands,
        commands: cli.count.get(),
    }
}

/// Waits until `n` nodes show online to root (whose session is in `root`).
pub async fn nodes_online(root: &Path, n: usize) {
    super::eventually(90, &format!("{n} nodes to show online"), || async {
        let (ok, out, _) = super::fedq_command(root, &["admin", "--json", "node", "list"], None);
        let nodes: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && nodes.as_array()?.iter().filter(|n| n["online"] == true).count() == n).then_some(())
    })
    .await;
}

/// `fedq task create` of Secure Sum over the three registries, sealed with `key`.
pub fn secure_sum_args(key: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["task", "create", "--collaboration", "registries", "--image", "fedq/secure-sum:0.1.0"]
            .map(String::from)
            .to_vec();
    for name in NAMES {
        args.extend(["--org".into(), name.into()]);
    }
    args.extend(["--input-json".into(), r#"{"data": "patients", "share": true}"#.into()]);
    args.extend(["--key".into(), key.to_str().unwrap().into()]);
    args
}

/// The N every registry learned, from `fedq … --json` results.
pub fn learned(out: &str) -> Vec<u64> {
    let results: serde_json::Value = serde_json::from_str(out).unwrap();
    results.as_array().unwrap().iter().map(|r| r["output"]["N"].as_u64().unwrap_or(0)).collect()
}
