//! Reading a per-CPU array (its slots in use) in one `BPF_MAP_LOOKUP_BATCH` call (Linux 5.6+) instead
//! of one `bpf_map_lookup_elem` per entry: the status of 1000 VIPs × 10 backends reads
//! every counter once a second, and 11000 syscalls a second were most of an idle daemon's
//! work. Falls back to entry-by-entry reads where the kernel lacks batch operations.
//!
//! Writing many entries of an array in one `BPF_MAP_UPDATE_BATCH` call ([`set_all`]): a
//! publish writes a VIP's backend slots together (262144 slots of 4096 VIPs × 64 backends
//! took a syscall each, half of that publish).

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::Pod;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray};

/// `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_UPDATE_BATCH` (`enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Each of the first `n` entries of `map` (keys `0..n`, at most all of them) in key
/// order, as its per-CPU values: one syscall, or one lookup per entry where the kernel has
/// no batch operations (before Linux 5.6).
fn each_entry<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
    n: u32,
    mut f: impl FnMut(&[V]),
) -> Result<(), aya::maps::MapError> {
    let n = n.min(map.len());
    if n == 0 {
        return Ok(());
    }
    match lookup_all::<V>(map.map(), n) {
        Ok(per_cpu) => {
            let cpus = per_cpu.len() / n as usize;
            per_cpu.chunks(cpus.max(1)).for_each(f);
        }
        Err(_) => {
            for i in 0..n {
                f(&map.get(&i, 0)?);
            }
        }
    }
    Ok(())
}

/// The first `n` entries of `map` (keys `0..n`, at most all of them), summed over CPUs
/// with `add`, indexed by key; one syscall.
pub fn sum_first<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
    n: u32,
    add: impl Fn(&mut V, &V),
) -> Result<Vec<V>, aya::maps::MapError> {
    let mut out = Vec::new();
    each_entry(map, n, |vals| {
        out.push(vals.iter().fold(V::default(), |mut a, v| {
            add(&mut a, v);
            a
        }));
    })?;
    Ok(out)
}

/// The first `n` entries of `map` folded per CPU with `add` (the sum over keys of each
/// CPU's value), indexed by CPU; one syscall.
pub fn sum_per_cpu<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
    n: u32,
    add: impl Fn(&mut V, &V),
) -> Result<Vec<V>, aya::maps::MapError> {
    let mut out: Vec<V> = Vec::new();
    each_entry(map, n, |vals| {
        out.resize_with(out.len().max(vals.len()), V::default);
        for (o, v) in out.iter_mut().zip(vals) {
            add(o, v);
        }
    })?;
    Ok(out)
}

/// The raw per-CPU values of keys `0..n`: `n × possible CPUs` values, key-major.
fn lookup_all<V: Pod + Default>(map: &MapData, n: u32) -> std::io::Result<Vec<V>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel copies each CPU's value rounded up to 8 bytes.
    let stride = size_of::<V>().next_multiple_of(8);
    if stride != size_of::<V>() || align_of::<V>() > 8 {
        return Err(std::io::Error::other("value size is not a multiple of 8"));
    }
    lookup_batch(map, n, cpus)
}

/// Keys `0..n` of an array map in one `BPF_MAP_LOOKUP_BATCH`: `per_key` values of `V` a
/// key (the possible CPUs of a per-CPU map, else 1), key-major.
fn lookup_batch<V: Pod + Default>(
    map: &MapData,
    n: u32,
    per_key: usize,
) -> std::io::Result<Vec<V>> {
    let mut values: Vec<V> = vec![V::default(); n as usize * per_key];
    let mut keys: Vec<u32> = vec![0; n as usize];
    let mut out_batch: u32 = 0;
    let mut attr = BatchAttr {
        out_batch: std::ptr::from_mut(&mut out_batch) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: bpf(2) with a batch attribute whose buffers hold `count` keys and
    // `count × per_key` values of the map's value size (`V`, which the callers checked),
    // all live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            std::ptr::from_mut(&mut attr),
            size_of::<BatchAttr>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // ENOENT: the end of the map was reached (here, with every entry read).
    if r != 0 && err.raw_os_error() != Some(libc::ENOENT) {
        return Err(err);
    }
    if attr.count != n || keys.iter().enumerate().any(|(i, k)| *k as usize != i) {
        return Err(std::io::Error::other("short batch read"));
    }
    Ok(values)
}

/// Write `entries` (index, value) into `map`: one `BPF_MAP_UPDATE_BATCH` call, or one
/// update per entry where the kernel lacks batch operations. Entries are written in order
/// either way; on an error, some may have been written.
pub fn set_all<V: Pod>(
    map: &mut Array<MapData, V>,
    entries: &[(u32, V)],
) -> Result<(), aya::maps::MapError> {
    if entries.is_empty() {
        return Ok(());
    }
    if update_all(map.map(), entries).is_ok() {
        return Ok(());
    }
    for (i, v) in entries {
        map.set(*i, *v, 0)?;
    }
    Ok(())
}

/// One `BPF_MAP_UPDATE_BATCH` of `entries`.
fn update_all<V: Pod>(map: &MapData, entries: &[(u32, V)]) -> std::io::Result<()> {
    // The kernel reads values at the map's value size: `V`'s own, 8-byte aligned here.
    if !size_of::<V>().is_multiple_of(8) || align_of::<V>() > 8 {
        return Err(std::io::Error::other("value size is not a multiple of 8"));
    }
    let keys: Vec<u32> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let count = u32::try_from(entries.len()).map_err(std::io::Error::other)?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: bpf(2) with a batch attribute whose buffers hold `count` keys and `count`
    // values of the map's value size, all live for the call (the kernel only reads them).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            std::ptr::from_mut(&mut attr),
            size_of::<BatchAttr>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count != count {
        return Err(std::io::Error::other("short batch write"));
    }
    Ok(())
}

/// The first `n` entries of `map` (keys `0..n`, at most all of them), indexed by key: one
/// `BPF_MAP_LOOKUP_BATCH` call, or one lookup per entry where the kernel lacks batch
/// operations (adopting a large `BACKENDS` took a syscall a slot).
pub fn get_first<V: Pod + Default>(
    map: &Array<MapData, V>,
    n: u32,
) -> Result<Vec<V>, aya::maps::MapError> {
    let n = n.min(map.len());
    match lookup_plain::<V>(map.map(), n) {
        Ok(v) => Ok(v),
        Err(_) => (0..n).map(|i| map.get(&i, 0)).collect(),
    }
}

/// The values of keys `0..n` of a plain (not per-CPU) array, in one batch.
fn lookup_plain<V: Pod + Default>(map: &MapData, n: u32) -> std::io::Result<Vec<V>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    lookup_batch(map, n, 1)
}
