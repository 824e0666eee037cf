//! `./deploy/quickstart.sh` end to end: it starts a scheduler and two workers on a fresh state
//! directory, prints a working admin token and the `remote.yaml` lines, a build succeeds
//! through what it started, a second run starts nothing new, and `stop` ends every process.
//! The broker is a private vhost of the shared one (already running, so it is left alone).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_tests::cluster::{Client, worker_exe};
use kiln_tests::rabbitmq::TestVhost;

use super::{BUILD_TIMEOUT, busybox_definition, registry, siftool_list};

fn quickstart(state: &Path, port: u16, vhost: &TestVhost, registry: &str, action: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin_dir = worker_exe().parent().unwrap().to_owned();
    let output = Command::new(repo.join("deploy/quickstart.sh"))
        .arg(action)
        .env("KILN_STATE_DIR", state)
        .env("KILN_LISTEN", format!("127.0.0.1:{port}"))
        .env("KILN_AMQP", vhost.amqp_url())
        .env("KILN_BIN_DIR", &bin_dir)
        .env("KILN_INSECURE_REGISTRIES", registry)
        .output()
        .expect("run deploy/quickstart.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "quickstart {action} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn pids(state: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(state.join("quickstart"))
        .unwrap()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "pid") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            pids.push(text.trim().parse().unwrap());
        }
    }
    pids.sort_unstable();
    pids
}

fn is_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_starts_a_working_service_and_stops_it() {
    let registry = registry();
    let vhost = TestVhost::create().unwrap();
    let state = tempfile::Builder::new()
        .prefix("kiln-quickstart-")
        .tempdir()
        .unwrap();
    let port = kiln_tests::net::free_port().unwrap();
    let out = quickstart(state.path(), port, &vhost, registry.addr(), "start");
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token in:\n{out}"))
        .to_owned();
    assert!(out.contains(&format!("URI: //127.0.0.1:{port}")), "{out}");
    assert!(out.contains(&format!("Token: {token}")), "{out}");
    let started = pids(state.path());
    assert_eq!(started.len(), 3, "a scheduler and two workers: {started:?}");
    assert!(started.iter().all(|&pid| is_alive(pid)));

    let client = Client::new(format!("http://127.0.0.1:{port}"), token);
    let status = client
        .request(reqwest::Method::GET, "/v1/token-status")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let (status, body) = {
        let submitted = client
            .submit(
                &busybox_definition(&registry, "    echo quickstart"),
                None,
                "",
            )
            .await;
        (submitted.status, submitted.body)
    };
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    let done = client.wait_complete_within(id, BUILD_TIMEOUT).await;
    let logs = || {
        std::fs::read_dir(state.path().join("quickstart"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let done = done.unwrap_or_else(|| panic!("build did not end:\n{}", logs()));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", logs());
    let image = client.download(done["libraryRef"].as_str().unwrap()).await;
    siftool_list(state.path(), &image);

    // Again: nothing new starts.
    let again = quickstart(state.path(), port, &vhost, registry.addr(), "start");
    assert!(again.contains("already runs"), "{again}");
    assert_eq!(pids(state.path()), started);

    quickstart(state.path(), port, &vhost, registry.addr(), "stop");
    for pid in &started {
        let deadline = std::time::Instant::now() + Duration::from_secs(35);
        while is_alive(*pid) {
            assert!(std::time::Instant::now() < deadline, "pid {pid} still runs");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(pids(state.path()).is_empty());
}
