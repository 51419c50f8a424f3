//! Giving back the memory that starting (or reloading) used and running idle does not: the
//! heap's free pages (`malloc_trim`: loading the kernel data path parses the kernel's BTF, a few
//! megabytes freed at once but kept by the allocator) and the resident pages of the read-only
//! mappings of the binary and its libraries (`MADV_DONTNEED` on code and constants: configuration
//! parsing, the command line, the BPF loader ran once; the C library's and libm's pages mapped in
//! bulk at load). Those pages stay in the page cache, so what runs again (a failover's code path,
//! a reload) maps them back with a minor fault, not a read from disk.
//! Nothing here changes what a page holds: only mappings none of whose pages was ever written
//! (no anonymous page in /proc/self/smaps) are advised out — the relocated read-only data
//! (RELRO) was written once at load, so it stays — and writable mappings are left alone.
//! `halo-guard` runs the same release once, after its start.
//! (A breakpoint or uprobe placed in the code turns its page into an anonymous copy, which is
//! then kept.) Only private read-only mappings of files on disk go: a shared mapping of a kernel
//! object (the BPF ring's) has no page cache to come back from.
#![allow(unsafe_code)]

/// What [`release`] gave back, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes of read-only mappings advised out.
    pub code: u64,
    /// Whether the allocator returned memory to the kernel.
    pub heap: bool,
}

/// Trims the heap and advises never-written read-only file mappings out; blocking (the
/// caller runs it off the runtime's threads). Errors leave memory as it was and are logged at
/// debug.
pub fn release() -> Released {
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the kernel; it is
    // safe to call at any time from any thread.
    let heap = unsafe { libc::malloc_trim(0) } == 1;
    let mut code = 0;
    match releasable_mappings() {
        Ok(ranges) => {
            for (start, length) in ranges {
                // SAFETY: the range is a non-writable private file mapping of this process
                // with no anonymous page (from /proc/self/smaps): every page is the
                // file's, never written, so MADV_DONTNEED drops them from this process and a
                // later access maps the same bytes back from the page cache.
                let advised = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_DONTNEED) };
                if advised == 0 {
                    code += length as u64;
                } else {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "MADV_DONTNEED refused");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "the read-only mappings not found"),
    }
    Released { code, heap }
}

/// The (start, length) of every non-writable file mapping none of whose pages was written: the
/// binary's and its libraries' code and constants (a library's pages stay shared with every
/// other process in the page cache; only this process's mapping of them goes).
fn releasable_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mappings = with_written_pages(&smaps);
    Ok(mappings.iter().filter(|(m, written)| m.releasable() && *written == Some(0)).map(|(m, _)| (m.start, m.length)).collect())
}

/// The mappings of files on disk in /proc/self/smaps, each with the kB of its pages that were
/// written (`Anonymous:`, resident, plus `Swap:`, swapped out): `None` when the kernel did not
/// say both, which releases nothing.
fn with_written_pages(smaps: &str) -> Vec<(Mapping, Option<u64>)> {
    let mut mappings: Vec<(Mapping, [Option<u64>; 2])> = Vec::new();
    // Whether the lines read belong to a file mapping (the last one pushed).
    let mut in_file = false;
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let first = words.next().unwrap_or_default();
        if !first.ends_with(':') {
            // A mapping's own line: its fields follow.
            let mapping = Mapping::parse(line);
            in_file = mapping.is_some();
            mappings.extend(mapping.map(|m| (m, [None, None])));
            continue;
        }
        let field = match first {
            "Anonymous:" => 0,
            "Swap:" => 1,
            _ => continue,
        };
        if in_file && let Some((_, counts)) = mappings.last_mut() {
            counts[field] = words.next().and_then(|kb| kb.parse().ok());
        }
    }
    mappings.into_iter().map(|(m, [anonymous, swap])| (m, anonymous.zip(swap).map(|(a, s)| a + s))).collect()
}

/// One line of /proc/self/maps (or smaps) naming a file on disk: `start-end perms offset
/// major:minor inode /path`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    length: usize,
    /// `r--p` or `r-xp`: readable, not writable, private (copy-on-write: this process's own
    /// mapping of pages the page cache keeps).
    read_only_private: bool,
}

impl Mapping {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_ascii_whitespace();
        let (range, perms, _offset, _device, inode) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        // A file on disk only: not anonymous memory (inode 0), not [vdso], not a shared mapping
        // of a kernel object such as a BPF map's ring (`anon_inode:bpf-map`), which has no page
        // cache to come back from.
        if inode == "0" || !fields.next().is_some_and(|path| path.starts_with('/')) {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        let length = end.checked_sub(start).filter(|&l| l > 0)?;
        Some(Self { start, length, read_only_private: perms == "r--p" || perms == "r-xp" })
    }

    fn releasable(&self) -> bool {
        self.read_only_private
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_the_maps_is_read_and_only_read_only_private_files_count() {
        let line = "55d81d193000-55d81d195000 r-xp 0004e000 fd:01 42  /usr/bin/halo (deleted)";
        let mapping = Mapping::parse(line).expect("a mapping");
        assert_eq!((mapping.start, mapping.length), (0x55d8_1d19_3000, 0x2000));
        assert!(mapping.releasable());
        assert!(Mapping::parse("55d81d193000-55d81d195000 rw-p 00000000 fd:01 42 /usr/bin/halo").is_some_and(|m| !m.releasable()));
        assert!(Mapping::parse("55d81d193000-55d81d195000 r--s 00000000 fd:01 42 /dev/shm/x").is_some_and(|m| !m.releasable()));
        assert!(Mapping::parse("55d81d193000-55d81d195000 ---p 00000000 fd:01 42 /usr/bin/halo").is_some_and(|m| !m.releasable()));
        assert_eq!(Mapping::parse("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]"), None);
        assert_eq!(Mapping::parse("7f000000-7f001000 r--s 00000000 00:0f 1055 anon_inode:bpf-map"), None, "a BPF map's ring");
        assert_eq!(Mapping::parse("7ffd1000-7ffd0000 r-xp 00000000 fd:01 42 /x"), None, "an empty or reversed range");
        assert_eq!(Mapping::parse("garbage"), None);
    }

    #[test]
    fn a_mapping_with_written_pages_is_not_released() {
        let smaps = "\
55d8000-55d9000 r--p 00000000 fd:01 42 /usr/bin/halo
Size:                  4 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
55d9000-55db000 r-xp 00001000 fd:01 42 /usr/bin/halo
Anonymous:             0 kB
Swap:                  0 kB
55db000-55dc000 r--p 00003000 fd:01 42 /usr/bin/halo
Anonymous:             4 kB
Swap:                  0 kB
55dc000-55dd000 rw-p 00000000 00:00 0
Anonymous:             4 kB
Swap:                  0 kB
55dd000-55de000 r--p 00004000 fd:01 42 /usr/bin/halo
Anonymous:             0 kB
Swap:                  4 kB
55de000-55df000 r--p 00005000 fd:01 42 /usr/bin/halo
Anonymous:             0 kB
";
        let found: Vec<(usize, Option<u64>)> = with_written_pages(smaps).iter().map(|(m, w)| (m.start, *w)).collect();
        // The RELRO page (written at load) has an anonymous page, or a swapped-out one; the
        // anonymous mapping is no file; the last one says no swap, so it is not taken for unwritten.
        assert_eq!(found, [(0x55d_8000, Some(0)), (0x55d_9000, Some(0)), (0x55d_b000, Some(4)), (0x55d_d000, Some(4)), (0x55d_e000, None)]);
    }

    /// The test binary itself: its read-only mappings are found and advised out, none with a
    /// written page among them, and running on afterwards (this very assertion, its constants
    /// included) shows the pages come back with the bytes they held.
    #[test]
    fn the_running_binary_is_found_and_released() {
        static CONSTANT: &str = "a constant of the binary's read-only data";
        let ranges = releasable_mappings().expect("/proc/self/smaps");
        let here = releasable_mappings as fn() -> std::io::Result<Vec<(usize, usize)>> as usize;
        assert!(ranges.iter().any(|&(start, length)| (start..start + length).contains(&here)), "this code is not among {ranges:?}");
        let released = release();
        assert!(released.code > 0, "nothing advised out: {released:?}");
        assert_eq!(CONSTANT.len(), 41);
        assert!(CONSTANT.starts_with("a constant"));
        assert!(releasable_mappings().is_ok_and(|again| again == ranges));
    }
}
