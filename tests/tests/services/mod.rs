//! The services the suite runs against: the registries (lifecycle, basic auth, the debootstrap
//! base) and a private RabbitMQ vhost per test.

mod rabbitmq;
mod registry;
