//! The node's single owner: one task holds every container record and applies the actions
//! the API sends it (`actions.rs`), one at a time, never waiting: anything that waits on a
//! process, a plugin, a mount or a disk (creating a container, START, exec, kill-and-wait,
//! removal, image pulls, a pod's sandbox and CNI ADD) runs in a task it spawns
//! ([`Node::spawn`]), which reports back with an action that the owner applies. While such
//! work is in flight the object is marked (`Node::creating`, `Container::busy`,
//! `Container::removing`) so conflicting requests are refused or joined.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_runtime::state::{read_json, ContainerDir, ContainerRecord, ExitRecord};
use tokio::sync::{mpsc, watch};

use super::error::ApiError;
use super::Settings;
use crate::api::ContainerView;

pub use super::actions::{Action, Reply};
pub use super::lifecycle::Container;

/// The rest of a piece of work, applied on the owner once the part off it is done.
pub struct Then(pub Box<dyn FnOnce(&mut Node) + Send>);

impl std::fmt::Debug for Then {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Then")
    }
}

/// The callback of [`AfterRemove`].
type AfterRemoveFn = dyn FnOnce(&mut Node, Result<(), ApiError>) + Send;

/// What to do once a container is removed (or its removal failed).
pub struct AfterRemove(pub Box<AfterRemoveFn>);

impl AfterRemove {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce(&mut Node, Result<(), ApiError>) + Send + 'static) -> Self {
        AfterRemove(Box::new(f))
    }
    /// Calls it.
    pub fn call(self, node: &mut Node, result: Result<(), ApiError>) {
        (self.0)(node, result)
    }
}

impl std::fmt::Debug for AfterRemove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterRemove")
    }
}

/// A container being created: its id and name are taken until the work reports.
#[derive(Debug)]
pub struct Creating {
    /// Its name.
    pub name: String,
    /// The pod it is a member of.
    pub pod: Option<String>,
    /// Fired by `rm -f`: the work stops waiting and undoes itself.
    pub cancel: Option<tokio::sync::oneshot::Sender<()>>,
    /// `rm -f` callers, answered once the work has been undone.
    pub removers: Vec<AfterRemove>,
}

/// What the API needs to stream from or wait on a container without asking again.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Full id.
    pub id: String,
    /// State dir.
    pub dir: ContainerDir,
    /// Current state.
    pub info: ContainerView,
    /// Becomes `Some` when it has exited.
    pub exit: watch::Receiver<Option<ExitRecord>>,
}

/// The owner's state.
pub struct Node {
    /// Settings.
    pub settings: Arc<Settings>,
    /// Containers by id.
    pub containers: HashMap<String, Container>,
    /// Pods by id.
    pub pods: HashMap<String, super::pod::Pod>,
    /// The events journal.
    pub events: super::events::Journal,
    /// Image GC by watermarks is running.
    pub gc_running: bool,
    /// Ticks since start (disk checks run every tenth).
    pub ticks: u64,
    /// Own sender, for tasks reporting back.
    pub tx: mpsc::Sender<Action>,
    /// The cluster member's state (`--master`).
    pub member: Option<crate::api::node::MemberView>,
    /// Host ports of containers whose network is being attached (not in `containers` yet)
    /// or released (removed already).
    pub pending_ports: HashMap<String, Vec<berth_runtime::task::PublishedPort>>,
    /// Removed containers whose network is being released: name and the `rm` callers
    /// waiting for it.
    pub releasing: HashMap<String, (String, Vec<Reply<()>>)>,
    /// Pulls in flight by what they pull, so the same image is fetched once at a time.
    pub pulls: HashMap<String, super::images::PullWaiters>,
    /// Containers being created, by id.
    pub creating: HashMap<String, Creating>,
    /// Streams to clients (`logs -f`): they end with the agent.
    pub streams: tokio::task::JoinSet<()>,
    /// Writes records off the owner.
    pub writer: super::persist::StateWriter,
    /// Measured usage, the estimator and reclaim.
    pub usage: super::usage::Usage,
    /// Id ranges held by tasks in user namespaces of their own.
    pub idmaps: super::idmap::IdRanges,
    /// Disk projects and measured use per task.
    pub disk: super::disk_budget::DiskBudgets,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("containers", &self.containers.len())
            .finish()
    }
}

impl Node {
    /// Loads every container found on disk; corrupt records are reported and skipped.
    /// Returns the node and the actions recovery leaves to do (pods to resume or abandon,
    /// restarts due, unanswered creates to remove), which [`Node::run`] applies first.
    pub fn recover(
        settings: Arc<Settings>,
        tx: mpsc::Sender<Action>,
        writer: super::persist::StateWriter,
    ) -> (Self, Vec<Action>) {
        let events = super::events::Journal::open(&settings.root, settings.events_max_bytes);
        // Exits already reported; any other exit found on disk happened while the agent was
        // away and is reported (with its real time) once the owner runs.
        let reported: std::collections::HashSet<String> = events
            .history()
            .into_iter()
            .filter(|e| e.kind == "container" && e.action == "exited")
            .map(|e| e.id)
            .collect();
        let mut node = Node {
            usage: super::usage::Usage::new(&settings),
            idmaps: super::idmap::IdRanges::new(settings.userns_pool),
            disk: super::disk_budget::DiskBudgets::default(),
            settings,
            containers: HashMap::new(),
            pods: HashMap::new(),
            events,
            gc_running: false,
            member: None,
            ticks: 0,
            tx,
            pending_ports: HashMap::new(),
            releasing: HashMap::new(),
            pulls: HashMap::new(),
            creating: HashMap::new(),
            streams: tokio::task::JoinSet::new(),
            writer,
        };
        let dir = node.settings.containers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) => return (node, Vec::new()),
        };
        let mut unanswered = Vec::new();
        for entry in entries.flatten() {
            let cdir = ContainerDir(entry.path());
            let record: ContainerRecord = match read_json(&cdir.record()) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // A create that died before its first record: nothing runs there (the
                    // supervisor starts only after the record is written). Undo it.
                    tracing::warn!(dir = %cdir.path().display(), "removing a half-created container");
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                        for parent in node.settings.cgroup_parents() {
                            let _ = berth_runtime::cgroups::remove(&parent.join(&name));
                        }
                        super::create::rollback(
                            &cdir,
                            &node.settings.store,
                            &node.settings.cgroup_root.join(&name),
                        );
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping a container whose state cannot be read");
                    continue;
                }
            };
            let exit = match read_json::<ExitRecord>(&cdir.exit()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable exit record");
                    None
                }
            };
            let id = record.id.clone();
            if cdir.create_pending().exists() {
                // The agent died before answering this create: its client saw an error
                // and holds no id. Removed once the owner runs (supervisor killed first).
                tracing::warn!(id, "removing a container whose create was never answered");
                unanswered.push(id.clone());
            }
            let exit = exit.filter(|_| reported.contains(&id));
            let (exit, _) = watch::channel(exit);
            node.containers
                .insert(id.clone(), Container::new(record, cdir, exit));
            node.check_supervisor(&id);
            node.watch_adopted(&id);
            node.watch_health(&id);
        }
        let (abandoned, running) = super::pod::recover(&mut node);
        node.hold_recorded_ranges();
        super::disk_budget::hold_recorded(&mut node);
        let orphans = super::network::orphans(&node);
        let settings = node.settings.clone();
        tokio::task::spawn_blocking(move || super::network::sweep(&settings, orphans));
        let restarts = node.restarts_due();
        let queued: Vec<Action> = abandoned
            .into_iter()
            .map(Action::AbandonPod)
            .chain(running.into_iter().map(Action::ResumePod))
            .chain(
                restarts
                    .into_iter()
                    .map(|id| Action::Restart(super::backoff::Restart::Container(id))),
            )
            .chain(unanswered.into_iter().map(|id| {
                let (reply, _) = tokio::sync::oneshot::channel();
                Action::Remove(id, true, reply)
            }))
            .collect();
        tracing::info!(
            containers = node.containers.len(),
            pods = node.pods.len(),
            "state recovered"
        );
        (node, queued)
    }

    /// Recovery: every range a container or pod record carries is held again.
    fn hold_recorded_ranges(&mut self) {
        for (id, c) in &self.containers {
            if let (Some(map), None) = (&c.record().idmap, &c.record().task.pod) {
                self.idmaps.hold(id, map);
            }
        }
        for (id, p) in &self.pods {
            if let Some(map) = &p.record().idmap {
                self.idmaps.hold(id, map);
            }
        }
    }

    /// Applies what recovery left, says the agent is ready, then applies actions until
    /// every sender is gone. Requests sent meanwhile wait in the inbox: none is answered
    /// from a half-recovered node.
    pub async fn run(mut self, recovery: Vec<Action>, mut rx: mpsc::Receiver<Action>) {
        for action in recovery {
            self.apply(action);
        }
        tracing::info!("agent ready");
        super::notify::send("READY=1");
        while let Some(action) = rx.recv().await {
            self.apply(action);
        }
    }

    /// Runs `work` off the owner, then `then` on the owner with its output.
    pub fn spawn<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = T> + Send + 'static,
        then: impl FnOnce(&mut Node, T) + Send + 'static,
    ) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let out = work.await;
            let then = Then(Box::new(move |node| then(node, out)));
            // Gone only when the agent stops: the next start recovers from disk.
            let _ = tx.send(Action::Continue(what, then)).await;
        });
    }

    /// [`Node::spawn`] for blocking work (file systems, mounts, cgroups) in the blocking
    /// pool.
    pub fn spawn_blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
        then: impl FnOnce(&mut Node, Result<T, ApiError>) + Send + 'static,
    ) {
        self.spawn(
            what,
            async move {
                tokio::task::spawn_blocking(work)
                    .await
                    .unwrap_or_else(|e| Err(ApiError::internal(format!("{what}: {e}"))))
            },
            then,
        );
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Continue(what, then) => {
                tracing::trace!(what, "continuing");
                (then.0)(self);
            }
            Action::Ready(r) => {
                let _ = r.send(Ok(()));
            }
            Action::Pull(req, lines) => super::images::pull(self, req, lines),
            Action::PullEnded(key) => super::images::pull_ended(self, &key),
            Action::Import(q, lines) => super::images::import(self, q, lines),
            Action::ListImages(reference, r) => {
                let _ = r.send(super::images::list(self, reference.as_deref()));
            }
            Action::InspectImage(name, r) => {
                let _ = r.send(super::images::inspect(self, &name));
            }
            Action::RemoveImage(req, r) => super::images::remove(self, req, r),
            Action::Prune(r) => super::images::prune(self, r),
            Action::Rootfs(req, r) => super::images::rootfs(self, req, r),
            Action::Create(task, r) => super::create_networked::request(self, *task, r),
            Action::Start(id, r) => super::start::start(self, &id, move |_, result| {
                let _ = r.send(result);
            }),
            Action::Stop(id, grace, r) => super::kill::stop(self, &id, grace, r),
            Action::Attach { id, start, reply } => super::start::attach(self, &id, start, reply),
            Action::Logs(key, q, r) => super::logs::stream(self, &key, q, r),
            Action::Resolve(id, r) => {
                let _ = r.send(self.resolve(&id).map(|c| Handle {
                    id: c.record().id.clone(),
                    dir: c.dir.clone(),
                    info: self.view(c),
                    exit: c.exit.subscribe(),
                }));
            }
            Action::List(r) => {
                let mut all: Vec<ContainerView> =
                    self.containers.values().map(|c| self.view(c)).collect();
                all.sort_by(|a, b| a.created.cmp(&b.created));
                let _ = r.send(Ok(all));
            }
            Action::Kill {
                id,
                signal,
                all,
                reply,
            } => super::kill::request(self, &id, signal, all, reply),
            Action::Remove(id, force, r) => super::remove::request(self, id, force, r),
            Action::Exec(id, req, r) => super::exec::exec(self, &id, *req, r),
            Action::ShimExited(id) => self.on_shim_exit(&id),
            Action::CreatePod(spec, r) => super::pod::create(self, *spec, r),
            Action::ListPods(r) => {
                let mut all: Vec<crate::api::PodView> = self
                    .pods
                    .values()
                    .map(|p| super::pod::info(self, p))
                    .collect();
                all.sort_by(|a, b| a.created.cmp(&b.created));
                let _ = r.send(Ok(all));
            }
            Action::InspectPod(key, r) => {
                let info = super::pod::resolve(self, &key).and_then(|id| {
                    self.pods
                        .get(&id)
                        .map(|p| super::pod::info(self, p))
                        .ok_or_else(|| ApiError::no_such_pod(&key))
                });
                let _ = r.send(info);
            }
            Action::StopPod(key, timeout, r) => super::pod::stop(self, &key, timeout, r),
            Action::RemovePod(key, force, r) => super::pod::remove(self, &key, force, r),
            Action::NetworkReleased(id) => super::remove::on_network_released(self, &id),
            Action::PodReleased {
                id,
                released,
                clean,
                after,
            } => super::pod::teardown::on_released(self, &id, released, clean, after),

            Action::SandboxReady { pod, made, error } => {
                super::pod::sandbox::on_ready(self, &pod, made, error)
            }
            Action::NetworkReady {
                id,
                task,
                result,
                reply,
            } => super::create_networked::on_ready(self, id, *task, result, reply),
            Action::Member(v) => self.member = Some(v),
            Action::Node(r) => {
                let _ = r.send(Ok(super::usage::view(self)));
            }
            Action::ListNetworks(r) => {
                let settings = self.settings.clone();
                tokio::spawn(async move {
                    let list = tokio::task::spawn_blocking(move || super::network::list(&settings))
                        .await
                        .map_err(ApiError::internal);
                    let _ = r.send(list);
                });
            }
            Action::CheckNetwork(key, r) => super::network::check_async(self, &key, r),
            Action::AbandonPod(id) => super::pod::abandon(self, &id),
            Action::ResumePod(id) => super::pod::resume(self, &id),
            Action::Restart(super::backoff::Restart::Container(id)) => {
                super::relaunch::restart(self, &id)
            }
            Action::Restart(super::backoff::Restart::Member {
                pod,
                name,
                previous,
            }) => super::pod::restart_member(self, &pod, &name, &previous),
            Action::Emit(ev) => self.emit(ev),
            Action::GcDone => self.gc_running = false,
            Action::Metrics(r) => {
                let _ = r.send(Ok(super::metrics::snapshot(self)));
            }
            Action::HealthResult { id, ok, output } => super::health::record(self, &id, ok, output),
            Action::Events(r) => {
                let rx = self.events.subscribe();
                let _ = r.send(Ok((self.events.history(), rx)));
            }
            Action::Sample => super::usage::tick(self),
            Action::Tick => {
                self.ticks += 1;
                // Reaps streams that ended.
                while self.streams.try_join_next().is_some() {}
                super::evict::check(self);
                super::disk_budget::check(self);
                if self.ticks % 10 == 1 {
                    super::disk::check(self);
                    // Freed memory (a burst of creations, a scrape) goes back to the kernel.
                    // SAFETY: malloc_trim only returns free heap pages; it is thread-safe.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
                let ids: Vec<String> = self
                    .containers
                    .iter()
                    .filter(|(_, c)| c.exit.borrow().is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.check_supervisor(&id);
                }
            }
        }
    }

    /// A container's API view, with its disk use.
    pub fn view(&self, c: &Container) -> ContainerView {
        let mut view = c.info(self.usage.reclaim_state());
        view.disk = Some(super::disk_budget::container_use(
            self,
            &c.record().id,
            c.record().task.storage_size,
        ));
        view
    }

    /// Finds a container by full id, name, or unique id prefix.
    pub fn resolve(&self, key: &str) -> Result<&Container, ApiError> {
        let id = self.resolve_id(key)?;
        self.containers
            .get(&id)
            .ok_or_else(|| ApiError::no_such_container(key))
    }

    /// [`Node::resolve`], giving the full id.
    pub fn resolve_id(&self, key: &str) -> Result<String, ApiError> {
        resolve_key(
            "container",
            key,
            self.containers
                .iter()
                .map(|(id, c)| (id.as_str(), c.record().name.as_str())),
        )
    }

    /// Single containers to start again after an agent restart, as Docker's daemon does:
    /// a restart that was due (its back-off interrupted), and `always` containers an
    /// operator stopped (`unless-stopped` ones stay stopped).
    fn restarts_due(&mut self) -> Vec<String> {
        let mut due = Vec::new();
        for (id, c) in self.containers.iter_mut() {
            let Some(exit) = c.exit.borrow().clone() else {
                continue;
            };
            if c.record().task.pod.is_some() || c.record().task.auto_remove {
                continue;
            }
            if c.restart_due_on_recovery(&exit) {
                due.push(id.clone());
            }
        }
        due
    }

    /// Starts the health checks of a running container that has one.
    pub fn watch_health(&self, id: &str) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        let (Some(check), Some(init), Some(_)) = (
            &c.record().task.health,
            c.record().init,
            &c.record().started,
        ) else {
            return;
        };
        if c.known_exit().is_some() {
            return;
        }
        super::health::spawn(
            self.tx.clone(),
            id.to_string(),
            check.clone(),
            init,
            c.dir.execs(),
            c.exit.subscribe(),
        );
    }

    /// Records an event.
    pub fn emit(&mut self, event: super::events::Event) {
        self.events.emit(event);
    }

    /// The state dir of a new container.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.settings.containers_dir().join(id)
    }
}

/// Finds one of `items` (id, name) by full id, name, or unique id prefix, as Docker does.
pub fn resolve_key<'a>(
    kind: &str,
    key: &str,
    items: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<String, ApiError> {
    if let Some((id, _)) = items.clone().find(|(id, name)| *id == key || *name == key) {
        return Ok(id.to_string());
    }
    let matches: Vec<&str> = items
        .map(|(id, _)| id)
        .filter(|id| !key.is_empty() && id.starts_with(key))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err(match kind {
            "container" => ApiError::no_such_container(key),
            "pod" => ApiError::no_such_pod(key),
            _ => ApiError::not_found(format!("no such {kind}: {key}")),
        }),
        _ => Err(ApiError::new(
            crate::api::ErrorCode::Ambiguous,
            format!("{kind} id prefix {key} is ambiguous"),
        )
        .about(key)),
    }
}
