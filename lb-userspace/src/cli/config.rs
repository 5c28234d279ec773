//! `sluice config check|export|diff|save|discard` and `sluice reload`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::{
    api::{Request, Response, client},
    atomic_file::{self, Durability},
    persist::{self, StoreFiles as _},
};

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
    println!(
        "flow table: {} flows, shared by all CPUs (full: new flows go without an entry; the sweep evicts past 90%)",
        c.daemon.flow_table_size
    );
    Ok(())
}

/// Print the validated configuration back as TOML, defaults included.
pub fn export(file: &Path) -> anyhow::Result<()> {
    let loaded = crate::config::load(file)?;
    print!("{}", loaded.config.to_toml()?);
    Ok(())
}

/// The config file's text and its validated configuration.
fn read_file(file: &Path) -> anyhow::Result<(String, crate::config::Config)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let config = crate::config::parse(&text, &file.display().to_string())?.config;
    Ok((text, config))
}

/// The running daemon's configuration, if one answers on `socket`.
fn running(socket: &Path) -> anyhow::Result<Option<crate::config::Config>> {
    match client::request(socket, &Request::Config) {
        Ok(Response::Config { toml, .. }) => Ok(Some(
            crate::config::parse(&toml, "the running configuration")?.config,
        )),
        Ok(_) => bail!("unexpected answer to a config request"),
        Err(client::ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `sluice config diff FILE`: the saved live edits, the file's changes since they were
/// made, and the conflicts, field by field.
pub fn diff(file: &Path) -> anyhow::Result<()> {
    let (text, config) = read_file(file)?;
    let dir = &config.daemon.state_dir;
    let Some(saved) = persist::read(dir)? else {
        println!(
            "no live edits saved in {}: `sluice run` starts from {} as it is",
            dir.display(),
            file.display()
        );
        return Ok(());
    };
    let base = saved.base_config(&text);
    let m = persist::merge::merge(base.as_ref(), &saved.config, &config);
    let runtime = dir.join(persist::RUNTIME_FILE);
    if base.is_some() {
        println!(
            "live edits (configuration version {}, saved in {}):",
            saved.version,
            runtime.display()
        );
    } else {
        println!(
            "the file the live edits in {} were made on is not known (saved by an older sluice, \
             or removed): every difference from {} counts as a conflict:",
            runtime.display(),
            file.display()
        );
    }
    for c in &m.live_changes {
        println!("  {c}");
    }
    if m.live_changes.is_empty() {
        println!("  (none)");
    }
    if base.is_some() {
        println!(
            "changes in {} since the live edits were made:",
            file.display()
        );
        for c in &m.file_changes {
            println!("  {c}");
        }
        if m.file_changes.is_empty() {
            println!("  (none)");
        }
    }
    if m.clean().is_some() {
        println!(
            "no conflict: `sluice run` (or `sluice reload`) merges them; `sluice config save {}` writes them into the file",
            file.display()
        );
    } else {
        println!(
            "{}",
            persist::conflict_report(file, dir, &m, persist::Refused::Start)
        );
    }
    Ok(())
}

/// Replace `file` with `config` (keeping the old one as FILE.bak, and its mode).
fn write_config(file: &Path, config: &crate::config::Config) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let backup = file.with_extension(match file.extension() {
        Some(e) => format!("{}.bak", e.to_string_lossy()),
        None => "bak".to_owned(),
    });
    std::fs::copy(file, &backup)
        .with_context(|| format!("keeping the old file as {}", backup.display()))?;
    let mode = std::fs::metadata(file)?.permissions().mode() & 0o7777;
    let text = format!(
        "# Written by `sluice config save` from the running configuration (live edits\n\
         # included, every default spelled out); the previous file is {}.\n{}",
        backup.display(),
        config.to_toml()?
    );
    atomic_file::write_private(file, text.as_bytes(), Durability::Persistent, mode, None)
        .with_context(|| format!("{}: cannot write", file.display()))?;
    println!(
        "wrote the running configuration to {} (the previous file is {})",
        file.display(),
        backup.display()
    );
    Ok(text)
}

/// `sluice config save FILE`: write the running configuration (the live edits) into the
/// config file: asked of the running daemon (which then reloads the file, now its base),
/// or, with no daemon, taken from the saved live edits merged with the file (the edits
/// winning conflicts), which then are made on the new file.
pub fn save(file: &Path) -> anyhow::Result<()> {
    let (text, config) = read_file(file)?;
    let d = &config.daemon;
    if let Some(mut live) = running(&d.api_socket)? {
        live.daemon = config.daemon.clone();
        write_config(file, &live)?;
        let Response::Plan { version, .. } = client::request(&d.api_socket, &Request::Reload)?
        else {
            bail!("unexpected answer to a reload request");
        };
        println!("the daemon reloaded it (configuration version {version})");
        return Ok(());
    }
    let Some(saved) = persist::read(&d.state_dir)? else {
        bail!(
            "no daemon answers on {} and no live edits are saved in {}: nothing to save",
            d.api_socket.display(),
            d.state_dir.display()
        );
    };
    let base = saved.base_config(&text);
    let m = persist::merge::merge(base.as_ref(), &saved.config, &config);
    let merged = m.config.map_err(|e| {
        anyhow::anyhow!(
            "the live edits merged with {} are not a valid configuration: {e}",
            file.display()
        )
    })?;
    let written = write_config(file, &merged)?;
    let gid = match &d.api_group {
        Some(g) => {
            Some(persist::group_gid(g).with_context(|| format!("daemon.api_group = {g:?}"))?)
        }
        None => None,
    };
    let mut store = persist::Store {
        dir: d.state_dir.clone(),
        gid,
        config_file: file.to_owned(),
        base_hash: 0,
    };
    store.save_base(&written)?;
    store.save(&merged, saved.version)?;
    println!(
        "the saved live edits are now made on the new file: `sluice run` starts with them, without conflict"
    );
    Ok(())
}

/// `sluice config discard FILE`: drop the saved live edits (a copy is kept), so that the
/// next `sluice run` starts from the file as it is.
pub fn discard(file: &Path) -> anyhow::Result<()> {
    let (_, config) = read_file(file)?;
    let d = &config.daemon;
    if running(&d.api_socket)?.is_some() {
        bail!(
            "a daemon answers on {}: its live edits are its running configuration. Stop it \
             first, or write them into the file with `sluice config save {}`",
            d.api_socket.display(),
            file.display()
        );
    }
    let runtime = d.state_dir.join(persist::RUNTIME_FILE);
    if !runtime.exists() {
        println!("no live edits saved in {}", d.state_dir.display());
        return Ok(());
    }
    let copy = d.state_dir.join("runtime.discarded.toml");
    std::fs::rename(&runtime, &copy)
        .with_context(|| format!("moving {} away", runtime.display()))?;
    let _ = std::fs::remove_file(d.state_dir.join(persist::BASE_FILE));
    println!(
        "discarded the live edits (a copy is in {}): the next `sluice run` starts from {}",
        copy.display(),
        file.display()
    );
    Ok(())
}

/// `sluice reload`: the daemon reads its config file again (as on SIGHUP), merged with
/// the live edits; conflicts refuse it with their report.
pub fn reload(socket: &Path, json: bool) -> anyhow::Result<()> {
    let Response::Plan { plan, version, .. } = client::request(socket, &Request::Reload)? else {
        bail!("unexpected answer to a reload request");
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "version": version}))?
        );
    } else {
        print!("{plan}");
        println!("reloaded (configuration version {version})");
    }
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
