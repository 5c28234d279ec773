//! The routing configurations shipped under `config/` parse with the daemons that
//! `cargo xtask setup` installs from Debian: BIRD 2 (`bird -p -c FILE` checks a file and
//! exits) and FRR (`vtysh --dryrun -f FILE`).

use std::path::{Path, PathBuf};

fn configs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("listing a config directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.sort();
    v
}

fn check(program: &str, args: &[&str], file: &Path) {
    let out = std::process::Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (`cargo xtask setup` installs it): {e}"));
    assert!(
        out.status.success(),
        "{} does not parse with {program}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_bird_configurations_parse() {
    let files = configs("bird");
    assert_eq!(
        files.len(),
        2,
        "config/bird holds balancer.conf and router.conf"
    );
    for f in &files {
        check("bird", &["-p", "-c"], f);
    }
}

#[test]
fn shipped_frr_configuration_parses() {
    let files = configs("frr");
    assert_eq!(files.len(), 1, "config/frr holds balancer.conf");
    for f in &files {
        check("vtysh", &["--dryrun", "-f"], f);
    }
}

#[test]
fn a_broken_configuration_is_refused() {
    // The checks can fail: a file with an error does not pass.
    let dir = std::env::temp_dir().join(format!("sluice-bird-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("broken.conf");
    std::fs::write(&file, "protocol bgp x { neighbor 10.0.0.1 as; }\n").expect("write");
    let bird = std::process::Command::new("bird")
        .args(["-p", "-c"])
        .arg(&file)
        .output();
    let frr = std::process::Command::new("vtysh")
        .args(["--dryrun", "-f"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !bird.expect("run bird").status.success(),
        "bird accepted a broken file"
    );
    assert!(
        !frr.expect("run vtysh").status.success(),
        "vtysh accepted a broken file"
    );
}
