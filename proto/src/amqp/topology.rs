//! The AMQP topology as data: the exchanges, queues, bindings and their arguments.
//!
//! Both the scheduler and the workers declare it (declaring is idempotent in RabbitMQ as long as
//! the arguments agree), so it lives here once and neither side can drift. RabbitMQ 3.10 facts
//! behind the choices are in `shared/specs/anchors.md` §4.

/// The kind of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern (`*` one word, `#` any).
    Topic,
}

/// An exchange to declare (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Full name, with the topology's prefix.
    pub name: String,
    /// How it routes.
    pub kind: ExchangeKind,
}

/// A queue argument value (AMQP field table entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// A string (`longstr`).
    Str(String),
    /// An integer (`long`).
    Int(i64),
}

/// A durable queue to declare, with its arguments and bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Full name, with the topology's prefix.
    pub name: String,
    /// `x-…` arguments, in declaration order.
    pub arguments: Vec<(String, Argument)>,
    /// `(exchange, routing key)` pairs the queue is bound with.
    pub bindings: Vec<(String, String)>,
}

/// Names and settings of Kiln's topology. A non-empty `prefix` keeps test runs and
/// deployments sharing a broker apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prepended to every exchange and queue name; empty in production.
    pub prefix: String,
    /// How often a job may be delivered before it is dead-lettered (`x-delivery-limit`): a job
    /// that kills its worker every time must not take the fleet down one worker after another.
    pub delivery_limit: i64,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            delivery_limit: 3,
        }
    }
}

impl Topology {
    /// A topology whose names all start with `prefix`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}kiln.{suffix}", self.prefix)
    }

    /// The exchange jobs are published to, routed by architecture.
    pub fn jobs_exchange(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.name("jobs"),
            kind: ExchangeKind::Direct,
        }
    }

    /// The exchange jobs go to once they exceed the delivery limit or expire.
    pub fn dead_jobs_exchange(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.name("jobs.dlx"),
            kind: ExchangeKind::Fanout,
        }
    }

    /// The topic exchange for [`super::EventMessage`]s.
    pub fn events_exchange(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.name("events"),
            kind: ExchangeKind::Topic,
        }
    }

    /// The topic exchange for [`super::Control`] messages.
    pub fn control_exchange(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.name("control"),
            kind: ExchangeKind::Topic,
        }
    }

    /// Every exchange, in the order to declare them.
    pub fn exchanges(&self) -> Vec<ExchangeSpec> {
        vec![
            self.dead_jobs_exchange(),
            self.jobs_exchange(),
            self.events_exchange(),
            self.control_exchange(),
        ]
    }

    /// The routing key of jobs for `arch` on [`Self::jobs_exchange`].
    pub fn job_routing_key(arch: &str) -> String {
        arch.to_owned()
    }

    /// The queue of jobs for one architecture: a quorum queue (replicated, confirms after a
    /// quorum has the message) with a delivery limit and at-least-once dead-lettering, so a job
    /// that reaches the limit is never silently dropped.
    pub fn job_queue(&self, arch: &str) -> QueueSpec {
        QueueSpec {
            name: self.name(&format!("jobs.{arch}")),
            arguments: vec![
                ("x-queue-type".into(), Argument::Str("quorum".into())),
                (
                    "x-delivery-limit".into(),
                    Argument::Int(self.delivery_limit),
                ),
                (
                    "x-dead-letter-exchange".into(),
                    Argument::Str(self.dead_jobs_exchange().name),
                ),
                // At-least-once dead-lettering requires reject-publish overflow.
                (
                    "x-dead-letter-strategy".into(),
                    Argument::Str("at-least-once".into()),
                ),
                ("x-overflow".into(), Argument::Str("reject-publish".into())),
            ],
            bindings: vec![(self.jobs_exchange().name, Self::job_routing_key(arch))],
        }
    }

    /// Where dead-lettered jobs wait for the scheduler to mark their builds failed.
    pub fn dead_jobs_queue(&self) -> QueueSpec {
        QueueSpec {
            // Outside the `jobs.` names so that no architecture's queue can collide with it.
            name: self.name("dead-jobs"),
            arguments: vec![("x-queue-type".into(), Argument::Str("quorum".into()))],
            bindings: vec![(self.dead_jobs_exchange().name, String::new())],
        }
    }

    /// The scheduler's queue of worker events: every build event and heartbeat.
    pub fn events_queue(&self) -> QueueSpec {
        QueueSpec {
            name: self.name("events.scheduler"),
            arguments: vec![("x-queue-type".into(), Argument::Str("quorum".into()))],
            bindings: vec![
                (self.events_exchange().name, "build.#".into()),
                (self.events_exchange().name, "worker.#".into()),
            ],
        }
    }

    /// Where worker `worker_id` keeps the jobs it has run for longer than the broker lets a
    /// delivery stay unacked (RabbitMQ's `consumer_timeout`): it moves a running job here and
    /// takes it straight back, which restarts the broker's clock. A copy the worker does not
    /// take back (it died) expires after its message TTL and is dead-lettered to the job queue
    /// of `arch`, so another worker runs it. Unused for a week, the queue goes away.
    pub fn held_queue(&self, worker_id: &str, arch: &str) -> QueueSpec {
        QueueSpec {
            name: self.name(&format!("jobs.held.{worker_id}")),
            arguments: vec![
                ("x-queue-type".into(), Argument::Str("quorum".into())),
                (
                    "x-dead-letter-exchange".into(),
                    Argument::Str(self.jobs_exchange().name),
                ),
                (
                    "x-dead-letter-routing-key".into(),
                    Argument::Str(Self::job_routing_key(arch)),
                ),
                (
                    "x-dead-letter-strategy".into(),
                    Argument::Str("at-least-once".into()),
                ),
                ("x-overflow".into(), Argument::Str("reject-publish".into())),
                ("x-expires".into(), Argument::Int(7 * 24 * 3600 * 1000)),
            ],
            bindings: Vec::new(),
        }
    }

    /// The binding key a worker's private control queue uses on [`Self::control_exchange`].
    pub fn control_binding_key() -> &'static str {
        "cancel.*"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_reaches_every_name() {
        let topology = Topology::with_prefix("t42.");
        let mut names: Vec<String> = topology.exchanges().into_iter().map(|e| e.name).collect();
        names.push(topology.job_queue("amd64").name);
        names.push(topology.dead_jobs_queue().name);
        names.push(topology.events_queue().name);
        for name in &names {
            assert!(name.starts_with("t42.kiln."), "{name} lacks the prefix");
        }
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "names collide: {names:?}");
    }

    #[test]
    fn job_queue_dead_letters_to_the_dead_jobs_exchange() {
        let topology = Topology::default();
        let queue = topology.job_queue("arm64");
        assert_eq!(queue.name, "kiln.jobs.arm64");
        assert!(queue.arguments.contains(&(
            "x-dead-letter-exchange".into(),
            Argument::Str("kiln.jobs.dlx".into())
        )));
        assert!(
            queue
                .arguments
                .contains(&("x-delivery-limit".into(), Argument::Int(3)))
        );
        assert_eq!(
            queue.bindings,
            vec![("kiln.jobs".to_string(), "arm64".to_string())]
        );
    }
}
