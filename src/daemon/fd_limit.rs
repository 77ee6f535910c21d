//! Raising the open-file limit at start-up.
//!
//! Every port holds at least one descriptor, and a tap holds two (its
//! device and the io_uring that batches its reads and writes), so a switch
//! with a few hundred taps and VDE clients reaches the usual soft limit of
//! 1024 descriptors long before the machine's real limit. The hard limit is
//! what the administrator allows; the soft limit is only a default that
//! protects programs using `select()`, which the daemon does not. So the
//! daemon raises its soft limit to the hard one at start-up, as servers
//! commonly do, and a port that still finds no descriptor is refused with
//! the error that says so.

/// Descriptors the daemon ever asks for, however high the hard limit is:
/// enough for any switch, and a bound on what a process with an unlimited
/// hard limit allocates for its descriptor table.
const MAX_WANTED: libc::rlim_t = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most
/// [`MAX_WANTED`]) and returns the soft limit now in force. A failure to
/// read or raise it leaves the limit as it was: the daemon works, with
/// fewer ports possible.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let wanted = lim.rlim_max.min(MAX_WANTED);
    if lim.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; lowering nothing, raising the
        // soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = lim.rlim_cur,
                to = wanted,
                "raised the open-file limit"
            );
            return wanted;
        }
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-file limit"
        );
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> (libc::rlim_t, libc::rlim_t) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        (lim.rlim_cur, lim.rlim_max)
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = limits();
        let wanted = hard.min(MAX_WANTED);
        // Start one below the target (never far below: other tests of this
        // process open descriptors), so the raise has something to do.
        if soft >= wanted && wanted > 64 {
            let lowered = libc::rlimit {
                rlim_cur: wanted - 1,
                rlim_max: hard,
            };
            // SAFETY: `lowered` is a valid rlimit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
            assert_eq!(limits().0, wanted - 1);
        }
        let now = raise_fd_limit();
        let (soft, hard_after) = limits();
        assert_eq!(hard_after, hard, "the hard limit is never touched");
        assert_eq!(soft, hard.min(MAX_WANTED), "soft limit after raising");
        assert_eq!(now, soft, "the limit reported is the one in force");
        // raising again changes nothing
        assert_eq!(raise_fd_limit(), soft);
    }
}
