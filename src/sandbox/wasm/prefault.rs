//! Pre-faulting the pages a call of an image will write.
//!
//! Every call instantiates the pre-initialised image copy-on-write, and
//! python writes all over it (reference counts, the allocator, caches):
//! ~400 pages a call. A page first read and then written is mapped
//! read-only, then copied, and the copy needs the old mapping flushed from
//! every core running this process — an inter-processor interrupt per
//! page, which with two calls at once was ~60% of a call's CPU time
//! (perf, this machine). Wasmtime keeps the pages of the first 32 dirty
//! regions resident between instances; the rest fault again.
//!
//! So: when a call ends, the pages it wrote are read with the
//! `PAGEMAP_SCAN` ioctl (Linux ≥ 6.7), and the next call of the same image
//! has them populated for writing (`MADV_POPULATE_WRITE`, Linux ≥ 5.14)
//! before its code runs: one system call, no read mapping first, so no
//! flush. This changes no byte the guest sees (populating copies the
//! image's contents), only when the copies are made. Where either call is
//! missing it does nothing.

// The two system calls below have no safe wrapper in the crates used here.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const WRITTEN: u64 = 1 << 1;
const FILE: u64 = 1 << 2;
const PRESENT: u64 = 1 << 3;
const PFNZERO: u64 = 1 << 5;
/// Regions read per scan; a call's writes come in a few hundred.
const MAX_REGIONS: usize = 2048;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

fn pagemap() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// The pages one image's calls write, as offsets into linear memory.
#[derive(Default)]
pub(super) struct Hot {
    regions: Mutex<Vec<(usize, usize)>>,
}

impl Hot {
    /// Remembers what the call whose memory is `base..base+len` wrote:
    /// private, present pages (neither the image's file pages nor zero pages).
    pub fn learn(&self, base: *mut u8, len: usize) {
        let Some(pm) = pagemap() else { return };
        let mut out = vec![PageRegion::default(); MAX_REGIONS];
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: base as u64,
            end: base as u64 + len as u64,
            vec: out.as_mut_ptr() as u64,
            vec_len: MAX_REGIONS as u64,
            category_inverted: PFNZERO | FILE,
            category_mask: WRITTEN | PRESENT | PFNZERO | FILE,
            ..PmScanArg::default()
        };
        // SAFETY: the ioctl reads `arg` and writes at most `vec_len`
        // regions into `out`, which outlives the call; it only reads this
        // process's page tables.
        let n = unsafe { libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return;
        }
        let regions = out[..n as usize]
            .iter()
            .map(|r| ((r.start - base as u64) as usize, (r.end - r.start) as usize))
            .collect();
        if let Ok(mut h) = self.regions.lock() {
            *h = regions;
        }
    }

    /// Populates, for writing, what the last call wrote, within `base..base+len`.
    pub fn populate(&self, base: *mut u8, len: usize) {
        let regions = match self.regions.lock() {
            Ok(h) => h.clone(),
            Err(_) => return,
        };
        for (off, n) in regions {
            if off.saturating_add(n) > len {
                continue;
            }
            // SAFETY: the range lies within the instance's accessible
            // linear memory, which is mapped for its whole life; populating
            // it changes no contents.
            unsafe {
                libc::madvise(base.add(off).cast(), n, libc::MADV_POPULATE_WRITE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A private mapping of a file of `pages` pages of b'A', like an
    /// instance's copy-on-write image.
    fn image(pages: usize) -> (*mut u8, usize, File) {
        let len = pages * 4096;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![b'A'; len]).unwrap();
        // SAFETY: a fresh mapping of a file this test owns.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        (p.cast(), len, f)
    }

    #[test]
    fn learns_the_written_pages_and_populating_them_changes_no_byte() {
        if pagemap().is_none() {
            return;
        }
        let (base, len, _f) = image(64);
        // SAFETY: within the mapping.
        let page = |i: usize| unsafe { std::slice::from_raw_parts_mut(base.add(i * 4096), 4096) };
        // Read every page (mapped from the file), write pages 3, 4 and 40.
        let sum: u64 = (0..64).map(|i| page(i)[0] as u64).sum();
        assert_eq!(sum, 64 * b'A' as u64);
        for i in [3, 4, 40] {
            page(i)[7] = b'B';
        }
        let hot = Hot::default();
        hot.learn(base, len);
        let learnt = hot.regions.lock().unwrap().clone();
        if learnt.is_empty() {
            // PAGEMAP_SCAN is missing (kernel < 6.7): nothing to check.
            return;
        }
        assert_eq!(learnt, vec![(3 * 4096, 2 * 4096), (40 * 4096, 4096)]);
        // The next "instance": the copies dropped, the file's bytes back.
        // SAFETY: within the mapping.
        assert_eq!(
            unsafe { libc::madvise(base.cast(), len, libc::MADV_DONTNEED) },
            0
        );
        assert_eq!(page(3)[7], b'A');
        hot.populate(base, len);
        // Populated: private copies again (the scan finds them before any
        // write), holding the image's bytes, not the last call's.
        let again = Hot::default();
        again.learn(base, len);
        assert_eq!(*again.regions.lock().unwrap(), learnt);
        assert!((0..64).all(|i| page(i).iter().all(|b| *b == b'A')));
        // Out of range regions are skipped, not populated.
        hot.populate(base, 8 * 4096);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base.cast(), len) };
    }
}
