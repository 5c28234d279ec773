//! The `TABLES` map, memory-mapped (`BPF_F_MMAPABLE`): a 65537-slot table is written with
//! plain stores instead of 65537 syscalls. Userspace only ever writes a region no VIP
//! currently points at; the `VIPS` update that flips to it is the publication barrier.

use std::os::fd::AsFd as _;

use aya::maps::MapData;

use super::{DataplaneError, mapping::Mapping};

/// The kernel stores array elements at an 8-byte stride (`round_up(value_size, 8)`).
const STRIDE: usize = 8;

pub struct TableMem {
    mem: Mapping,
    slots: u32,
    _map: MapData,
}

impl std::fmt::Debug for TableMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableMem")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl TableMem {
    pub fn new(map: MapData, slots: u32) -> Result<Self, DataplaneError> {
        // Nothing else in this process maps it; only `&mut self` writes it (below).
        let mem = Mapping::new(map.fd().as_fd(), slots as usize * STRIDE, "TABLES")?;
        Ok(Self {
            mem,
            slots,
            _map: map,
        })
    }

    /// Write `values` into slots `base..base + values.len()`.
    pub fn write(&mut self, base: u32, values: &[u32]) {
        let end = base as usize + values.len();
        assert!(
            end <= self.slots as usize,
            "table region {base}+{} beyond {}",
            values.len(),
            self.slots
        );
        let first = self.mem.as_ptr().wrapping_add(base as usize * STRIDE);
        for (i, v) in values.iter().enumerate() {
            // SAFETY: in bounds (asserted above) of our live mapping; 4-byte aligned since
            // the mapping is page-aligned and the stride is 8.
            unsafe { first.add(i * STRIDE).cast::<u32>().write_volatile(*v) };
        }
    }

    /// Read slots `base..base + len`.
    pub fn read(&self, base: u32, len: u32) -> Vec<u32> {
        assert!(base as usize + len as usize <= self.slots as usize);
        let first = self.mem.as_ptr().wrapping_add(base as usize * STRIDE);
        (0..len as usize)
            // SAFETY: as in `write`.
            .map(|i| unsafe { first.add(i * STRIDE).cast::<u32>().read_volatile() })
            .collect()
    }
}
