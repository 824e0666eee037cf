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

/// A RabbitMQ node of its own, on free ports, with its data in a temporary directory: for tests
/// that stop and start the broker or change its settings, which must never touch the shared
/// node. Stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivateNode {
    name: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

/// How long a node may take to open its port (about 10–25 s here).
const NODE_START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether a broker answers at `addr`: it replies to the AMQP 0-9-1 protocol header with a
/// method frame (`connection.start`). An open port alone proves nothing: a connection to a
/// local port where nothing listens can connect to itself (TCP simultaneous open, when the
/// kernel picks the same port as its source), and then reads back its own bytes.
fn speaks_amqp(addr: &str) -> bool {
    use std::io::{Read, Write};
    const METHOD_FRAME: u8 = 1;
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let timeout = std::time::Duration::from_secs(2);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut first = [0u8; 1];
    stream.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && stream.read_exact(&mut first).is_ok()
        && first[0] == METHOD_FRAME
}

impl PrivateNode {
    /// Starts a node named `kiln-test-<random>@localhost` with `extra_config` lines added to its
    /// `rabbitmq.conf` (for example `consumer_timeout = 5000`) and `advanced` as its
    /// `advanced.config` (Erlang terms, `[].` for none; settings the new format lacks, like
    /// `channel_tick_interval`), and waits for its AMQP port.
    ///
    /// Errors: `rabbitmq-server` is missing or the node does not come up.
    pub fn start(extra_config: &[&str], advanced: &str) -> Result<PrivateNode> {
        // Free ports are only free when picked: another test may take one before the node
        // binds it, so a node that does not answer AMQP is stopped and tried on new ports.
        let mut attempt = 1;
        loop {
            let node = Self::configure(extra_config, advanced)?;
            match node.start_again() {
                Ok(()) => return Ok(node),
                Err(error) if attempt >= 3 => return Err(error),
                Err(_) => {
                    let _ = node.stop();
                    attempt += 1;
                }
            }
        }
    }

    /// A node's name, ports and configuration directory, not started.
    fn configure(extra_config: &[&str], advanced: &str) -> Result<PrivateNode> {
        let name = format!("{}@localhost", unique_name("kiln-test")?);
        let port = crate::net::free_port()?;
        let mut dist_port = crate::net::free_port()?;
        while dist_port == port {
            dist_port = crate::net::free_port()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-rabbitmq-")
            .tempdir()
            .map_err(crate::error::io_error("create", "a temp dir"))?;
        let mut config = format!("listeners.tcp.default = 127.0.0.1:{port}\n");
        for line in extra_config {
            config.push_str(line);
            config.push('\n');
        }
        let write = |file: &str, text: &str| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).map_err(crate::error::io_error("write", &path))
        };
        write("rabbitmq.conf", &config)?;
        write("enabled_plugins", "[].\n")?;
        write("advanced.config", advanced)?;
        // The Debian wrapper runs the node as the rabbitmq user.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir.path())
            .status();
        Ok(PrivateNode {
            name,
            port,
            dist_port,
            dir,
        })
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's name, for `rabbitmqctl -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the node (again, after [`PrivateNode::stop`]) on the same data and waits for it.
    ///
    /// Errors: the start command fails or the port does not open in time.
    pub fn start_again(&self) -> Result<()> {
        let dir = self.dir.path();
        let mut command = Command::new("rabbitmq-server");
        command
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"));
        command::run(&mut command)?;
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + NODE_START_DEADLINE;
        while !speaks_amqp(&addr) {
            if std::time::Instant::now() > deadline {
                return Err(crate::SupportError::Environment {
                    name: "RABBITMQ_NODENAME",
                    reason: "the private RabbitMQ node did not open its port in time",
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    }

    /// Stops the node (its data stays for [`PrivateNode::start_again`]).
    ///
    /// Errors: `rabbitmqctl stop` fails.
    pub fn stop(&self) -> Result<()> {
        command::run(Command::new("rabbitmqctl").args(["-q", "-n", &self.name, "stop"]))?;
        Ok(())
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name, "stop"])
            .output();
    }
}
