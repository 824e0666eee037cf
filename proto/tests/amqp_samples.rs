//! Messages written by every released protocol version must keep parsing, and the current types
//! must write them back unchanged (STYLE.md 2.2, after pueue's state_backward_compatibility test).

use std::path::PathBuf;

use kiln_proto::amqp::{BuildState, Control, Event, EventMessage, Job, MessageError};

fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples/v1")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_same_json(written: &[u8], original: &str) {
    let written: serde_json::Value = serde_json::from_slice(written).unwrap();
    let original: serde_json::Value = serde_json::from_str(original).unwrap();
    assert_eq!(written, original);
}

#[test]
fn v1_job_parses_and_round_trips() {
    let text = sample("job.json");
    let job = Job::from_bytes(text.as_bytes()).expect("v1 job parses");
    assert_eq!(job.build_id, "5fe5b3609d4b6974c4fa0c99");
    assert_eq!(job.build_args["version"], "1.2");
    assert_eq!(job.context.as_ref().unwrap().size, 203);
    assert_same_json(&job.to_bytes(), &text);
}

#[test]
fn v1_events_parse_and_round_trip() {
    let text = sample("events.jsonl");
    let events: Vec<EventMessage> = text
        .lines()
        .map(|line| EventMessage::from_bytes(line.as_bytes()).expect("v1 event parses"))
        .collect();
    assert_eq!(events.len(), 8);
    assert_eq!(
        events[1].event,
        Event::State(BuildState::Running("post".into()))
    );
    assert_eq!(
        events[1].routing_key(),
        "build.5fe5b3609d4b6974c4fa0c99.state"
    );
    assert_eq!(events[7].routing_key(), "worker.w2.heartbeat");
    let finals: Vec<bool> = events.iter().map(EventMessage::is_final).collect();
    assert_eq!(
        finals,
        [false, false, false, false, true, true, true, false]
    );
    for (event, line) in events.iter().zip(text.lines()) {
        assert_same_json(&event.to_bytes(), line);
    }
}

#[test]
fn v1_control_parses_and_round_trips() {
    let text = sample("control.json");
    let control = Control::from_bytes(text.as_bytes()).expect("v1 control parses");
    assert_eq!(control.routing_key(), "cancel.5fe5b3609d4b6974c4fa0c99");
    assert_same_json(&control.to_bytes(), &text);
}

#[test]
fn newer_version_is_refused_not_misread() {
    let text = sample("job.json").replace("\"version\":1", "\"version\":2");
    match Job::from_bytes(text.as_bytes()) {
        Err(MessageError::UnsupportedVersion { found: 2 }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let text = sample("control.json").replace("{", "{\"added_later\":true,");
    Control::from_bytes(text.as_bytes()).expect("unknown fields are tolerated");
}

#[test]
fn garbage_is_malformed() {
    assert!(matches!(
        EventMessage::from_bytes(b"{\"version\":1"),
        Err(MessageError::Malformed(_))
    ));
}
