//! The open-file limit: ten thousand connections need ten thousand file
//! descriptors on each side, more than the usual soft limit of 1024.

use std::io;

/// Raise this process's soft `RLIMIT_NOFILE` towards `want`, as far as
/// the hard limit allows. Returns the soft limit now in force (which may
/// be below `want`: the caller scales down and says so).
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    // SAFETY: getrlimit / setrlimit write and read a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        let target = want.min(lim.rlim_max as u64);
        if (lim.rlim_cur as u64) < target {
            lim.rlim_cur = target as libc::rlim_t;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(lim.rlim_cur as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_lowers_the_limit_and_reaches_what_it_can() {
        let now = raise_nofile(0).unwrap();
        assert!(now > 0);
        // Asking for no more than the current limit changes nothing.
        assert_eq!(raise_nofile(now).unwrap(), now);
        let raised = raise_nofile(now + 1).unwrap();
        assert!(raised >= now);
    }
}
