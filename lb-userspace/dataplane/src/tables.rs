//! The `TABLES` map, memory-mapped (`BPF_F_MMAPABLE`): a 65537-slot table is written with
//! plain stores instead of 65537 syscalls. Userspace only ever writes a region no VIP
//! currently points at; the `VIPS` update that flips to it is the publication barrier.

use std::{num::NonZeroUsize, os::fd::AsFd as _, ptr::NonNull};

use aya::maps::MapData;

use super::DataplaneError;

/// The kernel stores array elements at an 8-byte stride (`round_up(value_size, 8)`).
const STRIDE: usize = 8;

pub struct TableMem {
    ptr: NonNull<u8>,
    len: usize,
    slots: u32,
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and only accessed through `&mut self` (writes)
// or `&self` (reads of plain integers).
unsafe impl Send for TableMem {}
// SAFETY: as above.
unsafe impl Sync for TableMem {}

impl std::fmt::Debug for TableMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableMem")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl TableMem {
    pub fn new(map: MapData, slots: u32) -> Result<Self, DataplaneError> {
        use nix::{
            sys::mman::{MapFlags, ProtFlags, mmap},
            unistd::{SysconfVar, sysconf},
        };
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        let len = (slots as usize * STRIDE).div_ceil(page) * page;
        let size = NonZeroUsize::new(len)
            .ok_or_else(|| DataplaneError::Mmap(std::io::Error::other("an empty table")))?;
        // SAFETY: mapping a BPF array fd shared and writable, at offset 0, for exactly the
        // size the kernel allocated for it; nothing else in this process maps it.
        let p = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(|e| DataplaneError::Mmap(e.into()))?;
        Ok(Self {
            ptr: p.cast::<u8>(),
            len,
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
        let first = self.ptr.as_ptr().wrapping_add(base as usize * STRIDE);
        for (i, v) in values.iter().enumerate() {
            // SAFETY: in bounds (asserted above) of our live mapping; 4-byte aligned since
            // the mapping is page-aligned and the stride is 8.
            unsafe { first.add(i * STRIDE).cast::<u32>().write_volatile(*v) };
        }
    }

    /// Read slots `base..base + len`.
    pub fn read(&self, base: u32, len: u32) -> Vec<u32> {
        assert!(base as usize + len as usize <= self.slots as usize);
        let first = self.ptr.as_ptr().wrapping_add(base as usize * STRIDE);
        (0..len as usize)
            // SAFETY: as in `write`.
            .map(|i| unsafe { first.add(i * STRIDE).cast::<u32>().read_volatile() })
            .collect()
    }
}

impl Drop for TableMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; nothing refers into it any more.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}
