//! The OCI runtime spec (`config.json`) of a container: the image config (Entrypoint, Cmd,
//! Env, WorkingDir, User) merged with the task options, on Docker's defaults (namespaces,
//! capabilities, seccomp, masked paths, standard mounts and devices).

pub mod defaults;
pub mod seccomp;
pub mod user;
mod userns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::task::{NetworkMode, TaskSpec};
pub use user::{resolve_user, ResolvedUser};

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A builder refused a value (a bug or an out-of-range option).
    #[error("building the runtime spec: {0}")]
    Build(String),
    /// A file of the image that must be read is not a readable regular file.
    #[error(transparent)]
    ImageFile(#[from] crate::image_file::ImageFileError),
    /// `-u`/`USER` names something the image does not have.
    #[error("unable to find user {user}: {reason}")]
    User {
        /// As given.
        user: String,
        /// Why.
        reason: String,
    },
    /// Command and environment (the image's included) are more than `execve` takes.
    #[error("argument list too long (E2BIG): the command and environment take {bytes} bytes, one string {longest}; the kernel allows {max} in all and less than {per_string} per string")]
    ArgumentListTooLong {
        /// Their size as execve counts it.
        bytes: usize,
        /// The longest string.
        longest: usize,
        /// The limit in all.
        max: usize,
        /// The limit per string.
        per_string: usize,
    },
    /// Neither the image nor the task gives a command.
    #[error("no command specified")]
    NoCommand,
    /// The command is not in the image (Docker exits 127 for this).
    #[error("exec: {command:?}: executable file not found in $PATH")]
    CommandNotFound {
        /// The command.
        command: String,
    },
}

impl SpecError {
    pub(crate) fn build(e: impl std::fmt::Display) -> Self {
        SpecError::Build(e.to_string())
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything `build` needs beside the task.
#[derive(Debug)]
pub struct SpecInputs<'a> {
    /// Container id.
    pub id: &'a str,
    /// The image's config blob.
    pub image: &'a ImageConfiguration,
    /// The mounted rootfs (read for `/etc/passwd` and to find the command).
    pub rootfs: &'a Path,
    /// Absolute cgroup path (same below every hierarchy).
    pub cgroup_path: PathBuf,
    /// Host files bound to `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: [PathBuf; 3],
    /// The network namespace file made for a container on a CNI network (outside a pod).
    pub netns: Option<PathBuf>,
    /// The task's id range when it runs in a user namespace of its own.
    pub idmap: Option<crate::userns::IdMap>,
    /// The user namespace to join (a pod's, or the one a CNI network namespace was made
    /// in); `idmap` without it: a new one with that mapping.
    pub userns: Option<PathBuf>,
}

/// The process arguments Docker would run: entrypoint + cmd, with `--entrypoint` dropping the
/// image's Cmd.
pub fn process_args(image: &ImageConfiguration, task: &TaskSpec) -> Vec<String> {
    let config = image.config().as_ref();
    let (entrypoint, image_cmd) = match &task.entrypoint {
        Some(e) => (e.clone(), Vec::new()),
        None => (
            config
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default(),
            config.and_then(|c| c.cmd().clone()).unwrap_or_default(),
        ),
    };
    let cmd = if task.command.is_empty() {
        image_cmd
    } else {
        task.command.clone()
    };
    entrypoint
        .into_iter()
        .filter(|s| !s.is_empty())
        .chain(cmd)
        .collect()
}

/// Image env, then task env by key (later wins), with PATH and HOSTNAME/HOME defaults.
pub fn process_env(
    image: &ImageConfiguration,
    task: &TaskSpec,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    let put = |env: &mut BTreeMap<String, String>, order: &mut Vec<String>, kv: &str| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    };
    put(&mut env, &mut order, DEFAULT_PATH);
    put(&mut env, &mut order, &format!("HOSTNAME={hostname}"));
    if task.tty {
        put(&mut env, &mut order, "TERM=xterm");
    }
    let image_env = image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for kv in image_env.iter().chain(&task.env) {
        put(&mut env, &mut order, kv);
    }
    if !env.contains_key("HOME") {
        put(&mut env, &mut order, &format!("HOME={home}"));
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", env[&k]))
        .collect()
}

/// Looks `command` up in the rootfs like execvp would (`$PATH` of `env` when it has no `/`).
pub fn find_executable(rootfs: &Path, command: &str, env: &[String]) -> bool {
    // O_PATH through the image-file helper: no open side effect on whatever the name is.
    let is_exec = |p: &str| -> bool {
        match crate::image_file::open_path(rootfs, p) {
            Ok(Some((_, st))) => {
                st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0
            }
            _ => false,
        }
    };
    if command.contains('/') {
        return is_exec(command);
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(&DEFAULT_PATH[5..]);
    path.split(':')
        .filter(|d| !d.is_empty())
        .any(|d| is_exec(&format!("{d}/{command}")))
}

/// The hostname a container gets: `--hostname`, the host's for `--network host`, else the
/// short id.
pub fn hostname(task: &TaskSpec, id: &str) -> String {
    if let Some(h) = &task.hostname {
        return h.clone();
    }
    if task.network == NetworkMode::Host {
        if let Ok(h) = nix::unistd::gethostname() {
            return h.to_string_lossy().into_owned();
        }
    }
    id.chars().take(12).collect()
}

/// The capability set from Docker's defaults, `--cap-add` and `--cap-drop`, with Docker's
/// rules: `--cap-add ALL` gives everything but the dropped ones; `--cap-drop ALL` gives only
/// the added ones; otherwise defaults minus drops plus adds.
pub fn capabilities(task: &TaskSpec) -> BTreeSet<String> {
    let canon = |c: &String| crate::task::parse_capability("capability", c).ok();
    let add: BTreeSet<String> = task.cap_add.iter().filter_map(canon).collect();
    let drop: BTreeSet<String> = task.cap_drop.iter().filter_map(canon).collect();
    if add.contains("ALL") {
        // All the agent itself holds (its bounding set): more cannot be granted.
        caps::read(None, caps::CapSet::Bounding)
            .unwrap_or_else(|_| caps::runtime::thread_all_supported())
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    } else if drop.contains("ALL") {
        add
    } else {
        defaults::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .chain(add)
            .collect()
    }
}

/// The five capability sets of the container's process, as Docker sets them: bounding =
/// effective = permitted = the granted set; inheritable and ambient empty. A process that
/// is not uid 0 loses its effective and permitted sets at execve (the kernel's rules), so a
/// non-root user has none — except the capabilities given explicitly with `--cap-add`,
/// which go into its inheritable and ambient sets so they survive execve (moby#52830's rule,
/// the only way to grant a capability to a non-root process without file capabilities).
pub fn capability_sets(
    task: &TaskSpec,
    granted: &BTreeSet<String>,
    uid: u32,
) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    let to_caps = |names: &mut dyn Iterator<Item = &String>| -> oci_spec::runtime::Capabilities {
        names
            .filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok())
            .collect()
    };
    let all = to_caps(&mut granted.iter());
    let ambient = if uid == 0 {
        Default::default()
    } else {
        let added: BTreeSet<String> = task
            .cap_add
            .iter()
            .filter_map(|c| crate::task::parse_capability("capability", c).ok())
            .collect();
        let explicit = |c: &&String| added.contains("ALL") || added.contains(*c);
        to_caps(&mut granted.iter().filter(explicit))
    };
    LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .effective(all.clone())
        .permitted(all)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()
        .map_err(SpecError::build)
}

/// Builds the spec; the rootfs must already be mounted at `inputs.rootfs`.
pub fn build(task: &TaskSpec, inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    let image_config = inputs.image.config().as_ref();
    let user_text = task
        .user
        .clone()
        .or_else(|| image_config.and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let user = resolve_user(inputs.rootfs, &user_text)?;
    let hostname = hostname(task, inputs.id);
    let args = process_args(inputs.image, task);
    let Some(command) = args.first() else {
        return Err(SpecError::NoCommand);
    };
    let env = process_env(inputs.image, task, &hostname, &user.home);
    let bytes = crate::task::arg_bytes(args.iter().chain(&env));
    let longest = args.iter().chain(&env).map(String::len).max().unwrap_or(0);
    if bytes > crate::task::max_arg_bytes() || longest >= crate::task::MAX_ARG_STRLEN {
        return Err(SpecError::ArgumentListTooLong {
            bytes,
            longest,
            max: crate::task::max_arg_bytes(),
            per_string: crate::task::MAX_ARG_STRLEN,
        });
    }
    if !find_executable(inputs.rootfs, command, &env) {
        return Err(SpecError::CommandNotFound {
            command: command.clone(),
        });
    }
    let cwd = task
        .workdir
        .clone()
        .or_else(|| image_config.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());

    // Open files: the agent's own hard limit, as containers of Docker inherit the daemon's.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    let cap_names = capabilities(task);
    let mut process = ProcessBuilder::default()
        .terminal(task.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(SpecError::build)?,
        )
        .args(args.clone())
        .env(env)
        .cwd(PathBuf::from(cwd))
        .capabilities(capability_sets(task, &cap_names, user.uid)?)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(SpecError::build)?])
        .build()
        .map_err(SpecError::build)?;
    // oci-spec defaults `noNewPrivileges` to true; Docker's default is off. And libcontainer
    // 0.7 loads seccomp early (while still privileged) only when the field is absent, not
    // when it is false: so it is absent unless asked for.
    process.set_no_new_privileges(task.no_new_privileges.then_some(true));

    let mut mounts = defaults::standard_mounts();
    if inputs.idmap.is_some() && task.network == NetworkMode::Host {
        userns::bind_host_sys(&mut mounts);
    }
    let [hosts, hostname_file, resolv] = inputs.etc_files.clone();
    mounts.push(defaults::bind(hosts, "/etc/hosts".into(), false));
    mounts.push(defaults::bind(hostname_file, "/etc/hostname".into(), false));
    mounts.push(defaults::bind(resolv, "/etc/resolv.conf".into(), false));
    for v in &task.volumes {
        mounts.push(defaults::bind(
            v.source.clone(),
            v.target.clone(),
            v.read_only,
        ));
    }
    for t in &task.tmpfs {
        mounts.push(defaults::tmpfs(t.target.clone(), &t.options));
    }

    let mut namespaces = namespaces(task, inputs.netns.as_deref())?;
    let mut linux = LinuxBuilder::default();
    if let Some(map) = &inputs.idmap {
        linux = userns::join_or_make(linux, &mut namespaces, map, inputs.userns.as_deref())?;
    }

    let mut linux = linux
        .namespaces(namespaces)
        .cgroups_path(inputs.cgroup_path.clone())
        .resources(resources(task)?)
        .masked_paths(
            defaults::MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            defaults::READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
    if !task.seccomp_unconfined {
        let arch = inputs.image.architecture().to_string();
        linux = linux.seccomp(seccomp::default_profile(&cap_names, &arch)?);
    }
    let linux = linux.build().map_err(SpecError::build)?;

    let mut annotations: std::collections::HashMap<String, String> = task
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(
        "org.opencontainers.image.ref.name".into(),
        task.image.clone(),
    );
    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(inputs.rootfs.to_path_buf())
                .readonly(task.read_only)
                .build()
                .map_err(SpecError::build)?,
        )
        .hostname(hostname)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(SpecError::build)
}

/// New pid, mount, UTS, IPC (and network unless `--network host`) namespaces; a pod's
/// container joins the pod's network, IPC and UTS (and with a shared PID namespace, PID)
/// namespaces by the paths of their bind mounts, and a container on a CNI network joins
/// the network namespace made (and attached) for it.
fn namespaces(
    task: &TaskSpec,
    netns: Option<&Path>,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let mut list: Vec<(LinuxNamespaceType, Option<PathBuf>)> = vec![
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Ipc, None),
    ];
    if task.network != NetworkMode::Host {
        list.push((LinuxNamespaceType::Network, netns.map(Path::to_path_buf)));
    }
    if let Some(pod) = &task.pod {
        for (typ, path) in list.iter_mut() {
            let name = match typ {
                LinuxNamespaceType::Network => "net",
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                LinuxNamespaceType::Pid if pod.share_pid => "pid",
                _ => continue,
            };
            *path = Some(pod.namespaces.join(name));
        }
    }
    list.into_iter()
        .map(|(typ, path)| {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().map_err(SpecError::build)
        })
        .collect()
}

/// `--cpus`, `--cpu-shares`, `--cpuset-cpus`, memory and pids limits plus the device rules. libcontainer maps
/// shares to v2 weight and reservation to `memory.low`; `memory.high` is v2 only.
fn resources(task: &TaskSpec) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let r = &task.resources;
    let mut b = LinuxResourcesBuilder::default().devices(defaults::device_rules()?);
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(cpus) = r.cpus {
        const PERIOD: u64 = 100_000;
        cpu = cpu
            .period(PERIOD)
            .quota((cpus * PERIOD as f64).round() as i64);
    }
    if let Some(s) = r.cpu_shares {
        cpu = cpu.shares(s);
    }
    if let Some(set) = &r.cpuset_cpus {
        cpu = cpu.cpus(set.clone());
    }
    if r.cpus.is_some() || r.cpu_shares.is_some() || r.cpuset_cpus.is_some() {
        b = b.cpu(cpu.build().map_err(SpecError::build)?);
    }
    if r.memory.is_some() || r.memory_reservation.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(limit) = r.memory {
            // No extra swap: the limit is what the container gets, so OOM is predictable.
            m = m.limit(limit).swap(limit);
        }
        if let Some(res) = r.memory_reservation {
            m = m.reservation(res);
        }
        b = b.memory(m.build().map_err(SpecError::build)?);
    }
    if let Some(p) = r.pids_limit {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(SpecError::build)?,
        );
    }
    if let Some(high) = r.memory_high {
        if crate::cgroups::is_v2() {
            b = b.unified(std::collections::HashMap::from([(
                "memory.high".to_string(),
                high.to_string(),
            )]));
        }
    }
    b.build().map_err(SpecError::build)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image(config: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap()
    }

    fn task() -> TaskSpec {
        TaskSpec {
            image: "x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = image(serde_json::json!({"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]}));
        assert_eq!(process_args(&img, &task()), ["/bin/app", "--serve"]);
        let t = TaskSpec {
            command: vec!["--once".into()],
            ..task()
        };
        assert_eq!(process_args(&img, &t), ["/bin/app", "--once"]);
        // --entrypoint drops the image's Cmd; "" clears the entrypoint.
        let t = TaskSpec {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..task()
        };
        assert_eq!(process_args(&img, &t), ["/bin/sh"]);
        let t = TaskSpec {
            entrypoint: Some(vec![]),
            command: vec!["ls".into()],
            ..task()
        };
        assert_eq!(process_args(&img, &t), ["ls"]);
    }

    #[test]
    fn env_merges_by_key() {
        let img = image(serde_json::json!({"Env": ["PATH=/img/bin", "A=1", "B=2"]}));
        let t = TaskSpec {
            env: vec!["B=3".into(), "C=4".into()],
            tty: true,
            ..task()
        };
        let env = process_env(&img, &t, "h1", "/root");
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "HOSTNAME=h1",
                "TERM=xterm",
                "A=1",
                "B=3",
                "C=4",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn capability_sets() {
        let base = capabilities(&task());
        assert_eq!(base.len(), defaults::DEFAULT_CAPABILITIES.len());
        let t = TaskSpec {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CHOWN".into()],
            ..task()
        };
        let c = capabilities(&t);
        assert!(c.contains("CAP_NET_ADMIN") && !c.contains("CAP_CHOWN"));
        let t = TaskSpec {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["KILL".into()],
            ..task()
        };
        let only: Vec<String> = capabilities(&t).into_iter().collect();
        assert_eq!(
            only,
            ["CAP_KILL"],
            "drop ALL keeps only the added ones, as Docker"
        );
        let t = TaskSpec {
            cap_add: vec!["ALL".into()],
            cap_drop: vec!["SYS_ADMIN".into()],
            ..task()
        };
        let c = capabilities(&t);
        assert!(c.contains("CAP_SYS_MODULE") && !c.contains("CAP_SYS_ADMIN"));
    }
}
