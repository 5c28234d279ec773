//! `sluice fleet check`: whether balancers agree. Each balancer's status carries a
//! fingerprint of every VIP's lookup table (as backend addresses) and of its configuration
//! (`sluice_core::fingerprint`); this fetches the status from each balancer's API socket and
//! compares them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::{
    api::{Request, Response, client},
    state::Status,
};

#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Compare this balancer with its peers: per VIP the table fingerprint on each (equal
    /// when they send new flows to the same backends), the VIPs that differ or that some
    /// balancers lack, and whether their configurations differ.
    ///
    /// Live CLI edits (`sluice vip ...`, `sluice backend ...`) apply to one balancer only:
    /// make the same edit on every balancer, or distribute the config file and reload
    /// every balancer. Balancers agree only with the same `daemon.hash_seed`, and while
    /// health checks find the same backends down. VIPs with a sequence scheduler (rr, wrr,
    /// lc, wlc) are noted: a flow that moves to another balancer (an ECMP change) may
    /// change backend there even when the fingerprints agree.
    ///
    /// Exit status: 0 when every balancer agrees, 3 when they disagree, 1 when a
    /// balancer could not be asked (or another error).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Another balancer's API socket (`daemon.api_socket`); repeat for each peer. The
    /// first balancer is the one the other commands talk to (--api-socket, --config,
    /// $SLUICE_API_SOCKET or the default).
    #[arg(long = "peer", value_name = "SOCKET", required = true, num_args = 1..)]
    pub peers: Vec<PathBuf>,
}

/// The schedulers whose new flows follow a sequence rather than a hash of the flow.
const SEQUENCE_SCHEDULERS: [&str; 4] = ["rr", "wrr", "lc", "wlc"];

/// What the output says every time.
const ONE_BALANCER_NOTE: &str = "note: live CLI edits (`sluice vip ...`, `sluice backend ...`) \
     apply to one balancer only; in a fleet, make the same edit on every balancer or \
     distribute the config file and reload";

/// The exit status of `sluice fleet check` when the balancers disagree (1 is any other
/// error, such as a balancer that cannot be reached; 2 a command-line error).
pub const DISAGREE_EXIT: u8 = 3;

/// The error `sluice fleet check` ends with when the balancers disagree (the report is
/// printed already).
#[derive(Debug)]
pub struct Disagreement {
    pub vips: usize,
    pub config: bool,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the balancers disagree: {} VIP(s)", self.vips)?;
        if self.config {
            write!(f, ", and their configurations")?;
        }
        Ok(())
    }
}

impl std::error::Error for Disagreement {}

/// How one VIP compares across the balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every balancer has it, with the same fingerprint.
    Same,
    /// Every balancer has it, with different fingerprints (or one not published yet).
    Differs,
    /// Some balancers do not have it.
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct VipRow {
    pub vip: String,
    pub name: String,
    pub scheduler: String,
    /// New flows follow a sequence (rr, wrr, lc, wlc): a flow that moves to another
    /// balancer changes backend even when the fingerprints agree.
    pub sequence: bool,
    /// Per balancer (in `Report::balancers` order): its fingerprint; `None`: no such VIP.
    pub fingerprints: Vec<Option<String>>,
    pub verdict: Verdict,
}

/// The comparison of the balancers' statuses.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Every VIP the same and the configurations the same.
    pub agree: bool,
    pub balancers: Vec<String>,
    /// Per balancer: its configuration fingerprint ("" from a daemon too old to say).
    pub config_fingerprints: Vec<String>,
    pub config_differs: bool,
    /// Every VIP any balancer has, by address.
    pub vips: Vec<VipRow>,
}

impl Report {
    pub fn agrees(&self) -> bool {
        !self.config_differs && self.vips.iter().all(|v| v.verdict == Verdict::Same)
    }

    /// The VIPs with verdict `v`, by name.
    pub fn names(&self, v: Verdict) -> Vec<&str> {
        self.vips
            .iter()
            .filter(|r| r.verdict == v)
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// Compare the statuses of `balancers` (a label and its status each). A fingerprint that
/// is empty (not published yet, or a daemon too old to compute one) never counts as equal.
pub fn compare(balancers: &[(String, Status)]) -> Report {
    let n = balancers.len();
    let mut vips: BTreeMap<&str, VipRow> = BTreeMap::new();
    for (i, (_, status)) in balancers.iter().enumerate() {
        for v in &status.vips {
            let row = vips.entry(v.vip.as_str()).or_insert_with(|| VipRow {
                vip: v.vip.clone(),
                name: v.name.clone(),
                scheduler: v.scheduler.clone(),
                sequence: SEQUENCE_SCHEDULERS.contains(&v.scheduler.as_str()),
                fingerprints: vec![None; n],
                verdict: Verdict::Same,
            });
            row.fingerprints[i] = Some(v.fingerprint.clone());
        }
    }
    let vips = vips
        .into_values()
        .map(|mut row| {
            row.verdict = if row.fingerprints.iter().any(Option::is_none) {
                Verdict::Missing
            } else if all_equal(row.fingerprints.iter().flatten()) {
                Verdict::Same
            } else {
                Verdict::Differs
            };
            row
        })
        .collect();
    let config_fingerprints: Vec<String> = balancers
        .iter()
        .map(|(_, s)| s.config_fingerprint.clone())
        .collect();
    let mut r = Report {
        agree: false,
        balancers: balancers.iter().map(|(b, _)| b.clone()).collect(),
        config_differs: !all_equal(config_fingerprints.iter()),
        config_fingerprints,
        vips,
    };
    r.agree = r.agrees();
    r
}

/// Whether every item is the same non-empty string.
fn all_equal<'a>(mut items: impl Iterator<Item = &'a String>) -> bool {
    let Some(first) = items.next() else {
        return true;
    };
    !first.is_empty() && items.all(|s| s == first)
}

/// `sluice fleet check`: ends with a [`Disagreement`] when the balancers disagree.
pub fn run(local: &Path, cmd: FleetCmd, json: bool) -> anyhow::Result<()> {
    let FleetCmd::Check(args) = cmd;
    let mut balancers = Vec::with_capacity(1 + args.peers.len());
    for socket in std::iter::once(local).chain(args.peers.iter().map(PathBuf::as_path)) {
        let status = match client::request(socket, &Request::Status { flows: false })
            .with_context(|| format!("balancer {}: no status", socket.display()))?
        {
            Response::Status { status } => status,
            _ => bail!(
                "balancer {}: unexpected answer to a status request",
                socket.display()
            ),
        };
        balancers.push((socket.display().to_string(), status));
    }
    let report = compare(&balancers);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    if !report.agree {
        return Err(Disagreement {
            vips: report
                .vips
                .iter()
                .filter(|v| v.verdict != Verdict::Same)
                .count(),
            config: report.config_differs,
        }
        .into());
    }
    Ok(())
}

fn print(r: &Report) {
    println!("balancers:");
    for (i, (b, fp)) in r.balancers.iter().zip(&r.config_fingerprints).enumerate() {
        let fp = if fp.is_empty() {
            "unknown"
        } else {
            fp.as_str()
        };
        println!("  [{}] {b}  config {fp}", i + 1);
    }
    let config = if !r.config_differs {
        "the same on every balancer"
    } else if r.config_fingerprints.iter().any(String::is_empty) {
        "UNKNOWN (a balancer did not report its fingerprint: an older sluice?)"
    } else {
        "DIFFERS"
    };
    println!("configuration: {config}");
    print!("{:<20} {:<28} {:<7}", "name", "vip", "sched");
    for i in 0..r.balancers.len() {
        print!(" {:<16}", format!("[{}]", i + 1));
    }
    println!(" verdict");
    for v in &r.vips {
        print!("{:<20} {:<28} {:<7}", v.name, v.vip, v.scheduler);
        for fp in &v.fingerprints {
            let shown = match fp.as_deref() {
                None => "(absent)",
                Some("") => "(unpublished)",
                Some(f) => f,
            };
            print!(" {shown:<16}");
        }
        let verdict = match v.verdict {
            Verdict::Same => "same",
            Verdict::Differs => "DIFFERS",
            Verdict::Missing => "MISSING",
        };
        println!(" {verdict}");
    }
    let sequence: Vec<&str> = r
        .vips
        .iter()
        .filter(|v| v.sequence)
        .map(|v| v.name.as_str())
        .collect();
    if !sequence.is_empty() {
        println!(
            "sequence scheduler (rr, wrr, lc, wlc): a flow that moves to another balancer may \
             change backend: {}",
            sequence.join(", ")
        );
    }
    for (verdict, what) in [
        (Verdict::Differs, "VIPs that differ"),
        (Verdict::Missing, "VIPs on some balancers only"),
    ] {
        let names = r.names(verdict);
        if !names.is_empty() {
            println!("{what}: {}", names.join(", "));
        }
    }
    println!(
        "{}",
        if r.agree {
            "the balancers agree"
        } else {
            "the balancers DISAGREE"
        }
    );
    println!("{ONE_BALANCER_NOTE}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(config: &str, vips: &[(&str, &str, &str)]) -> Status {
        let vips: Vec<serde_json::Value> = vips
            .iter()
            .map(|(name, sched, fp)| {
                serde_json::json!({
                    "name": name,
                    // One port per name: the VIP is its address, port and protocol.
                    "vip": format!("10.0.0.1:{}/tcp", name.bytes().map(u16::from).sum::<u16>()),
                    "forwarding": "dsr", "scheduler": sched, "check": "tcp",
                    "packets": 0, "bytes": 0, "new_flows": 0, "fingerprint": fp,
                    "backends": [],
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "written": 0, "vips": vips, "reasons": {}, "config_fingerprint": config,
        }))
        .expect("a status")
    }

    #[test]
    fn equal_balancers_agree() {
        let a = status("c1", &[("web", "maglev", "f1"), ("dnsx", "rr", "f2")]);
        let r = compare(&[("a".into(), a.clone()), ("b".into(), a)]);
        assert!(r.agrees(), "{r:?}");
        assert!(r.vips.iter().any(|v| v.sequence && v.name == "dnsx"));
    }

    #[test]
    fn differing_missing_and_unpublished_vips_are_named() {
        let a = status(
            "c1",
            &[
                ("web", "maglev", "f1"),
                ("api", "maglev", "f3"),
                ("db", "maglev", ""),
            ],
        );
        let b = status("c1", &[("web", "maglev", "f9"), ("db", "maglev", "")]);
        let c = status("c1", &[("web", "maglev", "f1"), ("db", "maglev", "")]);
        let r = compare(&[("a".into(), a), ("b".into(), b), ("c".into(), c)]);
        assert!(!r.agrees());
        assert!(!r.config_differs);
        // Unpublished on every balancer still is not known to agree.
        assert_eq!(r.names(Verdict::Differs), ["db", "web"]);
        assert_eq!(r.names(Verdict::Missing), ["api"]);
        let api = r.vips.iter().find(|v| v.name == "api").unwrap();
        assert_eq!(api.fingerprints, [Some("f3".to_owned()), None, None]);
    }

    #[test]
    fn a_disagreement_has_its_own_exit_status_and_json() {
        let a = status("c1", &[("web", "maglev", "f1")]);
        let b = status("c1", &[("web", "maglev", "f2")]);
        let r = compare(&[("a".into(), a), ("b".into(), b)]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["agree"], false);
        assert_eq!(json["vips"][0]["verdict"], "differs");
        let e = anyhow::Error::from(Disagreement {
            vips: 1,
            config: false,
        });
        assert_eq!(crate::cli::exit_code(&e), DISAGREE_EXIT);
        assert_eq!(crate::cli::exit_code(&anyhow::anyhow!("no socket")), 1);
    }

    #[test]
    fn a_differing_configuration_is_a_disagreement() {
        let a = status("c1", &[("web", "maglev", "f1")]);
        let b = status("c2", &[("web", "maglev", "f1")]);
        let r = compare(&[("a".into(), a.clone()), ("b".into(), b)]);
        assert!(r.config_differs && !r.agrees());
        let old = status("", &[("web", "maglev", "f1")]);
        assert!(!compare(&[("a".into(), old.clone()), ("b".into(), old)]).agrees());
    }
}
