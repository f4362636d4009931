//! `berth-sim`: N simulated agents in one process for the allocator's benchmark. Each runs
//! the real agent-side code (`berth_cluster::member`: join with the token and the pinned
//! CA, register, heartbeat with jitter, converge on the desired set) over its own TLS
//! connection to the master; only its pods are simulated (they "run" in memory, admitted
//! against the node's allocatable as an agent would).
//!
//! ```text
//! berth-sim --master URL --join-token T --ca-cert-hash sha256:… --agents N --state DIR
//!           [--prefix sim] [--cpu-millis 16000] [--memory-gib 64] [--revocable-percent 50]
//! ```
//!
//! Credentials are kept in `DIR` (one file per agent), so a second run against the same
//! master does not join again. Prints one JSON line when every agent has joined and its
//! loop runs; SIGUSR1 stops the heartbeats of 10% of the agents (as if their machines died:
//! a JSON line names how many), SIGTERM ends the process.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_api::cluster::{Amount, Assignment, Registration, ReportedState, UsageReport};
use berth_cluster::member::{self, CreateError, Credential, LocalNode, LocalPod};

struct Args {
    master: String,
    token: String,
    ca_hash: String,
    agents: usize,
    state: PathBuf,
    prefix: String,
    capacity: Amount,
    revocable_percent: u64,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut get = HashMap::new();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        get.insert(flag, value);
    }
    let need = |k: &str| {
        get.get(k)
            .cloned()
            .with_context(|| format!("{k} is required"))
    };
    let num = |k: &str, d: u64| -> Result<u64> {
        get.get(k)
            .map(|v| v.parse().with_context(|| format!("{k} {v}")))
            .unwrap_or(Ok(d))
    };
    Ok(Args {
        master: need("--master")?,
        token: need("--join-token")?,
        ca_hash: need("--ca-cert-hash")?,
        agents: usize::try_from(num("--agents", 100)?)?,
        state: PathBuf::from(need("--state")?),
        prefix: get.get("--prefix").cloned().unwrap_or_else(|| "sim".into()),
        capacity: Amount {
            millicpu: num("--cpu-millis", 16_000)?,
            memory: num("--memory-gib", 64)? << 30,
        },
        revocable_percent: num("--revocable-percent", 50)?,
    })
}

/// One simulated node: its pods in memory.
#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    capacity: Amount,
    revocable_percent: u64,
    pods: Arc<Mutex<HashMap<String, (String, Amount)>>>,
}

fn requests(a: &Assignment) -> Amount {
    let mut total = Amount::default();
    for c in &a.pod.containers {
        let r = &c.resources.requests;
        let cpu = r
            .cpu
            .as_ref()
            .and_then(|q| berth_api::pod::parse_cpu("cpu", q).ok())
            .unwrap_or(0);
        let mem = r
            .memory
            .as_ref()
            .and_then(|q| berth_api::pod::parse_memory("memory", q).ok())
            .unwrap_or(0);
        total = total.plus(Amount {
            millicpu: cpu,
            memory: u64::try_from(mem).unwrap_or(0),
        });
    }
    total
}

impl SimNode {
    fn allocated(&self) -> Amount {
        self.pods
            .lock()
            .map(|p| p.values().fold(Amount::default(), |a, (_, r)| a.plus(*r)))
            .unwrap_or_default()
    }
}

impl LocalNode for SimNode {
    async fn registration(&self) -> Registration {
        Registration {
            node_name: self.name.clone(),
            hostname: self.name.clone(),
            labels: [("sim".to_string(), "true".to_string())].into(),
            capacity: self.capacity,
            allocatable: self.capacity,
            kernel: "sim".into(),
            cgroup_version: 2,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    async fn usage(&self) -> UsageReport {
        let allocated = self.allocated();
        let pct = |v: u64| v / 100 * self.revocable_percent;
        UsageReport {
            allocated,
            allocated_revocable: Amount::default(),
            used: Amount {
                millicpu: allocated.millicpu / 2,
                memory: allocated.memory / 2,
            },
            revocable_free: Amount {
                millicpu: pct(self.capacity.millicpu),
                memory: pct(self.capacity.memory),
            },
            pressure: None,
        }
    }

    async fn pods(&self) -> Result<Vec<LocalPod>, String> {
        let pods = self.pods.lock().map_err(|_| "poisoned".to_string())?;
        Ok(pods
            .iter()
            .map(|(name, (instance, _))| LocalPod {
                name: name.clone(),
                instance: instance.clone(),
                state: ReportedState::Running,
                message: None,
                grace: Duration::ZERO,
            })
            .collect())
    }

    async fn create(&self, a: Assignment) -> Result<(), CreateError> {
        let need = requests(&a);
        let mut pods = self
            .pods
            .lock()
            .map_err(|_| CreateError::Failed("poisoned".into()))?;
        let used = pods
            .values()
            .fold(Amount::default(), |s, (_, r)| s.plus(*r));
        if !self.capacity.minus(used).holds(need) {
            return Err(CreateError::Refused(format!(
                "needs {}m CPU, {}m free",
                need.millicpu,
                self.capacity.minus(used).millicpu
            )));
        }
        pods.insert(a.pod.name.clone(), (a.instance, need));
        Ok(())
    }

    async fn remove(&self, name: String, _grace: Duration) -> Result<(), String> {
        self.pods
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .remove(&name);
        Ok(())
    }
}

/// The agent's credential: from the state dir, else by joining.
async fn credential(args: &Args, name: &str) -> Result<Credential> {
    let path = args.state.join(format!("{name}.json"));
    if let Some(c) = Credential::load(&path)? {
        if c.master == args.master {
            return Ok(c);
        }
    }
    let mut tries = 0;
    loop {
        match member::join(&args.master, &args.token, &args.ca_hash, name).await {
            Ok(c) => {
                c.save(&path)?;
                return Ok(c);
            }
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("berth-sim: joining {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => bail!("joining {name}: {e}"),
        }
    }
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn run(args: Args) -> Result<()> {
    raise_fd_limit();
    std::fs::create_dir_all(&args.state)?;
    let args = Arc::new(args);
    let began = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let (args, limit) = (args.clone(), limit.clone());
        joins.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let name = format!("{}-{i:05}", args.prefix);
            credential(&args, &name).await.map(|c| (i, c))
        });
    }
    let mut creds = vec![None; args.agents];
    while let Some(done) = joins.join_next().await {
        let (i, c) = done??;
        creds[i] = Some(c);
    }
    let mut handles = Vec::with_capacity(args.agents);
    for c in creds.into_iter().flatten() {
        let node = SimNode {
            name: c.node_name.clone(),
            capacity: args.capacity,
            revocable_percent: args.revocable_percent,
            pods: Arc::default(),
        };
        handles.push(tokio::spawn(member::run(c, node)));
        // Spread the first registrations a little, as machines booting would.
        tokio::task::yield_now().await;
    }
    println!(
        "{}",
        serde_json::json!({"event": "joined", "agents": handles.len(), "secs": began.elapsed().as_secs_f64()})
    );
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut lost = 0;
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let n = (handles.len() / 10).max(1);
                for h in handles.iter().skip(lost).take(n) {
                    h.abort();
                }
                lost += n;
                println!("{}", serde_json::json!({"event": "lost", "agents": n}));
            }
            _ = term.recv() => break,
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-sim: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
