//! The registry helpers: a private registry lives exactly as long as its guard, the
//! authenticated one requires its credentials, and `run.sh` serves the debootstrap base.

use std::path::Path;
use std::process::Command;

use kiln_tests::SupportError;
use kiln_tests::command::run;
use kiln_tests::fixtures::Fixture;
use kiln_tests::net::http_status;
use kiln_tests::registry::{Credentials, ENV_DEBIAN, RegistryServer, TestRegistry};

use crate::helper::inspect;

fn anonymous_inspect(reference: &str, creds: Option<&str>) -> Result<(), SupportError> {
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["--insecure-policy", "inspect", "--tls-verify=false"]);
    if let Some(creds) = creds {
        skopeo.args(["--creds", creds]);
    }
    run(skopeo.arg(format!("docker://{reference}"))).map(drop)
}

#[test]
fn authenticated_registry_requires_its_credentials() {
    let registry = TestRegistry::authenticated().unwrap();
    let credentials = registry.credentials().expect("no credentials").clone();
    let reference = registry.reference(Fixture::Busybox);

    let error = anonymous_inspect(&reference, None).unwrap_err();
    assert!(error.to_string().contains("unauthorized"), "{error}");
    let wrong = Credentials {
        password: format!("{}-wrong", credentials.password),
        ..credentials.clone()
    };
    let error = anonymous_inspect(&reference, Some(&wrong.colon_pair())).unwrap_err();
    assert!(error.to_string().contains("unauthorized"), "{error}");

    let image = inspect(&registry, Fixture::Busybox, &[]);
    assert_eq!(image["Layers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn private_registry_stops_when_dropped() {
    let server = RegistryServer::start(None).unwrap();
    let addr = server.addr().to_owned();
    let proc_dir = format!("/proc/{}", server.pid());
    assert_eq!(http_status(&addr, "/v2/"), Some(200));
    assert!(Path::new(&proc_dir).exists());
    drop(server);
    assert_eq!(http_status(&addr, "/v2/"), None, "registry still answers");
    assert!(
        !Path::new(&proc_dir).exists(),
        "registry process still exists"
    );
}

#[test]
fn debian_base_is_served_when_run_sh_pushed_it() {
    // Only `./tests/run.sh` packs and pushes the debootstrap base (tests/setup/debootstrap.sh).
    let Ok(reference) = std::env::var(ENV_DEBIAN) else {
        eprintln!("{ENV_DEBIAN} unset: not run by ./tests/run.sh, nothing to check");
        return;
    };
    let inspect = |extra: &[&str]| {
        let mut skopeo = Command::new("skopeo");
        skopeo
            .args(["--insecure-policy", "inspect", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}"));
        let out = run(&mut skopeo).unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let config = inspect(&["--config"]);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["bash"]));
    let manifest = inspect(&["--raw"]);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let size = layers[0]["size"].as_u64().unwrap();
    assert!(size > 30 << 20, "a minbase layer of only {size} bytes");
}
