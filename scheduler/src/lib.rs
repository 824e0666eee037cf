//! The Kiln scheduler: the HTTP service stock Singularity clients and the web builder talk to.
//!
//! It parses and checks definitions (`kiln-definitions`), records builds, publishes jobs to the
//! workers over AMQP and relays their events to viewers. The modules arrive with issue #6
//! (build API, queue, relay, store), #8 (library API) and #9 (web builder).
