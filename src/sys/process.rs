//! Process-wide resource helpers: the descriptor limit and CPU time (used by tests and
//! diagnostics; the engine itself never changes limits).

use std::io;
use std::mem::zeroed;
use std::time::Duration;

use super::cvt;

/// The `RLIMIT_NOFILE` (soft, hard) pair.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: a zeroed rlimit is valid; getrlimit fills it.
    let mut r: libc::rlimit = unsafe { zeroed() };
    // SAFETY: `r` is a live rlimit for the kernel to write.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    Ok((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Set the soft `RLIMIT_NOFILE` (the hard limit is kept).
pub fn set_nofile_soft(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let r = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `r` is a live rlimit the kernel reads.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(())
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> io::Result<Duration> {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { zeroed() };
    // SAFETY: `u` is a live rusage for the kernel to write.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) })?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(u.ru_utime) + tv(u.ru_stime))
}
