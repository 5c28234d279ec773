//! The three-way merge of live edits onto a changed config file: `base` (the file the
//! edits were made on), `live` (the configuration after the edits) and `file` (the file
//! now). It works on the configurations' structure, not on text: VIPs are matched by
//! name, backends by address, and every other key is a field. A field (or VIP, backend)
//! changed on one side only takes that side's value; changed the same way on both, that
//! value; changed differently on both (or removed on one side and changed on the other),
//! it is a [`Conflict`]. Comments and formatting of the file never matter.
//!
//! `[daemon]` cannot be edited live: it always comes from the file.

use std::fmt;

use toml::Value;

use crate::config::{self, Config};

/// One field changed differently by the live edits and in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Where: `vip "web" backend 10.0.0.2: weight`.
    pub path: String,
    /// Its value in the base file (`None`: absent).
    pub base: Option<String>,
    /// In the file now.
    pub file: Option<String>,
    /// After the live edits.
    pub live: Option<String>,
}

/// One field that differs between two configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The outcome of a merge.
#[derive(Debug)]
pub struct Merged {
    /// The merged configuration, conflicts resolved in favour of the live edits (what
    /// `sluice config save` writes); `Err` if that is not a valid configuration.
    pub config: Result<Config, String>,
    /// Empty: the merge is clean.
    pub conflicts: Vec<Conflict>,
    /// What the live edits changed (base → live); everything when there is no base.
    pub live_changes: Vec<Change>,
    /// What changed in the file (base → file).
    pub file_changes: Vec<Change>,
}

impl Merged {
    /// The merged configuration if the merge is clean and valid.
    pub fn clean(&self) -> Option<&Config> {
        if self.conflicts.is_empty() {
            self.config.as_ref().ok()
        } else {
            None
        }
    }
}

fn show(v: Option<&Value>) -> Option<String> {
    v.map(|v| match v {
        Value::Table(t) => {
            let keys: Vec<&str> = t.keys().map(String::as_str).collect();
            format!("{{ {} }}", keys.join(", "))
        }
        other => other.to_string(),
    })
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(removed)".to_owned());
        write!(
            f,
            "{}: the file has {}, the live edits {} (the base file had {})",
            self.path,
            side(&self.file),
            side(&self.live),
            self.base.clone().unwrap_or_else(|| "nothing".to_owned())
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.from, &self.to) {
            (None, Some(to)) => write!(f, "{}: added ({to})", self.path),
            (Some(_), None) => write!(f, "{}: removed", self.path),
            (Some(from), Some(to)) => write!(f, "{}: {from} → {to}", self.path),
            (None, None) => write!(f, "{}", self.path),
        }
    }
}

/// The key that identifies the entries of array `name` (VIPs by name, backends by
/// address); other arrays are plain values.
fn entry_key(name: &str) -> Option<&'static str> {
    match name {
        "vip" => Some("name"),
        "backend" => Some("address"),
        _ => None,
    }
}

fn label(name: &str, key: &str) -> String {
    match name {
        "vip" => format!("vip {key:?}"),
        _ => format!("{name} {key}"),
    }
}

/// The path of field `name` of `parent` (`vip "web": weight`, `daemon.interface`,
/// `vip "web": health.port`); `parent` itself for an entry (`name` empty).
fn field(parent: &str, name: &str) -> String {
    if name.is_empty() {
        parent.to_owned()
    } else if parent.is_empty() {
        name.to_owned()
    } else if !parent.contains(':')
        && (parent.starts_with("vip ") || parent.starts_with("backend "))
    {
        format!("{parent}: {name}")
    } else {
        format!("{parent}.{name}")
    }
}

/// The path of an entry of a keyed array of `parent` (`vip "web" backend 10.0.0.2`).
fn entry(parent: &str, label: &str) -> String {
    if parent.is_empty() {
        label.to_owned()
    } else {
        format!("{parent} {label}")
    }
}

/// Entries of a keyed array, in order, if every one has a distinct key.
fn keyed<'v>(a: &'v [Value], key: &str) -> Option<Vec<(String, &'v Value)>> {
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(a.len());
    for v in a {
        let k = match v.get(key)? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if out.iter().any(|(o, _)| *o == k) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

fn as_keyed<'v>(v: Option<&'v Value>, key: &str) -> Option<Vec<(String, &'v Value)>> {
    match v {
        None => Some(Vec::new()),
        Some(Value::Array(a)) => keyed(a, key),
        Some(_) => None,
    }
}

/// Merge one value; conflicts resolved to `live`.
fn merge_value(
    parent: &str,
    name: &str,
    base: Option<&Value>,
    live: Option<&Value>,
    file: Option<&Value>,
    conflicts: &mut Vec<Conflict>,
) -> Option<Value> {
    if live == file || live == base {
        return file.cloned();
    }
    if file == base {
        return live.cloned();
    }
    let path = &field(parent, name);
    // Both sides changed it, differently.
    if let (Some(Value::Table(l)), Some(Value::Table(f))) = (live, file) {
        let b = match base {
            Some(Value::Table(b)) => Some(b),
            _ => None,
        };
        let mut out = toml::map::Map::new();
        let mut keys: Vec<&String> = f.keys().collect();
        keys.extend(l.keys().filter(|k| !f.contains_key(*k)));
        if let Some(b) = b {
            keys.extend(
                b.keys()
                    .filter(|k| !f.contains_key(*k) && !l.contains_key(*k)),
            );
        }
        for k in keys {
            if let Some(v) = merge_value(
                path,
                k,
                b.and_then(|b| b.get(k)),
                l.get(k),
                f.get(k),
                conflicts,
            ) {
                out.insert(k.clone(), v);
            }
        }
        return Some(Value::Table(out));
    }
    if let Some(key) = entry_key(name)
        && let (Some(b), Some(l), Some(f)) = (
            as_keyed(base, key),
            as_keyed(live, key),
            as_keyed(file, key),
        )
        && live.is_some()
        && file.is_some()
    {
        let find = |v: &[(String, &'_ Value)], k: &str| {
            v.iter().find(|(o, _)| o == k).map(|(_, v)| (*v).clone())
        };
        let mut keys: Vec<String> = f.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(
            l.iter()
                .map(|(k, _)| k.clone())
                .filter(|k| !f.iter().any(|(o, _)| o == k)),
        );
        let mut out = Vec::new();
        for k in keys {
            let sub = entry(parent, &label(name, &k));
            let (bv, lv, fv) = (find(&b, &k), find(&l, &k), find(&f, &k));
            if let Some(v) = merge_value(&sub, "", bv.as_ref(), lv.as_ref(), fv.as_ref(), conflicts)
            {
                out.push(v);
            }
        }
        return Some(Value::Array(out));
    }
    let mut c = Conflict {
        path: path.to_owned(),
        base: show(base),
        file: show(file),
        live: show(live),
    };
    // A removal against a change: say what the change was.
    if let (None, Some(edited)) | (Some(edited), None) = (file, live) {
        let mut changed = Vec::new();
        diff_value("", name, base, Some(edited), &mut changed);
        let what: Vec<String> = changed.iter().map(ToString::to_string).collect();
        let s = Some(format!("changed ({})", what.join("; ")));
        if file.is_some() {
            c.file = s;
        } else {
            c.live = s;
        }
    }
    conflicts.push(c);
    live.cloned()
}

/// The fields that differ from `a` to `b`.
fn diff_value(
    parent: &str,
    name: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<Change>,
) {
    if a == b {
        return;
    }
    let path = &field(parent, name);
    if let (Some(Value::Table(x)), Some(Value::Table(y))) = (a, b) {
        let mut keys: Vec<&String> = x.keys().collect();
        keys.extend(y.keys().filter(|k| !x.contains_key(*k)));
        for k in keys {
            diff_value(path, k, x.get(k), y.get(k), out);
        }
        return;
    }
    if let Some(key) = entry_key(name)
        && let (Some(x), Some(y)) = (as_keyed(a, key), as_keyed(b, key))
    {
        let find = |v: &[(String, &'_ Value)], k: &str| {
            v.iter().find(|(o, _)| o == k).map(|(_, v)| (*v).clone())
        };
        let mut keys: Vec<String> = x.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(
            y.iter()
                .map(|(k, _)| k.clone())
                .filter(|k| !x.iter().any(|(o, _)| o == k)),
        );
        for k in keys {
            let sub = entry(parent, &label(name, &k));
            let (xv, yv) = (find(&x, &k), find(&y, &k));
            match (&xv, &yv) {
                (Some(_), Some(_)) => diff_value(&sub, "", xv.as_ref(), yv.as_ref(), out),
                _ if xv != yv => out.push(Change {
                    path: sub,
                    from: xv.as_ref().map(|_| "present".to_owned()),
                    to: yv.as_ref().map(|v| scalars(v, key)),
                }),
                _ => {}
            }
        }
        return;
    }
    out.push(Change {
        path: path.to_owned(),
        from: show(a),
        to: show(b),
    });
}

fn value(c: &Config) -> Value {
    // A validated configuration always serializes (`Config::to_toml` relies on it too).
    Value::try_from(c).unwrap_or_else(|_| Value::Table(toml::map::Map::new()))
}

/// An added entry in brief: its plain fields but `key` (`weight = 2, state = "active"`),
/// the first few.
fn scalars(v: &Value, key: &str) -> String {
    const MAX: usize = 100;
    let Value::Table(t) = v else {
        return v.to_string();
    };
    let mut out = String::new();
    for (k, x) in t {
        if k == key || matches!(x, Value::Table(_) | Value::Array(_)) {
            continue;
        }
        let item = format!("{k} = {x}");
        if out.len() + item.len() > MAX {
            out.push_str(", …");
            break;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&item);
    }
    if out.is_empty() {
        "present".to_owned()
    } else {
        out
    }
}

/// What changed from `a` to `b` on one line, for the log: at most `max` changes
/// (`vip "web" backend 10.0.0.3: added (weight = 2, ...); vip "api": scheduler "maglev" →
/// "wlc"`), then how many more.
pub fn summary(a: &Config, b: &Config, max: usize) -> String {
    // VIPs are matched by name: one equal on both sides lists nothing, and is left out
    // before the (whole-table) comparison, so that an edit of one VIP among thousands is
    // summed up in the time of one.
    let (a, b) = config::without_same_vips(a, b, |v| v.name.clone());
    let changes = diff(&a, &b);
    if changes.is_empty() {
        return "no change".to_owned();
    }
    let mut parts: Vec<String> = changes.iter().take(max).map(ToString::to_string).collect();
    if changes.len() > max {
        parts.push(format!("and {} more", changes.len() - max));
    }
    parts.join("; ")
}

/// The fields that differ from `a` to `b` (`[daemon]` included).
pub fn diff(a: &Config, b: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    diff_value("", "", Some(&value(a)), Some(&value(b)), &mut out);
    out
}

/// Merge the live edits (`base` → `live`) onto `file`. Without a base (lost, or written by
/// an older sluice), every difference between `live` and `file` is a conflict.
pub fn merge(base: Option<&Config>, live: &Config, file: &Config) -> Merged {
    // `[daemon]` is not edited live: the file's, always.
    let mut live = live.clone();
    live.daemon = base.map_or_else(|| file.daemon.clone(), |b| b.daemon.clone());
    let (l, f) = (value(&live), value(file));
    let b = base.map(value);
    let mut conflicts = Vec::new();
    let merged = merge_value("", "", b.as_ref(), Some(&l), Some(&f), &mut conflicts)
        .unwrap_or_else(|| f.clone());
    let config = toml::to_string(&merged)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            config::parse(&text, "the merged configuration").map_err(|e| e.to_string())
        })
        .map(|l| l.config);
    let (mut live_changes, mut file_changes) = (Vec::new(), Vec::new());
    if let Some(b) = &b {
        diff_value("", "", Some(b), Some(&l), &mut live_changes);
        diff_value("", "", Some(b), Some(&f), &mut file_changes);
    } else {
        diff_value("", "", Some(&f), Some(&l), &mut live_changes);
    }
    Merged {
        config,
        conflicts,
        live_changes,
        file_changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[daemon]\ninterface = \"eth0\"\n\
        [[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
        [[vip.backend]]\naddress = \"10.0.0.2\"\nweight = 10\n\
        [[vip.backend]]\naddress = \"10.0.0.3\"\nweight = 10\n\
        [[vip]]\nname = \"dns\"\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\nforwarding = \"dsr\"\n\
        [[vip.backend]]\naddress = \"10.0.0.4\"\n";

    fn parse(text: &str) -> Config {
        config::parse(text, "test").unwrap().config
    }

    fn backend<'c>(c: &'c mut Config, vip: &str, addr: &str) -> &'c mut config::BackendConfig {
        let a: std::net::IpAddr = addr.parse().unwrap();
        c.vips
            .iter_mut()
            .find(|v| v.name == vip)
            .unwrap()
            .backends
            .iter_mut()
            .find(|b| b.address == a)
            .unwrap()
    }

    /// The log's one-line summary of an edit: what was added (with its settings), what
    /// changed from what to what, and how many more past the first few.
    #[test]
    fn summary_says_what_changed() {
        let a = parse(FILE);
        let mut b = a.clone();
        b.vips[0].backends.push(config::BackendConfig {
            address: "10.0.0.9".parse().unwrap(),
            weight: 2,
            mac: None,
            state: config::BackendState::Active,
            drain_remove: false,
            health: None,
        });
        backend(&mut b, "web", "10.0.0.2").weight = 3;
        let s = summary(&a, &b, 5);
        assert!(
            s.contains("vip \"web\" backend 10.0.0.9: added (state = \"active\", weight = 2)"),
            "{s}"
        );
        assert!(s.contains("backend 10.0.0.2: weight: 10 → 3"), "{s}");
        assert!(!s.contains('\n'), "{s}");
        assert_eq!(summary(&a, &a, 5), "no change");
        b.vips.remove(1);
        let s = summary(&a, &b, 1);
        assert!(s.ends_with("; and 2 more"), "{s}");
    }

    #[test]
    fn a_comment_only_change_keeps_every_live_edit() {
        let base = parse(FILE);
        let mut live = base.clone();
        backend(&mut live, "web", "10.0.0.2").state = config::BackendState::Draining;
        let file = parse(&format!("{FILE}# a comment appended\n"));
        let m = merge(Some(&base), &live, &file);
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        assert_eq!(m.clean(), Some(&live));
        assert!(m.file_changes.is_empty());
        assert_eq!(m.live_changes.len(), 1, "{:?}", m.live_changes);
        assert_eq!(
            m.live_changes[0].path,
            "vip \"web\" backend 10.0.0.2: state"
        );
    }

    #[test]
    fn edits_of_different_fields_backends_and_vips_merge() {
        let base = parse(FILE);
        let mut live = base.clone();
        backend(&mut live, "web", "10.0.0.2").state = config::BackendState::Draining;
        backend(&mut live, "dns", "10.0.0.4").weight = 7;
        // The file changes another field of the same backend, another backend, adds a
        // backend and a VIP.
        let file = parse(&(FILE.replace(
            "address = \"10.0.0.2\"\nweight = 10\n",
            "address = \"10.0.0.2\"\nweight = 20\n",
        ).replace(
            "address = \"10.0.0.3\"\nweight = 10\n",
            "address = \"10.0.0.3\"\nweight = 30\n[[vip.backend]]\naddress = \"10.0.0.5\"\n",
        ) + "[[vip]]\nname = \"new\"\naddress = \"10.0.0.9\"\nport = 443\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n"));
        let m = merge(Some(&base), &live, &file);
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        let mut want = file.clone();
        backend(&mut want, "web", "10.0.0.2").state = config::BackendState::Draining;
        backend(&mut want, "dns", "10.0.0.4").weight = 7;
        assert_eq!(m.clean(), Some(&want));
        // A backend added live and another in the file: both.
        let mut live2 = base.clone();
        let mut added = live2.vips[0].backends[0].clone();
        added.address = "10.0.0.6".parse().unwrap();
        live2.vips[0].backends.push(added);
        let m = merge(Some(&base), &live2, &file);
        let got = m.clean().unwrap();
        let addrs: Vec<String> = got.vips[0]
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]);
    }

    #[test]
    fn the_same_field_changed_differently_is_a_conflict_with_both_values() {
        let base = parse(FILE);
        let mut live = base.clone();
        backend(&mut live, "web", "10.0.0.2").weight = 5;
        backend(&mut live, "web", "10.0.0.3").state = config::BackendState::Draining;
        let file = parse(&FILE.replace(
            "address = \"10.0.0.2\"\nweight = 10\n",
            "address = \"10.0.0.2\"\nweight = 20\n",
        ));
        let m = merge(Some(&base), &live, &file);
        assert_eq!(
            m.conflicts,
            [Conflict {
                path: "vip \"web\" backend 10.0.0.2: weight".to_owned(),
                base: Some("10".to_owned()),
                file: Some("20".to_owned()),
                live: Some("5".to_owned()),
            }]
        );
        assert!(m.clean().is_none());
        // Resolved to the live side (what `config save` writes), the other edit kept.
        let mut want = file.clone();
        backend(&mut want, "web", "10.0.0.2").weight = 5;
        backend(&mut want, "web", "10.0.0.3").state = config::BackendState::Draining;
        assert_eq!(m.config.as_ref().unwrap(), &want);
        // The same change on both sides is no conflict.
        let mut same = base.clone();
        backend(&mut same, "web", "10.0.0.2").weight = 20;
        assert_eq!(merge(Some(&base), &same, &file).clean(), Some(&file));
    }

    #[test]
    fn deletions_merge_unless_the_other_side_changed_what_was_deleted() {
        let base = parse(FILE);
        // The file removes VIP dns; the live edits touched only web: dns goes.
        let file = parse(FILE.split("[[vip]]\nname = \"dns\"").next().unwrap());
        let mut live = base.clone();
        backend(&mut live, "web", "10.0.0.2").state = config::BackendState::Draining;
        let m = merge(Some(&base), &live, &file);
        let got = m.clean().unwrap();
        assert_eq!(got.vips.len(), 1);
        assert_eq!(
            got.vips[0].backends[0].state,
            config::BackendState::Draining
        );
        // A backend removed live, untouched in the file: removed.
        let mut live = base.clone();
        live.vips[0].backends.remove(1);
        let m = merge(Some(&base), &live, &file);
        assert_eq!(m.clean().unwrap().vips[0].backends.len(), 1);
        // The file removes dns while a live edit changed one of its backends: conflict.
        let mut live = base.clone();
        backend(&mut live, "dns", "10.0.0.4").weight = 3;
        let m = merge(Some(&base), &live, &file);
        assert_eq!(m.conflicts.len(), 1, "{:?}", m.conflicts);
        let c = &m.conflicts[0];
        assert_eq!(c.path, "vip \"dns\"");
        assert_eq!(c.file, None);
        assert!(
            c.live
                .as_deref()
                .unwrap()
                .contains("backend 10.0.0.4: weight: 1 → 3"),
            "{c}"
        );
        assert!(c.to_string().contains("the file has (removed)"), "{c}");
    }

    #[test]
    fn without_a_base_every_difference_is_a_conflict() {
        let file = parse(FILE);
        let mut live = file.clone();
        assert!(merge(None, &live, &file).clean().is_some());
        backend(&mut live, "web", "10.0.0.2").weight = 5;
        let m = merge(None, &live, &file);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].path, "vip \"web\" backend 10.0.0.2: weight");
    }

    #[test]
    fn daemon_settings_come_from_the_file() {
        let base = parse(FILE);
        let mut live = base.clone();
        live.daemon.interface = "override0".to_owned();
        let file = parse(&FILE.replace("eth0", "eth1"));
        let m = merge(Some(&base), &live, &file);
        assert_eq!(m.clean().unwrap().daemon.interface, "eth1");
    }

    #[test]
    fn a_merge_that_is_not_a_valid_configuration_is_reported() {
        let base = parse(FILE);
        // Both add a VIP on the same address and port under different names.
        let mut live = base.clone();
        let mut v = live.vips[0].clone();
        v.name = "live-added".to_owned();
        v.port = 8080;
        live.vips.push(v);
        let file = parse(&format!(
            "{FILE}[[vip]]\nname = \"file-added\"\naddress = \"10.0.0.1\"\nport = 8080\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n"
        ));
        let m = merge(Some(&base), &live, &file);
        assert!(m.conflicts.is_empty());
        assert!(m.config.is_err(), "{:?}", m.config);
        assert!(m.clean().is_none());
    }
}
