use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use lb_common::{BACKEND_F_SERVING, Backend, DEFAULT_BACKEND_CAPACITY, PROTO_TCP, VipMeta, names};
use sluice_core::model::addr_bytes;

use super::{
    specs::{differences, is_old_flow_table},
    *,
};
use crate::{
    Sizes, VipIdent,
    layout::{BackendRecord, Layout},
};

/// The default sizes but `TABLES` of `slots`.
fn tables(slots: u32) -> Sizes {
    Sizes {
        table_slots: slots,
        ..Sizes::default()
    }
}

/// One holder of a pin directory's lock at a time; closing the file releases it.
#[test]
fn a_pin_dir_is_locked_by_one_holder_at_a_time() {
    let dir = std::env::temp_dir().join(format!("sluice-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let held = lock_pin_dir(&dir).unwrap();
    let e = lock_pin_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("another sluice daemon is using it"), "{e}");
    assert!(e.contains(&dir.display().to_string()), "{e}");
    drop(held);
    drop(lock_pin_dir(&dir).unwrap());
    let e = lock_pin_dir(&dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("opening it"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn ident(last: u8) -> VipIdent {
    VipIdent {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
        port: 80,
        proto: PROTO_TCP,
    }
}

fn backend(addr: &str, vip_id: u32, generation: u32) -> Backend {
    let (addr, family) = addr_bytes(addr.parse().unwrap());
    Backend {
        addr,
        family,
        flags: BACKEND_F_SERVING,
        generation,
        vip_id,
        ..Backend::default()
    }
}

fn meta(vip_id: u32, table_base: u32, table_size: u32) -> VipMeta {
    VipMeta {
        vip_id,
        table_base,
        table_size,
        mode: lb_common::MODE_DSR,
        ..VipMeta::default()
    }
}

/// Two VIPs: one with backends in slots 3 (generation 2) and 5, one with slot 1; slot 2
/// freed at generation 4.
fn kernel() -> (Vec<(VipIdent, VipMeta)>, Vec<Backend>) {
    let vips = vec![(ident(1), meta(0, 20, 10)), (ident(2), meta(4, 40, 10))];
    let mut b = vec![Backend::default(); DEFAULT_BACKEND_CAPACITY as usize];
    b[3] = backend("10.1.0.1", 0, 2);
    b[5] = backend("10.1.0.2", 0, 1);
    b[1] = backend("10.2.0.1", 4, 1);
    b[2] = Backend {
        generation: 4,
        ..Backend::default()
    };
    (vips, b)
}

#[test]
fn detach_finds_the_saved_layout_of_its_pin_dir_only() {
    let dir = std::env::temp_dir().join(format!("sluice-saved-for-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mine = Path::new("/sys/fs/bpf/sluice/eth0");
    assert_eq!(saved_layout_for(mine, &dir), None, "no file");
    // Another epoch and format than this build's: still found by its pin directory.
    let text = r#"{"format": 7, "epoch": 99, "pin_dir": "/sys/fs/bpf/sluice/eth0"}"#;
    std::fs::write(dir.join(LAYOUT_FILE), text).unwrap();
    assert_eq!(saved_layout_for(mine, &dir), Some(dir.join(LAYOUT_FILE)));
    assert_eq!(
        saved_layout_for(Path::new("/sys/fs/bpf/sluice/eth1"), &dir),
        None,
        "another balancer's layout"
    );
    std::fs::write(dir.join(LAYOUT_FILE), "not json").unwrap();
    assert_eq!(saved_layout_for(mine, &dir), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn pins() -> PinConfig {
    PinConfig {
        dir: "/sys/fs/bpf/sluice/eth0".into(),
        interface: "eth0".into(),
        layout_file: "/run/sluice/layout.json".into(),
        keep: true,
    }
}

#[test]
fn recovery_from_the_maps_alone_keeps_slots_and_generations() {
    let (vips, b) = kernel();
    let (mut l, notes) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let r = l.vip(&ident(1)).unwrap();
    assert_eq!((r.vip_id, r.halves[r.live], r.table_size), (0, 20, 10));
    let a: IpAddr = "10.1.0.1".parse().unwrap();
    assert_eq!(
        r.backends[&a],
        BackendRecord {
            id: 3,
            generation: 2
        }
    );
    assert_eq!(
        l.backend_id(&ident(2), "10.2.0.1".parse().unwrap()),
        Some(1)
    );
    // The inactive halves were placed where nothing else is.
    let (h1, h2) = (
        l.vip(&ident(1)).unwrap().halves,
        l.vip(&ident(2)).unwrap().halves,
    );
    let mut ranges = vec![h1[0], h1[1], h2[0], h2[1]];
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[1] - w[0] >= 10), "{ranges:?}");
    assert_eq!(l.regions.free_slots(), 60);
    // Next slot: after the highest in use; the freed slot 2 comes back past generation 4.
    assert_eq!(l.slots.alloc().unwrap(), (6, 1));
    assert_eq!(l.vip_ids.alloc().unwrap(), 1);
    for _ in 7..DEFAULT_BACKEND_CAPACITY {
        l.slots.alloc().unwrap();
    }
    assert_eq!(l.slots.alloc().unwrap(), (2, 5));
}

#[test]
fn a_saved_layout_round_trips_exactly() {
    let (vips, b) = kernel();
    let (l, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    let saved = l.to_saved("abc", Vec::new(), &pins(), Some(AttachMode::Native));
    let text = serde_json::to_string(&saved).unwrap();
    let back: SavedLayout = serde_json::from_str(&text).unwrap();
    assert_eq!(back, saved);
    let (again, notes) = Layout::recover(tables(100), &vips, &b, Some(&back)).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        again.to_saved("abc", Vec::new(), &pins(), Some(AttachMode::Native)),
        saved
    );
}

#[test]
fn the_maps_win_over_a_stale_saved_layout() {
    let (vips, b) = kernel();
    let (l, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    let mut stale = l.to_saved("abc", Vec::new(), &pins(), None);
    // The daemon died after moving 10.1.0.2 to slot 7 in the maps but before saving.
    stale.vips[0].backends[1].id = 7;
    stale.vips.push(SavedVip {
        port: 443,
        ..stale.vips[0].clone()
    });
    let (got, notes) = Layout::recover(tables(100), &vips, &b, Some(&stale)).unwrap();
    assert_eq!(
        got.backend_id(&ident(1), "10.1.0.2".parse().unwrap()),
        Some(5)
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("not in VIPS")), "{notes:?}");
}

#[test]
fn short_live_tables_use_the_saved_halves() {
    // A sequence scheduler's live table (VipMeta::table_size) is shorter than a half.
    let (mut vips, b) = kernel();
    let (l, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    let mut saved = l.to_saved("abc", Vec::new(), &pins(), None);
    vips[0].1.table_size = 4;
    // Without the saved layout, a half is taken to be as long as the live table.
    let (alone, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    assert_eq!(alone.vip(&ident(1)).unwrap().table_size, 4);
    // With it, the halves are the saved ones, whichever is live now.
    let r = l.vip(&ident(1)).unwrap();
    saved.vips[0].live = 1 - r.live;
    let (got, notes) = Layout::recover(tables(100), &vips, &b, Some(&saved)).unwrap();
    let g = got.vip(&ident(1)).unwrap();
    assert_eq!((g.table_size, g.halves, g.live_len), (10, r.halves, 4));
    assert_eq!(g.halves[g.live], 20);
    assert_eq!(got.regions.free_slots(), 60, "{notes:?}");
    // No live table at all (no backend for new flows).
    vips[0].1.table_size = 0;
    let (none, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    assert_eq!(none.vip(&ident(1)).unwrap().table_size, 0);
    assert_eq!(none.regions.free_slots(), 80);
}

#[test]
fn inconsistent_maps_are_refused() {
    let (mut vips, b) = kernel();
    vips[1].1.table_base = 25; // overlaps the first VIP's table
    assert!(
        Layout::recover(tables(100), &vips, &b, None)
            .unwrap_err()
            .contains("overlaps")
    );
    let (mut vips, b) = kernel();
    vips[1].1.vip_id = 0;
    assert!(
        Layout::recover(tables(100), &vips, &b, None)
            .unwrap_err()
            .contains("twice")
    );
    let (vips, b) = kernel();
    assert!(
        Layout::recover(tables(45), &vips, &b, None).is_err(),
        "beyond TABLES"
    );
    // VIP id 4 is beyond a daemon.vip_capacity of 4.
    let (vips, b) = kernel();
    let small = Sizes {
        vips: 4,
        ..tables(100)
    };
    assert!(
        Layout::recover(small, &vips, &b, None)
            .unwrap_err()
            .contains("out of range")
    );
}

#[test]
fn orphan_and_duplicate_slots_are_freed() {
    let (vips, mut b) = kernel();
    b[9] = backend("10.9.9.9", 7, 1); // VIP id 7 does not exist
    b[10] = backend("10.1.0.1", 0, 1); // a second slot for the same backend
    let (l, notes) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(
        l.backend_id(&ident(1), "10.1.0.1".parse().unwrap()),
        Some(3)
    );
    assert_eq!(l.slots.in_use(), 3);
}

#[test]
fn the_compatibility_check_names_every_difference() {
    let spec = MapSpec {
        name: names::FLOWS.to_owned(),
        map_type: 2,
        key_size: 4,
        value_size: 64,
        max_entries: 1 << 21,
        flags: 1 << 10,
    };
    assert!(differences(&spec, &spec).is_empty());
    let pinned = MapSpec {
        value_size: 8,
        max_entries: 1 << 19,
        ..spec.clone()
    };
    let d = differences(&spec, &pinned);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0], "FLOWS: value size 8 pinned, 64 in this build");
    assert!(d[1].contains("daemon.flow_table_size"), "{d:?}");
    let other_flag = MapSpec {
        flags: 0,
        ..spec.clone()
    };
    assert_eq!(
        differences(&spec, &other_flag),
        ["FLOWS: flags 0 pinned, 1024 in this build"]
    );
    // An older build's flow table (a hash map, plain or LRU, of this build's keys and
    // values) is one whose flows move into a new table; nothing else is.
    let old = |map_type, key_size, value_size, name: &str| MapSpec {
        name: name.to_owned(),
        map_type,
        key_size,
        value_size,
        max_entries: 1 << 20,
        flags: 2,
    };
    assert!(is_old_flow_table(&old(1, 40, 16, names::FLOWS)));
    assert!(is_old_flow_table(&old(9, 40, 16, names::FLOWS)));
    assert!(!is_old_flow_table(&old(9, 40, 24, names::FLOWS)));
    assert!(!is_old_flow_table(&old(2, 40, 16, names::FLOWS)));
    assert!(!is_old_flow_table(&old(1, 40, 16, names::VIPS)));
    let not_flows = MapSpec {
        name: names::CONFIG.to_owned(),
        map_type: 9,
        flags: 0,
        ..spec.clone()
    };
    assert_eq!(
        differences(
            &MapSpec {
                map_type: 1,
                ..not_flows.clone()
            },
            &not_flows
        ),
        ["CONFIG: map type 9 pinned, 1 in this build"]
    );
    assert_eq!(
        differences(
            &not_flows,
            &MapSpec {
                flags: 2,
                ..not_flows.clone()
            }
        ),
        ["CONFIG: flags 2 pinned, 0 in this build"]
    );
    // A restart with another VIP or backend capacity than the pinned maps' names the key.
    for (name, key) in [
        (names::VIPS, "daemon.vip_capacity"),
        (names::VIP_STATS, "daemon.vip_capacity"),
        (names::BACKENDS, "daemon.backend_capacity"),
        (names::BACKEND_STATS, "daemon.backend_capacity"),
    ] {
        let spec = MapSpec {
            name: name.to_owned(),
            max_entries: 2048,
            ..spec.clone()
        };
        let pinned = MapSpec {
            max_entries: 1024,
            ..spec.clone()
        };
        let d = differences(&spec, &pinned);
        assert_eq!(
            d,
            [format!(
                "{name}: max entries 1024 pinned, 2048 in this build ({key})"
            )]
        );
    }
}

#[test]
fn the_abi_hash_follows_every_map_property() {
    let sizes = Sizes::default();
    let specs = object_specs(sizes).unwrap();
    for name in [
        names::VIPS,
        names::BACKENDS,
        names::FLOWS,
        names::TABLES,
        names::CONFIG,
    ] {
        assert!(specs.iter().any(|s| s.name == name), "{name} not pinned");
    }
    for name in [
        lb_common::bench::names::GEN_CONFIG,
        lb_common::bench::names::GEN_COUNTER,
        lb_common::bench::names::SINK_COUNT,
    ] {
        assert!(
            !specs.iter().any(|s| s.name == name),
            "{name}: benchmark maps are not the balancer's"
        );
    }
    let h = abi_hash(&specs);
    assert_eq!(h, abi_hash(&specs), "stable");
    let mut other = specs.clone();
    other[0].value_size += 8;
    assert_ne!(abi_hash(&other), h);
    let bigger = object_specs(Sizes {
        flow_entries: sizes.flow_entries * 2,
        ..sizes
    })
    .unwrap();
    assert_ne!(abi_hash(&bigger), h, "the flow-table size is part of it");
    // The VIP and backend capacities size their maps, and are part of it too.
    let more = object_specs(Sizes {
        vips: 4096,
        backend_slots: 1 << 18,
        ..sizes
    })
    .unwrap();
    for (name, want) in [
        (names::VIPS, 4096),
        (names::CURSORS, 4096),
        (names::VIP_STATS, 4096),
        (names::VIP_REASONS, 4096 * lb_common::reason::COUNT),
        (names::BACKENDS, 1 << 18),
        (names::NEXT_HOPS, 1 << 18),
        (names::BACKEND_STATS, 1 << 18),
    ] {
        let s = more.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.max_entries, want, "{name}");
        let d = specs.iter().find(|s| s.name == name).unwrap();
        assert_eq!(d.max_entries, Sizes::default().max_entries(name).unwrap());
    }
    assert_ne!(abi_hash(&more), h);
}

#[test]
fn the_abi_hash_is_pinned() {
    // A daemon adopts the maps a previous one pinned only if their fingerprint matches:
    // this value is what the balancer's maps and `ABI_EPOCH` give today. It changes only
    // with a map (or the epoch) on purpose; then update it here.
    let specs = object_specs(Sizes::default()).unwrap();
    assert_eq!(abi_hash(&specs), "b12d451e57841f06");
}

/// A sequence VIP's fallback Maglev table (`hash_base`, `hash_size`): its live half is
/// reserved from `VIPS`, its inactive half comes from the saved layout (or is allocated
/// anew without it), and it round-trips through the saved layout.
#[test]
fn fallback_tables_are_recovered_with_their_halves() {
    let (mut vips, b) = kernel();
    // VIP 1 is a sequence VIP: a 4-long sequence at 20, its fallback table live at 60.
    vips[0].1.scheduler = lb_common::SCHED_SEQUENCE;
    vips[0].1.table_size = 4;
    vips[0].1.hash_base = 60;
    vips[0].1.hash_size = 10;
    let (l, notes) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let r = l.vip(&ident(1)).unwrap();
    assert_eq!((r.hash_size, r.hash_halves[r.hash_live]), (10, 60));
    let inactive = r.hash_halves[1 - r.hash_live];
    assert!(
        !(50..70).contains(&inactive) && !(10..30).contains(&inactive),
        "the inactive fallback half {inactive} overlaps a live table"
    );
    assert_eq!(
        l.vip(&ident(2)).unwrap().hash_size,
        0,
        "a Maglev VIP has none"
    );
    // VIP 1: two halves of 4 (without the saved layout a half is as long as the live
    // sequence) and two fallback halves of 10; VIP 2: two halves of 10.
    assert_eq!(l.regions.free_slots(), 100 - 2 * 4 - 2 * 10 - 2 * 10);
    // Saved and read back: the same halves, whichever fallback half is live now.
    let saved = l.to_saved("abc", Vec::new(), &pins(), None);
    let (again, notes) = Layout::recover(tables(100), &vips, &b, Some(&saved)).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(again.vip(&ident(1)).unwrap().hash_halves, r.hash_halves);
    vips[0].1.hash_base = inactive;
    let (flipped, notes) = Layout::recover(tables(100), &vips, &b, Some(&saved)).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let f = flipped.vip(&ident(1)).unwrap();
    assert_eq!(
        (f.hash_halves, f.hash_halves[f.hash_live]),
        (r.hash_halves, inactive)
    );
    // A fallback table that overlaps a live table is refused, naming it.
    vips[0].1.hash_base = 22;
    let e = Layout::recover(tables(100), &vips, &b, None).unwrap_err();
    assert!(e.contains("fallback table [22, +10)"), "{e}");
}

/// A layout saved before fallback tables existed (no `hash_*` keys) still reads: no
/// fallback table.
#[test]
fn a_saved_layout_without_fallback_tables_reads() {
    let (vips, b) = kernel();
    let (l, _) = Layout::recover(tables(100), &vips, &b, None).unwrap();
    let saved = l.to_saved("abc", Vec::new(), &pins(), None);
    let mut json: serde_json::Value = serde_json::to_value(&saved).unwrap();
    for v in json["vips"].as_array_mut().unwrap() {
        let v = v.as_object_mut().unwrap();
        for k in ["hash_size", "hash_halves", "hash_live"] {
            assert!(v.remove(k).is_some(), "{k} is saved");
        }
    }
    let back: SavedLayout = serde_json::from_value(json).unwrap();
    assert_eq!(back, saved);
}
