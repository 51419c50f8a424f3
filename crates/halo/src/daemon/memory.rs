//! Giving back the memory that starting (or reloading) used and running idle does not: the
//! heap's free pages (`malloc_trim`: loading the kernel data path parses the kernel's BTF, a few
//! megabytes freed at once but kept by the allocator) and the resident pages of halo's own code
//! and read-only data (`MADV_PAGEOUT`: configuration parsing, the command line, the BPF loader
//! run once; the kernel reads back from the binary whatever runs again). Nothing here changes
//! what a page holds: both calls are hints the kernel may ignore.
#![allow(unsafe_code)]

use std::os::unix::fs::MetadataExt;

/// What [`release`] gave back, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of the binary's mappings advised out.
    pub mapped: u64,
    /// Whether the allocator returned memory to the kernel.
    pub heap: bool,
}

/// Trims the heap and advises the binary's non-writable mappings out. Errors (no /proc, a
/// kernel without MADV_PAGEOUT) leave memory as it was and are logged at debug.
pub fn release() -> Released {
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the kernel; it is
    // safe to call at any time from any thread.
    let heap = unsafe { libc::malloc_trim(0) } == 1;
    let mut mapped = 0;
    match own_mappings() {
        Ok(ranges) => {
            for (start, length) in ranges {
                // SAFETY: the range is a mapping of this process's own binary (from
                // /proc/self/maps), read-only or executable, so never written: MADV_PAGEOUT
                // only asks the kernel to reclaim its pages, which fault back in unchanged.
                let advised = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_PAGEOUT) };
                if advised == 0 {
                    mapped += length as u64;
                } else {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "MADV_PAGEOUT refused");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "the binary's mappings not found"),
    }
    Released { mapped, heap }
}

/// The (start, length) of every mapping of the running binary that is not writable, found by
/// its device and inode (the path may end in " (deleted)" after a package upgrade).
fn own_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(maps.lines().filter_map(|line| binary_mapping(line, exe.dev(), exe.ino())).collect())
}

/// A line of /proc/self/maps, `start-end perms offset major:minor inode path`: its range when
/// it maps the file (`dev`, `ino`) without write permission.
fn binary_mapping(line: &str, dev: u64, ino: u64) -> Option<(usize, usize)> {
    let mut fields = line.split_ascii_whitespace();
    let (range, perms, _offset, device, inode) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    if perms.contains('w') || inode.parse::<u64>().ok()? != ino {
        return None;
    }
    let (major, minor) = device.split_once(':')?;
    let (major, minor) = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    if libc::makedev(major, minor) != dev {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
    (end > start).then_some((start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_of_the_binary_without_write_permission_are_taken() {
        let dev = libc::makedev(0xfd, 0x01);
        let line = |perms: &str, device: &str, inode: u64| {
            format!("55d81d193000-55d81d195000 {perms} 0004e000 {device} {inode}  /usr/bin/halo (deleted)")
        };
        assert_eq!(binary_mapping(&line("r-xp", "fd:01", 42), dev, 42), Some((0x55d8_1d19_3000, 0x2000)));
        assert_eq!(binary_mapping(&line("r--p", "fd:01", 42), dev, 42), Some((0x55d8_1d19_3000, 0x2000)));
        assert_eq!(binary_mapping(&line("rw-p", "fd:01", 42), dev, 42), None, "writable: data, never advised out");
        assert_eq!(binary_mapping(&line("r-xp", "fd:01", 43), dev, 42), None, "another file");
        assert_eq!(binary_mapping(&line("r-xp", "fd:02", 42), dev, 42), None, "another device");
        assert_eq!(binary_mapping("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]", dev, 42), None);
        assert_eq!(binary_mapping("garbage", dev, 42), None);
    }

    /// The test binary itself: its code is found and advised out, and running on afterwards
    /// (this very assertion) shows the pages come back.
    #[test]
    fn the_running_binary_is_found_and_released() {
        let ranges = own_mappings().expect("/proc/self/maps");
        assert!(ranges.iter().any(|&(_, length)| length > 0), "no mapping of the test binary found: {ranges:?}");
        let released = release();
        assert!(released.mapped > 0, "nothing advised out: {released:?}");
        assert_eq!(binary_mapping("x", 0, 0), None);
    }
}
