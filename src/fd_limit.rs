//! The open-file limit, raised at start: every client connection takes a file descriptor, and
//! the soft limit many systems start processes with (1,024) is far below what a gateway under
//! load needs, while the hard limit the administrator allows is usually much higher.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the limit in force.
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            err = %std::io::Error::last_os_error(),
            "cannot read the open-file limit"
        );
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                err = %std::io::Error::last_os_error(),
                soft = before,
                hard = lim.rlim_max,
                "cannot raise the open-file limit"
            );
            return;
        }
        lim = raised;
    }
    tracing::info!(
        limit = lim.rlim_cur,
        was = before,
        "open-file limit (soft limit raised to the hard limit)"
    );
}
