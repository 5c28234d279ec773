//! `sluice config check|export`.

use std::path::Path;

/// What `config check` found on this host (`preflight::offline`), rendered like the
/// file's own problems: `file:line: field: message`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostFindings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The host checks of a valid configuration `config` read from `text` (named `origin`).
pub fn host_findings(text: &str, origin: &str, config: &crate::config::Config) -> HostFindings {
    let mut found: Vec<(crate::config::Problem, bool)> = crate::preflight::offline(&config.daemon)
        .into_iter()
        .map(|f| {
            let p = crate::config::Problem {
                line: crate::config::line_of(text, f.field),
                path: f.field.to_owned(),
                message: f.message,
            };
            (p, f.error)
        })
        .collect();
    // In file order, as the file's own problems.
    found.sort_by_key(|(p, _)| p.line.unwrap_or(0));
    let mut out = HostFindings::default();
    for (p, error) in found {
        if error {
            out.errors.push(p.render(origin));
        } else {
            out.warnings.push(p.render(origin));
        }
    }
    out
}

/// Print every problem (and warning) of a config file, then (unless `file_only`) what on
/// this host would stop the daemon from starting with it (without changing anything); fail
/// if either has problems.
pub fn check(file: &Path, file_only: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", file.display()))?;
    let origin = file.display().to_string();
    let loaded = crate::config::parse(&text, &origin)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    let host = if file_only {
        HostFindings::default()
    } else {
        host_findings(&text, &origin, c)
    };
    for w in &host.warnings {
        eprintln!("warning: {w}");
    }
    if !host.errors.is_empty() {
        let n = host.errors.len();
        anyhow::bail!(
            "{origin}: valid, but {n} problem{} on this host would stop `sluice run`:\n{}",
            if n == 1 { "" } else { "s" },
            host.errors.join("\n")
        );
    }
    let backends: usize = c.vips.iter().map(|v| v.backends.len()).sum();
    println!(
        "{}: ok ({} VIPs, {backends} backends)",
        file.display(),
        c.vips.len()
    );
    Ok(())
}

/// Print the validated configuration back as TOML, defaults included.
pub fn export(file: &Path) -> anyhow::Result<()> {
    let loaded = crate::config::load(file)?;
    print!("{}", loaded.config.to_toml()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_a_missing_group_and_an_unwritable_socket_directory() {
        let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file where the socket's directory would have to be: not even root can
        // create the socket there.
        std::fs::write(dir.join("plain"), b"").unwrap();
        let text = format!(
            "[daemon]\n\
             interface = \"lo\"\n\
             state_dir = \"{d}/state\"\n\
             api_socket = \"{d}/plain/sluice.sock\"\n\
             api_group = \"sluice-no-such-group-4711\"\n\
             \n\
             [[vip]]\n\
             name = \"web\"\n\
             address = \"10.0.0.1\"\n\
             port = 80\n\
             protocol = \"tcp\"\n\
             forwarding = \"dsr\"\n\
             \n\
             [[vip.backend]]\n\
             address = \"10.1.0.1\"\n",
            d = dir.display()
        );
        let loaded = crate::config::parse(&text, "lb.toml").unwrap();
        let found = host_findings(&text, "lb.toml", &loaded.config);
        assert_eq!(found.errors.len(), 2, "{found:?}");
        assert!(
            found.errors[0].starts_with(&format!(
                "lb.toml:4: daemon.api_socket: the socket's directory {}/plain: {}/plain is not a directory",
                dir.display(),
                dir.display()
            )),
            "{found:?}"
        );
        assert!(
            found.errors[1].starts_with(
                "lb.toml:5: daemon.api_group: no group \"sluice-no-such-group-4711\" on this host"
            ),
            "{found:?}"
        );
        assert!(found.warnings.is_empty(), "{found:?}");

        // The same file with a group that exists and a socket directory that can be made.
        let ok = text
            .replace("sluice-no-such-group-4711", "root")
            .replace("/plain/sluice.sock", "/run/sluice.sock");
        let loaded = crate::config::parse(&ok, "lb.toml").unwrap();
        assert_eq!(
            host_findings(&ok, "lb.toml", &loaded.config),
            HostFindings::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
