//! A Kiln scheduler for the browser tests, in this process: its own data directory (SQLite),
//! its own RabbitMQ vhost, a listener on 127.0.0.1:0, and one user, `alice`, with a password.

use std::sync::Arc;
use std::time::Duration;

use kiln_scheduler::clock::SystemClock;
use kiln_scheduler::config::{
    AdminCommand, AdminConfig, LibraryConfig, Limits, ServeConfig, StateConfig, UserCommand,
};
use kiln_tests::rabbitmq::TestVhost;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Kiln {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _vhost: TestVhost,
    _dir: tempfile::TempDir,
}

async fn admin(state: &StateConfig, command: AdminCommand) -> String {
    kiln_scheduler::admin(
        AdminConfig {
            state: state.clone(),
            command,
        },
        &SystemClock,
    )
    .await
    .expect("admin command")
}

impl Kiln {
    pub async fn start(limits: Limits) -> Kiln {
        let vhost = TestVhost::create().expect("a RabbitMQ vhost (is the broker running?)");
        let dir = tempfile::tempdir().unwrap();
        let state = StateConfig {
            data: dir.path().join("data"),
            database: None,
        };
        admin(
            &state,
            AdminCommand::User(UserCommand::Add {
                name: USER.into(),
                admin: false,
                build_timeout: None,
                max_concurrent_builds: None,
            }),
        )
        .await;
        admin(
            &state,
            AdminCommand::User(UserCommand::Passwd {
                name: USER.into(),
                password: PASSWORD.into(),
            }),
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = ServeConfig {
            listen: address,
            state,
            amqp: vhost.amqp_url(),
            public_url: None,
            limits,
            library: LibraryConfig::default(),
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                kiln_scheduler::serve(config, listener, Arc::new(SystemClock), shutdown)
                    .await
                    .expect("the scheduler runs");
            }
        });
        let kiln = Kiln {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            shutdown,
            server,
            _vhost: vhost,
            _dir: dir,
        };
        let start = std::time::Instant::now();
        while kiln.status("/version", None).await != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the scheduler did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        kiln
    }

    /// The status of `GET path`, with a bearer token if given; 0 when nothing answered.
    pub async fn status(&self, path: &str, token: Option<&str>) -> u16 {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_or(0, |r| r.status().as_u16())
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the scheduler and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}
