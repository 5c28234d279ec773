//! `sluice config check|export`.

use std::path::Path;

/// Print every problem (and warning) of a config file; fail if it has problems.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let loaded = crate::config::load(file)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
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
