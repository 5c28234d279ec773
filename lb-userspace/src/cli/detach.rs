//! `sluice detach`: the explicit removal of the balancer. A stopped daemon leaves it
//! attached and pinned (so the next one adopts every flow); this removes the link (which
//! detaches the program), the pinned maps (every flow with them), the pin directory and
//! the saved layout (found through the config file's `daemon.state_dir`, else in
//! `--state-dir` or the default state directory, if it names this pin directory).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::dataplane::{self, LAYOUT_FILE, pinned};

pub fn run(
    config: Option<&Path>,
    interface: Option<String>,
    pin_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Without a config file, the saved layout is looked for where the daemon keeps it by
    // default (or in --state-dir), and removed if it names this pin directory.
    let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STATE_DIR));
    let (dir, layout) = match config {
        Some(file) => {
            let mut d = crate::config::load(file)?.config.daemon;
            if let Some(i) = interface {
                d.interface = i;
            }
            if pin_dir.is_some() {
                d.pin_dir = pin_dir;
            }
            (d.pin_dir(), Some(d.state_dir.join(LAYOUT_FILE)))
        }
        None => match (pin_dir, interface) {
            (Some(dir), _) => {
                let layout = dataplane::saved_layout_for(&dir, &state_dir);
                (dir, layout)
            }
            (None, Some(i)) => {
                let dir = pinned::default_pin_dir(&i);
                let layout = dataplane::saved_layout_for(&dir, &state_dir);
                (dir, layout)
            }
            (None, None) => anyhow::bail!(
                "say what to detach: --config FILE, or --interface IF (pin directory {}/IF), or --pin-dir DIR",
                pinned::PIN_ROOT
            ),
        },
    };
    pinned::check_pin_dir_syntax(&dir)
        .map_err(|why| anyhow::anyhow!("--pin-dir {}: {why}", dir.display()))?;
    let removed = dataplane::detach(&dir, layout.as_deref())
        .with_context(|| format!("detaching the balancer pinned in {}", dir.display()))?;
    let link = removed.iter().any(|p| p.ends_with(dataplane::LINK_PIN));
    if link {
        println!(
            "balancer detached (link {} removed)",
            dir.join(dataplane::LINK_PIN).display()
        );
    } else {
        println!(
            "no XDP link was pinned in {} (nothing was attached)",
            dir.display()
        );
    }
    let maps = removed
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()) && !p.ends_with(dataplane::LINK_PIN))
        .count();
    println!(
        "removed {maps} pinned maps (their flows are gone) and {}",
        dir.display()
    );
    if let Some(l) = removed
        .iter()
        .find(|p| p.file_name() == Some(LAYOUT_FILE.as_ref()))
    {
        println!("removed the saved layout {}", l.display());
    } else if config.is_none() {
        println!(
            "no saved layout of {} in {} (if daemon.state_dir is elsewhere, pass --state-dir \
             DIR or --config FILE, or remove DIR/{LAYOUT_FILE})",
            dir.display(),
            state_dir.display()
        );
    }
    Ok(())
}
