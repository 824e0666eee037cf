//! The autoscaler's decision: a pure function from what it saw (the queue, the containers and
//! their workers' heartbeats) to what to do, so that every rule is unit-tested without an
//! engine.
//!
//! Rules, in order:
//! 1. Exited containers are removed (a worker exits after its drain, or when it crashed).
//! 2. A container whose worker never sent a heartbeat within the start timeout is broken (bad
//!    image, unreachable broker): removed, so it stops taking a slot.
//! 3. Wanted workers = ⌈(waiting + running builds) / concurrency⌉, within `[min, max]`.
//! 4. Fewer live containers than wanted: start the difference, never more than `max`
//!    containers in all (draining ones included: they still run builds).
//! 5. More than wanted, and no job waiting: stop idle workers, longest idle first, only those
//!    whose heartbeats said idle for at least the idle time. A busy worker, a lost one, or one
//!    not heard from yet is never stopped. Stopping is SIGTERM, which drains: a worker that
//!    took a job since its last heartbeat still finishes it.

use std::time::Duration;

use kiln_proto::http::WorkerStatus;

/// The limits the autoscaler works within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Fewest live workers.
    pub min: u32,
    /// Most containers.
    pub max: u32,
    /// Builds one worker runs at once (at least 1).
    pub concurrency: u32,
    /// How long a worker must have been idle before it is stopped.
    pub idle: Duration,
    /// How long a new container may go without a heartbeat.
    pub start_timeout: Duration,
}

/// The builds of the watched architecture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Jobs the broker holds ready.
    pub ready: u64,
    /// Builds recorded as queued (ready jobs, and jobs taken but not started yet).
    pub queued: u64,
    /// Builds running.
    pub running: u64,
}

/// One of the autoscaler's containers, with what its worker last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container name, which is also its worker's id.
    pub name: String,
    /// False once the container exited (or died).
    pub is_running: bool,
    /// Time since the container was created.
    pub age: Duration,
    /// The worker's status in the fleet view, once it sent a heartbeat.
    pub worker: Option<WorkerStatus>,
    /// True when the worker said it is draining.
    pub is_draining: bool,
    /// How long the autoscaler has seen the worker idle without a break.
    pub idle_for: Duration,
    /// True once the autoscaler asked it to stop.
    pub is_terminating: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this many new worker containers.
    Start(u32),
    /// Ask this container's worker to drain and exit (SIGTERM).
    Terminate(String),
    /// Remove this container (exited, or broken).
    Remove(String),
}

/// Worker containers wanted for `demand`.
pub fn wanted(policy: &Policy, demand: Demand) -> u32 {
    let builds = demand.ready.max(demand.queued) + demand.running;
    let per_worker = u64::from(policy.concurrency.max(1));
    let workers = u32::try_from(builds.div_ceil(per_worker)).unwrap_or(u32::MAX);
    workers.clamp(policy.min, policy.max.max(policy.min))
}

/// The actions for one look at the fleet.
pub fn plan(policy: &Policy, demand: Demand, containers: &[Container]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut live = Vec::new();
    let mut terminating = 0u32;
    for container in containers {
        let is_silent = container.worker.is_none() && container.age > policy.start_timeout;
        if !container.is_running || is_silent {
            actions.push(Action::Remove(container.name.clone()));
        } else if container.is_terminating {
            terminating += 1;
        } else {
            live.push(container);
        }
    }
    let live_count = u32::try_from(live.len()).unwrap_or(u32::MAX);
    let wanted = wanted(policy, demand);
    if wanted > live_count {
        let room = policy.max.saturating_sub(live_count + terminating);
        let start = (wanted - live_count).min(room);
        if start > 0 {
            actions.push(Action::Start(start));
        }
    } else if wanted < live_count && demand.ready == 0 {
        let mut idle: Vec<&&Container> = live
            .iter()
            .filter(|c| {
                c.worker == Some(WorkerStatus::Idle) && !c.is_draining && c.idle_for >= policy.idle
            })
            .collect();
        idle.sort_by(|a, b| b.idle_for.cmp(&a.idle_for).then(a.name.cmp(&b.name)));
        let surplus = usize::try_from(live_count - wanted).unwrap_or(usize::MAX);
        for container in idle.into_iter().take(surplus) {
            actions.push(Action::Terminate(container.name.clone()));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min: 0,
        max: 3,
        concurrency: 1,
        idle: Duration::from_secs(30),
        start_timeout: Duration::from_secs(120),
    };

    fn container(name: &str, worker: Option<WorkerStatus>, idle_secs: u64) -> Container {
        Container {
            name: name.into(),
            is_running: true,
            age: Duration::from_secs(60),
            worker,
            is_draining: false,
            idle_for: Duration::from_secs(idle_secs),
            is_terminating: false,
        }
    }

    fn demand(ready: u64, running: u64) -> Demand {
        Demand {
            ready,
            queued: ready,
            running,
        }
    }

    #[test]
    fn starts_what_the_queue_needs_up_to_max() {
        assert_eq!(plan(&POLICY, demand(6, 0), &[]), [Action::Start(3)]);
        assert_eq!(plan(&POLICY, demand(0, 0), &[]), []);
        let one = [container("a", None, 0)];
        assert_eq!(plan(&POLICY, demand(1, 1), &one), [Action::Start(1)]);
        let min_two = Policy { min: 2, ..POLICY };
        assert_eq!(plan(&min_two, demand(0, 0), &[]), [Action::Start(2)]);
        let twice = Policy {
            concurrency: 2,
            ..POLICY
        };
        assert_eq!(wanted(&twice, demand(3, 2)), 3);
        assert_eq!(wanted(&twice, demand(1, 0)), 1);
        // Builds taken from the queue but not started yet still need their worker.
        let taken = Demand {
            ready: 0,
            queued: 2,
            running: 0,
        };
        assert_eq!(wanted(&POLICY, taken), 2);
    }

    #[test]
    fn draining_containers_count_against_max() {
        let mut leaving = container("a", Some(WorkerStatus::Busy), 0);
        leaving.is_terminating = true;
        let actions = plan(
            &POLICY,
            demand(3, 1),
            &[leaving, container("b", Some(WorkerStatus::Busy), 0)],
        );
        assert_eq!(actions, [Action::Start(1)]);
    }

    #[test]
    fn stops_only_workers_idle_long_enough_never_busy_or_unknown_ones() {
        let containers = [
            container("busy", Some(WorkerStatus::Busy), 0),
            container("new", None, 0),
            container("lost", Some(WorkerStatus::Lost), 0),
            container("short", Some(WorkerStatus::Idle), 10),
            container("long", Some(WorkerStatus::Idle), 90),
            container("longer", Some(WorkerStatus::Idle), 95),
        ];
        // One build runs: five surplus, but only two were idle long enough.
        let actions = plan(&POLICY, demand(0, 1), &containers);
        assert_eq!(
            actions,
            [
                Action::Terminate("longer".into()),
                Action::Terminate("long".into())
            ]
        );
        // A waiting job stops every scale-in: an idle worker is about to take it.
        assert_eq!(plan(&POLICY, demand(1, 1), &containers), []);
        // A draining worker is on its way out already.
        let mut draining = container("d", Some(WorkerStatus::Idle), 100);
        draining.is_draining = true;
        assert_eq!(plan(&POLICY, demand(0, 0), &[draining]), []);
        // Surplus bounds the stops: min keeps one.
        let min_one = Policy { min: 1, ..POLICY };
        let two = [
            container("x", Some(WorkerStatus::Idle), 40),
            container("y", Some(WorkerStatus::Idle), 50),
        ];
        assert_eq!(
            plan(&min_one, demand(0, 0), &two),
            [Action::Terminate("y".into())]
        );
    }

    #[test]
    fn exited_and_silent_containers_are_removed() {
        let mut exited = container("gone", Some(WorkerStatus::Idle), 0);
        exited.is_running = false;
        let mut silent = container("silent", None, 0);
        silent.age = Duration::from_secs(121);
        let actions = plan(&POLICY, demand(1, 0), &[exited, silent]);
        assert_eq!(
            actions,
            [
                Action::Remove("gone".into()),
                Action::Remove("silent".into()),
                Action::Start(1)
            ]
        );
    }
}
