//! Hands back memory the monitor's set-up touched and its steady state does not need.

/// Gives back memory only the set-up needed: free heap pages (glibc keeps them otherwise)
/// and the stack pages below the current frame that libcontainer's deep calls touched.
/// There are 50-odd supervisors on a busy node; each keeps a few hundred KiB less.
pub fn release_setup_memory() {
    release_stack();
    release_file_pages();
    // Last, so the buffers used above are handed back too.
    // SAFETY: malloc_trim only hands free heap memory back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps from this process the pages of read-only file mappings (the binary's and the
/// libraries' code and constants) that the set-up touched: they stay in the page cache and
/// fault back in cheaply when used, but no longer count in every supervisor's PSS. Only
/// mappings without a single private (copy-on-write) page are touched — dropping one of
/// those would lose its relocations.
fn release_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut clean = true;
    let flush =
        |current: &mut Option<(usize, usize)>, clean: bool, ranges: &mut Vec<(usize, usize)>| {
            if let (Some(r), true) = (current.take(), clean) {
                ranges.push(r);
            }
        };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                flush(&mut current, clean, &mut ranges);
                let perms = fields.next().unwrap_or_default();
                let path = fields.nth(3).unwrap_or_default();
                let read_only_file =
                    perms.starts_with('r') && !perms.contains('w') && path.starts_with('/');
                current = read_only_file.then_some((start, end));
                clean = true;
                continue;
            }
        }
        if matches!(first, "Private_Dirty:" | "Anonymous:" | "Shared_Dirty:")
            && fields.next().is_some_and(|v| v != "0")
        {
            clean = false;
        }
    }
    flush(&mut current, clean, &mut ranges);
    for (start, end) in ranges {
        // SAFETY: a read-only, file-backed private mapping with no copy-on-write page: every
        // page equals the file's, so dropping it only means the next access faults it back
        // in from the page cache.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn release_stack() {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(range) = maps.lines().find(|l| l.ends_with("[stack]")) else {
        return;
    };
    let Some((start, _)) = range
        .split(' ')
        .next()
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
    else {
        return;
    };
    // Keep 16 KiB below this frame for the madvise call itself; everything lower is unused
    // (the stack grows down, no signal handler runs on it: signals come via signalfd).
    let page = 4096;
    let end = (sp.saturating_sub(16 * 1024)) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies in our stack mapping strictly below the live frames
        // (16 KiB under the current one); MADV_DONTNEED there only drops unused pages,
        // which read back as zeros if touched again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}
