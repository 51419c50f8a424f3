//! Giving back the memory that starting (or reloading) used and running idle does not: the
//! heap's free pages (`malloc_trim`: loading the kernel data path parses the kernel's BTF, a few
//! megabytes freed at once but kept by the allocator) and the resident pages of halo's own code
//! (`MADV_DONTNEED` on its executable mappings: configuration parsing, the command line, the BPF
//! loader ran once). The code's pages stay in the page cache, so what runs again (a failover's
//! code path, a reload) maps them back with a minor fault, not a read from disk. Nothing here
//! changes what a page holds: code is never written, and writable mappings are left alone.
//! (A debugger's breakpoint or a uprobe placed in halo's code before the release would be
//! dropped with its page: attach them after the start.)
#![allow(unsafe_code)]

/// What [`release`] gave back, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of the binary's code mappings advised out.
    pub code: u64,
    /// Whether the allocator returned memory to the kernel.
    pub heap: bool,
}

/// Trims the heap and advises the binary's code mappings out; blocking (the caller runs it off
/// the runtime's threads). Errors leave memory as it was and are logged at debug.
pub fn release() -> Released {
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the kernel; it is
    // safe to call at any time from any thread.
    let heap = unsafe { libc::malloc_trim(0) } == 1;
    let mut code = 0;
    match code_mappings() {
        Ok(ranges) => {
            for (start, length) in ranges {
                // SAFETY: the range is an executable, non-writable private mapping of this
                // process's own binary (from /proc/self/maps), whose pages are the file's and
                // never written: MADV_DONTNEED drops them from this process, and a later access
                // maps the same bytes back from the page cache.
                let advised = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_DONTNEED) };
                if advised == 0 {
                    code += length as u64;
                } else {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "MADV_DONTNEED refused");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "the binary's code mappings not found"),
    }
    Released { code, heap }
}

/// The (start, length) of every executable, non-writable mapping of the file whose mapping
/// holds this very function: the binary running, however its path reads (" (deleted)" after a
/// package upgrade) and whatever device the file system reports.
fn code_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let here = code_mappings as fn() -> std::io::Result<Vec<(usize, usize)>> as usize;
    let file = maps
        .lines()
        .filter_map(Mapping::parse)
        .find(|m| (m.start..m.start + m.length).contains(&here))
        .map(|m| m.file)
        .ok_or_else(|| std::io::Error::other("no mapping holds halo's code"))?;
    Ok(maps
        .lines()
        .filter_map(Mapping::parse)
        .filter(|m| m.file == file && m.executable && !m.writable)
        .map(|m| (m.start, m.length))
        .collect())
}

/// One line of /proc/self/maps: `start-end perms offset major:minor inode path`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    length: usize,
    executable: bool,
    writable: bool,
    /// Device and inode as written (an inode of 0 is no file).
    file: (&'a str, &'a str),
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split_ascii_whitespace();
        let (range, perms, _offset, device, inode) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        if inode == "0" {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        let length = end.checked_sub(start).filter(|&l| l > 0)?;
        Some(Self { start, length, executable: perms.contains('x'), writable: perms.contains('w'), file: (device, inode) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_the_maps_is_read_and_anonymous_ones_are_not_files() {
        let line = "55d81d193000-55d81d195000 r-xp 0004e000 fd:01 42  /usr/bin/halo (deleted)";
        let mapping = Mapping::parse(line).expect("a mapping");
        assert_eq!((mapping.start, mapping.length), (0x55d8_1d19_3000, 0x2000));
        assert!(mapping.executable && !mapping.writable);
        assert_eq!(mapping.file, ("fd:01", "42"));
        assert!(Mapping::parse("55d81d193000-55d81d195000 rw-p 00000000 fd:01 42 /usr/bin/halo").is_some_and(|m| m.writable));
        assert_eq!(Mapping::parse("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]"), None);
        assert_eq!(Mapping::parse("7ffd1000-7ffd0000 r-xp 00000000 fd:01 42 /x"), None, "an empty or reversed range");
        assert_eq!(Mapping::parse("garbage"), None);
    }

    /// The test binary itself: its code is found and advised out, and running on afterwards
    /// (this very assertion) shows the pages come back.
    #[test]
    fn the_running_binary_is_found_and_released() {
        let ranges = code_mappings().expect("/proc/self/maps");
        let here = code_mappings as fn() -> std::io::Result<Vec<(usize, usize)>> as usize;
        assert!(ranges.iter().any(|&(start, length)| (start..start + length).contains(&here)), "this code is not among {ranges:?}");
        let released = release();
        assert!(released.code > 0, "nothing advised out: {released:?}");
        assert!(code_mappings().is_ok_and(|again| again == ranges));
    }
}
