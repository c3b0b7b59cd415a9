//! `fedq-demo`, the README's first command, end to end against the real services (it runs the
//! checkout's `scripts/services` and `scripts/images` first, which return at once when
//! everything is up and built).

use std::process::Command;

/// `fedq-demo secure-sum`: the N the registries learned is the sum of their counts, and what
/// the server saw contains none of them.
#[test]
fn the_demo_runs_secure_sum_and_shows_what_the_server_saw() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedq-demo"))
        .args(["secure-sum", "--registries", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Secure Sum over 2 registries"), "{stdout}");
    assert!(stdout.contains("registry-b: completed"), "{stdout}");
    assert!(stdout.contains("contains none of the counts nor N"), "{stdout}");
    let line = stdout.lines().find(|l| l.trim_start().starts_with("N = ")).unwrap();
    let numbers: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    assert_eq!(numbers.first(), numbers.last(), "{line}");
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
