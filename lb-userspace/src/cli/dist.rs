//! What a distribution needs from the binary: `sluice --version` (the package version, the
//! git revision it was built from and the eBPF ABI epoch), shell completions and man pages,
//! all generated from the clap definition ([`super::Cli`]) so they never drift from it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use anyhow::Context as _;

/// The git revision `build.rs` captured: a short hash, `-dirty` when tracked files differed
/// from it, or `unknown` (built outside a git work tree).
pub const GIT_REVISION: &str = env!("SLUICE_GIT_REVISION");

/// `sluice --version`'s text after the name: `0.1.0 (git 0123456789ab, eBPF ABI epoch 3)`.
/// The ABI epoch says which pinned maps this build can adopt (`lb_common::ABI_EPOCH`).
pub fn version() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} (git {GIT_REVISION}, eBPF ABI epoch {})",
            env!("CARGO_PKG_VERSION"),
            lb_common::ABI_EPOCH
        )
    });
    &TEXT
}

/// Write the completion script of `shell` for `sluice`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut super::command(), "sluice", out);
}

/// Write the man pages into `dir` (created if missing): `sluice.1`, and one page for every
/// visible subcommand at every level, named after its path (`sluice-backend-add.1`).
/// Returns the files written, sorted.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut cmd = super::command().disable_help_subcommand(true);
    // Propagates names and global options, so each subcommand's page is titled
    // `sluice-backend-add` and lists the options it accepts.
    cmd.build();
    write_pages(&cmd, dir, &mut written)?;
    written.sort();
    Ok(written)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("sluice manual");
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_revision_and_the_abi_epoch() {
        let v = version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(
            v.contains(&format!("eBPF ABI epoch {}", lb_common::ABI_EPOCH)),
            "{v}"
        );
        assert!(!GIT_REVISION.is_empty());
        let e = <super::super::Cli as clap::Parser>::try_parse_from(["sluice", "--version"])
            .expect_err("exits");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(e.to_string().trim(), format!("sluice {v}"));
    }

    #[test]
    fn completions_for_the_three_shells_know_the_subcommands() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef sluice"),
            (clap_complete::Shell::Fish, "complete -c sluice"),
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            assert!(text.contains(marker), "{shell}: no {marker:?}");
            for word in ["backend", "detach", "announce"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }

    #[test]
    fn a_man_page_for_every_command_at_every_level() {
        let dir = std::env::temp_dir().join(format!("sluice-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pages = man_pages(&dir).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        for want in [
            "sluice.1",
            "sluice-run.1",
            "sluice-backend-add.1",
            "sluice-config-check.1",
            "sluice-plan-vip-set.1",
            "sluice-man.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        let top = std::fs::read_to_string(dir.join("sluice.1")).expect("sluice.1");
        assert!(
            top.starts_with(".ie"),
            "not roff: {}",
            &top[..40.min(top.len())]
        );
        assert!(
            top.contains("backend"),
            "the top page lists the subcommands"
        );
        let run = std::fs::read_to_string(dir.join("sluice-run.1")).expect("run");
        assert!(
            run.contains("/etc/sluice/sluice.toml"),
            "the default config"
        );
        // Every page is named after its command's path: nothing else is in the directory.
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            pages.len(),
            "{names:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
