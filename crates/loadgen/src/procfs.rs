//! A process's CPU time and memory, read from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use std::io;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User plus system CPU time of all its threads, in seconds.
    pub cpu_secs: f64,
    /// Of it, the time in user space (`utime`): the server's own code and its libraries.
    pub user_secs: f64,
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), in KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(utime, stime)` in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_times(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fields after
    // the last ')' start with field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// The value in KiB of a `Name:   1234 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

fn bad(what: &str, pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cannot parse {what} of process {pid}"),
    )
}

/// Read process `pid` now.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (user, system) = parse_times(&stat).ok_or_else(|| bad("stat", pid))?;
    Ok(Sample {
        cpu_secs: (user + system) as f64 / clock_ticks(),
        user_secs: user as f64 / clock_ticks(),
        rss_kib: parse_status_kib(&status, "VmRSS").ok_or_else(|| bad("VmRSS", pid))?,
        hwm_kib: parse_status_kib(&status, "VmHWM").ok_or_else(|| bad("VmHWM", pid))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194304 500 0 0 0 120 34 0 0 20 0 3 0 \
                    100 1000000 250 18446744073709551615";
        assert_eq!(parse_times(stat), Some((120, 34)));
        assert_eq!(parse_times("garbage"), None);
        assert_eq!(parse_times("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tnode\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\nThreads:\t7\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(70_000));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(81_234));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
        assert!(s.cpu_secs >= s.user_secs && s.user_secs >= 0.0, "{s:?}");
        assert!(sample(u32::MAX).is_err(), "no such process");
    }
}
