//! A private RabbitMQ vhost per test, created and deleted through `rabbitmqctl`.

use std::process::Command;

use kiln_tests::command::run_stdout;
use kiln_tests::rabbitmq::TestVhost;

fn vhosts() -> Vec<String> {
    let out =
        run_stdout(Command::new("rabbitmqctl").args(["-q", "list_vhosts", "--no-table-headers"]))
            .unwrap();
    out.lines().map(|l| l.trim().to_owned()).collect()
}

#[test]
fn vhost_exists_with_guest_rights_until_dropped() {
    let vhost = TestVhost::create().unwrap();
    let other = TestVhost::create().unwrap();
    assert_ne!(vhost.name(), other.name());
    assert!(vhosts().iter().any(|v| v == vhost.name()));
    let permissions = run_stdout(Command::new("rabbitmqctl").args([
        "-q",
        "list_permissions",
        "--no-table-headers",
        "-p",
        vhost.name(),
    ]))
    .unwrap();
    assert!(
        permissions
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["guest", ".*", ".*", ".*"]),
        "{permissions}"
    );
    assert_eq!(
        vhost.amqp_url(),
        format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.name())
    );
    let name = vhost.name().to_owned();
    drop(vhost);
    let remaining = vhosts();
    assert!(!remaining.contains(&name), "{name} was not deleted");
    assert!(
        remaining.iter().any(|v| v == other.name()),
        "dropping one vhost deleted another"
    );
}
