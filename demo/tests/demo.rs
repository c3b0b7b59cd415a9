//! `fedq-demo`, the README's first command, end to end against the real services (it runs the
//! checkout's `scripts/services` and `scripts/images` first, which return at once when
//! everything is up and built).

use std::process::Command;

/// `fedq-demo secure-sum`: the N the registries learned is the sum of their counts, and what
/// the server saw contains none of them. A ring of two is refused before anything starts.
#[test]
fn the_demo_runs_secure_sum_and_shows_what_the_server_saw() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedq-demo"))
        .args(["secure-sum", "--registries", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Secure Sum over 3 registries"), "{stdout}");
    assert!(stdout.contains("registry-b: completed") && stdout.contains("registry-c: completed"), "{stdout}");
    assert!(stdout.contains("contains none of the counts nor N"), "{stdout}");
    let line = stdout.lines().find(|l| l.trim_start().starts_with("N = ")).unwrap();
    let numbers: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    assert_eq!(numbers.first(), numbers.last(), "{line}");
    let two = Command::new(env!("CARGO_BIN_EXE_fedq-demo"))
        .args(["secure-sum", "--registries", "2", "--no-setup"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert!(!two.status.success() && stderr.contains("policy.min_organizations"), "{stderr}");
}

/// `fedq-demo vertical`: the count and mean from the shares equal those on the joined data.
#[test]
fn the_vertical_demo_matches_the_joined_data() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedq-demo")).arg("vertical").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let computed = stdout.lines().find(|l| l.trim_start().starts_with("count = ")).unwrap();
    let clear = stdout.lines().find(|l| l.contains("in the clear")).unwrap();
    assert!(clear.ends_with(computed.trim()), "{computed} vs {clear}");
}

/// `examples/secure_sum.ipynb`, executed cell by cell (nbclient, a real Jupyter kernel) against
/// `fedq-demo secure-sum --serve`: the notebook a researcher opens cannot rot. The N it prints
/// is the sum of the counts the demo's registries hold.
#[test]
fn the_notebook_runs_against_the_served_demo() {
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let connection = dir.path().join("fedq-demo.json");
    let log = dir.path().join("demo.log");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_fedq-demo"))
        .args(["secure-sum", "--serve"])
        .arg(&connection)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Stops the demo (which removes its database, virtual host and containers) even when an
    // assertion below fails.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while !connection.exists() {
        if let Ok(Some(status)) = demo.try_wait() {
            panic!("the demo ended ({status}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(std::time::Instant::now() < deadline, "the demo did not come up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let demo = Stop(demo);
    let executed = dir.path().join("executed.ipynb");
    let script = "import sys, nbformat\n\
        from nbclient import NotebookClient\n\
        nb = nbformat.read(sys.argv[1], as_version=4)\n\
        NotebookClient(nb, timeout=600, kernel_name='python3').execute()\n\
        nbformat.write(nb, sys.argv[2])";
    let out = Command::new(checkout.join("scripts/python"))
        .args(["-c", script])
        .arg(checkout.join("examples/secure_sum.ipynb"))
        .arg(&executed)
        .env("FEDQ_DEMO_CONNECTION", &connection)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the notebook failed:\n{}", String::from_utf8_lossy(&out.stderr));
    // The counts the demo's registries hold, as it printed them: "registry-a: 20123 patients; …".
    let printed = std::fs::read_to_string(&log).unwrap();
    let total: u64 = printed
        .lines()
        .filter_map(|l| l.trim().split_once(": ")?.1.strip_suffix(" patients; node started"))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(total > 0, "{printed}");
    let notebook = std::fs::read_to_string(&executed).unwrap();
    assert!(notebook.contains(&format!("N = {total} patients across 3 registries")), "{notebook}");
    drop(demo);
    assert!(!connection.exists(), "the demo removes its connection file when stopped");
}
