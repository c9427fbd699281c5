//! The end-to-end suite: one binary, one module per capability, each test with its own vhost
//! and database against the real RabbitMQ and PostgreSQL.

mod architecture;
mod batches;
mod card;
mod carddata;
mod cluster;
mod console;
mod counter;
mod delivery;
mod failover;
mod health;
mod issue;
mod lifecycle;
mod observability;
mod outlet;
mod outlet_tls;
mod packaging;
mod returns;
mod support;
mod transfers;
mod trust;
mod writecard;
mod writers;
