//! A BPF array created with `BPF_F_MMAPABLE`, mapped into this process: shared memory with
//! the programs (`TABLES`, `FLOWS`), read and written with plain loads and stores instead
//! of a system call per element.

use std::{num::NonZeroUsize, os::fd::BorrowedFd, ptr::NonNull};

use super::DataplaneError;

/// A shared, writable mapping of a whole BPF array, unmapped when dropped.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value; its owners decide how its memory is shared
// (plain integers written through `&mut`, or atomics).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map the first `bytes` of the array behind `fd` (rounded up to whole pages, as the
    /// kernel allocates it).
    pub fn new(fd: BorrowedFd<'_>, bytes: usize, what: &str) -> Result<Self, DataplaneError> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let len = bytes.div_ceil(page_size()) * page_size();
        let size = NonZeroUsize::new(len).ok_or_else(|| {
            DataplaneError::Mmap(std::io::Error::other(format!("{what} is empty")))
        })?;
        // SAFETY: mapping a BPF array fd shared and writable, at offset 0, for no more than
        // the size the kernel allocated for it.
        let p = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| DataplaneError::Mmap(e.into()))?;
        Ok(Self {
            ptr: p.cast::<u8>(),
            len,
        })
    }

    /// Private anonymous memory of `bytes`, zeroed (tests of what lives in a mapping).
    #[cfg(test)]
    pub fn anonymous(bytes: usize) -> Self {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let len = bytes.div_ceil(page_size()) * page_size();
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(len).expect("a non-empty mapping"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .expect("mmap");
        Self {
            ptr: p.cast::<u8>(),
            len,
        }
    }

    /// The first byte (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; its owner holds no reference into it
        // any more.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    use nix::unistd::{SysconfVar, sysconf};
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}
