//! A private RabbitMQ virtual host per test: the broker on 127.0.0.1:5672 is shared by every run
//! on the machine, so a test never declares into `/` and never purges what it did not create.
//!
//! [`TestVhost::create`] adds a vhost with a random name through `rabbitmqctl` (the management
//! plugin is not enabled on the project's machines), grants `guest` full rights in it, and
//! deletes it, with every exchange and queue in it, when dropped. `rabbitmqctl` needs the Erlang
//! cookie, so the test process runs as root (as `./tests/run.sh` does).

use std::process::Command;

use crate::command;
use crate::error::Result;
use crate::unique_name;

/// AMQP address of the shared broker.
pub const BROKER_ADDR: &str = "127.0.0.1:5672";

/// A virtual host that exists while this value lives.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
}

impl TestVhost {
    /// Creates a vhost named `kiln-test-<random>` with permissions for `guest`.
    ///
    /// Errors: the broker is not running, or `rabbitmqctl` is missing or not allowed to talk to
    /// it ([`crate::SupportError::Command`] carries its message).
    pub fn create() -> Result<TestVhost> {
        let name = unique_name("kiln-test")?;
        command::run(Command::new("rabbitmqctl").args(["-q", "add_vhost", &name]))?;
        // Own the vhost from here on, so a failure below still deletes it.
        let vhost = TestVhost { name };
        command::run(Command::new("rabbitmqctl").args([
            "-q",
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]))?;
        Ok(vhost)
    }

    /// The vhost's name (letters, digits and `-`, so it needs no escaping in a URL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<name>`, for any AMQP client.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{BROKER_ADDR}/{}", self.name)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let deleted =
            command::run(Command::new("rabbitmqctl").args(["-q", "delete_vhost", &self.name]));
        if let Err(error) = deleted {
            eprintln!(
                "kiln-tests: could not delete RabbitMQ vhost {}: {error}",
                self.name
            );
        }
    }
}
