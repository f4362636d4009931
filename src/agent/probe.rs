//! `top`: the processes of a container's cgroup, read from /proc.

use std::path::Path;

use super::error::ApiError;
use crate::api::Top;

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as u64)
        .unwrap_or(100)
}

/// One row per process: PID, PPID, UID, STATE, RSS (KiB), TIME (cpu seconds), CMD.
pub fn top(cgroup: &Path) -> Result<Top, ApiError> {
    let m = berth_runtime::cgroups::manager(cgroup).map_err(ApiError::internal)?;
    let mut pids = berth_runtime::cgroups::pids(&m, cgroup).map_err(ApiError::internal)?;
    pids.sort_unstable();
    let page_kib = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|p| p as u64 / 1024)
        .unwrap_or(4);
    let hz = ticks_per_second();
    let mut processes = Vec::new();
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("0");
        let cpu = field(11).parse::<u64>().unwrap_or(0) + field(12).parse::<u64>().unwrap_or(0);
        let rss = field(21).parse::<u64>().unwrap_or(0) * page_kib;
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|u| u.split_whitespace().next().map(String::from))
            })
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .filter(|p| !p.is_empty())
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let secs = cpu / hz;
        processes.push(vec![
            pid.to_string(),
            field(1).to_string(),
            uid,
            field(0).to_string(),
            rss.to_string(),
            format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            cmd,
        ]);
    }
    Ok(Top {
        titles: ["PID", "PPID", "UID", "STATE", "RSS", "TIME", "CMD"]
            .map(String::from)
            .to_vec(),
        processes,
    })
}
